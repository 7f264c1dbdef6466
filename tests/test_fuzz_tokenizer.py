"""Tokenizer robustness (hypothesis): random text and bytes, invalid UTF-8, lone surrogates, very
long inputs and every special-token string, through encode / decode and the streaming decoder, on
the real Phi-3 vocabulary (SentencePiece) and SmolLM2's (byte-level BPE).

The one documented exception is InvalidArgumentError (a PhirtError and a ValueError): for text
that is not a str or holds a lone surrogate (no UTF-8 form), and for token ids that are not
integers in [0, vocab size). Everything else encodes and decodes; text round-trips exactly
wherever the vocabulary allows it (no special-token text inside, and for SentencePiece no U+2581,
which it uses to spell a space)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from phirt.errors import InvalidArgumentError, PhirtError
from phirt.tokenizer import Attr, Tokenizer, _bytes_to_unicode
from smollm2 import smollm2_path

PHI3 = Path(__file__).parent / "data" / "vocab" / "ggml-vocab-phi-3.gguf"
SPM_SPACE = "\u2581"

PROPERTY = settings(
    max_examples=int(os.environ.get("PHIRT_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module", params=["phi3-spm", "smollm2-bpe"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    if request.param == "phi3-spm":
        return Tokenizer.from_gguf(PHI3)
    return Tokenizer.from_gguf(smollm2_path())


def special_texts(tok: Tokenizer) -> list[str]:
    return [tok.tokens[i] for i in tok._special_ids]


def unspellable_bytes(tok: Tokenizer) -> frozenset[int]:
    """Bytes the vocabulary has no token for. Byte-level BPE drops them, as llama.cpp does:
    SmolLM2's vocabulary lacks 21 of the 256 (0x04, 0xC0, 0xF1, 0xF5-0xFF, ...), so "\U00040000"
    (F1 80 80 80) comes back as three U+FFFD."""
    if tok._bpe is None:
        return frozenset(b for b in range(256) if b not in tok._byte_ids)
    spelled = {b for b, c in _bytes_to_unicode().items() if c in tok.token_to_id}
    return frozenset(set(range(256)) - spelled)


def round_trips(tok: Tokenizer, text: str) -> bool:
    """Whether the vocabulary can give `text` back exactly: no special-token text in it (those
    are matched whole, and some eat the whitespace next to them), no U+2581 for SentencePiece,
    and no byte the vocabulary cannot spell."""
    if tok.model == "llama" and SPM_SPACE in text:
        return False
    if unspellable_bytes(tok).intersection(text.encode()):
        return False
    return not any(s in text for s in special_texts(tok))


# any text, lone surrogates included
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
valid_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)


@PROPERTY
@given(text=any_text)
@example("\ud800")
@example("a\udcff b")
@example("\udbff\udfff")  # a surrogate pair spelled as two code points: still not valid
def test_any_text_encodes_or_is_rejected(tok: Tokenizer, text: str) -> None:
    valid = not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    try:
        ids = tok.encode(text)
    except InvalidArgumentError as exc:
        assert not valid and "surrogate" in str(exc) and "\n" not in str(exc)
        return
    assert valid
    assert all(0 <= i < tok.vocab_size for i in ids)


@PROPERTY
@given(text=valid_text, bos=st.booleans())
@example(" ", True)
@example("  leading spaces", True)
@example("\x00\x01\x7f", True)
@example("trailing   ", False)
def test_text_round_trips(tok: Tokenizer, text: str, bos: bool) -> None:
    assume(round_trips(tok, text))
    if bos and tok.bos_id is None:
        bos = False
    ids = tok.encode(text, add_bos=bos, parse_special=False)
    # SentencePiece prefixes a space to text; decode drops it again only after a BOS
    expected = text if bos or tok.model != "llama" or not text else " " + text
    assert tok.decode(ids) == expected


@PROPERTY
@given(data=st.binary(max_size=80))
@example(b"\xff\xfe\xfd")
@example(b"\xc3")  # a character cut short
@example(b"\xed\xa0\x80")  # an encoded surrogate: invalid UTF-8
@example(b"\xf4\x90\x80\x80")  # past U+10FFFF
def test_random_bytes(tok: Tokenizer, data: bytes) -> None:
    """Bytes from outside: decoded with errors="replace" they always encode; with
    "surrogateescape" (how Python spells undecodable file names and argv) they encode when they
    were valid UTF-8, and are rejected by name otherwise."""
    replaced = data.decode("utf-8", errors="replace")
    ids = tok.encode(replaced)
    assert all(0 <= i < tok.vocab_size for i in ids)
    escaped = data.decode("utf-8", errors="surrogateescape")
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    if valid:
        assert tok.encode(escaped) == tok.encode(data.decode())
    else:
        with pytest.raises(InvalidArgumentError, match="surrogate"):
            tok.encode(escaped)


@PROPERTY
@given(st.data())
def test_any_ids_decode_and_stream_alike(tok: Tokenizer, data: st.DataObject) -> None:
    """Any token ids decode (byte tokens that cut a character show as U+FFFD), and the
    streaming decoder's pieces add up to decode() of the same ids, special tokens shown or not."""
    n = tok.vocab_size
    some = st.one_of(
        st.integers(0, n - 1),
        st.sampled_from(tok._special_ids or [0]),
        st.sampled_from(sorted(tok._byte_ids.values()) or [0]),
    )
    ids = data.draw(st.lists(some, max_size=40))
    if data.draw(st.booleans()) and tok.bos_id is not None:
        ids = [tok.bos_id, *ids]
    for skip in (True, False):
        text = tok.decode(ids, skip_special=skip)
        stream = tok.stream_decoder(skip_special=skip)
        assert "".join(stream.push(i) for i in ids) + stream.flush() == text


@pytest.mark.parametrize("bad", [-1, 10**9, 2**63, 1.0, "3", None, b"\x01"])
def test_bad_ids_are_rejected_by_name(tok: Tokenizer, bad: object) -> None:
    for call in (
        lambda: tok.decode([1, bad]),
        lambda: tok.stream_decoder().push(bad),
        lambda: tok.token_to_piece(bad),
    ):
        with pytest.raises(InvalidArgumentError, match="token id") as info:
            call()
        assert isinstance(info.value, PhirtError) and isinstance(info.value, ValueError)


def test_stream_decoder_flushes_cut_characters(tok: Tokenizer) -> None:
    """A character whose bytes are split over tokens comes out with the token that completes
    it; a cut one shows as U+FFFD at flush, and the decoder starts clean afterwards."""
    snowman = tok.encode("☃", add_bos=False, parse_special=False)
    if tok.model == "llama":
        snowman = [i for i in snowman if tok.token_to_piece(i) != b" "]
    pieces = b"".join(tok.token_to_piece(i) for i in snowman)
    assert pieces.endswith("☃".encode())
    byte_ids = [tok._byte_ids.get(b) for b in "☃".encode()]
    if None in byte_ids:  # BPE: bytes are characters of the GPT-2 map
        byte_ids = [tok.token_to_id[c] for c in ("â", "ĺ", "ĥ")]
    stream = tok.stream_decoder()
    assert stream.push(byte_ids[0]) == "" and stream.push(byte_ids[1]) == ""
    assert stream.flush() == "\ufffd"
    assert "".join(stream.push(i) for i in byte_ids) == "☃"


def test_every_special_token(tok: Tokenizer) -> None:
    """Each special-token string encodes to its id when special tokens are parsed, decodes to
    its text when asked to show specials, and to nothing (control, unknown) otherwise; with
    parsing off, no control token comes out of any of them."""
    for i in tok._special_ids:
        text = tok.tokens[i]
        assert tok.encode(text, add_bos=False, parse_special=True) == [i], text
        assert tok.decode([i], skip_special=False) == text
        hidden = tok.attrs[i] & (Attr.CONTROL | Attr.UNKNOWN)
        assert tok.decode([i]) == ("" if hidden else text)
        plain = tok.encode(text, add_bos=False, parse_special=False)
        assert not any(tok.attrs[j] & Attr.CONTROL for j in plain), text
    # all of them in one text, between words: each is found, in order
    rng = random.Random(0)
    order = list(tok._special_ids)
    rng.shuffle(order)
    text = " x ".join(tok.tokens[i] for i in order)
    found = [j for j in tok.encode(text, add_bos=False) if j in set(order)]
    assert found == order


@pytest.mark.parametrize(
    "text",
    [
        "a" * 30_000,
        " " * 30_000,
        "\n" * 30_000,
        "héllo wörld 🙂 " * 2_000,
        "".join(chr(c) for c in range(0x20, 0x3000) if not 0xD800 <= c <= 0xDFFF) * 2,
        "🙂" * 10_000,  # byte fallback for SentencePiece: 4 tokens a character
    ],
    ids=["a", "spaces", "newlines", "mixed", "unicode-range", "emoji"],
)
def test_very_long_inputs(tok: Tokenizer, text: str) -> None:
    drop = {*unspellable_bytes(tok), *b"<["}
    text = "".join(c for c in text if not drop.intersection(c.encode()) and c != SPM_SPACE)
    assert round_trips(tok, text)
    ids = tok.encode(text, add_bos=tok.bos_id is not None, parse_special=False)
    expected = text if tok.bos_id is not None or tok.model != "llama" else " " + text
    assert tok.decode(ids) == expected
    stream = tok.stream_decoder()
    assert "".join(stream.push(i) for i in ids) + stream.flush() == expected

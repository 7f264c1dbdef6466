"""Coverage-guided fuzz target (atheris): the tokenizers, on the real Phi-3 vocabulary
(SentencePiece) and, when PHIRT_SMOLLM2_GGUF names it, SmolLM2's (byte-level BPE).

The input picks a tokenizer and a mode: text (lone surrogates included) to encode and decode,
raw bytes decoded as a program would get them, or token ids to decode and stream. The only
exception allowed is InvalidArgumentError, and only where it is documented (a lone surrogate, an
id outside the vocabulary); text must round-trip wherever the vocabulary can spell it, and the
streaming decoder must give what decode() gives.

    python fuzz/fuzz_tokenizer.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris
from instrument import instrument_package

from phirt.errors import InvalidArgumentError
from phirt.tokenizer import Tokenizer, _bytes_to_unicode

ROOT = Path(__file__).resolve().parents[1]
PHI3 = ROOT / "tests" / "data" / "vocab" / "ggml-vocab-phi-3.gguf"


def load_tokenizers() -> list[tuple[Tokenizer, frozenset[int], tuple[str, ...]]]:
    """(tokenizer, bytes it cannot spell, special-token texts) for each vocabulary."""
    paths = [PHI3]
    smollm2 = os.environ.get("PHIRT_SMOLLM2_GGUF")
    if smollm2 and Path(smollm2).is_file():
        paths.append(Path(smollm2))
    out = []
    for p in paths:
        tok = Tokenizer.from_gguf(p)
        if tok._bpe is None:
            missing = frozenset(b for b in range(256) if b not in tok._byte_ids)
        else:
            chars = _bytes_to_unicode()
            missing = frozenset(b for b in range(256) if chars[b] not in tok.token_to_id)
        out.append((tok, missing, tuple(tok.tokens[i] for i in tok._special_ids)))
    return out


TOKENIZERS = load_tokenizers()


def check_text(tok: Tokenizer, missing: frozenset[int], specials: tuple[str, ...], text: str):
    try:
        ids = tok.encode(text, add_bos=True if tok.bos_id is not None else None)
    except InvalidArgumentError:
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            raise
        return
    assert all(0 <= i < tok.vocab_size for i in ids)
    decoded = tok.decode(ids)
    spellable = not missing.intersection(text.encode()) and not any(s in text for s in specials)
    if spellable and not (tok._bpe is None and "\u2581" in text):
        if tok.bos_id is None and tok._bpe is None and text:
            text = " " + text  # SentencePiece's prefix space, kept without a BOS
        assert decoded == text, (text, ids, decoded)
    check_ids(tok, ids)


def check_ids(tok: Tokenizer, ids: list[int]) -> None:
    valid = all(0 <= i < tok.vocab_size for i in ids)
    for skip in (True, False):
        try:
            text = tok.decode(ids, skip_special=skip)
        except InvalidArgumentError:
            assert not valid
            return
        stream = tok.stream_decoder(skip_special=skip)
        streamed = "".join(stream.push(i) for i in ids) + stream.flush()
        assert streamed == text, (ids, streamed, text)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    tok, missing, specials = TOKENIZERS[fdp.ConsumeIntInRange(0, len(TOKENIZERS) - 1)]
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        check_text(tok, missing, specials, fdp.ConsumeUnicode(fdp.remaining_bytes()))
    elif mode == 1:
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())
        check_text(tok, missing, specials, raw.decode("utf-8", errors="replace"))
        check_text(tok, missing, specials, raw.decode("utf-8", errors="surrogateescape"))
    else:
        n = tok.vocab_size
        count = fdp.ConsumeIntInRange(0, 64)
        check_ids(tok, [fdp.ConsumeIntInRange(-2, n + 1) for _ in range(count)])


def main() -> None:
    instrument_package("phirt")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Tokenizers against external references: llama.cpp's Phi-3 test vectors, and llama-cpp-python
(llama.cpp's own tokenizer) on the Phi-3 vocabulary and on the real SmolLM2 file."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import gguf
import pytest

from phirt.errors import FormatError, UnsupportedError
from phirt.formats.gguf import GGUFFile
from phirt.tokenizer import PRE_TOKENIZERS, Tokenizer, _split_merges
from smollm2 import smollm2_path

DATA = Path(__file__).parent / "data" / "vocab"
PHI3 = DATA / "ggml-vocab-phi-3.gguf"


def phi3_vectors() -> list[tuple[str, list[int]]]:
    """llama.cpp's tests/test-tokenizer-0 format: texts each followed by the line
    "__ggml_vocab_test__" (the newline before it is not part of the text), and the expected ids,
    without BOS, one line per text."""
    texts = (DATA / "ggml-vocab-phi-3.gguf.inp").read_text(encoding="utf-8")
    texts_list = texts.split("\n__ggml_vocab_test__\n")
    assert texts_list[-1] == ""  # the file ends with a separator
    lines = (DATA / "ggml-vocab-phi-3.gguf.out").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    texts_list, lines = texts_list[:-1], lines[:-1]
    assert len(texts_list) == len(lines) == 46
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts_list, lines, strict=True)]


VECTORS = phi3_vectors()
VECTOR_IDS = [f"{i}:{t[:20]!r}" for i, (t, _) in enumerate(VECTORS)]


@pytest.fixture(scope="module")
def phi3() -> Tokenizer:
    return Tokenizer.from_gguf(PHI3)


@pytest.fixture(scope="module")
def phi3_ref() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    ref = llama_cpp.Llama(model_path=str(PHI3), vocab_only=True, verbose=False)
    yield ref
    ref.close()


# -- Phi-3 (SentencePiece-style) ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "ids"), VECTORS, ids=VECTOR_IDS)
def test_phi3_reference_vectors(phi3: Tokenizer, text: str, ids: list[int]) -> None:
    # test-tokenizer-0 tokenizes with add_special=false, parse_special=false
    assert phi3.encode(text, add_bos=False, parse_special=False) == ids


@pytest.mark.parametrize(("text", "ids"), VECTORS, ids=VECTOR_IDS)
def test_phi3_round_trip(phi3: Tokenizer, text: str, ids: list[int]) -> None:
    encoded = phi3.encode(text)
    assert encoded == [phi3.bos_id, *ids]
    assert phi3.decode(encoded) == text  # the space prefixed after BOS is not text
    # without BOS there is nothing to say the first space was added: kept, as llama-cpp-python does
    assert phi3.decode(ids) == (" " + text if text else "")


def test_phi3_special_tokens(phi3: Tokenizer) -> None:
    for name in ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>"):
        assert phi3.encode(name, add_bos=False) == [phi3.token_to_id[name]]
        assert phi3.is_special(phi3.token_to_id[name])
    # general.name "Phi3": llama.cpp strips the whitespace after Phi-3's turn markers
    prompt = "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert phi3.encode(prompt) == [1, 32010, 6324, 32007, 32001]
    # user text cannot forge a turn marker
    assert 32007 not in phi3.encode("<|end|>", parse_special=False)
    assert phi3.eot_ids == {2, 32000, 32007}  # </s>, <|endoftext|> (EOS), <|end|>
    assert phi3.decode([1, 32010, 6324, 32007], skip_special=False) == "<s><|user|> Hi<|end|>"


def test_phi3_strip_rule_follows_general_name(phi3: Tokenizer) -> None:
    # llama.cpp keys the rule on general.name; Phi-3.5 files are named "Phi 3.5 Mini Instruct"
    meta = dict(GGUFFile(PHI3).metadata, **{"general.name": "Phi 3.5 Mini Instruct"})
    renamed = Tokenizer.from_metadata(meta, "phi35.gguf")
    assert renamed.encode("<|user|>\nHi<|end|>\n") == [1, 32010, 29871, 13, 18567, 32007, 29871, 13]


PHI3_TEXTS = [
    "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi there!<|end|>\n<|assistant|>\n",
    "<|user|>  spaced   <|end|>  <|assistant|>",
    "</s> after eos <s> bos <unk> unk [PAD32011] pad <|endoftext|> end",
    "<|placeholder1|><|placeholder2|>x",
    "<|user|",  # not quite a special token
]


@pytest.mark.llamacpp
@pytest.mark.parametrize("text", PHI3_TEXTS + [t for t, _ in VECTORS[::5]])
def test_phi3_matches_llama_cpp(phi3: Tokenizer, phi3_ref: Any, text: str) -> None:
    for parse_special in (True, False):
        for add in (True, False):
            ids = phi3_ref.tokenize(text.encode(), add_bos=add, special=parse_special)
            assert phi3.encode(text, add_bos=add, parse_special=parse_special) == ids
            for skip in (True, False):
                assert phi3.detokenize(ids, skip) == phi3_ref.detokenize(ids, special=not skip)


def test_stream_decoder_never_splits_a_character(phi3: Tokenizer) -> None:
    text = "naïve café 🦙 中文 ok 😶‍🌫️"
    ids = phi3.encode(text)
    assert sum(phi3.types[i] == gguf.TokenType.BYTE for i in ids) >= 4  # byte fallback in play
    stream = phi3.stream_decoder()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == phi3.decode(ids) == text
    assert "\ufffd" not in "".join(pieces)
    assert "" in pieces[1:-1]  # some tokens completed no character and emitted nothing


def test_stream_decoder_options(phi3: Tokenizer) -> None:
    reply = phi3.encode("Hello there", add_bos=False)  # a generated reply starts "▁Hello"
    plain = phi3.stream_decoder()
    assert "".join(plain.push(i) for i in reply) == " Hello there"
    chat = phi3.stream_decoder(strip_leading_space=True)
    assert "".join(chat.push(i) for i in reply) == "Hello there"
    shown = phi3.stream_decoder(skip_special=False)
    assert shown.push(32007) == "<|end|>"
    cut = phi3.stream_decoder()
    byte_ids = phi3.encode("🦙", add_bos=False)[1:]  # after "▁": four <0xNN> tokens
    assert [cut.push(i) for i in byte_ids[:2]] == ["", ""]
    assert cut.flush() == "\ufffd"  # an unfinished character is not lost silently


def test_from_gguf_sources(phi3: Tokenizer) -> None:
    text = "<|user|>\nsources agree 🦙<|end|>"
    expected = phi3.encode(text)
    file = GGUFFile(PHI3)
    for source in (str(PHI3), PHI3, file, gguf.GGUFReader(PHI3)):
        tok = Tokenizer.from_gguf(source)
        assert tok.encode(text) == expected
        assert tok.path is not None and Path(tok.path).name == PHI3.name
    assert Tokenizer.from_metadata(file.metadata).encode(text) == expected
    with pytest.raises(TypeError):
        Tokenizer.from_gguf(42)


# -- errors ------------------------------------------------------------------------------------

BPE_META: dict[str, Any] = {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "smollm",
    "tokenizer.ggml.tokens": ["a", "b", "ab"],
    "tokenizer.ggml.merges": ["a b"],
}


def test_tiny_bpe_vocabulary() -> None:
    tok = Tokenizer.from_metadata(BPE_META)
    assert tok.encode("abba") == [2, 1, 0]
    assert tok.decode([2, 1, 0]) == "abba"


@pytest.mark.parametrize(
    ("merges", "words"),
    [
        (["a b", "a b"], {"ab": [2], "ba": [1, 0]}),  # a duplicate: llama.cpp keeps the first
        (["a b", "b a"], {"ab": [2], "ba": [1, 0]}),  # "ba" is no token: spelled out
        (["a b", "x y"], {"ab": [2]}),  # parts that are no tokens
    ],
)
def test_merges_tokenizers_rejects_still_encode_as_llama_cpp(
    merges: list[str], words: dict
) -> None:
    tok = Tokenizer.from_metadata({**BPE_META, "tokenizer.ggml.merges": merges})
    assert {w: tok.encode(w) for w in words} == words


def test_merges_split_at_the_first_space_after_the_first_character() -> None:
    assert _split_merges(["a b", "cd ef"], None) == (["a", "cd"], ["b", "ef"])
    assert _split_merges(["a  b", " a b", "a b c"], None) == (["a", " a", "a"], [" b", "b", "b c"])
    with pytest.raises(FormatError, match="'ab' has no space"):
        _split_merges(["a b", "ab"], "model.gguf")


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"tokenizer.ggml.pre": "klingon"}, UnsupportedError, "pre-tokenizer 'klingon'"),
        ({"tokenizer.ggml.model": "t5"}, UnsupportedError, "tokenizer model 't5'"),
        ({"tokenizer.ggml.model": None}, FormatError, "tokenizer.ggml.model"),
        ({"tokenizer.ggml.tokens": None}, FormatError, "tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.tokens": ["a", "a", "ab"]}, FormatError, "duplicate"),
        ({"tokenizer.ggml.merges": None}, FormatError, "merges"),
        ({"tokenizer.ggml.bos_token_id": 3}, FormatError, "bos_token_id"),
        ({"tokenizer.ggml.token_type": [1, 1]}, FormatError, "token_type"),
        ({"tokenizer.ggml.token_type": [1, 6, 1]}, FormatError, "<0xNN>"),
        ({"tokenizer.ggml.add_bos_token": True}, FormatError, "no BOS"),
    ],
)
def test_errors_name_the_problem_and_file(change: dict, error: type, message: str) -> None:
    meta = {k: v for k, v in {**BPE_META, **change}.items() if v is not None}
    with pytest.raises(error, match=message) as info:
        Tokenizer.from_metadata(meta, "model.gguf")
    assert str(info.value).startswith("model.gguf: ") and "\n" not in str(info.value)


def test_pre_tokenizer_table_uses_llama_cpp_names() -> None:
    assert {"default", "gpt-2", "phi-2", "smollm", "llama-bpe", "qwen2", "gpt-4o"} <= set(
        PRE_TOKENIZERS
    )
    assert PRE_TOKENIZERS["llama-bpe"].ignore_merges and not PRE_TOKENIZERS["qwen2"].ignore_merges


# -- SmolLM2 (byte-level BPE) against llama-cpp-python ------------------------------------------

SMOL_TEXTS = [
    "Hello world",
    " Hello  world ",
    "I'm sure it's fine, we'll see. They've gone; you'd know. I'M LOUD, YOU'LL SEE",
    "emoji 🦙🚀 and family 👩‍👩‍👧 and flags 🇫🇷 😶‍🌫️",
    "中文测试，日本語のテキスト、한국어",
    "def f(x):\n\treturn x**2  # comment\n",
    "   \n\n\t  spaces   and\ttabs\t\t",
    "    indented\n        more\n",
    "12345 3.14159 1,000,000 0xFF 2024-01-31",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><reponame>x<file_sep>",
    "Ünïcödé façade naïve Ελληνικά русский العربية हिन्दी",
    "a\r\nb\rc",
    "!!!???... --- ''' \"\"\"",
    "CamelCaseWord HTTPServer snake_case",
    "\u00a0non-breaking\u2003em space\u200bzero width",
    "",
    " ",
]


@pytest.fixture(scope="module")
def smol() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    path = smollm2_path()
    ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield Tokenizer.from_gguf(path), ref
    ref.close()


@pytest.mark.llamacpp
@pytest.mark.parametrize("text", SMOL_TEXTS)
def test_smollm2_matches_llama_cpp(smol: Any, text: str) -> None:
    tok, ref = smol
    for parse_special in (True, False):
        # llama-cpp-python's add_bos=True means "add the file's special tokens" (none here)
        ids = ref.tokenize(text.encode(), add_bos=True, special=parse_special)
        assert tok.encode(text, parse_special=parse_special) == ids
        assert tok.encode(text, add_bos=False, parse_special=parse_special) == ids
        for skip in (True, False):
            assert tok.detokenize(ids, skip) == ref.detokenize(ids, special=not skip)
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special=False) == text
    stream = tok.stream_decoder(skip_special=False)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == text


@pytest.mark.llamacpp
def test_smollm2_random_texts_match_llama_cpp(smol: Any) -> None:
    tok, ref = smol
    rng = random.Random(1234)
    alphabet = list("abcXYZ éÉß日本語한🦙😶‍👩 \n\t\r  '0123456789.,!?-_()<>|/$")
    alphabet += list(" \u0301Ωω Жж ٣ अ ไ\u00a0")
    words = ["Hello", " world", "I'm", "you'll", "ÉCOLE", "<|im_start|>", "<|im_end|>", "  "]
    for _ in range(300):
        text = "".join(
            rng.choice(words) if rng.random() < 0.2 else rng.choice(alphabet)
            for _ in range(rng.randint(0, 30))
        )
        assert tok.encode(text) == ref.tokenize(text.encode(), add_bos=True, special=True), text


@pytest.mark.llamacpp
def test_smollm2_stream_decoding_of_split_characters(smol: Any) -> None:
    tok, _ = smol
    text = "rare: 𓀀 𝔘𝔫𝔦 🫠🫨 ꙮ"
    ids = tok.encode(text)
    pieces = [tok.token_to_piece(i) for i in ids]
    assert any(_is_partial_utf8(p) for p in pieces)  # some characters span tokens
    stream = tok.stream_decoder()
    out = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(out) == tok.decode(ids) == text
    assert "\ufffd" not in "".join(out)


@pytest.mark.llamacpp
def test_smollm2_eot_ids_match_llama_cpp(smol: Any) -> None:
    tok, ref = smol
    import llama_cpp

    vocab = ref._model.vocab
    eog = {i for i in range(tok.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    assert tok.eot_ids == eog == {0, 2, 4}  # <|endoftext|>, <|im_end|> (EOS), <reponame> (FIM)


def test_bpe_keeps_a_leading_space_after_bos(smol: Any) -> None:
    # llama-cpp-python strips a space after BOS for every vocabulary; phirt only undoes the
    # SentencePiece space prefix, since byte-level BPE adds none (that space is the user's)
    tok, _ = smol
    assert tok.decode([tok.bos_id, *tok.encode(" hi")]) == " hi"


def _is_partial_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# Every distinct pre-tokenizer of the table, on SmolLM2's vocabulary relabelled, against
# llama.cpp on the same relabelled file (Phi-4-mini's "gpt-4o" among them).
PRE_NAMES = ["default", "gpt-2", "smollm", "llama-bpe", "qwen2", "gpt-4o"]


def _relabelled(src: Path, dst: Path, overrides: dict[str, Any]) -> Path:
    """A vocabulary-only copy of src's metadata with some values replaced."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = overrides.get(name, field.contents())
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, field.types[0], sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return dst


@pytest.mark.llamacpp
@pytest.mark.slow
@pytest.mark.parametrize("pre", PRE_NAMES)
def test_pre_tokenizers_match_llama_cpp(tmp_path: Path, pre: str) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    path = _relabelled(smollm2_path(), tmp_path / f"smol-{pre}.gguf", {"tokenizer.ggml.pre": pre})
    tok = Tokenizer.from_gguf(path)
    ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        for text in SMOL_TEXTS + [t for t, _ in VECTORS]:
            expected = ref.tokenize(text.encode(), add_bos=False, special=True)
            assert tok.encode(text, add_bos=False) == expected, (pre, text)
    finally:
        ref.close()


@pytest.mark.llamacpp
@pytest.mark.parametrize("name", ["Phi 3.5 Mini Instruct", "phi-3-mini-4k"])
def test_phi3_strip_rule_matches_llama_cpp(tmp_path: Path, name: str) -> None:
    """The general.name rule of test_phi3_strip_rule_follows_general_name, held to llama.cpp on
    the Phi-3 vocabulary renamed: one name it does not apply to, one other spelling it does."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = _relabelled(PHI3, tmp_path / "renamed.gguf", {"general.name": name})
    tok = Tokenizer.from_gguf(path)
    ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        for text in PHI3_TEXTS:
            assert tok.encode(text) == ref.tokenize(text.encode(), add_bos=True, special=True)
    finally:
        ref.close()

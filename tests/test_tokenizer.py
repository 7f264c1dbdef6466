"""Tokenizers against references: llama.cpp's Phi-3 test vectors and llama-cpp-python on SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest

from phirt.errors import UnsupportedError
from phirt.tokenizer import Tokenizer
from smollm2 import smollm2_path

DATA = Path(__file__).parent / "data" / "vocab"
PHI3 = DATA / "ggml-vocab-phi-3.gguf"


def phi3_vectors() -> list[tuple[str, list[int]]]:
    # llama.cpp's test-tokenizer-0 format: texts separated by "\n__ggml_vocab_test__\n",
    # ids without BOS one line per text, tokenized without parsing special tokens.
    texts = (DATA / "ggml-vocab-phi-3.gguf.inp").read_text(encoding="utf-8")
    texts = texts.split("\n__ggml_vocab_test__\n")[:-1]
    ids = (DATA / "ggml-vocab-phi-3.gguf.out").read_text(encoding="utf-8").split("\n")
    assert len(texts) == 46 and len(ids) >= len(texts)
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, ids, strict=False)]


VECTORS = phi3_vectors()


@pytest.fixture(scope="module")
def phi3() -> Tokenizer:
    return Tokenizer.from_gguf(PHI3)


@pytest.mark.parametrize(("text", "ids"), VECTORS, ids=[repr(t)[:30] for t, _ in VECTORS])
def test_phi3_reference_vectors(phi3: Tokenizer, text: str, ids: list[int]) -> None:
    assert phi3.encode(text, add_bos=False, parse_special=False) == ids


@pytest.mark.parametrize(("text", "ids"), VECTORS, ids=[repr(t)[:30] for t, _ in VECTORS])
def test_phi3_round_trip(phi3: Tokenizer, text: str, ids: list[int]) -> None:
    assert phi3.decode(ids) == text


def test_phi3_special_tokens_are_single_tokens(phi3: Tokenizer) -> None:
    ids = phi3.encode("<|user|>\nHi<|end|>\n<|assistant|>\n")
    assert ids[0] == phi3.bos_id
    specials = [phi3.tokens[i] for i in ids if phi3.is_special(i)]
    assert specials[-3:] == ["<|user|>", "<|end|>", "<|assistant|>"]
    assert phi3.token_to_id["<|end|>"] in phi3.eot_ids
    # without parse_special a control token is plain text
    assert len(phi3.encode("<|end|>", add_bos=False, parse_special=False)) > 1


def test_stream_decoder_never_splits_a_character(phi3: Tokenizer) -> None:
    text = "naïve café 🦙 中文 ok"
    ids = phi3.encode(text, add_bos=False)
    assert any(phi3.types[i] == 6 for i in ids)  # byte-fallback tokens in play
    stream = phi3.stream_decoder()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_unknown_pre_tokenizer_is_named() -> None:
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "klingon",
        "tokenizer.ggml.tokens": ["a", "b", "ab"],
        "tokenizer.ggml.merges": ["a b"],
    }
    with pytest.raises(UnsupportedError, match="pre-tokenizer 'klingon'"):
        Tokenizer.from_metadata(meta, "x.gguf")


SMOL_TEXTS = [
    "Hello world",
    " Hello  world ",
    "I'm sure it's fine, we'll see. They've gone; you'd know.",
    "emoji 🦙🚀 and family 👩‍👩‍👧 and flags 🇫🇷",
    "中文测试，日本語のテキスト、한국어",
    "def f(x):\n\treturn x**2  # comment\n",
    "   \n\n\t  spaces   and\ttabs\t\t",
    "12345 3.14159 1,000,000 0xFF",
    "<|im_start|>user\nHi<|im_end|>\n",
    "Ünïcödé façade naïve Ελληνικά русский",
    "a\r\nb",
    "!!!???... ---",
    "CamelCaseWord HTTPServer snake_case",
    "",
    " ",
]


@pytest.fixture(scope="module")
def smol():
    llama_cpp = pytest.importorskip("llama_cpp")
    path = smollm2_path()
    ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield Tokenizer.from_gguf(path), ref
    ref.close()


@pytest.mark.llamacpp
@pytest.mark.parametrize("text", SMOL_TEXTS)
def test_smollm2_matches_llama_cpp(smol, text: str) -> None:
    tok, ref = smol
    # llama-cpp-python's add_bos=True means "add the file's special tokens" (none for SmolLM2)
    assert tok.encode(text) == ref.tokenize(text.encode(), add_bos=True, special=True)
    ids = tok.encode(text, parse_special=False)
    assert ids == ref.tokenize(text.encode(), add_bos=False, special=False)
    assert tok.decode(ids) == ref.detokenize(ids).decode()
    stream = tok.stream_decoder()
    assert "".join(stream.push(i) for i in ids) + stream.flush() == text

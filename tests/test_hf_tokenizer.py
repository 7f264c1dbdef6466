"""formats/hf_tokenizer.py: Hugging Face tokenizer files -> GGUF tokenizer metadata -> phirt's
Tokenizer, on the real Phi-3 vocabulary in tokenizer.json form (all an ONNX Phi-3 folder carries).

References: llama.cpp's Phi-3 test vectors (tests/data/vocab), the `tokenizers` library reading
the same tokenizer.json, onnxruntime-genai's tokenizer, and llama.cpp on a GGUF file that
`phirt quantize` wrote from such a folder. The tokenizer.json is made offline by transformers from
the GGUF vocabulary (onnx_factory.make_tokenizer_files), byte fallback and added tokens included.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from onnx_factory import OnnxFactory
from phirt.formats.hf_tokenizer import is_spm_style, strip_metadata, tokenizer_metadata
from phirt.tokenizer import SPM_SPACE, Tokenizer
from test_tokenizer import PHI3, VECTOR_IDS, VECTORS

TURN = "<|user|>\nHi<|end|>\n<|assistant|>\nx"


@pytest.fixture(scope="module")
def phi3_dir(onnx_models: OnnxFactory) -> Path:
    return onnx_models.tokenizer_dir


@pytest.fixture(scope="module")
def phi3_json(phi3_dir: Path) -> Tokenizer:
    return Tokenizer(tokenizer_metadata(phi3_dir, "Phi3ForCausalLM", 32064), phi3_dir)


@pytest.fixture(scope="module")
def hf(phi3_dir: Path) -> Any:
    from tokenizers import Tokenizer as HfTokenizer

    return HfTokenizer.from_file(str(phi3_dir / "tokenizer.json"))


def test_phi3_json_is_a_sentencepiece_vocabulary(phi3_dir: Path) -> None:
    spec = json.loads((phi3_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert is_spm_style(spec)
    meta = tokenizer_metadata(phi3_dir, "Phi3ForCausalLM", 32064)
    assert meta["tokenizer.ggml.model"] == "llama"  # not gpt2: no literal U+2581 when decoding
    assert meta["tokenizer.ggml.pre"] == "default"
    ref = Tokenizer.from_gguf(PHI3)
    assert meta["tokenizer.ggml.tokens"] == ref.tokens
    # byte, control and user-defined tokens typed as the original file types them; the file's
    # [PAD{i}] fillers came over as plain vocabulary entries (the original calls them unknown)
    types = meta["tokenizer.ggml.token_type"]
    differ = [i for i, (a, b) in enumerate(zip(types, ref.types, strict=True)) if a != b]
    assert all(ref.tokens[i].startswith("[PAD") for i in differ)
    for key in ("bos", "eos", "unknown"):
        k = f"tokenizer.ggml.{key}_token_id"
        assert meta[k] == {"bos": ref.bos_id, "eos": ref.eos_id, "unknown": ref.unk_id}[key]
    assert meta["tokenizer.ggml.add_bos_token"] is True  # the post-processor's <s>
    assert meta["tokenizer.chat_template"].startswith("{{ bos_token }}")


@pytest.mark.parametrize(("text", "ids"), VECTORS, ids=VECTOR_IDS)
def test_phi3_json_reference_vectors(
    phi3_json: Tokenizer, hf: Any, text: str, ids: list[int]
) -> None:
    # llama.cpp's vectors: no BOS, special tokens not parsed
    assert phi3_json.encode(text, add_bos=False, parse_special=False) == ids
    assert hf.encode(text, add_special_tokens=False).ids == ids  # the file itself agrees
    encoded = phi3_json.encode(text)
    assert encoded == [phi3_json.bos_id, *ids]
    assert phi3_json.decode(encoded) == text


def test_phi3_json_random_texts_match_tokenizers(phi3_json: Tokenizer, hf: Any) -> None:
    """Random mixes of words, punctuation, whitespace runs, accents, CJK and emoji (byte fallback)
    against the tokenizers library on the same tokenizer.json."""
    rng = random.Random(7)
    pieces = ["Hello", "world", " ", "  ", "\n", "\t", "é", "ñandú", "東京", "🦙", "🚀👍", "3.14",
              "don't", "<b>", "—", "∑", "ΑΒΓ", "x", "...", "\u00a0", "Ω", "🙂"]  # fmt: skip
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        ids = phi3_json.encode(text, add_bos=False, parse_special=False)
        assert ids == hf.encode(text, add_special_tokens=False).ids, repr(text)
        assert phi3_json.decode(ids) == " " + text  # no BOS: the added space stays, no ▁
        assert SPM_SPACE not in phi3_json.decode(ids)


def test_phi3_json_byte_fallback_and_specials(phi3_json: Tokenizer) -> None:
    ids = phi3_json.encode("🦙", add_bos=False)
    assert [phi3_json.tokens[i] for i in ids] == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    assert phi3_json.decode(ids) == " 🦙"
    for name in ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>"):
        assert phi3_json.encode(name, add_bos=False) == [phi3_json.token_to_id[name]]
        assert phi3_json.is_special(phi3_json.token_to_id[name])
    assert 32007 not in phi3_json.encode("<|end|>", parse_special=False)
    assert phi3_json.encode("</s>", add_bos=False) == [2]  # user-defined: matched even as text


def test_strip_flags_come_from_tokenizer_json(phi3_dir: Path, tmp_path: Path, hf: Any) -> None:
    """tokenizer.json's rstrip (Microsoft's Phi-3 sets it on the turn markers) is followed, as the
    tokenizers library and onnxruntime-genai follow it; without it nothing is stripped."""
    from tokenizers import Tokenizer as HfTokenizer

    plain = Tokenizer({**tokenizer_metadata(phi3_dir), **strip_metadata(phi3_dir)})
    assert plain.encode(TURN, add_bos=False) == hf.encode(TURN, add_special_tokens=False).ids
    folder = tmp_path / "tok"
    shutil.copytree(phi3_dir, folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    for a in spec["added_tokens"]:
        a["rstrip"] = a["content"] in ("<|user|>", "<|end|>", "<|assistant|>")
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    assert strip_metadata(folder) == {"phirt.tokenizer.rstrip_ids": [32001, 32007, 32010]}
    stripped = Tokenizer({**tokenizer_metadata(folder), **strip_metadata(folder)})
    ref = HfTokenizer.from_file(str(folder / "tokenizer.json"))
    assert stripped.encode(TURN, add_bos=False) == ref.encode(TURN, add_special_tokens=False).ids
    assert stripped.encode(TURN, add_bos=False) == [32010, 6324, 32007, 32001, 921]


def test_quantize_writes_a_llama_vocabulary_llama_cpp_reads(
    onnx_models: OnnxFactory, tmp_path: Path
) -> None:
    """`phirt quantize` on a Phi-3 folder with tokenizer.json and no tokenizer.model: the GGUF's
    vocabulary is `llama`, and llama.cpp tokenizes and detokenizes it as the original file."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from onnx_factory import SPECS, write_checkpoint
    from phirt.quantize import quantize

    hf_dir = write_checkpoint(SPECS["phi3"], tmp_path / "hf", onnx_models.tokenizer_dir)
    assert not (hf_dir / "tokenizer.model").exists()
    out = tmp_path / "phi3-q8_0.gguf"
    quantize(hf_dir, out, "q8_0")
    ours = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    ref = llama_cpp.Llama(str(PHI3), vocab_only=True, verbose=False)
    try:
        for text, ids in VECTORS:
            got = ours.tokenize(text.encode(), add_bos=False, special=False)
            assert got == ids == ref.tokenize(text.encode(), add_bos=False, special=False)
        ids = ours.tokenize(b"Hello world", add_bos=True, special=False)
        assert ours.detokenize(ids) == b"Hello world"  # not "▁Hello▁world" nor [UNK_BYTE_...]
        phirt_tok = Tokenizer.from_gguf(out)
        assert phirt_tok.model == "llama"
        assert phirt_tok.decode(phirt_tok.encode("Hello world")) == "Hello world"
    finally:
        ours.close()
        ref.close()


def test_onnx_genai_tokenizer_agrees(onnx_models: OnnxFactory, phi3_json: Tokenizer) -> None:
    """onnxruntime-genai's own tokenizer on a folder carrying this tokenizer.json: the same ids
    (it adds no BOS; literal U+2581 in the input is the one place it differs from llama.cpp)."""
    og = pytest.importorskip("onnxruntime_genai")
    folder = onnx_models.get("phi3")
    tok = og.Tokenizer(og.Model(str(folder)))
    for text, _ in VECTORS:
        if SPM_SPACE in text:
            continue
        assert list(tok.encode(text)) == phirt_ids(phi3_json, text), repr(text)
    assert list(tok.encode(TURN)) == phi3_json.encode(TURN, add_bos=False)


def phirt_ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_bos=False, parse_special=True)

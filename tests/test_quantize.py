"""The quantizer (phirt.quantize) against external references.

Tiny random Hugging Face checkpoints are written here with transformers' own config and model
classes (save_pretrained -> safetensors) and real trained tokenizers (sentencepiece, tokenizers).
References: transformers' forward pass on the folder, llama.cpp (llama-cpp-python 0.3.36: it must
load every output, produce the same logits, tokenize the same, and its own quantizer must produce
the same bytes from the same F16 file), gguf-py's reader. phirt's engine, where it is checked, is
held to transformers, never to phirt itself.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType

from greedy import assert_same_greedy, llama_cpp_greedy, phirt_greedy
from model_factory import ModelFactory, llama_cpp_quantize, requires_llama_cpp
from phirt import load
from phirt.errors import QuantizeError
from phirt.quantize import FILE_TYPES, open_source, plan, quantize

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

T = GGMLQuantizationType
TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Phi models run on small devices: phones, PCs and IoT boards.",
    "Quantization trades bits for accuracy; 4-bit weights are 8x smaller than f32!",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000, symbols #$%&*()[]{} and tabs\tor\nnewlines.",
]
SAMPLE = "The lazy fox runs 42 quick models on small boards.\nPhi!"
PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
LLAMA_FTYPES = {
    "q4_0": LlamaFileType.MOSTLY_Q4_0,
    "q4_1": LlamaFileType.MOSTLY_Q4_1,
    "q5_0": LlamaFileType.MOSTLY_Q5_0,
    "q5_1": LlamaFileType.MOSTLY_Q5_1,
    "q8_0": LlamaFileType.MOSTLY_Q8_0,
    "q6_k": LlamaFileType.MOSTLY_Q6_K,
    "q5_k_m": LlamaFileType.MOSTLY_Q5_K_M,
    "q5_k_s": LlamaFileType.MOSTLY_Q5_K_S,
    "q4_k_m": LlamaFileType.MOSTLY_Q4_K_M,
    "q4_k_s": LlamaFileType.MOSTLY_Q4_K_S,
    "f16": LlamaFileType.MOSTLY_F16,
    "bf16": LlamaFileType.MOSTLY_BF16,
}


# -- tiny checkpoints ------------------------------------------------------------------------


def _train_spm(folder: Path, vocab_size: int = 384) -> int:
    spm = pytest.importorskip("sentencepiece")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 20),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        # as Llama's and Phi-3's tokenizer.model: no NFKC, whitespace kept (llama.cpp does neither)
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).vocab_size()


def _train_bpe(folder: Path, specials: list[str], vocab_size: int = 400) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT * 20, trainer)
    tok.save(str(folder / "tokenizer.json"))
    return tok.get_vocab_size()


def _init_weights(model: Any, seed: int) -> None:
    """Weights ~ 1/sqrt(fan_in) so every block moves the residual stream and logits spread."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                gain = 1.0 if "embed" in name else 1.5
                p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(p.shape[1]))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _save(model: Any, folder: Path, tok_config: dict[str, Any], **kw: Any) -> Path:
    model.save_pretrained(folder, safe_serialization=True, **kw)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config), encoding="utf-8")
    return folder


def make_phi3(
    folder: Path,
    *,
    longrope: bool = False,
    partial_tied: bool = False,
    hidden: int = 256,
    dtype: str = "float32",
    seed: int = 0,
    shard: str | None = None,
    sliding_window: int | None = None,
) -> Path:
    """Phi-3-mini-like (SentencePiece + Phi-3 special tokens); longrope: Phi-3-mini-128k-like;
    partial_tied: Phi-4-mini-like (GPT-2 BPE, partial rotary 3/4, tied embeddings, GQA);
    sliding_window: Phi-3-mini-4k-like local attention over that many tokens."""
    folder.mkdir(parents=True)
    n_head = hidden // 32
    if partial_tied:
        n_vocab = _train_bpe(folder, ["<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>"])
        tok_config = {
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "add_bos_token": False,
            "chat_template": TEMPLATE,
        }
    else:
        n_spm = _train_spm(folder)
        n_vocab = n_spm + len(PHI3_SPECIALS) + 3
        tok_config = {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": "<s>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<unk>",
            "chat_template": TEMPLATE,
            "added_tokens_decoder": {
                str(n_spm + i): {"content": t, "special": True} for i, t in enumerate(PHI3_SPECIALS)
            },
        }
    kw: dict[str, Any] = {}
    if longrope:
        half = 16
        kw["rope_scaling"] = {
            "type": "longrope",
            "long_factor": np.geomspace(1.0, 16.0, half).tolist(),
            "short_factor": (1.0 + 0.25 * np.linspace(0, 1, half) ** 2).tolist(),
        }
        kw["original_max_position_embeddings"] = 256
    config = transformers.Phi3Config(
        vocab_size=n_vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=n_head,
        num_key_value_heads=n_head // 2 if partial_tied else n_head,
        max_position_embeddings=1024 if longrope else 4096,
        partial_rotary_factor=0.75 if partial_tied else 1.0,
        tie_word_embeddings=partial_tied,
        sliding_window=sliding_window,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **kw,
    )
    model = transformers.Phi3ForCausalLM(config)
    _init_weights(model, seed)
    if partial_tied:  # tied logits = h . E^T: keep embeddings small so one token does not win
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(0.3)
    model.to(getattr(torch, dtype))
    return _save(model, folder, tok_config, **({"max_shard_size": shard} if shard else {}))


def make_phi2(folder: Path, hidden: int = 256, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    n_vocab = _train_bpe(folder, ["<|endoftext|>"])
    config = transformers.PhiConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=2,
        num_attention_heads=hidden // 32,
        partial_rotary_factor=0.4,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.PhiForCausalLM(config)
    _init_weights(model, seed)
    tok_config = {"tokenizer_class": "CodeGenTokenizer", "bos_token": "<|endoftext|>",
                  "eos_token": "<|endoftext|>"}  # fmt: skip
    return _save(model, folder, tok_config)


def make_llama(folder: Path, hidden: int = 256, seed: int = 0, n_head: int | None = None) -> Path:
    folder.mkdir(parents=True)
    n_vocab = _train_spm(folder)
    n_head = n_head or hidden // 32
    config = transformers.LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden + 256,
        num_hidden_layers=2,
        num_attention_heads=n_head,
        num_key_value_heads=n_head // 2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config)
    _init_weights(model, seed)
    tok_config = {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>",
                  "unk_token": "<unk>", "chat_template": TEMPLATE}  # fmt: skip
    return _save(model, folder, tok_config)


CHECKPOINTS = {
    "phi3": lambda d: make_phi3(d),
    "phi3_longrope": lambda d: make_phi3(d, longrope=True),
    "phi4mini_like": lambda d: make_phi3(d, partial_tied=True),
    "phi2": lambda d: make_phi2(d),
    "llama": lambda d: make_llama(d),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: make(root / name) for name, make in CHECKPOINTS.items()}


@pytest.fixture(scope="module")
def converted(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    return {
        name: quantize(src, out / f"{name}-f32.gguf", "f32").path
        for name, src in checkpoints.items()
    }  # type: ignore[misc]


def hf_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].double().numpy()


def llama_logits(path: Path | str, tokens: list[int], n_ctx: int = 128) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float64)


def _tokens(n_vocab: int, n: int = 24, seed: int = 3) -> list[int]:
    return np.random.default_rng(seed).integers(3, n_vocab, n).tolist()


def _n_vocab(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["vocab_size"]


# -- HF -> GGUF F32: llama.cpp and phirt agree with transformers -----------------------------

# Tolerance: llama.cpp keeps K/V in f16 and phirt rounds Q/K/V products to f16 as ggml does; on
# these models (logits spread ~ +-5) that moves logits by ~1e-3. A wrong rotary layout, norm or
# name mapping moves them by O(1).
LOGIT_ATOL = 2e-2


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_f32_logits_llama_cpp_match_transformers(
    name: str, checkpoints: dict[str, Path], converted: dict[str, Path]
) -> None:
    tokens = _tokens(_n_vocab(checkpoints[name]))
    ref = hf_logits(checkpoints[name], tokens)
    got = llama_logits(converted[name], tokens)
    assert np.abs(ref).max() > 1.0  # the model is not degenerate
    np.testing.assert_allclose(got, ref, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_f32_logits_phirt_match_transformers(
    name: str, checkpoints: dict[str, Path], converted: dict[str, Path]
) -> None:
    tokens = _tokens(_n_vocab(checkpoints[name]))
    ref = hf_logits(checkpoints[name], tokens)
    got = load(converted[name], n_ctx=128).logits(tokens)
    np.testing.assert_allclose(got, ref, atol=LOGIT_ATOL, rtol=0)


def test_phi3_sliding_window_matches_transformers(tmp_path: Path) -> None:
    """llama.cpp ignores Phi-3's sliding window, so transformers is the reference here: with a
    window of 8 over 24 tokens, phirt must match its local attention (and not full attention)."""
    folder = make_phi3(tmp_path / "phi3_swa", sliding_window=8)
    gguf_path = quantize(folder, tmp_path / "phi3_swa-f32.gguf", "f32").path
    tokens = _tokens(_n_vocab(folder))
    ref = hf_logits(folder, tokens)
    got = load(gguf_path, n_ctx=128).logits(tokens)
    np.testing.assert_allclose(got, ref, atol=LOGIT_ATOL, rtol=0)
    full = make_phi3(tmp_path / "phi3_full")
    assert np.abs(hf_logits(full, tokens)[10:] - ref[10:]).max() > 10 * LOGIT_ATOL


@requires_llama_cpp
@pytest.mark.llamacpp
def test_longrope_long_factors_used_beyond_original_context(
    checkpoints: dict[str, Path], converted: dict[str, Path]
) -> None:
    """With a context above original_max_position_embeddings (256) both engines switch to the
    long factors; transformers does too once the sequence is longer than 256 tokens."""
    tokens = _tokens(_n_vocab(checkpoints["phi3_longrope"]), n=300)
    ref = hf_logits(checkpoints["phi3_longrope"], tokens)
    got = llama_logits(converted["phi3_longrope"], tokens, n_ctx=512)
    np.testing.assert_allclose(got, ref, atol=LOGIT_ATOL, rtol=0)


# -- metadata and tokenizer --------------------------------------------------------------------


def _meta(path: Path) -> dict[str, Any]:
    reader = GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = field.contents()
    return out


def test_metadata_phi3_longrope(checkpoints: dict[str, Path], converted: dict[str, Path]) -> None:
    m = _meta(converted["phi3_longrope"])
    assert m["general.architecture"] == "phi3"
    assert m["phi3.context_length"] == 1024
    assert m["phi3.rope.scaling.original_context_length"] == 256
    assert m["phi3.rope.dimension_count"] == 32
    assert m["phi3.rope.scaling.attn_factor"] == pytest.approx(
        math.sqrt(1 + math.log(4) / math.log(256))
    )
    assert m["general.file_type"] == int(LlamaFileType.ALL_F32)
    assert m["tokenizer.ggml.model"] == "llama"
    assert m["tokenizer.chat_template"] == TEMPLATE
    tensors = {t.name: t for t in GGUFReader(converted["phi3_longrope"]).tensors}
    long_f = np.asarray(tensors["rope_factors_long.weight"].data)
    np.testing.assert_allclose(long_f, np.geomspace(1.0, 16.0, 16), rtol=1e-6)


def test_metadata_phi4mini_like(converted: dict[str, Path]) -> None:
    m = _meta(converted["phi4mini_like"])
    assert m["phi3.rope.dimension_count"] == 24  # 3/4 of head_dim 32
    assert m["phi3.attention.head_count_kv"] == 4
    assert m["phi3.attention.sliding_window"] == 0
    assert m["tokenizer.ggml.model"] == "gpt2"
    assert m["tokenizer.ggml.pre"] == "gpt-2"
    assert len(m["tokenizer.ggml.merges"]) > 0
    names = {t.name for t in GGUFReader(converted["phi4mini_like"]).tensors}
    assert "output.weight" not in names and "token_embd.weight" in names


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("name", ["phi3", "llama", "phi2", "phi4mini_like"])
def test_tokenization_matches_source_tokenizer(
    name: str, checkpoints: dict[str, Path], converted: dict[str, Path]
) -> None:
    import llama_cpp

    folder = checkpoints[name]
    if (folder / "tokenizer.model").exists():
        spm = pytest.importorskip("sentencepiece")
        ref = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).encode(SAMPLE)
    else:
        from tokenizers import Tokenizer

        ref = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(SAMPLE).ids
    llm = llama_cpp.Llama(str(converted[name]), vocab_only=True, verbose=False)
    got = llm.tokenize(SAMPLE.encode(), add_bos=False, special=False)
    assert got == ref


def test_phi3_special_tokens_are_control(converted: dict[str, Path]) -> None:
    m = _meta(converted["phi3"])
    tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
    for special in PHI3_SPECIALS:
        assert types[tokens.index(special)] == 3  # CONTROL
    assert tokens[-1].startswith("[PAD")  # vocab_size beyond the tokenizer is padded


# -- quantized outputs are llama.cpp's, byte for byte -------------------------------------------


def _assert_same_tensors(ours: Path, ref: Path) -> None:
    a = {t.name: t for t in GGUFReader(ours).tensors}
    b = {t.name: t for t in GGUFReader(ref).tensors}
    assert list(a) == list(b)  # same tensors in the same order
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data)), name


@pytest.fixture(scope="module")
def f16_gguf(models: ModelFactory) -> Path:
    # a 4-layer model so the Q4_K_M/Q5_K_M layer rules pick different types per layer
    return models.phi3("F16", "gqa", n_embd=256, n_layer=4)


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("file_type", sorted(LLAMA_FTYPES))
def test_gguf_requantize_bit_identical_to_llama_cpp(
    file_type: str, f16_gguf: Path, tmp_path: Path
) -> None:
    ours = quantize(f16_gguf, tmp_path / "ours.gguf", file_type)
    ref = llama_cpp_quantize(f16_gguf, tmp_path / "ref.gguf", LLAMA_FTYPES[file_type])
    _assert_same_tensors(Path(ours.path), ref)
    assert _meta(Path(ours.path))["general.file_type"] == int(LLAMA_FTYPES[file_type])


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("name", ["phi2", "llama", "phi4mini_like"])
@pytest.mark.parametrize("file_type", ["q4_k_m", "q4_0"])
def test_hf_quantize_bit_identical_to_llama_cpp_of_f32(
    name: str,
    file_type: str,
    checkpoints: dict[str, Path],
    converted: dict[str, Path],
    tmp_path: Path,
) -> None:
    """HF -> quantized in one step equals llama.cpp quantizing phirt's F32 conversion (so mixes,
    tied-embedding rules and fallbacks match on every architecture)."""
    ours = quantize(checkpoints[name], tmp_path / "ours.gguf", file_type)
    ref = llama_cpp_quantize(converted[name], tmp_path / "ref.gguf", LLAMA_FTYPES[file_type])
    _assert_same_tensors(Path(ours.path), ref)


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize(("hidden", "n_head", "fallback"), [(288, 9, T.Q5_0), (264, 12, T.F16)])
def test_fallback_types_match_llama_cpp(
    hidden: int, n_head: int, fallback: T, tmp_path: Path
) -> None:
    """Rows that are not a multiple of 256 fall back as llama.cpp does: 288 (= 9 x 32) from
    Q4_K to Q5_0, 264 (not a multiple of 32) to F16; the file equals llama.cpp's."""
    src = make_llama(tmp_path / "odd", hidden=hidden, n_head=n_head)
    f32 = quantize(src, tmp_path / "f32.gguf", "f32")
    result = quantize(src, tmp_path / "ours.gguf", "q4_k_m")
    ref = llama_cpp_quantize(Path(f32.path), tmp_path / "ref.gguf", LlamaFileType.MOSTLY_Q4_K_M)
    _assert_same_tensors(Path(result.path), ref)
    assert any(f"using {fallback.name}" in n for n in result.notes), result.notes
    types = {t.name: t.tensor_type for t in GGUFReader(result.path).tensors}
    assert types["blk.0.attn_q.weight"] == fallback


# -- llama.cpp loads every output type ----------------------------------------------------------


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("file_type", list(FILE_TYPES))
def test_llama_cpp_loads_every_type(
    file_type: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    import llama_cpp

    src = checkpoints["phi3"]
    out = quantize(src, tmp_path / f"m-{file_type}.gguf", file_type)
    llm = llama_cpp.Llama(out.path, n_ctx=64, verbose=False, n_threads=2)
    tokens = _tokens(_n_vocab(src), n=8)
    text = llm.create_completion(tokens, max_tokens=8, temperature=0.0)
    assert text["usage"]["completion_tokens"] >= 1
    ref = hf_logits(src, tokens)[-1]
    got = llama_logits(out.path, tokens)[-1]
    # A sanity check that the file still predicts like its source; exactness is covered by the
    # byte-for-byte comparisons with llama.cpp's quantizer. These random tiny models amplify
    # weight noise far more than trained ones, hence the loose floors at 4-5 bits.
    floor = {"f32": 0.9999, "f16": 0.9999, "bf16": 0.999, "q8_0": 0.999, "q6_k": 0.98}
    assert np.corrcoef(ref, got)[0, 1] > floor.get(file_type, 0.7)


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("file_type", ["q4_0", "q4_k_m", "q8_0"])
def test_greedy_continuation_phirt_equals_llama_cpp(
    file_type: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    import llama_cpp

    out = quantize(checkpoints["phi3"], tmp_path / "m.gguf", file_type).path
    prompt = _tokens(_n_vocab(checkpoints["phi3"]), n=6)
    # Token ids, not text: random weights emit stray byte tokens, which llama-cpp-python's text
    # drops and phirt shows as U+FFFD.
    llm = llama_cpp.Llama(out, n_ctx=64, verbose=False, n_threads=2, logits_all=True)
    _, ref, steps = llama_cpp_greedy(llm, prompt, 16)
    _, got, got_steps = phirt_greedy(load(out, n_ctx=64), prompt, 16)
    scale = float(np.abs(np.array(steps)).max()) + 1.0
    assert_same_greedy(got, ref, steps, 0.03 * scale, got_steps)


# -- sharded checkpoints, bf16, GGUF sources --------------------------------------------------


def test_sharded_checkpoint_equals_single_file(tmp_path: Path) -> None:
    single = make_phi3(tmp_path / "single", seed=7)
    sharded = make_phi3(tmp_path / "sharded", seed=7, shard="300KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    a = quantize(single, tmp_path / "a.gguf", "q4_k_m")
    b = quantize(sharded, tmp_path / "b.gguf", "q4_k_m")
    _assert_same_tensors(Path(a.path), Path(b.path))


def test_bf16_checkpoint_is_read_exactly(tmp_path: Path) -> None:
    src = make_phi3(tmp_path / "bf16", dtype="bfloat16", seed=2)
    out = quantize(src, tmp_path / "bf16.gguf", "bf16")
    assert open_source(src).exact_type == "bf16"
    from safetensors.torch import load_file

    state = load_file(str(src / "model.safetensors"))
    tensors = {t.name: t for t in GGUFReader(out.path).tensors}
    want = state["model.layers.1.mlp.down_proj.weight"].view(torch.int16).numpy().view(np.uint16)
    got = np.asarray(tensors["blk.1.ffn_down.weight"].data).view(np.uint16).reshape(want.shape)
    np.testing.assert_array_equal(got, want)


def test_requantizing_a_quantized_gguf_warns(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    q8 = quantize(checkpoints["phi3"], tmp_path / "q8.gguf", "q8_0")
    assert not q8.warnings
    q4 = quantize(q8.path, tmp_path / "q4.gguf", "q4_0")
    assert any("already quantized" in w and "Q8_0" in w for w in q4.warnings)
    # tensors already in the target type are copied, not requantized
    same = quantize(q8.path, tmp_path / "q8b.gguf", "q8_0")
    _assert_same_tensors(Path(q8.path), Path(same.path))


# -- bad input -----------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_unknown_architecture(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(checkpoints["phi3"], tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["architectures"] = ["MambaForCausalLM"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        QuantizeError, match=r"config\.json: unknown architecture 'MambaForCausalLM'"
    ):
        quantize(d, tmp_path / "o.gguf", "q4_0")
    assert not (tmp_path / "o.gguf").exists()


def test_missing_shard(tmp_path: Path) -> None:
    d = make_phi3(tmp_path / "m", shard="300KB")
    shard = sorted(d.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(QuantizeError, match=rf"index\.json: missing shard {shard.name}"):
        quantize(d, tmp_path / "o.gguf", "q4_0")


def test_shape_mismatch_names_the_file(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(checkpoints["llama"], tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["intermediate_size"] += 32
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        QuantizeError,
        match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape",
    ):
        quantize(d, tmp_path / "o.gguf", "q4_0")


def test_missing_tensor(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(checkpoints["phi3"], tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantizeError, match=r"tensor 'blk\.2\.\w+\.weight' is missing"):
        quantize(d, tmp_path / "o.gguf", "q4_0")


def test_not_a_model_folder(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="no config.json"):
        quantize(tmp_path, tmp_path / "o.gguf", "q4_0")
    with pytest.raises(QuantizeError, match="unknown type 'q3_k'"):
        plan(open_source(checkpoints["phi3"]), "q3_k")


def test_truncated_safetensors(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(checkpoints["phi3"], tmp_path / "m")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(QuantizeError, match=r"model\.safetensors: tensor .* does not fit"):
        quantize(d, tmp_path / "o.gguf", "q4_0")


# -- command line --------------------------------------------------------------------------------


def test_cli_quantize_and_errors(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phirt.cli import main

    out = tmp_path / "cli.gguf"
    assert (
        main(["quantize", str(checkpoints["phi2"]), str(out), "--type", "Q5_K_M", "--threads", "1"])
        == 0
    )
    assert GGUFReader(out).fields["general.file_type"].contents() == int(
        LlamaFileType.MOSTLY_Q5_K_M
    )
    err = capsys.readouterr().err
    assert "wrote" in err and "MB/s" in err
    assert (
        main(["quantize", str(tmp_path / "nope"), str(tmp_path / "x.gguf"), "--type", "q4_0"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"phirt: error: {tmp_path / 'nope'}: no such file or folder"]


# -- streaming ------------------------------------------------------------------------------------


def test_memory_stays_near_one_slab(
    models: ModelFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tensors are converted slab by slab: with 1 MB slabs, Python-visible memory (numpy buffers
    included, via tracemalloc) peaks far below the largest tensor (token_embd: 32064 x 256, 33 MB
    as f32) and the 36 MB file."""
    import tracemalloc

    import phirt.quantize.writer as writer

    src = models.phi3("F16", "gqa", n_embd=256)
    monkeypatch.setattr(writer, "SLAB_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        quantize(src, tmp_path / "out.gguf", "q4_k_m")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12e6, f"peak {peak / 1e6:.1f} MB"

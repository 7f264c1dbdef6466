"""Tiny random-weight GGUF models, written the way llama.cpp's converter writes real ones.

The engine tests compare phirt with llama.cpp (llama-cpp-python 0.3.36) on these same files, so the
metadata keys and tensor names/shapes follow that llama.cpp version's loaders (src/models/phi3.cpp,
phi2.cpp, llama.cpp) and converter (conversion/phi.py). Every model carries the real Phi-3
tokenizer (32,064 tokens) copied from tests/data/vocab/ggml-vocab-phi-3.gguf, so the embedding and
output matrices dominate the file size; the transformer itself is a few hundred kB.

Weights are seeded from the model's description, so a file is byte-identical from run to run.
They are scaled so that every block changes the residual stream noticeably (weights ~
1/sqrt(fan_in)) and logits have a spread of several units: greedy continuations depend on the
context and the top-1 / top-2 margin is rarely razor-thin.

K-quant files (Q4_K_M, ...) are produced by llama.cpp's own quantizer from an F32 file; they need
llama_cpp and rows that are multiples of 256, so their default widths are larger.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

from phirt.formats.gguf import GGUFFile

VOCAB_PATH = Path(__file__).parent / "data" / "vocab" / "ggml-vocab-phi-3.gguf"
N_VOCAB = 32064
HEAD_DIM = 32

# qtype -> (GGML type of the weight matrices, general.file_type); written by gguf-py's quantizers
GGUF_PY_QTYPES: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "F32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "F16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "BF16": (GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
    "Q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (GGMLQuantizationType.Q4_1, LlamaFileType.MOSTLY_Q4_1),
    "Q5_0": (GGMLQuantizationType.Q5_0, LlamaFileType.MOSTLY_Q5_0),
    "Q5_1": (GGMLQuantizationType.Q5_1, LlamaFileType.MOSTLY_Q5_1),
}
# qtype -> llama_ftype; written by llama.cpp's llama_model_quantize (mixes types as llama.cpp does)
LLAMA_CPP_QTYPES: dict[str, LlamaFileType] = {
    "Q4_K_S": LlamaFileType.MOSTLY_Q4_K_S,
    "Q4_K_M": LlamaFileType.MOSTLY_Q4_K_M,
    "Q5_K_S": LlamaFileType.MOSTLY_Q5_K_S,
    "Q5_K_M": LlamaFileType.MOSTLY_Q5_K_M,
    "Q6_K": LlamaFileType.MOSTLY_Q6_K,
}
QTYPES = tuple(GGUF_PY_QTYPES) + tuple(LLAMA_CPP_QTYPES)

PHI3_VARIANTS = ("plain", "gqa", "swa", "longrope", "partial_rotary_tied")
PHI2_VARIANTS = ("plain", "fused_qkv")
LLAMA_VARIANTS = ("gqa", "plain")


def has_llama_cpp() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines a fixture file; its hash names the file."""

    arch: str  # phi3 | phi2 | llama
    variant: str
    qtype: str
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_rot: int
    n_ctx_train: int
    n_ctx_orig: int  # rope.scaling.original_context_length (LongRoPE switch point)
    sliding_window: int | None  # phi3.attention.sliding_window; None: key absent
    tied: bool  # no output.weight: llama.cpp reuses token_embd
    longrope: bool
    fused_qkv: bool
    seed: int
    extra: tuple[tuple[str, Any], ...] = field(default=())  # metadata overrides (key, value)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.arch}-{self.variant}-{self.qtype}-{digest[:10]}.gguf"


def _is_kquant(qtype: str) -> bool:
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r}; choose from {', '.join(QTYPES)}")
    return qtype in LLAMA_CPP_QTYPES


def _widths(qtype: str, n_embd: int | None, n_ff: int | None, ff_mult: int) -> tuple[int, int]:
    # K-quants work on 256-wide super-blocks: llama.cpp falls back to other types for narrower rows
    default = 256 if _is_kquant(qtype) else 128
    n_embd = n_embd or default
    return n_embd, n_ff or ff_mult * n_embd


def phi3_spec(
    qtype: str = "F32",
    variant: str = "plain",
    *,
    n_ctx_train: int | None = None,
    n_layer: int = 2,
    n_embd: int | None = None,
    n_ff: int | None = None,
    sliding_window: int = 16,
    n_ctx_orig: int = 256,
    seed: int = 0,
) -> ModelSpec:
    """Phi-3 family. Variants:
    plain                MHA, full rotary (Phi-3-mini-4k shape, scaled down)
    gqa                  head_count_kv = head_count / 2 (Phi-3-small/medium style)
    swa                  attention.sliding_window = ``sliding_window`` (llama.cpp 0.3.36 ignores it)
    longrope             LongRoPE: rope_factors_long/short, rope.scaling.attn_factor,
                         original_context_length ``n_ctx_orig`` (default 256), context 4x that
    partial_rotary_tied  Phi-4-mini style: GQA, rope.dimension_count = 3/4 head_dim,
                         no output.weight, sliding_window 0 (as the converter writes for Phi-4)
    """
    if variant not in PHI3_VARIANTS:
        raise ValueError(f"unknown phi3 variant {variant!r}; choose from {PHI3_VARIANTS}")
    n_embd, n_ff = _widths(qtype, n_embd, n_ff, 2)
    n_head = n_embd // HEAD_DIM
    longrope = variant == "longrope"
    if n_ctx_train is None:
        n_ctx_train = 4 * n_ctx_orig if longrope else 4096
    return ModelSpec(
        arch="phi3",
        variant=variant,
        qtype=qtype,
        n_embd=n_embd,
        n_ff=n_ff,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=n_head // 2 if variant in ("gqa", "partial_rotary_tied") else n_head,
        n_rot=HEAD_DIM * 3 // 4 if variant == "partial_rotary_tied" else HEAD_DIM,
        n_ctx_train=n_ctx_train,
        # the converter always writes original_context_length; without LongRoPE it equals context
        n_ctx_orig=n_ctx_orig if longrope else n_ctx_train,
        sliding_window={"swa": sliding_window, "partial_rotary_tied": 0}.get(variant),
        tied=variant == "partial_rotary_tied",
        longrope=longrope,
        fused_qkv=True,
        seed=seed,
    )


def phi2_spec(
    qtype: str = "F32",
    variant: str = "plain",
    *,
    n_ctx_train: int = 2048,
    n_layer: int = 2,
    n_embd: int | None = None,
    n_ff: int | None = None,
    seed: int = 0,
) -> ModelSpec:
    """Phi-2: LayerNorm with biases, parallel attention + GELU MLP, partial NEOX rotary (12 of 32
    head dims, Phi-2 rotates 32 of 80), biases everywhere, add_bos_token false (as converted).
    Variants: plain (separate attn_q/k/v + biases, what today's converter writes from
    PhiForCausalLM) and fused_qkv (attn_qkv + bias, as in older Phi-2 GGUFs)."""
    if variant not in PHI2_VARIANTS:
        raise ValueError(f"unknown phi2 variant {variant!r}; choose from {PHI2_VARIANTS}")
    n_embd, n_ff = _widths(qtype, n_embd, n_ff, 4)
    n_head = n_embd // HEAD_DIM
    return ModelSpec(
        arch="phi2",
        variant=variant,
        qtype=qtype,
        n_embd=n_embd,
        n_ff=n_ff,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=n_head,
        n_rot=12,
        n_ctx_train=n_ctx_train,
        n_ctx_orig=n_ctx_train,
        sliding_window=None,
        tied=False,
        longrope=False,
        fused_qkv=variant == "fused_qkv",
        seed=seed,
        extra=(("tokenizer.ggml.add_bos_token", False),),
    )


def llama_spec(
    qtype: str = "F32",
    variant: str = "gqa",
    *,
    n_ctx_train: int = 4096,
    n_layer: int = 2,
    n_embd: int | None = None,
    n_ff: int | None = None,
    seed: int = 0,
) -> ModelSpec:
    """Llama: RMSNorm, separate attn_q/k/v, SwiGLU with separate ffn_gate/ffn_up, NORM (GPT-J
    style, adjacent pairs) rotary over the full head. Variants: gqa (head_count_kv = head_count/2),
    plain (MHA)."""
    if variant not in LLAMA_VARIANTS:
        raise ValueError(f"unknown llama variant {variant!r}; choose from {LLAMA_VARIANTS}")
    n_embd, n_ff = _widths(qtype, n_embd, n_ff, 2)
    n_head = n_embd // HEAD_DIM
    return ModelSpec(
        arch="llama",
        variant=variant,
        qtype=qtype,
        n_embd=n_embd,
        n_ff=n_ff,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=n_head // 2 if variant == "gqa" else n_head,
        n_rot=HEAD_DIM,
        n_ctx_train=n_ctx_train,
        n_ctx_orig=n_ctx_train,
        sliding_window=None,
        tied=False,
        longrope=False,
        fused_qkv=False,
        seed=seed,
    )


# -- weights -----------------------------------------------------------------------------------


class _Weights:
    """Deterministic random tensors, drawn in order from one seeded generator."""

    def __init__(self, spec: ModelSpec) -> None:
        # seeded by shape, not variant: plain, swa and longrope share weights and differ only in
        # how attention and rotary work, so tests can tell those effects apart
        shape = (spec.n_embd, spec.n_ff, spec.n_layer, spec.n_head, spec.n_head_kv, spec.tied)
        key = f"{spec.arch}/{shape}/{spec.seed}".encode()
        self.rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def matrix(self, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        """(rows, cols) = GGUF ne [cols, rows]; std gain/sqrt(cols) keeps activations O(1)."""
        return (self.rng.standard_normal((rows, cols)) * (gain / np.sqrt(cols))).astype(np.float32)

    def norm(self, n: int, center: float = 1.0) -> np.ndarray:
        return (center + 0.1 * self.rng.standard_normal(n)).astype(np.float32)

    def bias(self, n: int, scale: float = 0.1) -> np.ndarray:
        return (scale * self.rng.standard_normal(n)).astype(np.float32)


def _tensors(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Name -> f32 array in numpy order (rows, cols), for the whole model."""
    w = _Weights(spec)
    d, ff, hd = spec.n_embd, spec.n_ff, spec.head_dim
    q_dim, kv_dim = spec.n_head * hd, spec.n_head_kv * hd
    t: dict[str, np.ndarray] = {}
    # Untied: unit-variance embeddings, so the residual stream starts at rms ~1, comparable to the
    # block outputs. Tied: small embeddings, else h ~ token_embd[t] and the logit of t itself
    # (|e_t|^2) beats every other and greedy decoding repeats one token forever.
    emb_std = 0.1 if spec.tied else 1.0
    t["token_embd.weight"] = w.matrix(N_VOCAB, d, gain=emb_std * np.sqrt(d))
    if spec.longrope:
        half = spec.n_rot // 2
        t["rope_factors_long.weight"] = np.geomspace(1.0, 16.0, half).astype(np.float32)
        t["rope_factors_short.weight"] = (1.0 + 0.25 * np.linspace(0, 1, half) ** 2).astype(
            np.float32
        )
    layer_norm = spec.arch == "phi2"
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = w.norm(d)
        if layer_norm:
            t[p + "attn_norm.bias"] = w.bias(d)
        # q/k gain > 1 sharpens attention so the context matters to the next token
        qkv = [w.matrix(q_dim, d, 2.0), w.matrix(kv_dim, d, 2.0), w.matrix(kv_dim, d)]
        if spec.fused_qkv:
            t[p + "attn_qkv.weight"] = np.concatenate(qkv)
            if layer_norm:
                t[p + "attn_qkv.bias"] = w.bias(q_dim + 2 * kv_dim)
        else:
            for name, m in zip("qkv", qkv, strict=True):
                t[p + f"attn_{name}.weight"] = m
                if layer_norm:
                    t[p + f"attn_{name}.bias"] = w.bias(m.shape[0])
        t[p + "attn_output.weight"] = w.matrix(d, q_dim)
        if layer_norm:
            t[p + "attn_output.bias"] = w.bias(d)
        if spec.arch == "phi3":
            t[p + "ffn_norm.weight"] = w.norm(d)
            t[p + "ffn_up.weight"] = w.matrix(2 * ff, d, 1.5)  # fused [gate; up]
        elif spec.arch == "llama":
            t[p + "ffn_norm.weight"] = w.norm(d)
            t[p + "ffn_gate.weight"] = w.matrix(ff, d, 1.5)
            t[p + "ffn_up.weight"] = w.matrix(ff, d, 1.5)
        else:
            t[p + "ffn_up.weight"] = w.matrix(ff, d, 1.5)
            t[p + "ffn_up.bias"] = w.bias(ff)
        t[p + "ffn_down.weight"] = w.matrix(d, ff)
        if layer_norm:
            t[p + "ffn_down.bias"] = w.bias(d)
    if spec.tied:
        # logits = h · token_embdᵀ: scale h so that logits spread ~5 as in the untied models
        t["output_norm.weight"] = w.norm(d, center=5.0 / (emb_std * np.sqrt(d)))
    else:
        t["output_norm.weight"] = w.norm(d)
        t["output.weight"] = w.matrix(N_VOCAB, d, gain=5.0)
    if layer_norm:
        t["output_norm.bias"] = w.bias(d)
        t["output.bias"] = w.bias(N_VOCAB, scale=0.5)
    return t


# -- writing -----------------------------------------------------------------------------------


def _copy_tokenizer(writer: GGUFWriter, overrides: dict[str, Any]) -> None:
    vocab = GGUFFile(VOCAB_PATH)
    for key, value in vocab.metadata.items():
        if not (key.startswith("tokenizer.ggml.") or key == "tokenizer.chat_template"):
            continue
        vtype, item_type = vocab.metadata_types[key]
        writer.add_key_value(key, overrides.get(key, value), vtype, sub_type=item_type)


def _add_hparams(writer: GGUFWriter, spec: ModelSpec, file_type: LlamaFileType) -> None:
    a = spec.arch
    writer.add_name(f"phirt fixture {a} {spec.variant}")
    writer.add_file_type(int(file_type))
    if file_type not in (LlamaFileType.ALL_F32, LlamaFileType.MOSTLY_F16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_uint32(f"{a}.context_length", spec.n_ctx_train)
    writer.add_uint32(f"{a}.embedding_length", spec.n_embd)
    writer.add_uint32(f"{a}.feed_forward_length", spec.n_ff)
    writer.add_uint32(f"{a}.block_count", spec.n_layer)
    writer.add_uint32(f"{a}.attention.head_count", spec.n_head)
    writer.add_uint32(f"{a}.attention.head_count_kv", spec.n_head_kv)
    writer.add_uint32(f"{a}.rope.dimension_count", spec.n_rot)
    if a == "phi2":
        writer.add_float32(f"{a}.attention.layer_norm_epsilon", 1e-5)
        return
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_float32(f"{a}.rope.freq_base", 10000.0)
    if a == "phi3":
        writer.add_uint32(f"{a}.rope.scaling.original_context_length", spec.n_ctx_orig)
        if spec.sliding_window is not None:
            writer.add_uint32(f"{a}.attention.sliding_window", spec.sliding_window)
        if spec.longrope:
            # the converter's LongRoPE attention factor: sqrt(1 + ln(scale) / ln(n_ctx_orig))
            scale = spec.n_ctx_train / spec.n_ctx_orig
            attn = float(np.sqrt(1.0 + np.log(scale) / np.log(spec.n_ctx_orig)))
            writer.add_float32(f"{a}.rope.scaling.attn_factor", attn)


def _write_gguf_py(spec: ModelSpec, path: Path, qtype: str) -> None:
    weight_type, file_type = GGUF_PY_QTYPES[qtype]
    writer = GGUFWriter(path, spec.arch)
    _add_hparams(writer, spec, file_type)
    _copy_tokenizer(writer, dict(spec.extra))
    for name, array in _tensors(spec).items():
        # llama.cpp wants norms, biases and rope factors (all 1-D) in F32
        qt = weight_type if array.ndim == 2 else GGMLQuantizationType.F32
        if qt == GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        elif qt == GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qt), raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_quantize(src: Path, dst: Path, ftype: LlamaFileType, *, pure: bool = False) -> Path:
    """llama.cpp's own file quantizer (llama_model_quantize) from src to dst. It mixes types per
    tensor as llama-quantize does; ``pure`` gives every matrix ftype's type."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.pure = pure
    params.nthread = min(8, os.cpu_count() or 1)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({ftype.name}) failed with {rc} for {dst}")
    return dst


def _write_llama_cpp_quant(spec: ModelSpec, path: Path, qtype: str) -> None:
    source = path.with_suffix(".f32.tmp")
    _write_gguf_py(spec, source, "F32")
    try:
        llama_cpp_quantize(source, path, LLAMA_CPP_QTYPES[qtype])
    finally:
        source.unlink()


def build(spec: ModelSpec, out_dir: str | os.PathLike[str]) -> Path:
    """Write the model described by ``spec`` into ``out_dir`` (reused if already there)."""
    path = Path(out_dir) / spec.file_name()
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    if _is_kquant(spec.qtype):
        if not has_llama_cpp():
            raise RuntimeError(f"{spec.qtype} fixtures need llama_cpp (llama-cpp-python)")
        _write_llama_cpp_quant(spec, partial, spec.qtype)
    else:
        _write_gguf_py(spec, partial, spec.qtype)
    partial.replace(path)  # atomic: a half-written file never has the final name
    return path


class ModelFactory:
    """Fixture models for tests (the ``models`` fixture): ``models.phi3("Q4_0", "gqa")`` -> Path.
    Each distinct model is written once per session; a test that asks for a K-quant model is
    skipped when llama_cpp is missing."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def build(self, spec: ModelSpec) -> Path:
        if spec.qtype in LLAMA_CPP_QTYPES and not has_llama_cpp():
            pytest.skip(f"{spec.qtype} fixtures are made by llama_cpp, which is not installed")
        return build(spec, self.out_dir)

    def phi3(self, qtype: str = "F32", variant: str = "plain", **kw: Any) -> Path:
        return self.build(phi3_spec(qtype, variant, **kw))

    def phi2(self, qtype: str = "F32", variant: str = "plain", **kw: Any) -> Path:
        return self.build(phi2_spec(qtype, variant, **kw))

    def llama(self, qtype: str = "F32", variant: str = "gqa", **kw: Any) -> Path:
        return self.build(llama_spec(qtype, variant, **kw))


requires_llama_cpp = pytest.mark.skipif(not has_llama_cpp(), reason="llama_cpp is not installed")


__all__ = [
    "LLAMA_CPP_QTYPES",
    "GGUF_PY_QTYPES",
    "LLAMA_VARIANTS",
    "ModelFactory",
    "PHI2_VARIANTS",
    "PHI3_VARIANTS",
    "QTYPES",
    "ModelSpec",
    "build",
    "has_llama_cpp",
    "llama_cpp_quantize",
    "llama_spec",
    "phi2_spec",
    "phi3_spec",
    "requires_llama_cpp",
]

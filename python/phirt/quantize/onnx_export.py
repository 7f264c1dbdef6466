"""``phirt quantize SRC OUT_DIR --format onnx``: a Hugging Face folder or GGUF file -> an ONNX
Runtime GenAI folder (genai_config.json, model.onnx + model.onnx.data, config.json, tokenizer
files) with the graph onnxruntime-genai's model builder emits (onnx_graph.py).

Weights go through phirt's quantizer sources (hf.py, gguf_source.py), which already name every
tensor as GGUF does, and are written one slab of rows at a time into the data file (onnx_data.py):
memory holds a slab, never the model. Each weight matrix becomes one MatMulNBits:

- Q4_0, Q8_0 and Q6_K source tensors are re-packed exactly (nbits_pack.py): int4 block 32, int8
  block 32, int8 block 16 with zero points 32. The folder holds the GGUF's numbers, and
  ``phirt quantize FOLDER out.gguf`` gives the same tensors back bit for bit.
- Float tensors (F32/F16/BF16, Hugging Face checkpoints) are quantized by the kernels'
  ``nbits_quantize``: symmetric int4 (default block 32) with a least-squares scale search that
  never does worse per block than ONNX Runtime's own RTN, or int8.
- Other GGML types are dequantized and quantized again (with a warning).

The token table stays float32 (Gather), as the builder keeps it, except where the source table is
Q4_0 / Q8_0 (GatherBlockQuantized on its exact codes) and for tied embeddings (GatherBlockQuantized
on the lm_head's codes, the builder's shared form).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from phirt import _kernels as K
from phirt.errors import QuantizeError
from phirt.models.registry import find_architecture
from phirt.quantize import nbits_pack as P
from phirt.quantize.onnx_data import DataFile, Region
from phirt.quantize.onnx_graph import Embedding, GraphSpec, Linear, build_model
from phirt.quantize.source import Source, SourceTensor

__all__ = ["WEIGHT_TYPES", "ExportResult", "export_onnx"]

T = GGMLQuantizationType
FLOAT, UINT8, INT4 = 1, 2, 22  # onnx TensorProto data types
SLAB_BYTES = 32 * 1024 * 1024
WEIGHT_TYPES = ("auto", "int4", "int8")
MODEL_TYPES = {"phi3": "phi3", "phi2": "phi", "llama": "llama"}  # genai_config model.type
HF_ARCHS = {"phi3": "Phi3ForCausalLM", "phi2": "PhiForCausalLM", "llama": "LlamaForCausalLM"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class _Exact:
    """A GGML type whose blocks are a MatMulNBits configuration."""

    bits: int
    block_size: int
    zero_points: bool
    to_nbits: Callable[[np.ndarray], P.NBitsArrays]


EXACT = {
    int(T.Q4_0): _Exact(4, 32, False, P.q4_0_to_nbits),
    int(T.Q8_0): _Exact(8, 32, False, P.q8_0_to_nbits),
    int(T.Q6_K): _Exact(8, 16, True, P.q6_K_to_nbits),
}


@dataclass
class ExportResult:
    path: str
    seconds: float = 0.0
    bytes_in: int = 0  # stored bytes of the source tensors read
    bytes_out: int = 0  # bytes of model.onnx.data
    n_tensors: int = 0  # initializers
    formats: dict[str, int] = field(default_factory=dict)  # "int4 block 32 (exact Q4_0)": count
    warnings: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_in / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Piece:
    """Rows [start, stop) of a source tensor, optionally reordered within heads of `head_rows`
    (Llama q/k: GGML's interleaved rotary layout back to Hugging Face's halves)."""

    tensor: SourceTensor
    start: int = 0
    stop: int | None = None
    head_rows: int = 0

    @property
    def rows(self) -> int:
        return (self.stop if self.stop is not None else self.tensor.n_rows) - self.start


def _metadata(source: Source) -> dict[str, Any]:
    """The GGUF metadata a source would write, as plain values."""
    w = GGUFWriter(None, source.arch)
    source.add_metadata(w)
    return {key: value.value for key, value in w.kv_data[0].items()}


def _unpermute(rows: np.ndarray, head_rows: int) -> np.ndarray:
    """GGML rotary row order -> Hugging Face's, within each head (inverse of hf.py's)."""
    n = rows.shape[0]
    return np.ascontiguousarray(
        rows.reshape(n // head_rows, head_rows // 2, 2, -1).swapaxes(1, 2).reshape(rows.shape)
    )


class _Exporter:
    def __init__(self, source: Source, out: Path, weight_type: str, block_size: int,
                 accuracy_level: int, search: bool, progress: Callable[[int], None]) -> None:  # fmt: skip
        self.source = source
        self.out = out
        self.weight_type = weight_type
        self.block_size = block_size
        self.accuracy_level = accuracy_level
        self.search = search
        self.progress = progress
        self.tensors = {t.name: t for t in source.tensors}
        self.meta = _metadata(source)
        vocab = self.tensors.get("token_embd.weight")
        if vocab is None:
            raise QuantizeError("the source has no token_embd.weight", source.path)
        self.cfg = find_architecture(source.arch, source.path).read_config(
            self.meta, source.path, vocab.shape[0]
        )
        self.result = ExportResult(str(out))
        self.data = DataFile(out / "model.onnx.data", "model.onnx.data")
        self.inits: list[Any] = []
        self._requantized: set[str] = set()

    # -- helpers -------------------------------------------------------------------------------

    def tensor(self, name: str) -> SourceTensor:
        t = self.tensors.get(name)
        if t is None:
            raise QuantizeError(f"tensor {name!r} is missing", self.source.path)
        return t

    def count(self, what: str) -> None:
        self.result.formats[what] = self.result.formats.get(what, 0) + 1

    def reserve(self, name: str, data_type: int, dims: tuple[int, ...], length: int) -> Region:
        region = self.data.reserve(name, data_type, dims, length)
        self.inits.append(self.data.proto(region))
        return region

    def slabs(self, piece: _Piece, row_bytes: int):
        """(start, stop) slabs of a piece, relative to its first row."""
        align = max(piece.head_rows, piece.tensor.row_align, 1)
        rows = max(align, SLAB_BYTES // max(row_bytes, 1) // align * align)
        for s in range(0, piece.rows, rows):
            yield s, min(piece.rows, s + rows)

    def read(self, piece: _Piece, start: int, stop: int, raw: bool) -> np.ndarray:
        t = piece.tensor
        a, b = piece.start + start, piece.start + stop
        rows = t.read_raw(a, b) if raw else t.read_rows(a, b)  # type: ignore[misc]
        if not raw and not math.isfinite(float(np.add.reduce(rows, axis=None))):
            raise QuantizeError(f"tensor {t.name!r} holds NaN or Inf values", t.path)
        self.progress((b - a) * (t.nbytes // t.n_rows))
        return _unpermute(rows, piece.head_rows) if piece.head_rows else rows

    def exact(self, pieces: list[_Piece]) -> _Exact | None:
        """The exact re-packing shared by every piece's stored type, if the options allow it."""
        types = {p.tensor.raw_type if p.tensor.read_raw is not None else None for p in pieces}
        if len(types) != 1:
            return None
        ex = EXACT.get(types.pop())  # type: ignore[arg-type]
        if ex is None or self.weight_type == "auto":
            return ex
        want = 4 if self.weight_type == "int4" else 8
        return (
            ex
            if (ex.bits, ex.block_size, ex.zero_points) == (want, self.block_size, False)
            else None
        )

    # -- weights -------------------------------------------------------------------------------

    def linear(self, base: str, pieces: list[_Piece], bias: str | None = None) -> Linear:
        """One MatMulNBits weight from the rows of `pieces`, written slab by slab."""
        k = pieces[0].tensor.row_len
        n = sum(p.rows for p in pieces)
        ex = self.exact(pieces)
        if ex is not None:
            bits, bs, zp = ex.bits, ex.block_size, ex.zero_points
            self.count(f"int{bits} block {bs} (exact {T(pieces[0].tensor.raw_type).name})")
        else:
            bits, bs, zp = (8 if self.weight_type == "int8" else 4), self.block_size, False
            self.count(f"int{bits} block {bs}")
            stored = {p.tensor.src_type for p in pieces} - {"F32", "F16", "BF16"}
            if stored and base not in self._requantized:
                self._requantized.add(base)
                self.result.warnings.append(
                    f"{pieces[0].tensor.name}: {', '.join(sorted(stored))} quantized again to "
                    f"int{bits} block {bs} (adds a second rounding error)"
                )
        lin = Linear(base, n, k, bits, bs, zp, bias)
        nb, blob = -(-k // bs), bs * bits // 8
        codes = self.reserve(lin.inputs[0], UINT8, (n, nb, blob), n * nb * blob)
        scales = self.reserve(lin.inputs[1], FLOAT, (n, nb), n * nb * 4)
        zps = self.reserve(lin.inputs[2], UINT8, (n, nb), n * nb) if zp else None
        row = 0
        for piece in pieces:
            for a, b in self.slabs(piece, 4 * k):
                if ex is not None:
                    q, s, z = ex.to_nbits(self.read(piece, a, b, raw=True))
                else:
                    x = np.ascontiguousarray(self.read(piece, a, b, raw=False), dtype=np.float32)
                    q, s = K.nbits_quantize(x, bs, bits, self.search)
                    z = None
                r0 = row + a
                self.data.write(codes, r0 * nb * blob, q)
                self.data.write(scales, r0 * nb * 4, s.astype(np.float32))
                if zps is not None and z is not None:
                    self.data.write(zps, r0 * nb, z)
            row += piece.rows
        return lin

    def array(self, onnx_name: str, values: np.ndarray) -> str:
        """A float32 initializer written whole (norms, biases, rope caches)."""
        arr = np.ascontiguousarray(values, dtype=np.float32)
        region = self.reserve(onnx_name, FLOAT, arr.shape, arr.nbytes)
        self.data.write(region, 0, arr)
        return onnx_name

    def vector(self, onnx_name: str, values: np.ndarray) -> str:
        return self.array(onnx_name, np.asarray(values).reshape(-1))

    def source_vector(self, gguf_name: str) -> np.ndarray:
        t = self.tensor(gguf_name)
        values = t.read_rows(0, t.n_rows).reshape(-1)
        self.progress(t.nbytes)
        return values

    def float_table(self, onnx_name: str, t: SourceTensor) -> None:
        region = self.reserve(onnx_name, FLOAT, t.shape, 4 * t.n_rows * t.row_len)
        piece = _Piece(t)
        for a, b in self.slabs(piece, 4 * t.row_len):
            self.data.write(region, a * t.row_len * 4, self.read(piece, a, b, raw=False))

    def quantized_table(self, t: SourceTensor, ex: _Exact) -> Embedding:
        """GatherBlockQuantized's own copy of a Q4_0 / Q8_0 token table (exact)."""
        v, k = t.shape
        suffix = f"Q{ex.bits}"
        if ex.bits == 4:
            data = self.reserve(f"model.embed_tokens.weight_{suffix}", INT4, (v, k), v * k // 2)
        else:
            data = self.reserve(f"model.embed_tokens.weight_{suffix}", UINT8, (v, k), v * k)
        scales = self.reserve("model.embed_tokens.weight_scales", FLOAT, (v, k // 32), v * k // 8)
        piece = _Piece(t)
        for a, b in self.slabs(piece, 4 * k):
            q, s, _ = ex.to_nbits(self.read(piece, a, b, raw=True))
            if ex.bits == 4:
                q = P.signed_to_int4(q)
            self.data.write(data, a * k * ex.bits // 8, q)
            self.data.write(scales, a * (k // 32) * 4, s)
        self.count(f"embedding int{ex.bits} block 32 (exact {T(t.raw_type).name})")
        return Embedding("quantized", ex.bits, 32, False)

    # -- the model -----------------------------------------------------------------------------

    def layer_weights(self, i: int) -> dict[str, Linear]:
        c, arch = self.cfg, self.source.arch
        t = self.tensor
        p = f"model.layers.{i}"
        blk = f"blk.{i}."
        out: dict[str, Linear] = {}
        if arch == "llama":
            qkv = [
                _Piece(t(blk + "attn_q.weight"), head_rows=c.head_dim),
                _Piece(t(blk + "attn_k.weight"), head_rows=c.head_dim),
                _Piece(t(blk + "attn_v.weight")),
            ]
        elif blk + "attn_qkv.weight" in self.tensors:
            qkv = [_Piece(t(blk + "attn_qkv.weight"))]
        else:
            qkv = [_Piece(t(blk + f"attn_{x}.weight")) for x in "qkv"]
        qkv_bias = None
        if arch == "phi2":
            if blk + "attn_qkv.bias" in self.tensors:
                b = self.source_vector(blk + "attn_qkv.bias")
            else:
                b = np.concatenate([self.source_vector(blk + f"attn_{x}.bias") for x in "qkv"])
            if np.count_nonzero(b):  # the builder leaves out all-zero q/k/v and MLP biases
                qkv_bias = self.vector(f"{p}.attn.qkv_proj.Add.bias", b)
        out["qkv_proj"] = self.linear(f"{p}.attn.qkv_proj.MatMul", qkv, qkv_bias)
        o_bias = None
        if arch == "phi2":
            o_bias = self.vector(
                f"{p}.attn.o_proj.Add.bias", self.source_vector(blk + "attn_output.bias")
            )
        out["o_proj"] = self.linear(f"{p}.attn.o_proj.MatMul", [_Piece(t(blk + "attn_output.weight"))], o_bias)  # fmt: skip
        if arch == "phi2":
            for role, name in (("fc1", "ffn_up"), ("fc2", "ffn_down")):
                b = self.source_vector(blk + name + ".bias")
                bias = self.vector(f"{p}.mlp.{role}.Add.bias", b) if np.count_nonzero(b) else None
                out[role] = self.linear(f"{p}.mlp.{role}.MatMul", [_Piece(t(blk + name + ".weight"))], bias)  # fmt: skip
            return out
        if arch == "phi3":  # ffn_up is [gate; up]
            up = t(blk + "ffn_up.weight")
            gate_piece, up_piece = _Piece(up, 0, c.n_ff), _Piece(up, c.n_ff, 2 * c.n_ff)
        else:
            gate_piece, up_piece = (
                _Piece(t(blk + "ffn_gate.weight")),
                _Piece(t(blk + "ffn_up.weight")),
            )
        out["gate_proj"] = self.linear(f"{p}.mlp.gate_proj.MatMul", [gate_piece])
        out["up_proj"] = self.linear(f"{p}.mlp.up_proj.MatMul", [up_piece])
        out["down_proj"] = self.linear(f"{p}.mlp.down_proj.MatMul", [_Piece(t(blk + "ffn_down.weight"))])  # fmt: skip
        return out

    def norm(self, gguf: str, onnx: str) -> None:
        self.vector(onnx + ".weight", self.source_vector(gguf + ".weight"))
        if self.source.arch == "phi2":
            self.vector(onnx + ".bias", self.source_vector(gguf + ".bias"))

    def rope_caches(self) -> tuple[int, dict[str, np.ndarray]] | None:
        """cos/sin caches as the builder computes them (float32); LongRoPE's four go in-graph."""
        c = self.cfg
        long_f = self.tensors.get("rope_factors_long.weight")
        short_f = self.tensors.get("rope_factors_short.weight")
        if long_f is not None and short_f is not None and c.rope_original_ctx:
            orig = c.rope_original_ctx
            scale = c.n_ctx_train / orig
            mscale = float(self.meta.get("phi3.rope.scaling.attn_factor", 0.0)) or (
                math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0
            )
            caches = {}
            for size, factors, length in (
                ("large", self.source_vector(long_f.name), c.n_ctx_train),
                ("small", self.source_vector(short_f.name), orig),
            ):
                cos, sin = _rope_cache(c.n_rot, c.rope_base, factors, length, 1.0, mscale)
                caches[f"cos_cache_{size}"], caches[f"sin_cache_{size}"] = cos, sin
            return orig, caches
        factors = np.ones(c.n_rot // 2, np.float32)
        if "rope_freqs.weight" in self.tensors:  # Llama 3.1 frequency divisors
            factors = self.source_vector("rope_freqs.weight")
        cos, sin = _rope_cache(c.n_rot, c.rope_base, factors, c.n_ctx_train, c.rope_freq_scale, 1.0)
        self.array("cos_cache", cos)
        self.array("sin_cache", sin)
        return None

    def run(self) -> GraphSpec:
        c, arch = self.cfg, self.source.arch
        embd = self.tensor("token_embd.weight")
        tied = "output.weight" not in self.tensors
        embd_exact = self.exact([_Piece(embd)])
        embedding = None  # tied: GatherBlockQuantized on the lm_head's codes, as the builder does
        if tied:
            pass
        elif embd_exact is not None and not embd_exact.zero_points:
            embedding = self.quantized_table(embd, embd_exact)
        else:
            self.float_table("model.embed_tokens.weight", embd)
            embedding = Embedding("float")
        layers = []
        longrope = None
        for i in range(c.n_layer):
            p = f"model.layers.{i}"
            self.norm(f"blk.{i}.attn_norm", f"{p}.input_layernorm")
            if i == 0:
                longrope = self.rope_caches()
            if arch != "phi2":
                self.norm(f"blk.{i}.ffn_norm", f"{p}.post_attention_layernorm")
        self.norm("output_norm", f"model.layers.{c.n_layer}.final_norm_layernorm")
        for i in range(c.n_layer):
            layers.append(self.layer_weights(i))
        head = self.tensor("output.weight") if not tied else embd
        head_bias = None
        if arch == "phi2" and "output.bias" in self.tensors:
            head_bias = self.vector("lm_head.Add.bias", self.source_vector("output.bias"))
        lm_head = self.linear("lm_head.MatMul", [_Piece(head)], head_bias)
        if embedding is None:
            embedding = Embedding("tied", lm_head.bits, lm_head.block_size, lm_head.zero_points)
        window = c.sliding_window if c.sliding_window and c.sliding_window < c.n_ctx_train else 0
        return GraphSpec(
            arch=arch,
            n_layer=c.n_layer,
            n_embd=c.n_embd,
            n_head=c.n_head,
            n_head_kv=c.n_head_kv,
            head_dim=c.head_dim,
            n_vocab=embd.shape[0],
            norm_eps=c.norm_eps,
            window=window,
            embedding=embedding,
            layers=layers,
            lm_head=lm_head,
            longrope=longrope,
            has_norm_bias=arch == "phi2",
            initializers=self.inits,
        )


def _rope_cache(n_rot: int, base: float, factors: np.ndarray, length: int, pos_scale: float,
                mscale: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(cos, sin) of shape (length, n_rot / 2) in float32, the builder's formula:
    inv_freq = 1 / (factors · base^(2i / n_rot)), angle = position · pos_scale · inv_freq."""
    f32 = np.float32
    exps = np.arange(0, n_rot, 2, dtype=np.int64).astype(f32) / f32(n_rot)
    inv = f32(1.0) / (np.asarray(factors, f32) * np.power(f32(base), exps, dtype=f32))
    t = np.arange(length, dtype=np.int64).astype(f32) * f32(pos_scale)
    freqs = np.outer(t, inv).astype(f32)
    return (np.cos(freqs) * f32(mscale)).astype(f32), (np.sin(freqs) * f32(mscale)).astype(f32)


def _eos_ids(meta: dict[str, Any], folder: Path | None) -> int | list[int]:
    ids: list[int] = []
    if folder is not None:
        for name in ("generation_config.json", "config.json"):
            try:
                value = json.loads((folder / name).read_text(encoding="utf-8")).get("eos_token_id")
            except (OSError, ValueError):
                continue
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, int) and v not in ids:
                    ids.append(v)
    if not ids and meta.get("tokenizer.ggml.eos_token_id") is not None:
        ids.append(int(meta["tokenizer.ggml.eos_token_id"]))
    return ids[0] if len(ids) == 1 else ids


def _genai_config(s: GraphSpec, arch: str, n_ctx: int, meta: dict[str, Any], eos: Any
                  ) -> dict[str, Any]:  # fmt: skip
    bos = meta.get("tokenizer.ggml.bos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id")
    first_eos = eos[0] if isinstance(eos, list) else eos
    decoder: dict[str, Any] = {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": "model.onnx",
        "head_size": s.head_dim,
        "hidden_size": s.n_embd,
        "inputs": {
            "input_ids": "input_ids",
            "attention_mask": "attention_mask",
            "past_key_names": "past_key_values.%d.key",
            "past_value_names": "past_key_values.%d.value",
        },
        "outputs": {
            "logits": "logits",
            "present_key_names": "present.%d.key",
            "present_value_names": "present.%d.value",
        },
        "num_attention_heads": s.n_head,
        "num_hidden_layers": s.n_layer,
        "num_key_value_heads": s.n_head_kv,
    }
    model: dict[str, Any] = {
        "bos_token_id": int(bos) if bos is not None else first_eos,
        "context_length": n_ctx,
        "decoder": decoder,
        "eos_token_id": eos,
        "pad_token_id": int(pad) if pad is not None else first_eos,
        "type": MODEL_TYPES[arch],
        "vocab_size": s.n_vocab,
    }
    search = {
        "diversity_penalty": 0.0,
        "do_sample": False,
        "early_stopping": True,
        "length_penalty": 1.0,
        "max_length": n_ctx,
        "min_length": 0,
        "no_repeat_ngram_size": 0,
        "num_beams": 1,
        "num_return_sequences": 1,
        "past_present_share_buffer": True,
        "repetition_penalty": 1.0,
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
    }
    return {"model": model, "search": search}


def _hf_config(ex: _Exporter, s: GraphSpec, eos: Any) -> dict[str, Any]:
    """A Hugging Face config.json for a GGUF source (published ONNX folders carry one), so the
    folder holds the exact hyperparameters (rope factors, window) for the way back to GGUF."""
    c, meta, arch = ex.cfg, ex.meta, ex.source.arch
    out: dict[str, Any] = {
        "_name_or_path": str(meta.get("general.name", "")),
        "architectures": [HF_ARCHS[arch]],
        "model_type": MODEL_TYPES[arch],
        "vocab_size": s.n_vocab,
        "hidden_size": c.n_embd,
        "intermediate_size": c.n_ff,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_head_kv,
        "max_position_embeddings": c.n_ctx_train,
        "rope_theta": c.rope_base,
        "tie_word_embeddings": "output.weight" not in ex.tensors,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos,
    }
    if c.head_dim != c.n_embd // c.n_head:
        out["head_dim"] = c.head_dim
    if c.n_rot != c.head_dim:
        out["partial_rotary_factor"] = c.n_rot / c.head_dim
    if arch == "phi2":
        out["layer_norm_eps"] = c.norm_eps
        out["hidden_act"] = "gelu_new"
        return out
    out["rms_norm_eps"] = c.norm_eps
    if arch == "phi3":
        out["original_max_position_embeddings"] = c.rope_original_ctx or c.n_ctx_train
        out["sliding_window"] = c.sliding_window or None
        if s.longrope is not None:
            out["rope_scaling"] = {
                "type": "longrope",
                "long_factor": ex.source_vector("rope_factors_long.weight").tolist(),
                "short_factor": ex.source_vector("rope_factors_short.weight").tolist(),
            }
    if c.rope_freq_scale != 1.0:
        out["rope_scaling"] = {"type": "linear", "factor": 1.0 / c.rope_freq_scale}
    return out


def _tokenizer_files(source: Source, meta: dict[str, Any], out: Path, n_ctx: int) -> None:
    folder = Path(source.path)
    if folder.is_dir() and (folder / "tokenizer.json").is_file():
        for name in TOKENIZER_FILES:  # a Hugging Face folder's own files, as the builder copies
            if (folder / name).is_file():
                shutil.copy2(folder / name, out / name)
        return
    from phirt.quantize.tokenizer_files import write_tokenizer_files
    from phirt.tokenizer import Tokenizer

    tok = Tokenizer.from_metadata(meta, source.path)
    write_tokenizer_files(tok, out, meta.get("tokenizer.chat_template"), n_ctx)


def export_onnx(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    weight_type: str = "auto",
    block_size: int = 32,
    accuracy_level: int = 4,
    search: bool = True,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write ``src`` (Hugging Face folder or GGUF file) as an ONNX Runtime GenAI folder ``out``.

    ``weight_type``: "auto" (exact re-packing of Q4_0/Q8_0/Q6_K tensors, int4 for float ones),
    "int4" or "int8" (every weight matrix; exact only where the source already is that format).
    ``block_size`` (16..256) and ``search`` apply to weights quantized here. ``progress(done,
    total)`` gets source bytes. The folder appears under its name only when complete."""
    from phirt.quantize import open_source

    if weight_type not in WEIGHT_TYPES:
        raise QuantizeError(f"unknown ONNX weight type {weight_type!r}; choose from {WEIGHT_TYPES}")
    if block_size not in (16, 32, 64, 128, 256):
        raise QuantizeError(f"--block-size must be 16, 32, 64, 128 or 256, got {block_size}")
    if not 0 <= accuracy_level <= 4:
        raise QuantizeError(f"--accuracy-level must be in 0..4, got {accuracy_level}")
    if threads is not None:
        if threads < 1:
            raise QuantizeError(f"--threads must be >= 1, got {threads}")
        K.set_num_threads(threads)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QuantizeError("the output folder exists and is not empty", out)
    source = open_source(src)
    if source.arch not in MODEL_TYPES:
        raise QuantizeError(f"architecture {source.arch!r} has no ONNX export", source.path)
    total = sum(t.nbytes for t in source.tensors)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(done, total), total)

    t0 = time.perf_counter()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        ex = _Exporter(source, partial, weight_type, block_size, accuracy_level, search, step)
        spec = ex.run()
        ex.data.close()
        model = build_model(spec, accuracy_level, "phirt")
        import onnx

        onnx.save_model(model, str(partial / "model.onnx"))
        folder = Path(source.path) if Path(source.path).is_dir() else None
        eos = _eos_ids(ex.meta, folder)
        n_ctx = ex.cfg.n_ctx_train
        config = _genai_config(spec, source.arch, n_ctx, ex.meta, eos)
        (partial / "genai_config.json").write_text(json.dumps(config, indent=4))
        if folder is not None and (folder / "config.json").is_file():
            shutil.copy2(folder / "config.json", partial / "config.json")
        else:
            hf = _hf_config(ex, spec, eos)
            (partial / "config.json").write_text(json.dumps(hf, indent=2))
        _tokenizer_files(source, ex.meta, partial, n_ctx)
        if out.exists():
            out.rmdir()
        partial.replace(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result = ex.result
    result.path = str(out)
    result.seconds = time.perf_counter() - t0
    result.bytes_in = total
    result.bytes_out = ex.data.size
    result.n_tensors = len(ex.inits)
    # the GGUF source's "already quantized" warning is replaced by the per-tensor ones above:
    # exact re-packings add no error
    kept = [w for w in source.warnings if "already quantized" not in w]
    result.warnings = kept + result.warnings
    return result

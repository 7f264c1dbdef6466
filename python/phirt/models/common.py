"""Pieces every decoder architecture shares: the config, the tensor table check, weights, KV cache.

An architecture module (phi3.py, phi2.py, llama.py) is a config read from GGUF-named metadata, a
table of tensors with their expected shapes, and a forward pass built from the kernels in
phirt._kernels. Weights come from a model source (formats/source.py: a GGUF file or an ONNX
Runtime GenAI folder) already in the form the kernels use; matrices are KernelMatrix objects, so
``linear`` and the embedding lookup work the same whatever format a matrix came from.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from phirt import _kernels as K
from phirt.errors import FormatError, InvalidArgumentError, UnsupportedError, check_choice
from phirt.formats.source import NUMERICS_KEY


@dataclass
class DecoderConfig:
    """Hyper-parameters of a decoder-only transformer, named as in GGUF metadata."""

    arch: str
    n_vocab: int
    n_embd: int  # hidden size
    n_ff: int  # feed-forward size
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int  # rotary dims per head (partial rotary when < head_dim)
    n_ctx_train: int
    norm_eps: float
    rope_base: float = 10000.0
    rope_freq_scale: float = 1.0
    rope_attn_factor: float = 1.0
    rope_neox: bool = True
    rope_original_ctx: int = 0  # LongRoPE switch point (0: none)
    sliding_window: int = 0  # 0: full attention
    # whose arithmetic the model's own runtime uses where phirt has a choice: "ggml" (llama.cpp:
    # GELU through an f16 table) or "onnxruntime" (float32 GELU); set by the source (NUMERICS_KEY)
    numerics: str = "ggml"

    @property
    def n_embd_q(self) -> int:
        return self.n_head * self.head_dim

    @property
    def n_embd_kv(self) -> int:
        return self.n_head_kv * self.head_dim


def meta_number(
    meta: dict[str, Any], key: str, path: str, kind: type = int, default: Any = None
) -> Any:
    """A numeric metadata value as `kind` (int or float): FormatError naming the key when it is
    missing (and has no default), of another type (a string, a bool, an array) or not finite."""
    value = meta.get(key, default)
    if value is None:
        raise FormatError(f"missing metadata key '{key}'", path)
    ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        what = "an integer" if kind is int else "a number"
        raise FormatError(f"metadata '{key}' must be {what}, got {value!r:.60}", path)
    if kind is float and not math.isfinite(value):
        raise FormatError(f"metadata '{key}' is {value}, not a finite number", path)
    return kind(value)


def read_decoder_config(
    meta: dict[str, Any], path: str, arch: str, n_vocab: int, norm_eps_key: str, **fields: Any
) -> DecoderConfig:
    """The hyper-parameters every architecture stores under the `{arch}.` prefix; `fields` are the
    architecture's own (rope_neox, sliding_window). A missing, mistyped or impossible value is a
    FormatError naming the key."""

    def get(key: str, default: Any = None, kind: type = int, minimum: float | None = 1) -> Any:
        value = meta_number(meta, f"{arch}.{key}", path, kind, default)
        if minimum is not None and value < minimum:
            raise FormatError(f"metadata '{arch}.{key}' is {value}, must be >= {minimum}", path)
        return value

    n_embd = get("embedding_length")
    n_head = get("attention.head_count")
    if n_embd % n_head != 0:
        raise FormatError(
            f"embedding_length {n_embd} is not divisible by head_count {n_head}", path
        )
    n_head_kv = get("attention.head_count_kv", n_head)
    if n_head % n_head_kv != 0:
        raise FormatError(
            f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}", path
        )
    head_dim = get("attention.key_length", n_embd // n_head)
    n_rot = get("rope.dimension_count", head_dim)
    if n_rot > head_dim or n_rot % 2:
        raise FormatError(f"rope.dimension_count {n_rot} does not fit head size {head_dim}", path)
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    freq_scale = 1.0
    if scaling == "linear":
        factor = get("rope.scaling.factor", 1.0, float, None)
        if factor <= 0:
            raise FormatError(f"metadata '{arch}.rope.scaling.factor' is {factor}", path)
        freq_scale = 1.0 / factor
    elif scaling not in ("none", "longrope", "su"):
        raise UnsupportedError(f"rope scaling type {scaling!r:.60} is not supported", path)
    rope_base = get("rope.freq_base", 10000.0, float, None)
    if rope_base <= 0:
        raise FormatError(f"metadata '{arch}.rope.freq_base' is {rope_base}, not positive", path)
    return DecoderConfig(
        arch=arch,
        n_vocab=n_vocab,
        n_embd=n_embd,
        n_ff=get("feed_forward_length"),
        n_layer=get("block_count"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_rot=n_rot,
        n_ctx_train=get("context_length"),
        norm_eps=get(norm_eps_key, 1e-5, float, 0.0),
        rope_base=rope_base,
        rope_freq_scale=freq_scale,
        rope_attn_factor=get("rope.scaling.attn_factor", 1.0, float, None),
        numerics=str(meta.get(NUMERICS_KEY, "ggml")),
        rope_original_ctx=get("rope.scaling.original_context_length", 0, int, 0),
        **fields,
    )


@dataclass
class TensorSpec:
    """One entry of an architecture's tensor table: GGUF name and shape. A name with `blk.{i}.`
    is a per-layer tensor.

    Shapes are numpy order (rows, cols), i.e. (out_features, in_features) for weights.
    """

    name: str
    shape: Callable[[DecoderConfig], tuple[int, ...]]  # -1: any length
    required: bool = True


LAYER_PREFIX = "blk.{i}."

# Precomputed rotary tables (n_positions, n_rot / 2), what ONNX graphs carry as cos_cache /
# sin_cache; with LongRoPE a second, long pair. Optional for every architecture: when present
# they replace the angles computed from rope.freq_base and factors (see make_rope).
ROPE_TABLES = [
    TensorSpec(f"rope_{kind}{suffix}.weight", lambda c: (-1, c.n_rot // 2), required=False)
    for suffix in ("", "_long")
    for kind in ("cos", "sin")
]


@dataclass
class Weights:
    """An architecture's tensors, checked against its table and wrapped for the kernels.

    `globals` is keyed by GGUF name ("output_norm.weight"); `layers[i]` by the name without the
    `blk.{i}.` prefix ("attn_norm.weight"), so the forward pass builds no names per token.
    """

    globals: dict[str, Any]
    layers: list[dict[str, Any]]


def load_weights(source: Any, specs: list[TensorSpec], cfg: DecoderConfig) -> Weights:
    """Check every tensor of ``source`` (formats/source.py) against the table (and the optional
    rotary tables), and load it for the kernels: matrices as KernelMatrix objects, vectors as
    float32 arrays. Optional tensors that are absent are left out."""
    _check_layer_count(source, cfg.n_layer)
    out = Weights({}, [{} for _ in range(cfg.n_layer)])
    for spec in [*specs, *ROPE_TABLES]:
        want = tuple(int(d) for d in spec.shape(cfg))
        if spec.name.startswith(LAYER_PREFIX):
            key = spec.name.removeprefix(LAYER_PREFIX)
            slots = [(layer, key, spec.name.format(i=i)) for i, layer in enumerate(out.layers)]
        else:
            slots = [(out.globals, spec.name, spec.name)]
        for table, key, name in slots:
            t = source.tensors.get(name)
            if t is None:
                if spec.required:
                    raise FormatError(f"required tensor '{name}' is missing", source.path)
                continue
            shape = tuple(t.shape)
            if len(shape) != len(want) or any(
                w not in (-1, d) for w, d in zip(want, shape, strict=True)
            ):
                shown = "(" + ", ".join("*" if w == -1 else str(w) for w in want) + ")"
                raise FormatError(
                    f"tensor '{name}' has shape {shape}, expected {want if -1 not in want else shown}",
                    source.path,
                )
            table[key] = t.load()
    return out


def _check_layer_count(source: Any, n_layer: int) -> None:
    """block_count must match the layers the file has tensors for, before anything is sized by
    it: a damaged count would otherwise build 4 billion layers, or silently skip real ones."""
    present = set()
    for name in source.tensors:
        if name.startswith("blk."):
            index = name[4:].partition(".")[0]
            if index.isdigit():
                present.add(int(index))
    n_present = max(present) + 1 if present else 0
    if n_layer != n_present:
        raise FormatError(
            f"block_count is {n_layer} but the file has tensors for {n_present} layers", source.path
        )


KV_TYPES = ("f16", "q8_0", "f32")


def lazy_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Zeros whose memory is committed 4 KiB page by page as it is first written, so a KV cache
    costs what its context holds. np.zeros maps lazily too, but numpy asks for transparent huge
    pages on large arrays: a token written for every head then commits 2 MiB pages over nearly
    the whole cache (1.6 GB for Phi-3-mini at n_ctx 4096, at the first token), and one
    position's rows, n_ctx · head_dim apart, then share the same few L2 sets (kv_store took 3-4x
    as long). MemoryError, ValueError, OverflowError or OSError when it cannot be had."""
    n = math.prod(shape)
    if os.name != "posix":
        return np.zeros(shape, dtype=dtype)
    nbytes = n * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # Linux; elsewhere there are no huge pages to refuse
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buf, dtype=dtype, count=n).reshape(shape)


class KVCache:
    """Keys and values for every layer: k[layer] is (n_head_kv, n_ctx, head_dim) f16, or with
    kv_type "q8_0" (n_head_kv, n_ctx, head_dim / 32 · 34) bytes of Q8_0 blocks: half the memory,
    and half the bytes each decoded token reads at long context (attn_q8.h). kv_type "f32" keeps
    onnxruntime's f32 cache (what an ONNX model computes with), keys transposed for the kernel:
    k[layer] (n_head_kv, head_dim, n_ctx), v[layer] (n_head_kv, n_ctx, head_dim).

    ``attention(q, k_cache, v_cache, pos0, scale, window=)`` is the kernel for this cache type."""

    def __init__(
        self, cfg: DecoderConfig, n_ctx: int, kv_type: str = "f16", path: str | None = None
    ) -> None:
        check_choice("kv_type", kv_type, KV_TYPES)
        hd = cfg.head_dim
        k_shape = v_shape = (cfg.n_layer, cfg.n_head_kv, n_ctx, hd)
        self.attention = K.attention
        if kv_type == "q8_0":
            if hd % 32:
                raise UnsupportedError(
                    f"kv_type 'q8_0' needs a head size that is a multiple of 32; this model's is "
                    f"{hd} (use kv_type 'f16')",
                    path,
                )
            k_shape = v_shape = (cfg.n_layer, cfg.n_head_kv, n_ctx, hd // 32 * 34)
            dtype: Any = np.uint8
        elif kv_type == "f32":
            k_shape = (cfg.n_layer, cfg.n_head_kv, hd, n_ctx)
            dtype = np.float32
            self.attention = K.attention_f32
            self.store = self._store_f32  # type: ignore[method-assign]
        else:
            dtype = np.float16
        try:
            self.k = lazy_zeros(k_shape, dtype)
            self.v = lazy_zeros(v_shape, dtype)
        except (MemoryError, ValueError, OverflowError, OSError):
            need = 2 * math.prod(k_shape) * np.dtype(dtype).itemsize
            raise InvalidArgumentError(
                f"n_ctx={n_ctx} needs {need / 2**30:.1f} GiB of KV cache, more than this "
                f"process can allocate; use a smaller context"
            ) from None
        self.n_ctx = n_ctx
        self.kv_type = kv_type

    def store(self, layer: int, pos0: int, k: np.ndarray, v: np.ndarray) -> None:
        """Write k, v (m, n_head_kv, head_dim) float32 at positions [pos0, pos0 + m)."""
        K.kv_store(self.k[layer], np.ascontiguousarray(k), pos0)
        K.kv_store(self.v[layer], np.ascontiguousarray(v), pos0)

    def _store_f32(self, layer: int, pos0: int, k: np.ndarray, v: np.ndarray) -> None:
        m = k.shape[0]
        if pos0 < 0 or pos0 + m > self.n_ctx:
            raise ValueError(f"{m} rows at position {pos0} do not fit the cache of {self.n_ctx}")
        self.k[layer][:, :, pos0 : pos0 + m] = k.transpose(1, 2, 0)
        self.v[layer][:, pos0 : pos0 + m] = v.transpose(1, 0, 2)


@dataclass
class SeqBatch:
    """Tokens of several sequences in one forward pass (the server's continuous batching): rows
    [bounds[i], bounds[i + 1]) belong to the sequence whose keys and values live in caches[i], at
    consecutive positions. Attention runs per sequence over its own cache; every other step (the
    matrix products above all: their weights are read once for all rows) runs on all rows."""

    caches: Sequence[KVCache]
    bounds: Sequence[int]  # len(caches) + 1 row offsets, from 0 to the number of rows


_batch_invariant = contextvars.ContextVar("phirt_batch_invariant", default=False)


@contextlib.contextmanager
def batch_invariant_matmuls() -> Iterator[None]:
    """Within this block every matrix product gives each row exactly what it gives that row
    alone (K.matmul's batch_invariant: the GEMV's one-row dots for any number of rows), so a
    sequence's logits do not depend on which other sequences share its decode step."""
    token = _batch_invariant.set(True)
    try:
        yield
    finally:
        _batch_invariant.reset(token)


def linear(x: np.ndarray, w: Any, bias: np.ndarray | None = None) -> np.ndarray:
    """x @ w.T (+ bias); w is a KernelMatrix (formats/source.py)."""
    y = w.matmul(x, batch_invariant=_batch_invariant.get())
    if bias is not None:
        y += bias
    return y


def split_qkv(qkv: np.ndarray, cfg: DecoderConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused QKV rows (m, n_embd_q + 2 n_embd_kv) -> q (m, n_head, hd), k, v (m, n_head_kv, hd)."""
    m = qkv.shape[0]
    nq = cfg.n_embd_q
    nk = cfg.n_embd_kv
    q = np.ascontiguousarray(qkv[:, :nq]).reshape(m, cfg.n_head, cfg.head_dim)
    k = np.ascontiguousarray(qkv[:, nq : nq + nk]).reshape(m, cfg.n_head_kv, cfg.head_dim)
    v = np.ascontiguousarray(qkv[:, nq + nk :]).reshape(m, cfg.n_head_kv, cfg.head_dim)
    return q, k, v


class TableRope:
    """RoPE from precomputed tables (ROPE_TABLES). With LongRoPE's second pair, every token of a
    call uses the long tables once the call's total length exceeds rope.scaling.original_context_length
    (the If on total sequence length in onnxruntime-genai's graphs), else the short ones; the keys
    already cached keep the rotation they were stored with, as in onnxruntime."""

    def __init__(self, cfg: DecoderConfig, w: dict[str, Any]) -> None:
        self.short = (w["rope_cos.weight"], w["rope_sin.weight"])
        long = (w.get("rope_cos_long.weight"), w.get("rope_sin_long.weight"))
        self.long = long if long[0] is not None and long[1] is not None else None
        self.switch = cfg.rope_original_ctx if self.long is not None else 0
        self.n_rot, self.neox = cfg.n_rot, cfg.rope_neox

    def __call__(self, x: np.ndarray, positions: np.ndarray) -> None:
        cos, sin = self.short
        if self.long is not None and int(positions[-1]) >= self.switch:
            cos, sin = self.long
        K.rope_cache(x, positions, cos, sin, self.n_rot, self.neox)


def has_rope_tables(w: dict[str, Any]) -> bool:
    return "rope_cos.weight" in w and "rope_sin.weight" in w


class SelfAttention:
    """RoPE, cache update and causal attention, with every setting fixed once at load.

    q_prescale: scale q by 1/sqrt(head_dim) before attention (Phi does this to keep f16 scores in
    range) instead of scaling the scores. ``weights`` (the model's global tensors) supply the
    rotary tables when the source has them; otherwise angles come from rope.freq_base and
    ``freq_factors``.
    """

    def __init__(
        self,
        cfg: DecoderConfig,
        *,
        q_prescale: bool,
        freq_factors: np.ndarray | None = None,
        weights: dict[str, Any] | None = None,
    ) -> None:
        self.rope: Callable[[np.ndarray, np.ndarray], Any]
        if weights is not None and has_rope_tables(weights):
            self.rope = TableRope(cfg, weights)
        else:
            self.rope = functools.partial(
                K.rope,
                n_rot=cfg.n_rot,
                freq_base=cfg.rope_base,
                neox=cfg.rope_neox,
                freq_factors=freq_factors,
                freq_scale=cfg.rope_freq_scale,
                attn_factor=cfg.rope_attn_factor,
            )
        scale = 1.0 / math.sqrt(cfg.head_dim)
        self.q_scale = np.float32(scale) if q_prescale else None
        self.score_scale = 1.0 if q_prescale else scale
        self.window = cfg.sliding_window
        self.n_out = cfg.n_embd_q

    def __call__(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        positions: np.ndarray,
        cache: KVCache | SeqBatch,
        layer: int,
    ) -> np.ndarray:
        """q (m, n_head, hd), k and v (m, n_head_kv, hd) at `positions` -> (m, n_head * hd).
        With a SeqBatch each sequence's rows attend over its own cache."""
        self.rope(q, positions)
        self.rope(k, positions)
        if self.q_scale is not None:
            q *= self.q_scale
        if isinstance(cache, KVCache):
            return self._attend(q, k, v, int(positions[0]), cache, layer)
        caches, bounds = cache.caches, cache.bounds
        if all(c.kv_type in ("f16", "q8_0") for c in caches):
            # every sequence in one call: the same bits as a call each, a fraction of the overhead
            out = K.attention_spans(
                q,
                np.ascontiguousarray(k),
                np.ascontiguousarray(v),
                [c.k[layer] for c in caches],
                [c.v[layer] for c in caches],
                list(bounds),
                [int(positions[r0]) for r0 in bounds[:-1]],
                self.score_scale,
                window=self.window,
            )
            return out.reshape(q.shape[0], self.n_out)
        out = np.empty((q.shape[0], self.n_out), dtype=np.float32)
        for c, r0, r1 in zip(caches, bounds[:-1], bounds[1:], strict=True):
            out[r0:r1] = self._attend(q[r0:r1], k[r0:r1], v[r0:r1], int(positions[r0]), c, layer)
        return out

    def _attend(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int, cache: KVCache, layer: int
    ) -> np.ndarray:
        cache.store(layer, pos0, k, v)
        out = cache.attention(
            q, cache.k[layer], cache.v[layer], pos0, self.score_scale, window=self.window
        )
        return out.reshape(q.shape[0], self.n_out)

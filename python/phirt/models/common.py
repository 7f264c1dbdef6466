"""Pieces every decoder architecture shares: the config, the tensor table check, weights, KV cache.

An architecture module (phi3.py, phi2.py, llama.py) is a config read from GGUF metadata, a table of
tensors with their expected shapes, and a forward pass built from the kernels in phirt._kernels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from phirt import _kernels as K
from phirt.errors import FormatError, InvalidArgumentError, UnsupportedError, check_choice
from phirt.formats.gguf import SUPPORTED_TYPES


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
    shape: Callable[[DecoderConfig], tuple[int, ...]]
    required: bool = True


LAYER_PREFIX = "blk.{i}."


@dataclass
class Weights:
    """An architecture's tensors, checked against its table and wrapped for the kernels.

    `globals` is keyed by GGUF name ("output_norm.weight"); `layers[i]` by the name without the
    `blk.{i}.` prefix ("attn_norm.weight"), so the forward pass builds no names per token.
    """

    globals: dict[str, Any]
    layers: list[dict[str, Any]]


def load_weights(gguf: Any, specs: list[TensorSpec], cfg: DecoderConfig) -> Weights:
    """Check every tensor against the table and wrap it for the kernels.

    2-D tensors become QMatrix views on the memory map (no copy); 1-D ones (norms, biases, rope
    factors) become small float32 arrays. Optional tensors that are absent are left out.
    """
    _check_layer_count(gguf, cfg.n_layer)
    out = Weights({}, [{} for _ in range(cfg.n_layer)])
    for spec in specs:
        want = tuple(int(d) for d in spec.shape(cfg))
        if spec.name.startswith(LAYER_PREFIX):
            key = spec.name.removeprefix(LAYER_PREFIX)
            slots = [(layer, key, spec.name.format(i=i)) for i, layer in enumerate(out.layers)]
        else:
            slots = [(out.globals, spec.name, spec.name)]
        for table, key, name in slots:
            t = gguf.tensors.get(name)
            if t is None:
                if spec.required:
                    raise FormatError(f"required tensor '{name}' is missing", gguf.path)
                continue
            if tuple(t.shape) != want:
                raise FormatError(
                    f"tensor '{name}' has shape {tuple(t.shape)}, expected {want}", gguf.path
                )
            table[key] = _wrap(gguf, t)
    return out


def _check_layer_count(gguf: Any, n_layer: int) -> None:
    """block_count must match the layers the file has tensors for, before anything is sized by
    it: a damaged count would otherwise build 4 billion layers, or silently skip real ones."""
    present = set()
    for name in gguf.tensors:
        if name.startswith("blk."):
            index = name[4:].partition(".")[0]
            if index.isdigit():
                present.add(int(index))
    n_present = max(present) + 1 if present else 0
    if n_layer != n_present:
        raise FormatError(
            f"block_count is {n_layer} but the file has tensors for {n_present} layers", gguf.path
        )


def _wrap(gguf: Any, t: Any) -> Any:
    if len(t.shape) == 1:
        return np.ascontiguousarray(t.to_float32(), dtype=np.float32)
    if t.ggml_type not in SUPPORTED_TYPES:
        raise UnsupportedError(
            f"tensor '{t.name}' uses quant type {t.type_name}, which phirt does not support",
            gguf.path,
        )
    n, k = t.shape
    try:
        return K.QMatrix(t.data, t.ggml_type, n, k)
    except ValueError as exc:  # the table check should leave none: name the tensor if one is left
        raise FormatError(f"tensor '{t.name}': {exc}", gguf.path) from None


KV_TYPES = ("f16", "q8_0")


class KVCache:
    """Keys and values for every layer: k[layer] is (n_head_kv, n_ctx, head_dim) f16, or with
    kv_type "q8_0" (n_head_kv, n_ctx, head_dim / 32 · 34) bytes of Q8_0 blocks: half the memory,
    and half the bytes each decoded token reads at long context (attn_q8.h)."""

    def __init__(
        self, cfg: DecoderConfig, n_ctx: int, kv_type: str = "f16", path: str | None = None
    ) -> None:
        check_choice("kv_type", kv_type, KV_TYPES)
        if kv_type == "q8_0":
            if cfg.head_dim % 32:
                raise UnsupportedError(
                    f"kv_type 'q8_0' needs a head size that is a multiple of 32; this model's is "
                    f"{cfg.head_dim} (use kv_type 'f16')",
                    path,
                )
            shape, dtype = (cfg.n_layer, cfg.n_head_kv, n_ctx, cfg.head_dim // 32 * 34), np.uint8
        else:
            shape, dtype = (cfg.n_layer, cfg.n_head_kv, n_ctx, cfg.head_dim), np.float16
        # np.zeros maps fresh pages lazily: memory is committed as the context fills.
        try:
            self.k = np.zeros(shape, dtype=dtype)
            self.v = np.zeros(shape, dtype=dtype)
        except (MemoryError, ValueError):  # numpy: ValueError when the size overflows
            need = 2 * math.prod(shape) * np.dtype(dtype).itemsize
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


def linear(x: np.ndarray, w: Any, bias: np.ndarray | None = None) -> np.ndarray:
    """x @ w.T (+ bias)."""
    y = K.matmul(w, x)
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


class SelfAttention:
    """RoPE, cache update and causal attention, with every setting fixed once at load.

    q_prescale: scale q by 1/sqrt(head_dim) before attention (Phi does this to keep f16 scores in
    range) instead of scaling the scores.
    """

    def __init__(
        self, cfg: DecoderConfig, *, q_prescale: bool, freq_factors: np.ndarray | None = None
    ) -> None:
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
        cache: KVCache,
        layer: int,
    ) -> np.ndarray:
        """q (m, n_head, hd), k and v (m, n_head_kv, hd) at `positions` -> (m, n_head * hd)."""
        self.rope(q, positions)
        self.rope(k, positions)
        pos0 = int(positions[0])
        cache.store(layer, pos0, k, v)
        if self.q_scale is not None:
            q *= self.q_scale
        out = K.attention(
            q, cache.k[layer], cache.v[layer], pos0, self.score_scale, window=self.window
        )
        return out.reshape(q.shape[0], self.n_out)

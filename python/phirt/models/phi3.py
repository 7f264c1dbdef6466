"""Phi-3 / Phi-3.5 / Phi-4-mini / Phi-4 (GGUF architecture `phi3`).

Pre-norm decoder with RMSNorm, fused QKV and fused gate/up (SwiGLU), NeoX RoPE. Variants are
metadata: GQA (head_count_kv), partial rotary (rope.dimension_count, Phi-4-mini), tied embeddings
(no `output.weight`), sliding window (attention.sliding_window) and LongRoPE (rope_factors_long /
rope_factors_short chosen by the context size against rope.scaling.original_context_length).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from phirt import _kernels as K
from phirt.errors import FormatError
from phirt.models.common import (
    DecoderConfig,
    KVCache,
    SelfAttention,
    SeqBatch,
    TensorSpec,
    linear,
    load_weights,
    meta_number,
    read_decoder_config,
    split_qkv,
)


def read_config(meta: dict[str, Any], path: str, n_vocab: int) -> DecoderConfig:
    window = meta_number(meta, "phi3.attention.sliding_window", path, int, 0)
    if window < 0:
        raise FormatError(f"metadata 'phi3.attention.sliding_window' is {window}", path)
    eps_key = "attention.layer_norm_rms_epsilon"
    return read_decoder_config(meta, path, "phi3", n_vocab, eps_key, sliding_window=window)


TENSORS = [
    TensorSpec("token_embd.weight", lambda c: (c.n_vocab, c.n_embd)),
    TensorSpec("output_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("output.weight", lambda c: (c.n_vocab, c.n_embd), required=False),
    TensorSpec("rope_factors_long.weight", lambda c: (c.n_rot // 2,), required=False),
    TensorSpec("rope_factors_short.weight", lambda c: (c.n_rot // 2,), required=False),
    TensorSpec("blk.{i}.attn_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("blk.{i}.attn_qkv.weight", lambda c: (c.n_embd_q + 2 * c.n_embd_kv, c.n_embd)),
    TensorSpec("blk.{i}.attn_output.weight", lambda c: (c.n_embd, c.n_embd_q)),
    TensorSpec("blk.{i}.ffn_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("blk.{i}.ffn_up.weight", lambda c: (2 * c.n_ff, c.n_embd)),
    TensorSpec("blk.{i}.ffn_down.weight", lambda c: (c.n_embd, c.n_ff)),
]


class Phi3:
    """Weights plus forward pass; buffers come from the caller's KV cache."""

    def __init__(self, source: Any, cfg: DecoderConfig, n_ctx: int) -> None:
        self.cfg = cfg
        w = load_weights(source, TENSORS, cfg)
        self.w, self.layers = w.globals, w.layers
        self.output = self.w.get("output.weight", self.w["token_embd.weight"])
        # LongRoPE: llama.cpp picks the factor set once, from the context size.
        use_long = cfg.rope_original_ctx and n_ctx > cfg.rope_original_ctx
        key = "rope_factors_long.weight" if use_long else "rope_factors_short.weight"
        self.attention = SelfAttention(
            cfg, q_prescale=True, freq_factors=self.w.get(key), weights=self.w
        )

    def forward(
        self, tokens: np.ndarray, positions: np.ndarray, cache: KVCache | SeqBatch
    ) -> np.ndarray:
        """Hidden states after the final norm, (m, n_embd), for tokens at `positions`."""
        cfg, w = self.cfg, self.w
        x = w["token_embd.weight"].get_rows(tokens)
        for i, lw in enumerate(self.layers):
            h = K.rms_norm(x, lw["attn_norm.weight"], cfg.norm_eps)
            q, k, v = split_qkv(linear(h, lw["attn_qkv.weight"]), cfg)
            a = self.attention(q, k, v, positions, cache, i)
            x += linear(a, lw["attn_output.weight"])
            h = K.rms_norm(x, lw["ffn_norm.weight"], cfg.norm_eps)
            h = K.swiglu(linear(h, lw["ffn_up.weight"]))
            x += linear(h, lw["ffn_down.weight"])
        return K.rms_norm(x, w["output_norm.weight"], cfg.norm_eps)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return linear(hidden, self.output)

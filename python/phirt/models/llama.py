"""Llama-architecture files (GGUF architecture `llama`): SmolLM2 and the many community models.

Pre-norm RMSNorm decoder, separate Q/K/V, SwiGLU with separate gate/up, normal (GPT-J style) RoPE
with optional `rope_freqs` factors, tied embeddings when `output.weight` is absent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from phirt import _kernels as K
from phirt.models.common import (
    DecoderConfig,
    KVCache,
    SelfAttention,
    SeqBatch,
    TensorSpec,
    linear,
    load_weights,
    read_decoder_config,
)


def read_config(meta: dict[str, Any], path: str, n_vocab: int) -> DecoderConfig:
    return read_decoder_config(
        meta, path, "llama", n_vocab, "attention.layer_norm_rms_epsilon", rope_neox=False
    )


TENSORS = [
    TensorSpec("token_embd.weight", lambda c: (c.n_vocab, c.n_embd)),
    TensorSpec("output_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("output.weight", lambda c: (c.n_vocab, c.n_embd), required=False),
    TensorSpec("rope_freqs.weight", lambda c: (c.n_rot // 2,), required=False),
    TensorSpec("blk.{i}.attn_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("blk.{i}.attn_q.weight", lambda c: (c.n_embd_q, c.n_embd)),
    TensorSpec("blk.{i}.attn_k.weight", lambda c: (c.n_embd_kv, c.n_embd)),
    TensorSpec("blk.{i}.attn_v.weight", lambda c: (c.n_embd_kv, c.n_embd)),
    TensorSpec("blk.{i}.attn_output.weight", lambda c: (c.n_embd, c.n_embd_q)),
    TensorSpec("blk.{i}.ffn_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("blk.{i}.ffn_gate.weight", lambda c: (c.n_ff, c.n_embd)),
    TensorSpec("blk.{i}.ffn_up.weight", lambda c: (c.n_ff, c.n_embd)),
    TensorSpec("blk.{i}.ffn_down.weight", lambda c: (c.n_embd, c.n_ff)),
]


class Llama:
    def __init__(self, source: Any, cfg: DecoderConfig, n_ctx: int) -> None:
        self.cfg = cfg
        w = load_weights(source, TENSORS, cfg)
        self.w, self.layers = w.globals, w.layers
        self.output = self.w.get("output.weight", self.w["token_embd.weight"])
        self.attention = SelfAttention(
            cfg, q_prescale=False, freq_factors=self.w.get("rope_freqs.weight"), weights=self.w
        )

    def forward(
        self, tokens: np.ndarray, positions: np.ndarray, cache: KVCache | SeqBatch
    ) -> np.ndarray:
        cfg, w = self.cfg, self.w
        m = tokens.shape[0]
        x = w["token_embd.weight"].get_rows(tokens)
        for i, lw in enumerate(self.layers):
            h = K.rms_norm(x, lw["attn_norm.weight"], cfg.norm_eps)
            q = linear(h, lw["attn_q.weight"]).reshape(m, cfg.n_head, cfg.head_dim)
            k = linear(h, lw["attn_k.weight"]).reshape(m, cfg.n_head_kv, cfg.head_dim)
            v = linear(h, lw["attn_v.weight"]).reshape(m, cfg.n_head_kv, cfg.head_dim)
            a = self.attention(q, k, v, positions, cache, i)
            x += linear(a, lw["attn_output.weight"])
            h = K.rms_norm(x, lw["ffn_norm.weight"], cfg.norm_eps)
            g = K.silu_mul(linear(h, lw["ffn_gate.weight"]), linear(h, lw["ffn_up.weight"]))
            x += linear(g, lw["ffn_down.weight"])
        return K.rms_norm(x, w["output_norm.weight"], cfg.norm_eps)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return linear(hidden, self.output)

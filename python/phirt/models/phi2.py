"""Phi-2 / Phi-1.5 (GGUF architecture `phi2`).

Parallel attention and MLP from one LayerNorm (with bias), GELU MLP, partial NeoX rotary, biases on
every projection, output bias. QKV may be fused (`attn_qkv`) or separate (`attn_q/k/v`).
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
    read_decoder_config,
    split_qkv,
)


def read_config(meta: dict[str, Any], path: str, n_vocab: int) -> DecoderConfig:
    return read_decoder_config(meta, path, "phi2", n_vocab, "attention.layer_norm_epsilon")


def _qkv_rows(c: DecoderConfig) -> int:
    return c.n_embd_q + 2 * c.n_embd_kv


TENSORS = [
    TensorSpec("token_embd.weight", lambda c: (c.n_vocab, c.n_embd)),
    TensorSpec("output_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("output_norm.bias", lambda c: (c.n_embd,)),
    TensorSpec("output.weight", lambda c: (c.n_vocab, c.n_embd)),
    TensorSpec("output.bias", lambda c: (c.n_vocab,)),
    TensorSpec("blk.{i}.attn_norm.weight", lambda c: (c.n_embd,)),
    TensorSpec("blk.{i}.attn_norm.bias", lambda c: (c.n_embd,)),
    TensorSpec("blk.{i}.attn_qkv.weight", lambda c: (_qkv_rows(c), c.n_embd), required=False),
    TensorSpec("blk.{i}.attn_qkv.bias", lambda c: (_qkv_rows(c),), required=False),
    TensorSpec("blk.{i}.attn_q.weight", lambda c: (c.n_embd_q, c.n_embd), required=False),
    TensorSpec("blk.{i}.attn_q.bias", lambda c: (c.n_embd_q,), required=False),
    TensorSpec("blk.{i}.attn_k.weight", lambda c: (c.n_embd_kv, c.n_embd), required=False),
    TensorSpec("blk.{i}.attn_k.bias", lambda c: (c.n_embd_kv,), required=False),
    TensorSpec("blk.{i}.attn_v.weight", lambda c: (c.n_embd_kv, c.n_embd), required=False),
    TensorSpec("blk.{i}.attn_v.bias", lambda c: (c.n_embd_kv,), required=False),
    TensorSpec("blk.{i}.attn_output.weight", lambda c: (c.n_embd, c.n_embd_q)),
    TensorSpec("blk.{i}.attn_output.bias", lambda c: (c.n_embd,)),
    TensorSpec("blk.{i}.ffn_up.weight", lambda c: (c.n_ff, c.n_embd)),
    TensorSpec("blk.{i}.ffn_up.bias", lambda c: (c.n_ff,)),
    TensorSpec("blk.{i}.ffn_down.weight", lambda c: (c.n_embd, c.n_ff)),
    TensorSpec("blk.{i}.ffn_down.bias", lambda c: (c.n_embd,)),
]


class Phi2:
    def __init__(self, source: Any, cfg: DecoderConfig, n_ctx: int) -> None:
        self.cfg = cfg
        w = load_weights(source, TENSORS, cfg)
        self.w, self.layers = w.globals, w.layers
        for i, lw in enumerate(self.layers):
            fused = "attn_qkv.weight" in lw
            separate = all(f"attn_{x}.weight" in lw for x in "qkv")
            if not (fused or separate):
                raise FormatError(f"layer {i} has neither attn_qkv nor attn_q/k/v", source.path)
        self.attention = SelfAttention(cfg, q_prescale=True, weights=self.w)
        self.gelu = K.gelu_tanh if cfg.numerics == "onnxruntime" else K.gelu

    def _qkv(self, h: np.ndarray, lw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.cfg
        if "attn_qkv.weight" in lw:
            return split_qkv(linear(h, lw["attn_qkv.weight"], lw.get("attn_qkv.bias")), cfg)
        m = h.shape[0]
        q = linear(h, lw["attn_q.weight"], lw.get("attn_q.bias"))
        k = linear(h, lw["attn_k.weight"], lw.get("attn_k.bias"))
        v = linear(h, lw["attn_v.weight"], lw.get("attn_v.bias"))
        return (
            q.reshape(m, cfg.n_head, cfg.head_dim),
            k.reshape(m, cfg.n_head_kv, cfg.head_dim),
            v.reshape(m, cfg.n_head_kv, cfg.head_dim),
        )

    def forward(
        self, tokens: np.ndarray, positions: np.ndarray, cache: KVCache | SeqBatch
    ) -> np.ndarray:
        cfg, w = self.cfg, self.w
        x = w["token_embd.weight"].get_rows(tokens)
        for i, lw in enumerate(self.layers):
            h = K.layer_norm(x, lw["attn_norm.weight"], lw["attn_norm.bias"], cfg.norm_eps)
            q, k, v = self._qkv(h, lw)
            a = self.attention(q, k, v, positions, cache, i)
            a = linear(a, lw["attn_output.weight"], lw["attn_output.bias"])
            f = self.gelu(linear(h, lw["ffn_up.weight"], lw["ffn_up.bias"]))
            a += linear(f, lw["ffn_down.weight"], lw["ffn_down.bias"])
            x += a
        return K.layer_norm(x, w["output_norm.weight"], w["output_norm.bias"], cfg.norm_eps)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return linear(hidden, self.w["output.weight"], self.w["output.bias"])

"""Hugging Face tensor names -> GGUF tensor names, one table per source architecture.

GGUF names are llama.cpp's (what its converter writes and its loaders look up), so a file written
by phirt loads in llama.cpp and in phirt alike. Per-layer names are written without the
``model.layers.{i}.`` / ``blk.{i}.`` prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["TABLES", "NameTable", "gguf_name", "layer_of"]

HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
GGUF_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class NameTable:
    hf_architecture: str  # config.json "architectures"[0]
    gguf_arch: str  # general.architecture
    globals: Mapping[str, str]
    per_layer: Mapping[str, str]
    # HF names (or per-layer suffixes) that carry nothing the GGUF needs (rotary caches)
    ignored: tuple[str, ...] = field(default=())


PHI3 = NameTable(
    # Phi-3 / Phi-3.5 mini and medium, Phi-4-mini: fused qkv and fused gate|up projections
    hf_architecture="Phi3ForCausalLM",
    gguf_arch="phi3",
    globals={
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",  # absent when tie_word_embeddings (Phi-4-mini)
    },
    per_layer={
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.qkv_proj.weight": "attn_qkv.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_up_proj.weight": "ffn_up.weight",  # [gate; up], llama.cpp splits it at run time
        "mlp.down_proj.weight": "ffn_down.weight",
    },
    ignored=("self_attn.rotary_emb.inv_freq",),
)

PHI2 = NameTable(
    # Phi-2 (and Phi-1.5) as transformers' PhiForCausalLM: LayerNorm + biases everywhere
    hf_architecture="PhiForCausalLM",
    gguf_arch="phi2",
    globals={
        "model.embed_tokens.weight": "token_embd.weight",
        "model.final_layernorm.weight": "output_norm.weight",
        "model.final_layernorm.bias": "output_norm.bias",
        "lm_head.weight": "output.weight",
        "lm_head.bias": "output.bias",
    },
    per_layer={
        "input_layernorm.weight": "attn_norm.weight",
        "input_layernorm.bias": "attn_norm.bias",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.dense.weight": "attn_output.weight",
        "self_attn.dense.bias": "attn_output.bias",
        "mlp.fc1.weight": "ffn_up.weight",
        "mlp.fc1.bias": "ffn_up.bias",
        "mlp.fc2.weight": "ffn_down.weight",
        "mlp.fc2.bias": "ffn_down.bias",
    },
    ignored=("self_attn.rotary_emb.inv_freq",),
)

LLAMA = NameTable(
    # Llama 2/3, SmolLM2 and other LlamaForCausalLM checkpoints; q/k rows are permuted (hf.py)
    hf_architecture="LlamaForCausalLM",
    gguf_arch="llama",
    globals={
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    },
    per_layer={
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    },
    ignored=("self_attn.rotary_emb.inv_freq",),
)

TABLES: dict[str, NameTable] = {t.hf_architecture: t for t in (PHI3, PHI2, LLAMA)}


def gguf_name(table: NameTable, hf_name: str) -> str | None:
    """The GGUF name of an HF tensor; None for tensors that are dropped; KeyError if unknown."""
    if hf_name in table.globals:
        return table.globals[hf_name]
    if hf_name in table.ignored:
        return None
    m = HF_LAYER.match(hf_name)
    if m:
        suffix = m.group(2)
        if suffix in table.per_layer:
            return f"blk.{int(m.group(1))}.{table.per_layer[suffix]}"
        if suffix in table.ignored:
            return None
    raise KeyError(hf_name)


def layer_of(name: str) -> int:
    """Block index of a GGUF tensor name, -1 for tensors outside the blocks."""
    m = GGUF_LAYER.match(name)
    return int(m.group(1)) if m else -1

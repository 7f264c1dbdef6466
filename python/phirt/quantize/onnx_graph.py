"""The decoder graph onnxruntime-genai's model builder (0.18, ``-p int4 -e cpu``) emits, for the
architectures phirt exports: Phi-3 / Phi-3.5 / Phi-4-mini / Phi-4 ("phi3"), Phi-2 ("phi") and
Llama ("llama").

Node and tensor names, op types, attributes and graph inputs/outputs are the builder's, so
onnxruntime-genai runs the folder and readers of builder folders (phirt's ONNX loader) read it:

    input_ids, attention_mask, past_key_values.{i}.key/value  ->  logits, present.{i}.key/value
    /model/attn_mask_reformat/...          seqlens_k = ReduceSum(mask) - 1, total = Shape(mask)[1]
    /model/rope_caches_subgraph/If         LongRoPE: long caches when total > original context
    /model/embed_tokens/Gather             (or GatherBlockQuantized on quantized tables)
    /model/layers.{i}/input_layernorm      SimplifiedLayerNormalization / Skip... (LayerNorm: Phi-2)
    /model/layers.{i}/attn/qkv_proj/MatMul_Q4     MatMulNBits (+ Add for biases)
    /model/layers.{i}/attn/GroupQueryAttention    rotary inside (cos_cache / sin_cache)
    /model/layers.{i}/attn/o_proj/MatMul_Q4, post_attention_layernorm (SkipSimplified...)
    /model/layers.{i}/mlp/{gate,up,down}_proj     SiLU as Sigmoid + Mul; Phi-2: fc1, Gelu, fc2
    /model/layers.{L}/final_norm_layernorm, /lm_head/MatMul_Q4 (+ Add) -> logits

What differs from the builder, on purpose: the sliding window always reaches GroupQueryAttention
(local_window_size = the window, which onnxruntime counts as phirt and llama.cpp do: that many
keys, the current one included), over the full KV cache (builder 0.18 drops the window from
configs without layer_types, and with them switches to a ring cache); a weight may be 8-bit where
its source was 8-bit (lossless exports); Phi-2's LayerNorms get the model's epsilon (builder 0.18
writes 1e-6 whatever the config says); no value_info shape annotations are written (onnxruntime
infers them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Embedding", "GraphSpec", "Linear", "build_model"]

FLOAT, INT32, INT64 = 1, 6, 7  # onnx TensorProto data types
MS = "com.microsoft"


@dataclass(frozen=True)
class Linear:
    """One MatMulNBits weight: initializer base name (``model.layers.0.attn.qkv_proj.MatMul``),
    its sizes and format, and its bias initializer (Add) when it has one."""

    base: str
    n: int
    k: int
    bits: int
    block_size: int
    zero_points: bool
    bias: str | None = None

    @property
    def suffix(self) -> str:
        return f"Q{self.bits}"

    @property
    def inputs(self) -> list[str]:
        names = [f"{self.base}.weight_{self.suffix}", f"{self.base}.weight_scales"]
        if self.zero_points:
            names.append(f"{self.base}.weight_zero_points")
        return names


@dataclass(frozen=True)
class Embedding:
    """The token table: "float" (Gather on model.embed_tokens.weight), "quantized"
    (GatherBlockQuantized on its own int4 / uint8 table) or "tied" (GatherBlockQuantized on the
    lm_head's MatMulNBits weights, reshaped, as the builder's shared embeddings)."""

    kind: str
    bits: int = 4
    block_size: int = 32
    zero_points: bool = False


@dataclass
class GraphSpec:
    arch: str  # phi3 | phi2 | llama
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    norm_eps: float
    window: int  # attention window in keys (0: none)
    embedding: Embedding
    # per layer: role -> Linear (qkv_proj, o_proj, gate_proj, up_proj, down_proj | fc1, fc2)
    layers: list[dict[str, Linear]]
    lm_head: Linear
    # LongRoPE: (original context, {cos_cache_small, sin_cache_small, cos_cache_large,
    # sin_cache_large} arrays); None: cos_cache / sin_cache are initializers
    longrope: tuple[int, dict[str, np.ndarray]] | None = None
    has_norm_bias: bool = False  # Phi-2 LayerNorm
    initializers: list[Any] = field(default_factory=list)  # TensorProtos (external data)


class _Graph:
    """Nodes in the builder's order, with its constant deduplication."""

    def __init__(self, accuracy_level: int) -> None:
        from onnx import helper

        self.h = helper
        self.accuracy_level = accuracy_level  # of every MatMulNBits
        self.nodes: list[Any] = []
        self._consts: set[str] = set()

    def node(self, op: str, name: str, inputs: list[str], outputs: list[str], domain: str = "",
             **attrs: Any) -> str:  # fmt: skip
        self.nodes.append(
            self.h.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs)
        )
        return outputs[0]

    def const_int64(self, value: int | list[int]) -> str:
        """The builder's shared INT64 constant: /model/constants/INT64/{value}."""
        key = str(value)
        out = f"/model/constants/INT64/{key}"
        if key not in self._consts:
            self._consts.add(key)
            arr = np.array(value, dtype=np.int64)
            tensor = self.h.make_tensor(out, INT64, arr.shape, arr.tobytes(), raw=True)
            self.node("Constant", f"/model/constant_nodes/INT64/{key}", [], [out], value=tensor)
        return out


def _mask_subgraph(g: _Graph, longrope: tuple[int, dict[str, np.ndarray]] | None) -> None:
    base = "/model/attn_mask_reformat/attn_mask_subgraph"
    if longrope is not None:
        orig, caches = longrope
        const_orig = g.const_int64(orig)
        shape = g.node("Shape", f"{base}/Shape", ["attention_mask"], [f"{base}/Shape/output_0"])
        total = g.node("Gather", f"{base}/Gather", [shape, g.const_int64(1)],
                       [f"{base}/Gather/output_0"], axis=0)  # fmt: skip
        rope = "/model/rope_caches_subgraph"
        greater = g.node("Greater", f"{rope}/Greater", [total, const_orig],
                         [f"{rope}/Greater/output_0"])  # fmt: skip
        branches = {}
        for branch, size in (("then_branch", "large"), ("else_branch", "small")):
            nodes, outs = [], []
            for kind in ("cos", "sin"):
                name = f"{kind}_cache_{size}"
                arr = np.ascontiguousarray(caches[name], dtype=np.float32)
                t = g.h.make_tensor(name, FLOAT, arr.shape, arr.tobytes(), raw=True)
                nodes.append(g.h.make_node("Constant", [], [name],
                                           name=f"/{size}/{kind}_cache/Constant", value=t))  # fmt: skip
                outs.append(g.h.make_tensor_value_info(name, FLOAT, list(arr.shape)))
            branches[branch] = g.h.make_graph(nodes, f"{size}_rope_caches_graph", [], outs)
        g.node("If", f"{rope}/If", [greater], ["cos_cache", "sin_cache"], **branches)
        one = g.const_int64([1])
        red = g.node("ReduceSum", f"{base}/ReduceSum", ["attention_mask", one],
                     [f"{base}/ReduceSum/output_0"], keepdims=0)  # fmt: skip
        sub = g.node("Sub", f"{base}/Sub", [red, one], [f"{base}/Sub/output_0"])
        g.node("Cast", f"{base}/Sub/Cast", [sub], [f"{base}/Sub/Cast/output_0"], to=INT32)
        g.node("Cast", f"{base}/Gather/Cast", [total], [f"{base}/Gather/Cast/output_0"], to=INT32)
        return
    one = g.const_int64([1])
    red = g.node("ReduceSum", f"{base}/ReduceSum", ["attention_mask", one],
                 [f"{base}/ReduceSum/output_0"], keepdims=0)  # fmt: skip
    sub = g.node("Sub", f"{base}/Sub", [red, one], [f"{base}/Sub/output_0"])
    g.node("Cast", f"{base}/Sub/Cast", [sub], [f"{base}/Sub/Cast/output_0"], to=INT32)
    shape = g.node("Shape", f"{base}/Shape", ["attention_mask"], [f"{base}/Shape/output_0"])
    total = g.node("Gather", f"{base}/Gather", [shape, g.const_int64(1)],
                   [f"{base}/Gather/output_0"], axis=0)  # fmt: skip
    g.node("Cast", f"{base}/Gather/Cast", [total], [f"{base}/Gather/Cast/output_0"], to=INT32)


def _matmul(g: _Graph, lin: Linear, root: str, out: str | None = None) -> str:
    """MatMulNBits (and its bias Add) on `root`; returns the output name."""
    name = "/" + _node_path(lin.base)
    mm_out = f"{name}/output_0" if (lin.bias or out is None) else out
    g.node("MatMulNBits", f"{name}_{lin.suffix}", [root, *lin.inputs], [mm_out], MS,
           K=lin.k, N=lin.n, accuracy_level=g.accuracy_level, bits=lin.bits,
           block_size=lin.block_size)  # fmt: skip
    if lin.bias is None:
        return mm_out
    add = name[: -len("MatMul")] + "Add"
    return g.node("Add", add, [mm_out, lin.bias], [out or f"{add}/output_0"])


def _node_path(base: str) -> str:
    """Initializer base name -> node path: dots between path parts become slashes, the dots of
    "layers.0" stay (model.layers.0.attn.qkv_proj.MatMul -> model/layers.0/attn/qkv_proj/MatMul)."""
    parts = base.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        if parts[i] == "layers" and i + 1 < len(parts) and parts[i + 1].isdigit():
            out.append(f"layers.{parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return "/".join(out)


def _embedding(g: _Graph, s: GraphSpec) -> str:
    e = s.embedding
    if e.kind == "float":
        return g.node("Gather", "/model/embed_tokens/Gather",
                      ["model.embed_tokens.weight", "input_ids"],
                      ["/model/embed_tokens/Gather/output_0"])  # fmt: skip
    if e.kind == "quantized":
        names = [f"model.embed_tokens.weight_Q{e.bits}", "input_ids",
                 "model.embed_tokens.weight_scales"]  # fmt: skip
        if e.zero_points:
            names.append("model.embed_tokens.weight_zero_points")
        attrs: dict[str, Any] = {"block_size": e.block_size, "gather_axis": 0, "quantize_axis": 1}
        if e.bits == 8:
            attrs["bits"] = 8
        return g.node("GatherBlockQuantized", f"/model/embed_tokens/Gather_Q{e.bits}", names,
                      ["/model/embed_tokens/Gather/output_0"], MS, **attrs)  # fmt: skip
    lm = s.lm_head  # tied: the lm_head's own codes, one row per token
    shape = g.const_int64([s.n_vocab, lm.k * lm.bits // 8])
    data = g.node("Reshape", "/model/embed_tokens/Reshape", [lm.inputs[0], shape],
                  ["/model/embed_tokens/Reshape/output_0"])  # fmt: skip
    names = [data, "input_ids", lm.inputs[1], *lm.inputs[2:]]
    return g.node("GatherBlockQuantized", "/model/embed_tokens/GatherBlockQuantized", names,
                  ["/model/embed_tokens/GatherBlockQuantized/output_0"], MS, bits=lm.bits,
                  block_size=lm.block_size, gather_axis=0, quantize_axis=1)  # fmt: skip


def _norm(g: _Graph, s: GraphSpec, path: str, x: str, skip: str | None, final: bool = False
          ) -> tuple[str, str]:  # fmt: skip
    """(Skip)(Simplified)LayerNormalization `path`; returns (output_0, output_3: the sum)."""
    weight = path[1:].replace("/", ".") + ".weight"  # /model/layers.0/input_layernorm -> ...
    inputs = [x, weight] if skip is None else [skip, x, weight]
    if s.has_norm_bias:
        inputs.append(weight[: -len("weight")] + "bias")
    out0 = f"{path}/output_0"
    if skip is None:
        op = "LayerNormalization" if s.has_norm_bias else "SimplifiedLayerNormalization"
        g.node(op, f"{path}/LayerNorm", inputs, [out0], epsilon=s.norm_eps, axis=-1, stash_type=1)
        return out0, x
    op = "SkipLayerNormalization" if s.has_norm_bias else "SkipSimplifiedLayerNormalization"
    out3 = f"{path}/output_3"
    outs = [out0] if final else [out0, "", "", out3]
    g.node(op, f"{path}/SkipLayerNorm", inputs, outs, MS, epsilon=s.norm_eps)
    return out0, out3


def _attention(g: _Graph, s: GraphSpec, i: int, qkv: str) -> str:
    base = f"/model/layers.{i}/attn/GroupQueryAttention"
    mask = "/model/attn_mask_reformat/attn_mask_subgraph"
    inputs = [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
              f"{mask}/Sub/Cast/output_0", f"{mask}/Gather/Cast/output_0", "cos_cache",
              "sin_cache", "", "", ""]  # fmt: skip
    outs = [f"{base}/output_0", f"present.{i}.key", f"present.{i}.value"]
    return g.node("GroupQueryAttention", base, inputs, outs, MS, num_heads=s.n_head,
                  kv_num_heads=s.n_head_kv, scale=float(np.float32(1 / np.sqrt(s.head_dim))),
                  local_window_size=s.window if s.window > 0 else -1, softcap=0.0,
                  do_rotary=1, rotary_interleaved=0)  # fmt: skip


def _layers_gated(g: _Graph, s: GraphSpec, hidden: str) -> str:
    """Phi-3 / Llama: pre-norm attention and SiLU-gated MLP, residuals in Skip norms."""
    skip, x = hidden, None
    for i, w in enumerate(s.layers):
        p = f"/model/layers.{i}"
        if i == 0:
            h, skip = _norm(g, s, f"{p}/input_layernorm", hidden, None)
        else:
            h, skip = _norm(g, s, f"{p}/input_layernorm", x, skip)
        att = _attention(g, s, i, _matmul(g, w["qkv_proj"], h))
        o = _matmul(g, w["o_proj"], att)
        h, skip = _norm(g, s, f"{p}/post_attention_layernorm", o, skip)
        gate = _matmul(g, w["gate_proj"], h)
        up = _matmul(g, w["up_proj"], h)
        sig = g.node("Sigmoid", f"{p}/mlp/act_fn/Sigmoid", [gate],
                     [f"{p}/mlp/act_fn/Sigmoid/output_0"])  # fmt: skip
        act = g.node("Mul", f"{p}/mlp/act_fn/Mul", [gate, sig], [f"{p}/mlp/act_fn/Mul/output_0"])
        prod = g.node("Mul", f"{p}/mlp/Mul", [act, up], [f"{p}/mlp/Mul/output_0"])
        x = _matmul(g, w["down_proj"], prod)
    out, _ = _norm(g, s, f"/model/layers.{s.n_layer}/final_norm_layernorm", x, skip, final=True)
    return out


def _layers_parallel(g: _Graph, s: GraphSpec, hidden: str) -> str:
    """Phi-2: one LayerNorm feeding attention and a GELU MLP in parallel, their sum the residual."""
    skip, x = hidden, None
    for i, w in enumerate(s.layers):
        p = f"/model/layers.{i}"
        if i == 0:
            h, skip = _norm(g, s, f"{p}/input_layernorm", hidden, None)
        else:
            h, skip = _norm(g, s, f"{p}/input_layernorm", x, skip)
        att = _attention(g, s, i, _matmul(g, w["qkv_proj"], h))
        o = _matmul(g, w["o_proj"], att)
        up = _matmul(g, w["fc1"], h)
        act = g.node("Gelu", f"{p}/mlp/act_fn/FastGelu", [up], [f"{p}/mlp/act_fn/FastGelu/output_0"],
                     approximate="tanh")  # fmt: skip
        down = _matmul(g, w["fc2"], act)
        x = g.node("Add", f"{p}/residual_add/Add", [o, down], [f"{p}/residual_add/Add/output_0"])
    out, _ = _norm(g, s, f"/model/layers.{s.n_layer}/final_norm_layernorm", x, skip, final=True)
    return out


def build_model(s: GraphSpec, accuracy_level: int, producer: str) -> Any:
    """The onnx.ModelProto (initializers as given, external)."""
    from onnx import TensorProto, helper

    g = _Graph(accuracy_level)
    _mask_subgraph(g, s.longrope)
    hidden = _embedding(g, s)
    body = _layers_parallel if s.arch == "phi2" else _layers_gated
    normed = body(g, s, hidden)
    _matmul(g, s.lm_head, normed, out="logits")

    def io(name: str, elem: int, dims: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, elem, dims)

    kv = ["batch_size", s.n_head_kv]
    inputs = [
        io("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        io("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
    ]
    outputs = [io("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", s.n_vocab])]
    for kind in ("key", "value"):
        for i in range(s.n_layer):
            inputs.append(io(f"past_key_values.{i}.{kind}", TensorProto.FLOAT,
                             [*kv, "past_sequence_length", "kv_cache_dim"]))  # fmt: skip
            outputs.append(io(f"present.{i}.{kind}", TensorProto.FLOAT,
                              [*kv, "total_sequence_length", "kv_cache_dim"]))  # fmt: skip
    graph = helper.make_graph(g.nodes, "main_graph", inputs, outputs, s.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 22), helper.make_opsetid(MS, 1)],
        producer_name=producer,
        ir_version=10,
    )
    return model

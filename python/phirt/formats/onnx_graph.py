"""ONNX Runtime GenAI decoder graphs -> a phirt architecture, GGUF-named hyper-parameters and
tensors under their canonical GGUF names.

Mapped, not interpreted. onnxruntime-genai's model builder emits one graph shape per architecture
family with stable node names (``/model/layers.3/attn/qkv_proj/MatMul_Q4``); every node is looked
up in one table (``_NODE_ROLES``: name pattern -> role and the op types allowed in it), the edges
the forward pass depends on are checked (the projection reads its layer's norm, SiLU wraps the gate
and not the up projection, ...), and the weights are taken from the nodes' initializers. A node
outside the table, an op the role does not allow, an attribute phirt does not implement or a
broken edge is a one-line UnsupportedError naming the folder, the node and its op: never a guess.

What the builder (0.18, -e cpu) emits, and where each part goes:

- embeddings: Gather(embed_tokens.weight, input_ids), GatherBlockQuantized on a quantized table of
  its own (ONNX Runtime's quantizer: Gather_Q4), or for tied int4 embeddings
  GatherBlockQuantized over a Reshape of the lm_head's own MatMulNBits weights -> token_embd
- norms: SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization (residual add fused),
  LayerNormalization (Phi-2); epsilon from each node -> attn_norm, ffn_norm, output_norm
- projections: MatMulNBits (4 or 8 bits, any block size, zero points or not) or a float MatMul,
  plus an Add for biases. The builder fuses or splits where GGUF does the other: Phi-3 q/k/v are
  concatenated into attn_qkv and gate/up into ffn_up; Llama's fused qkv is split into attn_q/k/v
  and q/k rows are put into GGUF's rotary order (llama.cpp's converter permutation). Rows of a
  MatMulNBits weight are independent, so all of this is lossless.
- GroupQueryAttention: num_heads, kv_num_heads, scale (must be 1/sqrt(head_size)), softcap (0),
  local_window_size (onnxruntime 1.32 attends that many keys, the query's own included: the GGUF
  window, which counts the same way),
  do_rotary with the graph's cos_cache / sin_cache, used as they are (rope_cos/rope_sin tensors).
  LongRoPE graphs choose between two cache pairs with If(Greater(total length, original)): the
  pairs become rope_cos/rope_sin and rope_cos_long/rope_sin_long, the constant the original
  context length.
- MLP: SiLU as Sigmoid + Mul, the gate product as Mul; Phi-2's Gelu(approximate=tanh) or FastGelu.
- lm_head: MatMulNBits (+ Add for Phi-2's bias) -> output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phirt import _kernels as K
from phirt.errors import FormatError, UnsupportedError
from phirt.formats.onnx_folder import OnnxFolder, node_attrs
from phirt.formats.onnx_nbits import NBitsPart, NBitsTensor
from phirt.formats.source import GGMLMatrix

__all__ = ["ARCH_BY_TYPE", "GraphMap", "OnnxTensor", "map_graph"]

# genai_config model.type -> phirt / GGUF architecture
ARCH_BY_TYPE = {"phi3": "phi3", "phi": "phi2", "llama": "llama"}

_NORMS = frozenset(
    {
        "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "LayerNormalization",
        "SkipLayerNormalization",
    }
)
_MATMULS = frozenset({"MatMulNBits", "MatMul"})
_L = r"/model/layers\.(?P<layer>\d+)/"

# node name pattern -> (role, op types allowed). A role with "{p}" takes the pattern's "p" group.
_NODE_ROLES: list[tuple[re.Pattern[str], str, frozenset[str]]] = [
    (re.compile(p), role, frozenset(ops))
    for p, role, ops in [
        (r"/model/embed_tokens/(Gather|GatherBlockQuantized|Gather_Q[48])$", "embed", {"Gather", "GatherBlockQuantized"}),
        (r"/model/embed_tokens/Reshape$", "embed_reshape", {"Reshape"}),
        (r"/model/embed_tokens/Slice$", "embed_slice", {"Slice"}),
        (_L + r"input_layernorm/\w+$", "attn_norm", _NORMS),
        (_L + r"post_attention_layernorm/\w+$", "ffn_norm", _NORMS),
        (_L + r"final_norm_layernorm/\w+$", "final_norm", _NORMS),
        (_L + r"attn/(?P<p>qkv|q|k|v|o)_proj/MatMul\w*$", "{p}", _MATMULS),
        (_L + r"attn/(?P<p>qkv|q|k|v|o)_proj/Add$", "{p}_bias", {"Add"}),
        (_L + r"attn/GroupQueryAttention$", "attention", {"GroupQueryAttention"}),
        (_L + r"attn/(?P<p>q|k)_rotary/RotaryEmbedding$", "{p}_rotary", {"RotaryEmbedding"}),
        (_L + r"mlp/(?P<p>gate|up|down)_proj/MatMul\w*$", "{p}", _MATMULS),
        (_L + r"mlp/(?P<p>gate|up|down)_proj/Add$", "{p}_bias", {"Add"}),
        (_L + r"mlp/(?P<p>fc1|fc2)/MatMul\w*$", "{p}", _MATMULS),
        (_L + r"mlp/(?P<p>fc1|fc2)/Add$", "{p}_bias", {"Add"}),
        (_L + r"mlp/act_fn/Sigmoid$", "silu_sigmoid", {"Sigmoid"}),
        (_L + r"mlp/act_fn/Mul$", "silu_mul", {"Mul"}),
        (_L + r"mlp/act_fn/\w*Gelu$", "gelu", {"Gelu", "FastGelu"}),
        (_L + r"mlp/Mul$", "glu_mul", {"Mul"}),
        (_L + r"residual_add/Add$", "residual", {"Add"}),
        (r"/lm_head/MatMul\w*$", "lm_head", _MATMULS),
        (r"/lm_head/Add$", "lm_head_bias", {"Add"}),
        (r"/model/rope_caches_subgraph/Greater$", "rope_switch", {"Greater"}),
        (r"/model/rope_caches_subgraph/If$", "rope_if", {"If"}),
        # LongRoPE with one concatenated [short; long] cache: positions shifted into the long part
        (r"/model/pos_ids_reformat/ReduceMax$", "pos_max", {"ReduceMax"}),
        (r"/model/pos_ids_reformat/GreaterOrEqual$", "pos_switch", {"GreaterOrEqual"}),
        (r"/model/pos_ids_reformat/Cast$", "pos_cast", {"Cast"}),
        (r"/model/pos_ids_reformat/Mul$", "pos_mul", {"Mul"}),
        (r"/model/pos_ids_reformat/Add_1$", "pos_add", {"Add"}),
        # bookkeeping for onnxruntime's own inputs (sequence lengths from attention_mask)
        (r"/model/attn_mask_reformat/.+", "plumbing", {"ReduceSum", "Sub", "Cast", "Shape", "Gather"}),
        (r"/model/constant_nodes/.+", "plumbing", {"Constant"}),
    ]
]  # fmt: skip
_MS_OPS = frozenset(
    {
        "RotaryEmbedding",
        "MatMulNBits",
        "GatherBlockQuantized",
        "GroupQueryAttention",
        "SkipSimplifiedLayerNormalization",
        "SkipLayerNormalization",
        "FastGelu",
    }
)
# GroupQueryAttention attributes and the values phirt implements (None: any)
_GQA_ATTRS: dict[str, Callable[[Any], bool] | None] = {
    "num_heads": None,
    "kv_num_heads": None,
    "scale": None,
    "local_window_size": None,
    "softcap": lambda v: v == 0.0,
    "do_rotary": None,
    "rotary_interleaved": lambda v: v == 0,
    "sliding_window_cache": None,  # how onnxruntime sizes its KV buffers, not what it computes
    "smooth_softmax": lambda v: v == 0,
}


@dataclass
class OnnxTensor:
    """A canonical tensor of an ONNX folder (formats/source.py SourceTensor)."""

    name: str
    shape: tuple[int, ...]
    loader: Callable[[], Any] = field(repr=False)

    def load(self) -> Any:
        return self.loader()


@dataclass
class GraphMap:
    """What the graph says: the architecture, hyper-parameters under GGUF keys, the tensors."""

    arch: str
    metadata: dict[str, Any]
    tensors: dict[str, OnnxTensor]


@dataclass
class _Node:
    proto: Any
    role: str
    layer: int | None
    attrs: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.proto.name)

    @property
    def op(self) -> str:
        return str(self.proto.op_type)

    def input(self, i: int) -> str:
        return str(self.proto.input[i]) if i < len(self.proto.input) else ""

    def output(self, i: int = 0) -> str:
        return str(self.proto.output[i]) if i < len(self.proto.output) else ""


class _Mapper:
    def __init__(self, folder: OnnxFolder) -> None:
        self.f = folder
        self.path = folder.path
        self.nodes = [self._classify(n) for n in folder.graph.node]
        self.producer = {out: n for n in self.nodes for out in n.proto.output if out}
        self.globals: dict[str, _Node] = {}
        layers: dict[int, dict[str, _Node]] = {}
        for n in self.nodes:
            if n.role == "plumbing":
                continue
            table = self.globals if n.layer is None else layers.setdefault(n.layer, {})
            if n.role in table:
                self.fail(n, f"is a second '{n.role}' node (first: '{table[n.role].name}')")
            table[n.role] = n
        if not layers:
            raise UnsupportedError("the graph has no decoder layers phirt recognises", self.path)
        self.n_layer = max(layers)  # the last index holds only the final norm
        final = layers.pop(self.n_layer)
        if set(final) != {"final_norm"} or sorted(layers) != list(range(self.n_layer)):
            raise UnsupportedError(
                f"layers {sorted(layers)} and final norm layer {self.n_layer} do not form a "
                f"decoder (graph {self.f.model_path})",
                self.path,
            )
        self.globals["final_norm"] = final["final_norm"]
        self.layers = [layers[i] for i in range(self.n_layer)]

    # -- errors --------------------------------------------------------------------------------

    def fail(self, node: _Node | Any, problem: str, exc: type = UnsupportedError) -> None:
        proto = node.proto if isinstance(node, _Node) else node
        raise exc(f"node '{proto.name}' ({_op_name(proto)}) {problem}", self.path)

    def _classify(self, proto: Any) -> _Node:
        for pattern, role, ops in _NODE_ROLES:
            m = pattern.match(proto.name)
            if m is None:
                continue
            if proto.op_type not in ops:
                self.fail(proto, f"is not an op phirt maps for '{role.format(p='x')}'")
            want = {"com.microsoft"} if proto.op_type in _MS_OPS else {"", "ai.onnx"}
            if proto.domain not in want and not (
                proto.op_type in _NORMS and proto.domain == "com.microsoft"
            ):
                self.fail(proto, "is in a domain phirt does not map")
            groups = m.groupdict()
            layer = int(groups["layer"]) if groups.get("layer") is not None else None
            return _Node(proto, role.format(p=groups.get("p")), layer, node_attrs(proto))
        self.fail(proto, "is outside phirt's map of ONNX Runtime GenAI graphs")
        raise AssertionError  # unreachable

    # -- edges ---------------------------------------------------------------------------------

    def from_(self, node: _Node, i: int, *sources: _Node | None) -> None:
        """Input i of ``node`` must be the first output of one of ``sources``."""
        name = node.input(i)
        if not any(s is not None and name == s.output(0) for s in sources):
            got = self.producer.get(name)
            what = f"'{got.name}'" if got is not None else f"'{name}'"
            self.fail(node, f"reads {what} where phirt's forward pass has another value")

    def output_of(self, layer: dict[str, _Node], role: str) -> _Node:
        """A projection's node whose output carries its result (its bias Add if it has one)."""
        return layer.get(f"{role}_bias") or layer[role]

    def initializer(self, node: _Node, i: int) -> np.ndarray:
        name = node.input(i)
        if name not in self.f.initializers:
            self.fail(node, f"input {i} ('{name}') is not an initializer")
        return self.f.array(name, node.name)


def _op_name(proto: Any) -> str:
    return f"{proto.domain}.{proto.op_type}" if proto.domain else str(proto.op_type)


def map_graph(folder: OnnxFolder) -> GraphMap:
    """The architecture, GGUF-named hyper-parameters and canonical tensors of a folder's graph."""
    model_type = folder.model_type
    arch = ARCH_BY_TYPE.get(model_type)
    if arch is None:
        raise UnsupportedError(
            f"unknown model type '{model_type}' in genai_config.json (phirt reads "
            f"{', '.join(sorted(ARCH_BY_TYPE))})",
            folder.path,
        )
    m = _Mapper(folder)
    return _Builder(m, arch).build()


class _Builder:
    """Reads the hyper-parameters and assembles the tensors of one architecture."""

    def __init__(self, m: _Mapper, arch: str) -> None:
        self.m = m
        self.arch = arch
        self.tensors: dict[str, OnnxTensor] = {}
        self.meta: dict[str, Any] = {"general.architecture": arch}
        self.eps: set[float] = set()

    def put(self, key: str, value: Any) -> None:
        self.meta[f"{self.arch}.{key}"] = value

    def build(self) -> GraphMap:
        m = self.m
        dec = m.f.decoder_config
        self._attention_params()
        self._dims()
        self._embedding()
        for i, layer in enumerate(m.layers):
            self._layer(i, layer)
        self._output()
        if len(self.eps) != 1:
            raise UnsupportedError(
                f"norms use different epsilons {sorted(self.eps)}; phirt uses one per model",
                m.path,
            )
        eps_key = "layer_norm_epsilon" if self.arch == "phi2" else "layer_norm_rms_epsilon"
        self.put(f"attention.{eps_key}", self.eps.pop())
        self.put("block_count", m.n_layer)
        n_layer_cfg = dec.get("num_hidden_layers")
        if n_layer_cfg is not None and int(n_layer_cfg) != m.n_layer:
            raise FormatError(
                f"genai_config.json says {n_layer_cfg} layers, the graph has {m.n_layer}",
                m.f.file("genai_config.json"),
            )
        context = m.f.config["model"].get("context_length")
        self.put("context_length", int(context) if context else self.table_rows)
        return GraphMap(self.arch, self.meta, self.tensors)

    # -- attention -------------------------------------------------------------------------------

    def _attention_params(self) -> None:
        m = self.m
        gqas = [layer.get("attention") for layer in m.layers]
        if any(g is None for g in gqas):
            i = gqas.index(None)
            raise UnsupportedError(f"layer {i} has no GroupQueryAttention node", m.path)
        first = gqas[0]
        assert first is not None
        for g in gqas:
            assert g is not None
            for key, value in g.attrs.items():
                if key not in _GQA_ATTRS:
                    m.fail(g, f"has attribute '{key}', which phirt does not implement")
                check = _GQA_ATTRS[key]
                if check is not None and not check(value):
                    m.fail(g, f"has {key}={value}, which phirt does not implement")
            for key in ("num_heads", "kv_num_heads", "local_window_size", "do_rotary", "scale"):
                if g.attrs.get(key) != first.attrs.get(key):
                    m.fail(g, f"has {key}={g.attrs.get(key)}, layer 0 {first.attrs.get(key)}")
            for i in range(9, len(g.proto.input)):
                if g.input(i):
                    m.fail(g, f"has input {i} ('{g.input(i)}'), which phirt does not implement")
        a = first.attrs
        n_head, n_head_kv = int(a.get("num_heads", 0)), int(a.get("kv_num_heads", 0))
        if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv:
            m.fail(first, f"has num_heads={n_head}, kv_num_heads={n_head_kv}")
        dec = m.f.decoder_config
        self.n_head, self.n_head_kv = n_head, n_head_kv
        self.head_dim = int(dec.get("head_size") or 0)
        hidden = int(dec.get("hidden_size") or 0)
        if self.head_dim <= 0 and hidden > 0:
            self.head_dim = hidden // n_head
        if self.head_dim <= 0:
            raise FormatError("no model.decoder.head_size", m.f.file("genai_config.json"))
        scale = float(a.get("scale", 0.0)) or 1.0 / math.sqrt(self.head_dim)
        if not math.isclose(scale, 1.0 / math.sqrt(self.head_dim), rel_tol=1e-6):
            m.fail(first, f"has scale={scale}; phirt uses 1/sqrt(head_size={self.head_dim})")
        window = int(a.get("local_window_size", -1))
        self.put("attention.head_count", n_head)
        self.put("attention.head_count_kv", n_head_kv)
        if self.arch == "phi3":
            # a query at p sees keys [p - window + 1, p] in onnxruntime 1.32 (measured against
            # onnxruntime-genai, prefill and decode, with and without sliding_window_cache), as in
            # phirt
            self.put("attention.sliding_window", max(window, 0))
        elif window > 0:
            m.fail(first, f"has local_window_size={window}; phirt has no window for {self.arch}")
        if a.get("do_rotary"):
            self._rope_tables(first, 7)
        else:  # RotaryEmbedding nodes before the attention (DirectML builds, older builders)
            rotary = m.layers[0].get("q_rotary")
            if rotary is None:
                m.fail(first, "has no rotary embedding (do_rotary=0 and no RotaryEmbedding)")
            assert rotary is not None
            self._rope_tables(rotary, 2)

    def _rope_tables(self, user: _Node, at: int) -> None:
        """The cos / sin caches ``user`` reads at inputs ``at``, ``at + 1`` (GroupQueryAttention
        7, 8; RotaryEmbedding 2, 3): initializers, the two pairs an If picks, or a concatenated
        [short; long] pair that RotaryEmbedding indexes with shifted positions."""
        m = self.m
        cos_name, sin_name = user.input(at), user.input(at + 1)
        users = [layer.get(user.role) for layer in m.layers]
        users += [layer.get("k_rotary") for layer in m.layers] if user.role == "q_rotary" else []
        for u in users:
            if u is None or (u.input(at), u.input(at + 1)) != (cos_name, sin_name):
                m.fail(u or user, "uses other rotary caches than layer 0")
        if cos_name in m.f.initializers and sin_name in m.f.initializers:
            cos, sin = m.initializer(user, at), m.initializer(user, at + 1)
            if user.op == "RotaryEmbedding" and user.input(1) != "position_ids":
                self._shifted_tables(user, cos, sin)
                return
            self._put_tables("", cos, sin, user)
            self.table_rows = cos.shape[0]
            return
        gqa = user
        if_node = m.globals.get("rope_if")
        switch = m.globals.get("rope_switch")
        if (
            if_node is None
            or switch is None
            or (if_node.output(0), if_node.output(1))
            != (
                cos_name,
                sin_name,
            )
        ):
            m.fail(gqa, "reads rotary caches that are neither initializers nor the LongRoPE If")
        assert if_node is not None and switch is not None
        m.from_(if_node, 0, switch)
        total = m.producer.get(switch.input(0))
        if total is None or total.role != "plumbing" or total.op != "Gather":
            m.fail(switch, "does not compare the total sequence length")
        original = self._constant(switch.input(1), switch)
        then_pair = self._branch_tables(if_node, "then_branch")
        else_pair = self._branch_tables(if_node, "else_branch")
        self._put_tables("", *else_pair, if_node)
        self._put_tables("_long", *then_pair, if_node)
        if else_pair[0].shape[0] < original:
            m.fail(if_node, f"has a short cache of {else_pair[0].shape[0]} rows for {original}")
        self.put("rope.scaling.original_context_length", original)
        self.table_rows = then_pair[0].shape[0]

    def _shifted_tables(self, rotary: _Node, cos: np.ndarray, sin: np.ndarray) -> None:
        """position_ids + original · (max(position_ids) >= original) into [short; long] caches:
        the short pair for calls that stay below ``original``, the long one past it."""
        m = self.m
        roles = ("pos_max", "pos_switch", "pos_cast", "pos_mul", "pos_add")
        nodes = [m.globals.get(r) for r in roles]
        if any(n is None for n in nodes):
            m.fail(rotary, "reads positions that are neither position_ids nor the LongRoPE shift")
        pmax, switch, cast, mul, add = nodes  # type: ignore[misc]
        if pmax.input(0) != "position_ids" or rotary.input(1) != add.output():
            m.fail(rotary, "reads positions that are neither position_ids nor the LongRoPE shift")
        m.from_(switch, 0, pmax)
        m.from_(cast, 0, switch)
        original = self._constant(switch.input(1), switch)
        if sorted(mul.proto.input) != sorted([cast.output(), switch.input(1)]):
            m.fail(mul, "does not scale the switch by the original context length")
        if sorted(add.proto.input) != sorted([mul.output(), "position_ids"]):
            m.fail(add, "does not shift position_ids")
        if not 0 < original < cos.shape[0]:
            m.fail(switch, f"switches at {original} in a cache of {cos.shape[0]} rows")
        self._put_tables("", cos[:original], sin[:original], rotary)
        self._put_tables("_long", cos[original:], sin[original:], rotary)
        self.put("rope.scaling.original_context_length", original)
        self.table_rows = cos.shape[0] - original

    def _constant(self, name: str, user: _Node) -> int:
        node = self.m.producer.get(name)
        value = node.attrs.get("value") if node is not None and node.op == "Constant" else None
        if value is None:
            self.m.fail(user, f"compares with '{name}', not a constant")
        arr = self.m.f.array(value)
        if arr.size != 1:
            self.m.fail(user, f"compares with a constant of shape {arr.shape}")
        return int(arr.reshape(-1)[0])

    def _branch_tables(self, if_node: _Node, branch: str) -> tuple[np.ndarray, np.ndarray]:
        graph = if_node.attrs.get(branch)
        outs = [o.name for o in graph.output] if graph is not None else []
        consts = {}
        for n in graph.node if graph is not None else []:
            if n.op_type != "Constant" or not n.attribute or n.attribute[0].name != "value":
                self.m.fail(if_node, f"has a {branch} that is not two constant tables")
            consts[n.output[0]] = self.m.f.array(n.attribute[0].t)
        if len(outs) != 2 or any(o not in consts for o in outs):
            self.m.fail(if_node, f"has a {branch} that is not two constant tables")
        return consts[outs[0]], consts[outs[1]]

    def _put_tables(self, suffix: str, cos: np.ndarray, sin: np.ndarray, node: _Node) -> None:
        if cos.ndim != 2 or cos.shape != sin.shape or cos.dtype not in (np.float32, np.float16):
            self.m.fail(node, f"has rotary caches {cos.shape} {cos.dtype} / {sin.shape}")
        n_rot = 2 * cos.shape[1]
        if n_rot > self.head_dim:
            self.m.fail(node, f"rotates {n_rot} dims of a {self.head_dim}-wide head")
        self.n_rot = n_rot
        self.put("rope.dimension_count", n_rot)
        for kind, table in (("cos", cos), ("sin", sin)):
            name = f"rope_{kind}{suffix}.weight"
            self.tensors[name] = OnnxTensor(name, table.shape, lambda t=table: _f32(t))

    # -- weights ---------------------------------------------------------------------------------

    def _dims(self) -> None:
        """n_embd and n_vocab from the lm_head (K, N)."""
        m = self.m
        head = m.globals.get("lm_head")
        if head is None:
            raise UnsupportedError("the graph has no /lm_head MatMul", m.path)
        if head.op == "MatMulNBits":
            self.n_embd, self.n_vocab = int(head.attrs.get("K", 0)), int(head.attrs.get("N", 0))
        else:
            k_n = m.initializer(head, 1).shape
            if len(k_n) != 2:
                m.fail(head, f"has a weight of shape {k_n}")
            self.n_embd, self.n_vocab = int(k_n[0]), int(k_n[1])
        self.put("embedding_length", self.n_embd)
        self.put("vocab_size", self.n_vocab)

    def _embedding(self) -> None:
        m = self.m
        embed = m.globals.get("embed")
        if embed is None:
            raise UnsupportedError("the graph has no /model/embed_tokens Gather", m.path)
        if embed.input(1) != "input_ids":
            m.fail(embed, "does not look up input_ids")
        want = (self.n_vocab, self.n_embd)
        if embed.op == "Gather":
            if int(embed.attrs.get("axis", 0)) != 0:
                m.fail(embed, "gathers along another axis than 0")
            table = m.initializer(embed, 0)
            if table.shape != want:
                m.fail(embed, f"has a table of shape {table.shape}, the lm_head implies {want}")
            self.tensors["token_embd.weight"] = _float_matrix("token_embd.weight", table, embed, m)
            return
        a, head = embed.attrs, m.globals["lm_head"]
        if int(a.get("gather_axis", 0)) != 0 or int(a.get("quantize_axis", 1)) != 1:
            m.fail(embed, "is not a row lookup quantized along rows")
        data = embed.input(0)
        if data in m.f.initializers:  # a quantized table of its own (untied)
            part = NBitsPart.from_gather(m.f, embed.proto, a, m.path, *want)
            t = NBitsTensor([part], rows_only=True)
            self.tensors["token_embd.weight"] = OnnxTensor("token_embd.weight", t.shape, t.load)
            return
        # GatherBlockQuantized over a Reshape of the lm_head's own MatMulNBits weights (tied)
        reshape = m.globals.get("embed_reshape")
        if reshape is not None and data == reshape.output(0):
            data = reshape.input(0)
        if head.op != "MatMulNBits" or data != head.input(1):
            m.fail(embed, "reads quantized embeddings that are not the lm_head's (untied)")
        ha = head.attrs
        same = (embed.input(2), embed.input(3)) == (head.input(2), head.input(3))
        bits, block = int(a.get("bits", 4)), int(a.get("block_size", 128))
        if not same or bits != int(ha.get("bits", 4)) or block != int(ha.get("block_size", 0)):
            m.fail(embed, "reads the lm_head's weights with other scales or block size")
        part = NBitsPart.from_node(m.f, head.proto, head.attrs, m.path)
        t = NBitsTensor([part], rows_only=True)
        self.tensors["token_embd.weight"] = OnnxTensor("token_embd.weight", t.shape, t.load)

    def _output(self) -> None:
        m = self.m
        head = m.globals["lm_head"]
        m.from_(head, 0, m.globals["final_norm"])
        self._norm(m.globals["final_norm"], "output_norm")
        out = self._matrix("output.weight", [head])
        if out.shape != (self.n_vocab, self.n_embd):
            m.fail(head, f"has a {out.shape} matrix")
        bias = m.globals.get("lm_head_bias")
        if bias is not None:
            m.from_(bias, 0, head)
            self._vector("output.bias", bias, 1, self.n_vocab)
        for n in self.m.nodes:  # whatever feeds the logits output must be the head
            if "logits" in n.proto.output and n not in (head, bias):
                m.fail(n, "writes the logits, which phirt computes with the lm_head")

    def _norm(self, node: _Node, name: str) -> None:
        """A norm's weight (and LayerNorm's bias) as ``name`` (.weight / .bias)."""
        m = self.m
        a = node.attrs
        if int(a.get("axis", -1)) != -1:
            m.fail(node, f"normalizes along axis {a.get('axis')}")
        self.eps.add(float(a.get("epsilon", 1e-5)))
        skip = node.op.startswith("Skip")
        w_index = 2 if skip else 1
        self._vector(f"{name}.weight", node, w_index, self.n_embd)
        layer_norm = node.op in ("LayerNormalization", "SkipLayerNormalization")
        if layer_norm != (self.arch == "phi2"):
            m.fail(node, f"is not the norm {self.arch} uses")
        if layer_norm:
            self._vector(f"{name}.bias", node, w_index + 1, self.n_embd)
        if skip and len(node.proto.input) > 4 and node.input(4):
            m.fail(node, "adds a bias inside the norm, which phirt does not implement")

    def _vector(self, name: str, node: _Node, i: int, n: int) -> None:
        arr = self.m.initializer(node, i)
        if arr.shape != (n,):
            self.m.fail(node, f"has input {i} of shape {arr.shape}, expected ({n},)")
        self.tensors[name] = OnnxTensor(name, (n,), lambda a=arr: _f32(a))

    def _bias(self, name: str, nodes: list[_Node | None], layer: dict[str, _Node]) -> None:
        """The concatenated biases of projections (Add after each, or MatMulNBits input 5)."""
        parts = []
        for proj in nodes:
            assert proj is not None
            add = layer.get(f"{proj.role}_bias")
            if add is not None:
                self.m.from_(add, 0, proj)
                parts.append(self.m.initializer(add, 1))
            elif len(proj.proto.input) > 5 and proj.input(5):
                parts.append(self.m.initializer(proj, 5))
            else:
                parts.append(None)
        if all(p is None for p in parts):
            return
        if any(p is None for p in parts):
            self.m.fail(nodes[0], "has a bias where the projections beside it have none")
        value = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1) for p in parts])
        self.tensors[name] = OnnxTensor(name, value.shape, lambda v=value: v)

    def _matrix(
        self, name: str, nodes: list[Any], rows: slice | None = None, perm: Any = None
    ) -> OnnxTensor:
        """``name`` from MatMul/MatMulNBits nodes: their rows concatenated (then a slice of them,
        then reordered by ``perm``), one matrix for the kernels."""
        m = self.m
        if all(n.op == "MatMulNBits" for n in nodes):
            parts = [NBitsPart.from_node(m.f, n.proto, n.attrs, m.path) for n in nodes]
            t = NBitsTensor(parts, rows=rows, perm=perm, after_repack=m.f.drop_pages)
            self.tensors[name] = OnnxTensor(name, t.shape, t.load)
            return self.tensors[name]
        if any(n.op == "MatMulNBits" for n in nodes):
            m.fail(nodes[0], "is float while a projection fused with it is quantized")
        mats = [np.asarray(m.initializer(n, 1)).T for n in nodes]  # MatMul holds W.T (K, N)
        w = np.concatenate(mats) if len(mats) > 1 else mats[0]
        if rows is not None:
            w = w[rows]
        if perm is not None:
            w = w[perm]
        self.tensors[name] = _float_matrix(name, np.ascontiguousarray(w), nodes[0], m)
        return self.tensors[name]

    def _layer(self, i: int, layer: dict[str, _Node]) -> None:
        m = self.m
        need = {"attn_norm", "attention", "o"}
        need |= {"fc1", "fc2", "gelu", "residual"} if self.arch == "phi2" else {"ffn_norm", "down"}
        missing = sorted(need - set(layer))
        if missing:
            raise UnsupportedError(f"layer {i} has no '{missing[0]}' node", m.path)
        p = f"blk.{i}."
        self._norm(layer["attn_norm"], p + "attn_norm")
        self._attention_block(i, layer, p)
        if self.arch == "phi2":
            self._gelu_mlp(layer, p)
        else:
            self._norm(layer["ffn_norm"], p + "ffn_norm")
            self._swiglu_mlp(layer, p)

    def _attention_block(self, i: int, layer: dict[str, _Node], p: str) -> None:
        m = self.m
        gqa, norm = layer["attention"], layer["attn_norm"]
        nq, nkv = self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        if "qkv" in layer:
            qkv = [layer["qkv"]]
            m.from_(qkv[0], 0, norm)
            m.from_(gqa, 0, self.m.output_of(layer, "qkv"))
            if gqa.input(1) or gqa.input(2):
                m.fail(gqa, "reads packed QKV and separate K/V")
        elif all(r in layer for r in "qkv"):
            qkv = [layer["q"], layer["k"], layer["v"]]
            for j, proj in enumerate(qkv):
                m.from_(proj, 0, norm)
                rotary = layer.get(f"{proj.role}_rotary")
                if rotary is not None:
                    self._check_rotary(rotary)
                    m.from_(rotary, 0, self.m.output_of(layer, proj.role))
                    m.from_(gqa, j, rotary)
                else:
                    m.from_(gqa, j, self.m.output_of(layer, proj.role))
            if not gqa.attrs.get("do_rotary") and not ("q_rotary" in layer and "k_rotary" in layer):
                m.fail(gqa, "has no rotary embedding for q and k")
        else:
            raise UnsupportedError(f"layer {i} has neither qkv_proj nor q/k/v_proj", m.path)
        m.from_(layer["o"], 0, gqa)
        if self.arch == "llama":  # GGUF's separate q/k/v, q and k rows in rotary pair order
            bounds = {"q": (0, nq), "k": (nq, nq + nkv), "v": (nq + nkv, nq + 2 * nkv)}
            heads = {"q": self.n_head, "k": self.n_head_kv, "v": 0}
            for r in "qkv":
                lo, hi = bounds[r]
                perm = _rotary_pair_order(heads[r], self.head_dim, self.n_rot) if heads[r] else None
                t = self._matrix(f"{p}attn_{r}.weight", qkv, rows=slice(lo, hi), perm=perm)
                if t.shape != (hi - lo, self.n_embd):
                    m.fail(qkv[0], f"gives {r} a {t.shape} matrix")
            if any(layer.get(f"{r.role}_bias") for r in qkv):
                m.fail(qkv[0], "has a bias, which Llama's attention does not")
        else:
            t = self._matrix(f"{p}attn_qkv.weight", qkv)
            if t.shape != (nq + 2 * nkv, self.n_embd):
                m.fail(qkv[0], f"gives q/k/v a {t.shape} matrix for {nq}+{nkv}+{nkv} rows")
            self._bias(f"{p}attn_qkv.bias", qkv, layer)
        o = self._matrix(f"{p}attn_output.weight", [layer["o"]])
        if o.shape != (self.n_embd, nq):
            m.fail(layer["o"], f"has a {o.shape} matrix, expected {(self.n_embd, nq)}")
        self._bias(f"{p}attn_output.bias", [layer["o"]], layer)

    def _check_rotary(self, node: _Node) -> None:
        """RotaryEmbedding as the forward pass applies rope: rotate-half pairs over the tables'
        width, positions from the graph's position_ids (or the LongRoPE shift of them)."""
        a = node.attrs
        known = {"interleaved", "num_heads", "rotary_embedding_dim", "scale", "is_packed_batching"}
        for key in a:
            if key not in known:
                self.m.fail(node, f"has attribute '{key}', which phirt does not implement")
        if a.get("interleaved", 0) or a.get("is_packed_batching", 0) or a.get("scale", 1.0) != 1.0:
            self.m.fail(node, "is interleaved, packed or scaled, which phirt does not implement")
        dim = int(a.get("rotary_embedding_dim", 0))
        if dim not in (0, self.n_rot) or (dim == 0 and self.n_rot != self.head_dim):
            self.m.fail(node, f"rotates {dim or self.head_dim} dims with tables for {self.n_rot}")

    def _swiglu_mlp(self, layer: dict[str, _Node], p: str) -> None:
        m = self.m
        for role in ("gate", "up", "silu_sigmoid", "silu_mul", "glu_mul"):
            if role not in layer:
                m.fail(layer["down"], f"has no '{role}' node beside it (SiLU-gated MLP)")
        gate, up, sig, act, glu = (
            layer[r] for r in ("gate", "up", "silu_sigmoid", "silu_mul", "glu_mul")
        )
        norm = layer["ffn_norm"]
        m.from_(gate, 0, norm)
        m.from_(up, 0, norm)
        m.from_(sig, 0, gate)  # SiLU(gate) = gate * sigmoid(gate), times up
        if sorted(act.proto.input) != sorted([gate.output(), sig.output()]):
            m.fail(act, "is not gate * sigmoid(gate)")
        if sorted(glu.proto.input) != sorted([act.output(), up.output()]):
            m.fail(glu, "is not SiLU(gate) * up")
        m.from_(layer["down"], 0, glu)
        if any(r in layer for r in ("gate_bias", "up_bias", "down_bias")):
            m.fail(layer["down"], f"has MLP biases, which {self.arch} does not")
        if self.arch == "phi3":  # one fused [gate; up] matrix
            t = self._matrix(p + "ffn_up.weight", [gate, up])
            n_ff = t.shape[0] // 2
        else:
            t = self._matrix(p + "ffn_gate.weight", [gate])
            n_ff = t.shape[0]
            self._matrix(p + "ffn_up.weight", [up])
        down = self._matrix(p + "ffn_down.weight", [layer["down"]])
        self._check_ff(n_ff, down, layer["down"])

    def _gelu_mlp(self, layer: dict[str, _Node], p: str) -> None:
        m = self.m
        fc1, fc2, gelu, res = layer["fc1"], layer["fc2"], layer["gelu"], layer["residual"]
        m.from_(fc1, 0, layer["attn_norm"])  # parallel: the MLP reads the attention's norm
        m.from_(gelu, 0, m.output_of(layer, "fc1"))
        if gelu.op == "Gelu" and gelu.attrs.get("approximate", "none") != "tanh":
            m.fail(gelu, "is the erf GELU; phirt implements the tanh form Phi-2 uses")
        m.from_(fc2, 0, gelu)
        outs = sorted([m.output_of(layer, "o").output(), m.output_of(layer, "fc2").output()])
        if sorted(res.proto.input) != outs:
            m.fail(res, "does not add the attention and MLP outputs")
        up = self._matrix(p + "ffn_up.weight", [fc1])
        self._bias(p + "ffn_up.bias", [fc1], layer)
        down = self._matrix(p + "ffn_down.weight", [fc2])
        self._bias(p + "ffn_down.bias", [fc2], layer)
        self._check_ff(up.shape[0], down, fc2)

    def _check_ff(self, n_ff: int, down: OnnxTensor, node: _Node) -> None:
        if down.shape != (self.n_embd, n_ff):
            self.m.fail(node, f"has a {down.shape} matrix, expected {(self.n_embd, n_ff)}")
        prev = self.meta.get(f"{self.arch}.feed_forward_length")
        if prev is not None and prev != n_ff:
            self.m.fail(node, f"has {n_ff} features, layer 0 {prev}")
        self.put("feed_forward_length", n_ff)


def _rotary_pair_order(n_head: int, head_dim: int, n_rot: int) -> np.ndarray:
    """Row order that turns rotate-half heads (pairs i, i + n_rot/2: Hugging Face, onnxruntime's
    rotary_interleaved=0) into GGUF Llama's adjacent pairs (2i, 2i + 1), as llama.cpp's converter
    permutes q and k; rows past n_rot stay."""
    half = n_rot // 2
    head = np.arange(head_dim)
    head[:n_rot] = np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)
    return (np.arange(n_head)[:, None] * head_dim + head[None, :]).reshape(-1)


def _f32(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:  # bfloat16 bits
        return (a.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


_GGML_FLOAT = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


def _float_matrix(name: str, w: np.ndarray, node: _Node, m: _Mapper) -> OnnxTensor:
    """A float (n, k) matrix as a GGML F32 / F16 QMatrix over the same bytes (no copy)."""
    if w.ndim != 2 or w.dtype not in _GGML_FLOAT:
        m.fail(node, f"has a weight of shape {w.shape} and type {w.dtype}")
    n, k = w.shape

    def load() -> GGMLMatrix:
        data = np.ascontiguousarray(w).view(np.uint8).reshape(n, -1)
        return GGMLMatrix(K.QMatrix(data, _GGML_FLOAT[w.dtype], n, k))

    return OnnxTensor(name, (n, k), load)

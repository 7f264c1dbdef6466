"""An ONNX Runtime GenAI folder as a quantizer source (``phirt quantize FOLDER out.gguf``).

The builder's graph (onnx_graph.py describes it) maps back onto GGUF tensors: MatMulNBits weights
by their initializer names (qkv_proj -> attn_qkv, or attn_q/k/v for Llama with the rotary rows
reordered the GGML way; gate_proj + up_proj -> Phi-3's fused ffn_up; fc1/fc2 -> Phi-2's ffn_up /
ffn_down; lm_head -> output), the token table from its Gather / GatherBlockQuantized, norms and
biases by name. Weights are read one slab of rows at a time with ``np.fromfile`` at the
initializer's external-data offset (no page of the data file stays mapped).

Each MatMulNBits weight dequantizes to exactly onnxruntime's numbers, and where its format is a
GGML type's (nbits_pack.py: int4 block 32 -> Q4_0, int8 block 32 -> Q8_0, int8 block 16 with
zero points 32 -> Q6_K, scales f16 values) it offers those bytes for a lossless copy when that
type is asked for. Hyperparameters come from the folder's config.json (Microsoft's published
folders and phirt's exports carry one; read as hf.py reads a checkpoint's), else from
genai_config.json and the graph; the vocabulary from tokenizer.json (vocab.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from phirt.errors import QuantizeError
from phirt.formats.onnx_folder import OnnxFolder, node_attrs
from phirt.quantize import hf
from phirt.quantize import nbits_pack as P
from phirt.quantize.source import Source, SourceTensor
from phirt.quantize.vocab import add_vocab

__all__ = ["is_onnx_source", "open_onnx"]

T = GGMLQuantizationType
ARCHS = {"phi3": ("phi3", "Phi3ForCausalLM"), "phi": ("phi2", "PhiForCausalLM"),
         "llama": ("llama", "LlamaForCausalLM")}  # fmt: skip
# GGML type -> its bytes from a MatMulNBits slab (b, scales, zero points)
_TO_GGML: dict[int, Callable[..., np.ndarray]] = {
    int(T.Q4_0): lambda b, s, z: P.nbits_to_q4_0(b, s),
    int(T.Q8_0): lambda b, s, z: P.nbits_to_q8_0(b, s),
    int(T.Q6_K): lambda b, s, z: P.nbits_to_q6_K(b, s),
}


def is_onnx_source(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "genai_config.json").is_file()


@dataclass
class _Stored:
    """Where a tensor's bytes are: file, offset, dtype, shape (from its external data)."""

    file: str
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    row_bytes: int

    def rows(self, start: int, stop: int) -> np.ndarray:
        count = (stop - start) * self.row_bytes
        raw = np.fromfile(self.file, np.uint8, count, offset=self.offset + start * self.row_bytes)
        if raw.size != count:
            raise QuantizeError("file is truncated", self.file)
        return raw.view(self.dtype).reshape((stop - start, *self.shape[1:]))


class _Folder:
    def __init__(self, path: Path) -> None:
        self.f = OnnxFolder(path)
        self.path = str(path)

    def stored(self, name: str, shape: tuple[int, ...] | None = None) -> _Stored:
        """An initializer as rows: `shape` overrides its dims (e.g. packed int4 as bytes)."""
        t = self.f.initializers.get(name)
        if t is None:
            raise QuantizeError(f"initializer '{name}' does not exist", self.f.model_path)
        arr = self.f.array(t)  # validates; a view, used only for its dtype and the offset check
        shape = shape or tuple(int(d) for d in t.dims)
        if not t.external_data:
            raise QuantizeError(f"initializer '{name}' is not external data", self.f.model_path)
        ext = {e.key: e.value for e in t.external_data}
        file = str(Path(self.f.model_path).parent / ext["location"])
        dtype = arr.dtype
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        return _Stored(file, int(ext.get("offset", 0)), dtype, shape, row_bytes)

    def vector(self, name: str) -> np.ndarray:
        return np.array(self.f.array(name), dtype=np.float32).reshape(-1)


@dataclass
class _NBits:
    """One MatMulNBits weight (or GatherBlockQuantized table) read as (codes, scales, zp)."""

    name: str
    n: int
    k: int
    bits: int
    block_size: int
    b: _Stored
    scales: _Stored
    zp: _Stored | None
    signed4: bool = False  # INT4 table (GatherBlockQuantized): codes - 8 stored

    @property
    def nb(self) -> int:
        return -(-self.k // self.block_size)

    def slab(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        b = self.b.rows(start, stop).reshape(stop - start, self.nb, -1)
        if self.signed4:
            b = P.int4_to_signed(b)
        s = self.scales.rows(start, stop).astype(np.float32).reshape(stop - start, self.nb)
        z = None
        if self.zp is not None:
            z = self.zp.rows(start, stop).reshape(stop - start, -1)
        return b, s, z

    def dequantize(self, start: int, stop: int) -> np.ndarray:
        b, s, z = self.slab(start, stop)
        rows = stop - start
        if self.bits == 4:
            codes = np.empty((rows, self.nb, 2 * b.shape[2]), np.float32)
            codes[..., 0::2] = b & 0x0F
            codes[..., 1::2] = b >> 4
        else:
            codes = b.astype(np.float32)
        if z is None:
            zero = np.float32(8 if self.bits == 4 else 128)
        elif self.bits == 4:
            both = np.stack([z & 0x0F, z >> 4], axis=2).reshape(rows, -1)[:, : self.nb]
            zero = both.astype(np.float32)[..., None]
        else:
            zero = z[:, : self.nb].astype(np.float32)[..., None]
        w = (codes - zero) * s[..., None]  # float32: (q - zp)·scale, one rounding, as ORT
        return w.reshape(rows, -1)[:, : self.k]

    def exact(self) -> int | None:
        """The GGML type whose bytes these are (checked over the whole weight), or None."""
        if self.k % 32:
            return None
        s = self.scales.rows(0, self.n).astype(np.float32).reshape(self.n, self.nb)
        z = self.zp.rows(0, self.n).reshape(self.n, -1) if self.zp is not None else None
        no_codes = np.zeros((1, 1), np.uint8)
        if P.q4_0_exact(no_codes, s, z, self.bits, self.block_size):
            return int(T.Q4_0)
        if P.q8_0_exact(no_codes, s, z, self.bits, self.block_size):
            return int(T.Q8_0)
        if P.q6_K_exact(no_codes, s, z, self.bits, self.block_size) and self._codes_below(64):
            return int(T.Q6_K)
        return None

    def _codes_below(self, limit: int) -> bool:
        step = 4096
        return all(
            int(self.slab(a, min(self.n, a + step))[0].max(initial=0)) < limit
            for a in range(0, self.n, step)
        )


def _source_tensor(name: str, parts: list[tuple[_NBits, int, int]], path: str,
                   permute_heads: int = 0) -> SourceTensor:  # fmt: skip
    """A GGUF tensor made of row ranges of MatMulNBits weights (concatenated), rows optionally
    reordered within heads of `permute_heads` rows (Llama q/k, Hugging Face -> GGML rotary)."""
    k = parts[0][0].k
    n = sum(stop - start for _, start, stop in parts)
    types = {w.exact() for w, _, _ in parts}
    raw_type = types.pop() if len(types) == 1 else None

    def pieces(a: int, b: int):
        off = 0
        for w, start, stop in parts:
            lo, hi = max(a, off), min(b, off + stop - start)
            if lo < hi:
                yield w, start + lo - off, start + hi - off
            off += stop - start

    def order(rows: np.ndarray) -> np.ndarray:
        if not permute_heads:
            return rows
        return np.ascontiguousarray(rows[hf._head_permutation(rows.shape[0], rows.shape[0] // permute_heads)])  # fmt: skip

    def read_rows(a: int, b: int) -> np.ndarray:
        return order(np.concatenate([w.dequantize(x, y) for w, x, y in pieces(a, b)]))

    def read_raw(a: int, b: int) -> np.ndarray:
        convert = _TO_GGML[raw_type]  # type: ignore[index]
        return order(np.concatenate([convert(*w.slab(x, y)) for w, x, y in pieces(a, b)]))

    nbytes = 0
    for w, start, stop in parts:
        per_row = w.b.row_bytes + w.scales.row_bytes + (w.zp.row_bytes if w.zp else 0)
        nbytes += (stop - start) * per_row
    src = f"int{parts[0][0].bits}/{parts[0][0].block_size}"
    return SourceTensor(
        name, (n, k), src, path, nbytes, read_rows, row_align=permute_heads or 1,
        read_raw=read_raw if raw_type is not None else None, raw_type=raw_type,
    )  # fmt: skip


def _float_tensor(name: str, stored: _Stored, path: str) -> SourceTensor:
    shape = stored.shape if len(stored.shape) > 1 else (stored.shape[0],)

    def read_rows(a: int, b: int) -> np.ndarray:
        if len(shape) == 1:
            return stored.rows(0, shape[0]).reshape(1, -1).astype(np.float32)
        return stored.rows(a, b).astype(np.float32)

    return SourceTensor(name, shape, "F32", path, math.prod(shape) * 4, read_rows)


def _vector_tensor(name: str, values: np.ndarray, path: str) -> SourceTensor:
    v = np.ascontiguousarray(values, np.float32).reshape(1, -1)
    return SourceTensor(name, (v.shape[1],), "F32", path, v.nbytes, lambda a, b: v)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.folder = _Folder(path)
        f = self.folder.f
        self.path = str(path)
        self.model_type = f.model_type
        if self.model_type not in ARCHS:
            raise QuantizeError(
                f"model type '{self.model_type}' has no GGUF mapping", f.file("genai_config.json")
            )
        self.arch, self.hf_arch = ARCHS[self.model_type]
        self.nodes = {n.name: n for n in f.graph.node}
        self.by_output = {o: n for n in f.graph.node for o in n.output}
        self.weights: dict[str, _NBits] = {}  # initializer base name -> weight
        for node in f.graph.node:
            if node.op_type == "MatMulNBits":
                w = self.nbits(node)
                self.weights[node.input[1].rsplit(".weight_", 1)[0]] = w
            elif node.op_type == "MatMul" and node.input[1] in f.initializers:
                raise QuantizeError(f"node '{node.name}': float MatMul weights are not read (export the folder as int4 or int8)", f.model_path)  # fmt: skip

    def nbits(self, node: Any) -> _NBits:
        a = node_attrs(node)
        k, n, bits, bs = int(a["K"]), int(a["N"]), int(a.get("bits", 4)), int(a["block_size"])
        nb = -(-k // bs)
        fo = self.folder
        b = fo.stored(node.input[1], (n, nb * bs * bits // 8))
        s = fo.stored(node.input[2], (n, nb))
        zp = None
        if len(node.input) > 3 and node.input[3]:
            zp_t = fo.f.initializers[node.input[3]]
            if zp_t.data_type != 2:
                raise QuantizeError(f"node '{node.name}': float zero points are not read", fo.f.model_path)  # fmt: skip
            zp = fo.stored(node.input[3], (n, -(-nb * bits // 8)))
        return _NBits(node.name, n, k, bits, bs, b, s, zp)

    def embedding(self) -> tuple[SourceTensor, bool]:
        """token_embd and whether it is the lm_head's own table (tied)."""
        fo = self.folder
        node = self.by_output.get("/model/embed_tokens/Gather/output_0") or self.by_output.get(
            "/model/embed_tokens/GatherBlockQuantized/output_0"
        )
        if node is None:
            raise QuantizeError("no /model/embed_tokens node", fo.f.model_path)
        if node.op_type == "Gather":
            return _float_tensor("token_embd.weight", fo.stored(node.input[0]), self.path), False
        a = node_attrs(node)
        data = node.input[0]
        if data in self.by_output and self.by_output[data].op_type == "Reshape":
            base = self.by_output[data].input[0].rsplit(".weight_", 1)[0]
            w = self.weights[base]
            return _source_tensor("token_embd.weight", [(w, 0, w.n)], self.path), True
        t = fo.f.initializers[data]
        v, k = int(t.dims[0]), int(t.dims[1])
        bits, bs = int(a.get("bits", 4)), int(a["block_size"])
        if t.data_type not in (2, 21, 22):
            raise QuantizeError(f"node '{node.name}': table of ONNX type {t.data_type}", fo.f.model_path)  # fmt: skip
        nb = -(-k // bs)
        b = fo.stored(data, (v, k * bits // 8))
        s = fo.stored(node.input[2], (v, nb))
        zp = None
        if len(node.input) > 3 and node.input[3]:
            zp = fo.stored(node.input[3], (v, -(-nb * bits // 8)))
        w = _NBits(node.name, v, k, bits, bs, b, s, zp, signed4=t.data_type == 22)
        return _source_tensor("token_embd.weight", [(w, 0, v)], self.path), False

    def tensors(self, cfg: dict[str, Any]) -> list[SourceTensor]:
        fo, arch = self.folder, self.arch
        out: list[SourceTensor] = []
        embd, tied = self.embedding()
        out.append(embd)
        n_layer = int(fo.f.decoder_config["num_hidden_layers"])
        head_dim = int(fo.f.decoder_config["head_size"])
        n_head = int(fo.f.decoder_config["num_attention_heads"])
        n_kv = int(fo.f.decoder_config.get("num_key_value_heads", n_head))

        def lin(base: str) -> _NBits:
            w = self.weights.get(base)
            if w is None:
                raise QuantizeError(f"no MatMulNBits weight '{base}'", fo.f.model_path)
            return w

        def whole(w: _NBits) -> list[tuple[_NBits, int, int]]:
            return [(w, 0, w.n)]

        def vec(gguf: str, onnx: str, default: int | None = None) -> None:
            if onnx in fo.f.initializers:
                out.append(_vector_tensor(gguf, fo.vector(onnx), self.path))
            elif default is not None:  # the builder leaves out all-zero biases
                out.append(_vector_tensor(gguf, np.zeros(default, np.float32), self.path))
            else:
                raise QuantizeError(f"initializer '{onnx}' is missing", fo.f.model_path)

        n_embd = int(fo.f.decoder_config["hidden_size"])
        for i in range(n_layer):
            p, blk = f"model.layers.{i}", f"blk.{i}."
            vec(blk + "attn_norm.weight", f"{p}.input_layernorm.weight")
            if arch == "phi2":
                vec(blk + "attn_norm.bias", f"{p}.input_layernorm.bias")
            else:
                vec(blk + "ffn_norm.weight", f"{p}.post_attention_layernorm.weight")
            a = f"{p}.attn"
            if f"{a}.qkv_proj.MatMul" in self.weights:
                qkv = lin(f"{a}.qkv_proj.MatMul")
                nq, nk = n_head * head_dim, n_kv * head_dim
                q, k, v = [(qkv, 0, nq)], [(qkv, nq, nq + nk)], [(qkv, nq + nk, nq + 2 * nk)]
            else:
                q, k, v = (whole(lin(f"{a}.{x}_proj.MatMul")) for x in "qkv")
            if arch == "phi3":
                out.append(_source_tensor(blk + "attn_qkv.weight", q + k + v, self.path))
            else:  # separate q/k/v, as llama.cpp's converter writes Llama and Phi-2
                rot = head_dim if arch == "llama" else 0  # Llama: GGML's rotary row order
                out.append(_source_tensor(blk + "attn_q.weight", q, self.path, rot))
                out.append(_source_tensor(blk + "attn_k.weight", k, self.path, rot))
                out.append(_source_tensor(blk + "attn_v.weight", v, self.path))
            out.append(_source_tensor(blk + "attn_output.weight", whole(lin(f"{a}.o_proj.MatMul")), self.path))  # fmt: skip
            if arch == "phi2":
                nq, nk = n_head * head_dim, n_kv * head_dim
                name = f"{a}.qkv_proj.Add.bias"
                bias = fo.vector(name) if name in fo.f.initializers else np.zeros(nq + 2 * nk, np.float32)  # fmt: skip
                for x, (lo, hi) in zip("qkv", ((0, nq), (nq, nq + nk), (nq + nk, nq + 2 * nk)), strict=True):  # fmt: skip
                    out.append(_vector_tensor(blk + f"attn_{x}.bias", bias[lo:hi], self.path))
                vec(blk + "attn_output.bias", f"{a}.o_proj.Add.bias", n_embd)
                fc1, fc2 = lin(f"{p}.mlp.fc1.MatMul"), lin(f"{p}.mlp.fc2.MatMul")
                out.append(_source_tensor(blk + "ffn_up.weight", whole(fc1), self.path))
                vec(blk + "ffn_up.bias", f"{p}.mlp.fc1.Add.bias", fc1.n)
                out.append(_source_tensor(blk + "ffn_down.weight", whole(fc2), self.path))
                vec(blk + "ffn_down.bias", f"{p}.mlp.fc2.Add.bias", fc2.n)
                continue
            gate, up = lin(f"{p}.mlp.gate_proj.MatMul"), lin(f"{p}.mlp.up_proj.MatMul")
            if arch == "phi3":
                out.append(_source_tensor(blk + "ffn_up.weight", whole(gate) + whole(up), self.path))  # fmt: skip
            else:
                out.append(_source_tensor(blk + "ffn_gate.weight", whole(gate), self.path))
                out.append(_source_tensor(blk + "ffn_up.weight", whole(up), self.path))
            out.append(_source_tensor(blk + "ffn_down.weight", whole(lin(f"{p}.mlp.down_proj.MatMul")), self.path))  # fmt: skip
        final = f"model.layers.{n_layer}.final_norm_layernorm"
        vec("output_norm.weight", f"{final}.weight")
        if arch == "phi2":
            vec("output_norm.bias", f"{final}.bias")
        if not tied:
            out.append(_source_tensor("output.weight", whole(lin("lm_head.MatMul")), self.path))
        if arch == "phi2":
            vec("output.bias", "lm_head.Add.bias", embd.shape[0])
        scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
        if arch == "phi3" and scaling.get("long_factor"):
            out.append(_vector_tensor("rope_factors_long.weight", np.array(scaling["long_factor"]), self.path))  # fmt: skip
            out.append(_vector_tensor("rope_factors_short.weight", np.array(scaling["short_factor"]), self.path))  # fmt: skip
        return out

    def config(self) -> dict[str, Any]:
        """config.json when the folder has one, else what genai_config.json and the graph say."""
        fo = self.folder
        path = Path(self.path) / "config.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise QuantizeError(f"unreadable config: {exc}", path) from None
            if isinstance(data, dict):
                return data
        d = fo.f.decoder_config
        model = fo.f.config["model"]
        gqa = next(n for n in fo.f.graph.node if n.op_type == "GroupQueryAttention")
        window = int(node_attrs(gqa).get("local_window_size", -1))
        norm = next(n for n in fo.f.graph.node if "LayerNormalization" in n.op_type)
        eps = float(node_attrs(norm).get("epsilon", 1e-5))
        head_dim = int(d["head_size"])
        cos = self._cos_cache()
        n_rot = 2 * cos.shape[1]
        theta = float(np.arctan2(*self._angle_inputs(cos, 1)))
        base = float(theta ** (-n_rot / 2)) if theta > 0 else 10000.0
        first = next(iter(self.weights.values()))
        down = self.weights.get("model.layers.0.mlp.down_proj.MatMul") or self.weights.get("model.layers.0.mlp.fc2.MatMul")  # fmt: skip
        cfg: dict[str, Any] = {
            "architectures": [self.hf_arch],
            "vocab_size": int(model["vocab_size"]),
            "hidden_size": int(d["hidden_size"]),
            "intermediate_size": int(down.k if down else first.k),
            "num_hidden_layers": int(d["num_hidden_layers"]),
            "num_attention_heads": int(d["num_attention_heads"]),
            "num_key_value_heads": int(d.get("num_key_value_heads", d["num_attention_heads"])),
            "max_position_embeddings": int(model["context_length"]),
            "rope_theta": round(base, 3),
            "bos_token_id": model.get("bos_token_id"),
            "eos_token_id": model.get("eos_token_id"),
            "tie_word_embeddings": self.embedding()[1],
            "rms_norm_eps": eps,
            "layer_norm_eps": eps,
        }
        if head_dim != cfg["hidden_size"] // cfg["num_attention_heads"]:
            cfg["head_dim"] = head_dim
        if n_rot != head_dim:
            cfg["partial_rotary_factor"] = n_rot / head_dim
        if window > 0:
            cfg["sliding_window"] = window  # keys seen, the current one included
        return cfg

    def _cos_cache(self) -> np.ndarray:
        f = self.folder.f
        if "cos_cache" in f.initializers:
            return np.asarray(f.array("cos_cache"), np.float32)
        raise QuantizeError("the folder has no config.json and no cos_cache to read the rotary base from", self.path)  # fmt: skip

    def _angle_inputs(self, cos: np.ndarray, i: int) -> tuple[float, float]:
        sin = np.asarray(self.folder.f.array("sin_cache"), np.float32)
        return float(sin[1, i]), float(cos[1, i])


def open_onnx(folder: str | Path) -> Source:
    """An ONNX Runtime GenAI folder as a quantizer source (Raises QuantizeError / FormatError
    naming the file and node for graphs outside the builder's map)."""
    path = Path(folder)
    r = _Reader(path)
    cfg_data = r.config()
    tensors = r.tensors(cfg_data)
    table = hf.TABLES[r.hf_arch]
    config = hf._Config.__new__(hf._Config)
    config.path = path / "config.json"
    config.data = cfg_data
    dims = hf._Dims(config, table)

    def add_metadata(w: GGUFWriter) -> None:
        w.add_name(
            str(cfg_data.get("_name_or_path") or path.resolve().name).rstrip("/").split("/")[-1]
        )
        hf._add_hparams(w, r.arch, config, dims)
        add_vocab(w, path, r.hf_arch, cfg_data)

    exact = "f32"
    return Source(str(path), r.arch, dims.n_layer, tensors, add_metadata, exact_type=exact)

"""A Hugging Face model folder as a quantizer source: config.json -> GGUF hyperparameters,
safetensors -> GGUF tensors (names.py), tokenizer files -> GGUF tokenizer (vocab.py).

Hyperparameter keys and the tensor transformations follow llama.cpp's converter
(conversion/phi.py, llama.py, base.py), so the output loads in llama.cpp. Every tensor's shape is
checked against what config.json implies before anything is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter, RopeScalingType

from phirt.errors import QuantizeError
from phirt.models.common import LAYER_PREFIX, DecoderConfig
from phirt.models.registry import ARCHITECTURES
from phirt.quantize.names import TABLES, NameTable, gguf_name
from phirt.quantize.safetensors_io import SafetensorsSet, StTensor
from phirt.quantize.source import Source, SourceTensor
from phirt.quantize.vocab import add_vocab

__all__ = ["open_hf"]


class _Config:
    """config.json with the lookups the converter does (several spellings, rope parameters nested
    in ``rope_scaling`` (older files) or ``rope_parameters`` (transformers 5))."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise QuantizeError(
                "no config.json: not a Hugging Face model folder", path.parent
            ) from None
        except (OSError, ValueError) as exc:
            raise QuantizeError(f"unreadable config: {exc}", path) from None
        if not isinstance(self.data, dict):
            raise QuantizeError("config is not a JSON object", path)

    def get(self, *keys: str, default: Any = None) -> Any:
        for key in keys:
            if self.data.get(key) is not None:
                return self.data[key]
        return default

    def need(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            raise QuantizeError(f"missing {keys[0]!r}", self.path)
        return value

    def rope(self, key: str, default: Any = None) -> Any:
        for section in (self.data, self.data.get("rope_scaling"), self.data.get("rope_parameters")):
            if isinstance(section, dict) and section.get(key) is not None:
                return section[key]
        return default


class _Dims:
    def __init__(self, c: _Config, table: NameTable) -> None:
        self.n_vocab = int(c.need("vocab_size"))
        self.n_embd = int(c.need("hidden_size", "n_embd"))
        self.n_layer = int(c.need("num_hidden_layers", "n_layer"))
        self.n_head = int(c.need("num_attention_heads", "n_head"))
        self.n_head_kv = int(c.get("num_key_value_heads", default=self.n_head))
        self.head_dim = int(c.get("head_dim", default=self.n_embd // self.n_head))
        ff_default = 4 * self.n_embd if table.gguf_arch == "phi2" else None
        self.n_ff = int(c.get("intermediate_size", "n_inner", default=ff_default) or 0)
        if not self.n_ff:
            raise QuantizeError("missing 'intermediate_size'", c.path)
        self.tied = bool(c.get("tie_word_embeddings", default=False))


def _expected_shapes(table: NameTable, d: _Dims) -> dict[str, tuple[int, ...]]:
    """GGUF name -> numpy shape that config.json implies, for every tensor the checkpoint holds:
    the names come from the name table, the shapes from the architecture's tensor table
    (phirt.models), the one the engine checks GGUF files against."""
    cfg = DecoderConfig(
        arch=table.gguf_arch,
        n_vocab=d.n_vocab,
        n_embd=d.n_embd,
        n_ff=d.n_ff,
        n_layer=d.n_layer,
        n_head=d.n_head,
        n_head_kv=d.n_head_kv,
        head_dim=d.head_dim,
        n_rot=d.head_dim,  # no shape in the name tables depends on the remaining fields
        n_ctx_train=0,
        norm_eps=0.0,
    )
    shape_of = {spec.name: spec.shape for spec in ARCHITECTURES[table.gguf_arch].module.TENSORS}
    shapes = {name: shape_of[name](cfg) for name in table.globals.values()}
    layer = {name: shape_of[LAYER_PREFIX + name](cfg) for name in table.per_layer.values()}
    for i in range(d.n_layer):
        shapes |= {f"blk.{i}.{name}": shape for name, shape in layer.items()}
    return shapes


def _head_permutation(n_rows: int, n_head: int) -> np.ndarray:
    """Row order that turns HF's rotate-half q/k layout into GGML's adjacent-pair rotary layout
    for Llama (the converter's ``permute``): within each head, row 2j+s comes from s*hd/2 + j."""
    hd = n_rows // n_head
    return np.arange(n_rows).reshape(n_head, 2, hd // 2).swapaxes(1, 2).reshape(-1)


def _from_safetensors(st: StTensor, name: str, shape: tuple[int, ...]) -> SourceTensor:
    return SourceTensor(name, shape, st.dtype, st.path, st.nbytes, st.read_rows)


def _permuted(st: StTensor, name: str, shape: tuple[int, ...], n_head: int) -> SourceTensor:
    perm = _head_permutation(shape[0], n_head)
    hd = shape[0] // n_head

    def read_rows(start: int, stop: int) -> np.ndarray:
        # slabs start on head boundaries (row_align), so their rows come from the same range
        block = st.read_rows(start, -(-stop // hd) * hd)
        return np.ascontiguousarray(block[perm[start:stop] - start])

    return SourceTensor(name, shape, st.dtype, st.path, st.nbytes, read_rows, row_align=hd)


def _from_array(name: str, values: np.ndarray, path: Path) -> SourceTensor:
    arr = np.ascontiguousarray(values, dtype=np.float32).reshape(1, -1)
    return SourceTensor(
        name, (arr.shape[1],), "F32", str(path), arr.nbytes, lambda a, b: arr[a:b], row_align=1
    )


def _llama3_rope_factors(c: _Config, d: _Dims) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1's "llama3" rope scaling (the converter's rope_freqs)."""
    base = float(c.rope("rope_theta", 10000.0))
    factor = float(c.rope("factor", 8.0))
    low = float(c.rope("low_freq_factor", 1.0))
    high = float(c.rope("high_freq_factor", 4.0))
    old_ctx = float(c.rope("original_max_position_embeddings", 8192))
    dim = d.head_dim
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _phi3_rope(c: _Config, d: _Dims) -> tuple[int, int, float | None, list[float], list[float]]:
    """(rotary dims, original context, LongRoPE attention factor or None, long, short factors)."""
    n_ctx = int(c.need("max_position_embeddings", "n_positions"))
    n_rot = int(float(c.rope("partial_rotary_factor", 1.0)) * d.n_embd) // d.n_head
    n_orig = int(c.rope("original_max_position_embeddings") or n_ctx)
    long_f, short_f = c.rope("long_factor"), c.rope("short_factor")
    if not long_f:
        return n_rot, n_orig, None, [], []
    rope_type = str(c.rope("rope_type") or c.rope("type") or "").lower()
    if rope_type not in ("su", "longrope"):
        raise QuantizeError(f"rope scaling type {rope_type!r} is not supported", c.path)
    if short_f is None or len(long_f) != n_rot // 2 or len(short_f) != n_rot // 2:
        raise QuantizeError(
            f"LongRoPE long_factor/short_factor must have {n_rot // 2} entries each", c.path
        )
    scale = n_ctx / n_orig
    attn = math.sqrt(1 + math.log(scale) / math.log(n_orig)) if scale > 1.0 else 1.0
    return n_rot, n_orig, attn, list(long_f), list(short_f)


def _llama_rope_type(c: _Config) -> str:
    rope_type = str(c.rope("rope_type") or c.rope("type") or "default").lower()
    if rope_type not in ("default", "linear", "llama3"):
        raise QuantizeError(f"rope scaling type {rope_type!r} is not supported", c.path)
    return rope_type


def _extra_tensors(arch: str, c: _Config, d: _Dims) -> list[SourceTensor]:
    """Tensors that come from config.json: Phi-3 LongRoPE factors, Llama 3.1 rope_freqs."""
    if arch == "phi3":
        _, _, attn, long_f, short_f = _phi3_rope(c, d)
        if attn is None:
            return []
        return [
            _from_array("rope_factors_long.weight", np.array(long_f), c.path),
            _from_array("rope_factors_short.weight", np.array(short_f), c.path),
        ]
    if arch == "llama" and _llama_rope_type(c) == "llama3":
        return [_from_array("rope_freqs.weight", _llama3_rope_factors(c, d), c.path)]
    return []


def _add_hparams(w: GGUFWriter, arch: str, c: _Config, d: _Dims) -> None:
    """The ``{arch}.*`` keys llama.cpp's converter writes for this architecture."""
    n_ctx = int(c.need("max_position_embeddings", "n_positions"))
    w.add_context_length(n_ctx)
    w.add_embedding_length(d.n_embd)
    w.add_feed_forward_length(d.n_ff)
    w.add_block_count(d.n_layer)
    w.add_head_count(d.n_head)
    w.add_head_count_kv(d.n_head_kv)
    theta = c.rope("rope_theta")
    if theta is not None:
        w.add_rope_freq_base(float(theta))
    if arch == "phi2":
        w.add_layer_norm_eps(float(c.need("layer_norm_eps", "layer_norm_epsilon")))
        rot_pct = float(c.rope("partial_rotary_factor", 1.0))
        w.add_rope_dimension_count(int(rot_pct * d.n_embd) // d.n_head)
        return
    w.add_layer_norm_rms_eps(float(c.need("rms_norm_eps")))
    if arch == "phi3":
        n_rot, n_orig, attn, _, _ = _phi3_rope(c, d)
        w.add_rope_dimension_count(n_rot)
        w.add_rope_scaling_orig_ctx_len(n_orig)
        # the converter writes 0 when the config has none: llama.cpp tells Phi-4 apart by it
        w.add_sliding_window(int(c.get("sliding_window", default=0)))
        if attn is not None:
            w.add_rope_scaling_attn_factors(attn)
        return
    w.add_vocab_size(d.n_vocab)
    w.add_rope_dimension_count(d.head_dim)
    if d.head_dim != d.n_embd // d.n_head:
        w.add_key_length(d.head_dim)
        w.add_value_length(d.head_dim)
    factor = c.rope("factor")
    if _llama_rope_type(c) == "linear" and factor is not None:
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))


def open_hf(folder: str | Path) -> Source:
    """Open a Hugging Face model folder. Raises QuantizeError (naming the file) for an unknown
    architecture, missing or mismatched shards, unexpected tensors or shapes."""
    folder = Path(folder)
    c = _Config(folder / "config.json")
    archs = c.get("architectures") or []
    hf_arch = archs[0] if isinstance(archs, list) and archs else None
    table = TABLES.get(hf_arch) if isinstance(hf_arch, str) else None
    if table is None:
        raise QuantizeError(
            f"unknown architecture {hf_arch!r}; supported: {', '.join(sorted(TABLES))}", c.path
        )
    arch = table.gguf_arch
    d = _Dims(c, table)
    st = SafetensorsSet(folder)
    shapes = _expected_shapes(table, d)

    tensors: list[SourceTensor] = []
    for hf_name, t in st.tensors.items():
        try:
            name = gguf_name(table, hf_name)
        except KeyError:
            raise QuantizeError(
                f"unexpected tensor {hf_name!r} for {table.hf_architecture}", t.path
            ) from None
        if name is None or (name == "output.weight" and d.tied):
            continue
        want = shapes.get(name)
        if want is None:  # e.g. a layer index beyond num_hidden_layers
            raise QuantizeError(
                f"tensor {hf_name!r} does not fit config.json ({d.n_layer} layers)", t.path
            )
        if t.shape != want:
            raise QuantizeError(
                f"tensor {hf_name!r} has shape {list(t.shape)}, config.json implies {list(want)}",
                t.path,
            )
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = d.n_head if name.endswith("attn_q.weight") else d.n_head_kv
            tensors.append(_permuted(t, name, want, heads))
        else:
            tensors.append(_from_safetensors(t, name, want))

    present = {t.name for t in tensors}
    optional = {"output.weight"} if d.tied else set()
    missing = [n for n in shapes if n not in present and n not in optional]
    if "output.weight" in missing and arch == "llama":  # untied by config but saved without it
        missing.remove("output.weight")
    if missing:
        raise QuantizeError(
            f"tensor {missing[0]!r} is missing from the safetensors files ({len(missing)} missing)",
            folder,
        )

    tensors.extend(_extra_tensors(arch, c, d))
    if arch == "phi2" and c.get("qk_layernorm"):
        raise QuantizeError("qk_layernorm Phi models are not supported", c.path)

    def add_metadata(w: GGUFWriter) -> None:
        w.add_name(folder.resolve().name)
        _add_hparams(w, arch, c, d)
        add_vocab(w, folder, table.hf_architecture, c.data)

    dtypes = {t.src_type for t in tensors if len(t.shape) > 1}
    exact = "bf16" if dtypes == {"BF16"} else "f16" if dtypes == {"F16"} else "f32"
    return Source(str(folder), arch, d.n_layer, tensors, add_metadata, exact_type=exact)

"""GGUF -> mlx-lm folder (`python -m phirt quantize SRC OUT --format mlx`): config.json,
model.safetensors and the tokenizer files, loadable by `mlx_lm.load` and phirt's mlx backend.

GGML's 32-wide blocks map onto MLX's affine quantization (w = scale * q + bias per group of
`group_size` values, q unsigned, packed little-end first into uint32 words) without rounding:

    Q4_0  d * (q - 8)        -> 4 bits, group 32: scale = d, bias = -8 d
    Q4_1  d * q + m          -> 4 bits, group 32: scale = d, bias = m
    Q5_0  d * (q - 16)       -> 5 bits, group 32: scale = d, bias = -16 d
    Q5_1  d * q + m          -> 5 bits, group 32: scale = d, bias = m
    Q8_0  d * q, q in int8   -> 8 bits, group 32: q + 128 unsigned, scale = d, bias = -128 d

d and m are f16 and -8 d, -16 d, -128 d are exact in f16 (powers of two), so scales and biases are
stored as float16: GGML's own numbers. With float32 activations MLX's quantized_matmul evaluates
scale * q + bias in float32, where every product and sum here is exact, so the weights it computes
with are bit for bit GGML's (tests/test_mlx_export.py reads them back). mx.dequantize, however,
returns the scales' dtype, and float16 would round d * q: the embedding (mlx-lm dequantizes its
rows) gets float32 scales, and non-quantized tensors are float32, which keeps activations float32.
Other tensor types (K-quants, F16, BF16) are written dequantized as float32, exact but larger.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from phirt.backends.mlx import MLX_ARCHS  # the table lives with the probe (no gguf-py there)
from phirt.errors import QuantizeError

__all__ = ["MLX_ARCHS", "ExportResult", "export_mlx", "gguf_block_to_mlx", "write_tokenizer"]

# GGML type id -> (bits, offset subtracted from q in GGML's formula (None: has a min), block
# bytes). Layouts from ggml's block structs (quants.h): d f16 [, m f16] then the packed q.
_AFFINE = {
    2: (4, 8, 18),  # Q4_0: d, 16 bytes of nibbles
    3: (4, None, 20),  # Q4_1: d, m, 16 bytes
    6: (5, 16, 22),  # Q5_0: d, 4 bytes of high bits, 16 bytes of nibbles
    7: (5, None, 24),  # Q5_1: d, m, 4 bytes qh, 16 bytes
    8: (8, 128, 34),  # Q8_0: d, 32 int8
}
_FLOAT_TYPES = {0: "F32", 1: "F16", 30: "BF16"}


def _unpack_q(block_q: np.ndarray, ggml_type: int) -> np.ndarray:
    """(rows, blocks, bytes) GGML blocks -> (rows, blocks, 32) unsigned q as MLX stores it."""
    if ggml_type == 8:
        return (block_q[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    start = 2 if ggml_type in (2, 6) else 4
    if ggml_type in (6, 7):
        qh = block_q[..., start : start + 4].copy().view(np.uint32)[..., 0]
        start += 4
    nib = block_q[..., start : start + 16]
    q = np.concatenate([nib & 0x0F, nib >> 4], axis=-1)  # elements 0-15 low nibbles, 16-31 high
    if ggml_type in (6, 7):
        high = (qh[..., None] >> np.arange(32, dtype=np.uint32)) & 1
        q = q | (high.astype(np.uint8) << 4)
    return q


def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """(rows, n) unsigned values of `bits` bits -> (rows, n * bits / 32) uint32, MLX's order:
    value i of a row occupies bits [i*bits, (i+1)*bits) of the row's little-endian bit string."""
    rows, n = q.shape
    if bits in (4, 8):  # whole values per byte: shift and OR per word, no bit string
        per = 32 // bits
        lanes = q.reshape(rows, n // per, per).astype(np.uint32)
        shifts = np.arange(per, dtype=np.uint32) * bits
        return np.bitwise_or.reduce(lanes << shifts, axis=-1)
    bit_idx = np.arange(bits, dtype=np.uint8)
    bitstr = ((q[..., None] >> bit_idx) & 1).astype(np.uint8).reshape(rows, n * bits)
    return np.packbits(bitstr, axis=-1, bitorder="little").view(np.uint32).reshape(rows, -1)


def gguf_block_to_mlx(
    raw: np.ndarray, ggml_type: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """GGML rows (rows, row_bytes) u8 -> (weight u32, scales f16, biases f16, bits) for MLX's
    affine quantization with group size 32."""
    bits, offset, block_bytes = _AFFINE[ggml_type]
    rows = raw.shape[0]
    blocks = raw.reshape(rows, k // 32, block_bytes)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0]
    if offset is None:
        bias = blocks[..., 2:4].copy().view(np.float16)[..., 0]
    else:
        bias = (d.astype(np.float32) * -offset).astype(np.float16)
        if not np.array_equal(bias.astype(np.float32), d.astype(np.float32) * -offset):
            raise QuantizeError(f"a block scale overflows float16 when multiplied by {offset}")
    q = _unpack_q(blocks, ggml_type).reshape(rows, k)
    return _pack(q, bits), d, bias, bits


@dataclass
class ExportResult:
    path: str
    n_tensors: int = 0
    quantized: dict[str, int] = field(default_factory=dict)  # GGML type name -> tensors mapped
    dequantized: dict[str, int] = field(default_factory=dict)  # written as float32
    bytes_out: int = 0
    seconds: float = 0.0


def _hf_names(arch: str) -> tuple[dict[str, str], dict[str, str]]:
    from phirt.quantize.names import TABLES

    table = TABLES[MLX_ARCHS[arch][1]]
    return (
        {g: h for h, g in table.globals.items()},
        {g: h for h, g in table.per_layer.items()},
    )


def _config(arch: str, cfg, meta: dict, tied: bool, rope: dict) -> dict:
    out = {
        "model_type": MLX_ARCHS[arch][0],
        "architectures": [MLX_ARCHS[arch][1]],
        "vocab_size": cfg.n_vocab,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.n_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head_kv,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.n_ctx_train,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_base,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    }
    if arch == "phi3":
        out["partial_rotary_factor"] = cfg.n_rot / cfg.head_dim
        if cfg.rope_original_ctx and "long" in rope:
            out["original_max_position_embeddings"] = cfg.rope_original_ctx
            out["rope_scaling"] = {
                "type": "longrope",
                "long_factor": rope["long"],
                "short_factor": rope["short"],
            }
        if cfg.sliding_window:
            out["sliding_window"] = cfg.sliding_window
    elif cfg.rope_freq_scale != 1.0:
        out["rope_scaling"] = {"type": "linear", "factor": 1.0 / cfg.rope_freq_scale}
    for key, meta_key in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
        value = meta.get(f"tokenizer.ggml.{meta_key}_token_id")
        if value is not None:
            out[key] = int(value)
    return out


def write_tokenizer(src: str, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json (+ chat template) from the GGUF vocabulary.

    phirt's own GGUF-vocabulary exporter (quantize/tokenizer_files.py, from the ONNX export) when
    this build has it, else transformers' GGUF tokenizer conversion (transformers comes with
    mlx-lm, which this folder is for). `export_mlx(..., tokenizer_writer=...)` takes any function
    with this signature."""
    try:
        from phirt.quantize.tokenizer_files import write_tokenizer_files  # type: ignore
    except ImportError:
        write_tokenizer_files = None
    if write_tokenizer_files is not None:
        from phirt.formats.gguf import GGUFFile
        from phirt.tokenizer import Tokenizer

        g = GGUFFile(src)
        n_ctx = int(g.metadata.get(f"{g.arch}.context_length", 4096))
        template = g.metadata.get("tokenizer.chat_template")
        write_tokenizer_files(Tokenizer.from_metadata(g.metadata, src), out, template, n_ctx)
        return
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise QuantizeError(
            "writing the tokenizer needs transformers (pip install 'phirt[mlx]')", src
        ) from None
    tok = AutoTokenizer.from_pretrained(str(Path(src).parent), gguf_file=Path(src).name)
    tok.save_pretrained(str(out))
    # Older transformers (mlx-lm on a Mac may have one) know the fast tokenizer by this name only.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")


def export_mlx(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tokenizer_writer: Callable[[str, Path], None] | None = write_tokenizer,
) -> ExportResult:
    """Write an mlx-lm folder for the GGUF file `src` (llama or phi3 architecture)."""
    from safetensors.numpy import save_file

    from phirt import _kernels as K
    from phirt.formats.gguf import GGUFFile
    from phirt.models.registry import find_architecture
    from phirt.quantize.hf import _head_permutation

    t0 = time.perf_counter()
    src = os.fspath(src)
    out_dir = Path(out)
    g = GGUFFile(src)
    arch = g.arch or ""
    if arch not in MLX_ARCHS:
        raise QuantizeError(
            f"architecture '{arch}' has no mlx-lm mapping here (supported: "
            f"{', '.join(sorted(MLX_ARCHS))})",
            src,
        )
    embd = g.tensors.get("token_embd.weight")
    if embd is None:
        raise QuantizeError("required tensor 'token_embd.weight' is missing", src)
    cfg = find_architecture(arch, src).read_config(g.metadata, src, int(embd.shape[0]))
    globals_map, layer_map = _hf_names(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(str(out_dir))
    arrays: dict[str, np.ndarray] = {}
    quant_overrides: dict[str, dict[str, int]] = {}
    rope: dict[str, list[float]] = {}
    for name, t in g.tensors.items():
        if name in ("rope_factors_long.weight", "rope_factors_short.weight"):
            rope[name.split("_")[2].split(".")[0]] = t.to_float32().tolist()
            continue
        if name == "rope_freqs.weight":
            raise QuantizeError("llama3-style rope_freqs has no mlx-lm config mapping here", src)
        layer = name.split(".", 2)
        if layer[0] == "blk":
            suffix = name.split(".", 2)[2]
            if suffix not in layer_map:
                raise QuantizeError(f"tensor '{name}' has no mlx-lm name", src)
            hf = f"model.layers.{layer[1]}.{layer_map[suffix]}"
        elif name in globals_map:
            hf = globals_map[name]
        else:
            raise QuantizeError(f"tensor '{name}' has no mlx-lm name", src)
        rows = t.data.reshape(-1, t.row_bytes) if len(t.shape) > 1 else t.data
        if arch == "llama" and suffix_of(name) in ("attn_q.weight", "attn_k.weight"):
            heads = cfg.n_head if name.endswith("attn_q.weight") else cfg.n_head_kv
            rows = rows[np.argsort(_head_permutation(rows.shape[0], heads))]
        base = hf.removesuffix(".weight")
        if t.ggml_type in _AFFINE and len(t.shape) == 2:
            w, scales, biases, bits = gguf_block_to_mlx(np.asarray(rows), t.ggml_type, t.shape[1])
            if name == "token_embd.weight":  # rows come back in the scales' dtype: keep float32
                scales, biases = scales.astype(np.float32), biases.astype(np.float32)
            arrays[hf] = w
            arrays[f"{base}.scales"] = scales
            arrays[f"{base}.biases"] = biases
            quant_overrides[base] = {"group_size": 32, "bits": bits}
            result.quantized[t.type_name] = result.quantized.get(t.type_name, 0) + 1
        else:
            if t.ggml_type not in _FLOAT_TYPES and len(t.shape) > 1:
                result.dequantized[t.type_name] = result.dequantized.get(t.type_name, 0) + 1
            if len(t.shape) > 1:
                arrays[hf] = K.dequantize(t.ggml_type, np.asarray(rows), t.shape[-1])
            else:
                arrays[hf] = t.to_float32()
    config = _config(arch, cfg, g.metadata, "output.weight" not in g.tensors, rope)
    if quant_overrides:
        common = max(
            {q["bits"] for q in quant_overrides.values()},
            key=[q["bits"] for q in quant_overrides.values()].count,
        )
        quantization: dict[str, object] = {"group_size": 32, "bits": common}
        # mlx-lm quantizes a layer only when its .scales are present; other bit widths by name
        quantization |= {k: v for k, v in quant_overrides.items() if v["bits"] != common}
        config["quantization"] = quantization
        config["quantization_config"] = quantization
    save_file(arrays, str(out_dir / "model.safetensors"), metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if tokenizer_writer is not None:
        tokenizer_writer(src, out_dir)
    result.n_tensors = len(arrays)
    result.bytes_out = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file())
    result.seconds = time.perf_counter() - t0
    return result


def suffix_of(name: str) -> str:
    parts = name.split(".", 2)
    return parts[2] if parts[0] == "blk" and len(parts) == 3 else name

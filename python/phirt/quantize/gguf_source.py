"""A GGUF file as a quantizer source: metadata copied over, tensors dequantized slab by slab.

The header is read by phirt's strict reader (formats/gguf.py). Tensor bytes are read per slab with
``np.fromfile`` at the tensor's offset rather than through that reader's memory map, so pages of
tensors already written do not stay resident. A tensor already in the requested type is copied
byte for byte (llama.cpp does the same); requantizing from another quantized type works, but the
errors of both quantizations add up, which the result reports as a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from phirt import _kernels as K
from phirt.errors import QuantizeError
from phirt.formats.gguf import GGUFFile
from phirt.quantize.source import Source, SourceTensor

__all__ = ["open_gguf"]

_FLOAT_TYPES = {
    int(GGMLQuantizationType.F32),
    int(GGMLQuantizationType.F16),
    int(GGMLQuantizationType.BF16),
}
# keys the writer sets itself or that describe the old file only
_SKIP_KEYS = ("general.architecture", "general.file_type", "general.quantization_version", "split.")


def _tensor(path: str, t) -> SourceTensor:
    n_rows = t.shape[0] if len(t.shape) > 1 else 1
    k = t.shape[-1]
    row_bytes = t.n_bytes // n_rows
    type_id = t.ggml_type

    def read_raw(start: int, stop: int) -> np.ndarray:
        count = (stop - start) * row_bytes
        raw = np.fromfile(path, dtype=np.uint8, count=count, offset=t.offset + start * row_bytes)
        if raw.size != count:
            raise QuantizeError(f"tensor {t.name!r}: file is truncated", path)
        return raw.reshape(stop - start, row_bytes)

    def read_rows(start: int, stop: int) -> np.ndarray:
        try:
            return K.dequantize(type_id, read_raw(start, stop), k)
        except (ValueError, TypeError) as exc:
            raise QuantizeError(f"tensor {t.name!r} ({t.type_name}): {exc}", path) from None

    shape = tuple(int(s) for s in t.shape)
    if len(shape) > 2:  # leading dims flattened into rows, as the kernels see them
        shape = (int(np.prod(shape[:-1])), shape[-1])
    return SourceTensor(
        t.name, shape, t.type_name, path, t.n_bytes, read_rows, read_raw=read_raw, raw_type=type_id
    )


def open_gguf(path: str | Path) -> Source:
    g = GGUFFile(path)
    arch = g.arch
    if arch is None:
        raise QuantizeError("missing general.architecture", g.path)
    n_layer = g.get(f"{arch}.block_count")
    if not isinstance(n_layer, int):
        raise QuantizeError(f"missing {arch}.block_count", g.path)
    tensors = [_tensor(g.path, t) for t in g.tensors.values()]
    warnings = []
    quantized = sorted({t.src_type for t in tensors if t.raw_type not in _FLOAT_TYPES})
    if quantized:
        warnings.append(
            f"the source is already quantized ({', '.join(quantized)}): requantizing adds a second "
            "rounding error on top of the first"
        )
    keys = [(k, v) for k, v in g.metadata.items() if not k.startswith(_SKIP_KEYS)]

    def add_metadata(w: GGUFWriter) -> None:
        for key, value in keys:
            vtype, item_type = g.metadata_types[key]  # phirt's own enum: convert to gguf-py's
            sub_type = GGUFValueType(item_type) if item_type is not None else None
            w.add_key_value(key, value, GGUFValueType(vtype), sub_type=sub_type)

    types = {t.src_type for t in tensors if len(t.shape) > 1}
    exact = "bf16" if types == {"BF16"} else "f16" if types <= {"F16"} else "f32"
    return Source(g.path, arch, n_layer, tensors, add_metadata, warnings, exact_type=exact)

"""Streaming GGUF writing: the header and every tensor's info first (gguf.GGUFWriter), then the
tensor data one slab of rows at a time, so memory holds one slab, never the model.

GGUFWriter normally keeps every tensor until ``write_tensors_to_file``; here only
``add_tensor_info`` is used (it needs the byte size, which is known from the shape and type up
front), then the data section is written by hand with the same alignment rules as
``GGUFWriter.write_tensor_data``: each tensor starts on ``general.alignment`` (32) bytes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_VERSION, GGUFWriter
from gguf.quants import quant_shape_to_byte_shape

from phirt import _kernels as K
from phirt.errors import QuantizeError
from phirt.quantize.mixes import FILE_TYPES, TensorPlan
from phirt.quantize.source import Source, SourceTensor

__all__ = ["WriteResult", "write_gguf"]

SLAB_BYTES = 32 * 1024 * 1024  # f32 bytes converted per step


@dataclass
class WriteResult:
    path: str
    seconds: float
    bytes_in: int  # stored bytes of the source tensors
    bytes_out: int  # tensor data written
    n_tensors: int
    types: dict[str, int] = field(default_factory=dict)  # output type name -> tensor count


def _slab_rows(src: SourceTensor) -> int:
    rows = max(1, SLAB_BYTES // (4 * src.row_len))
    return max(src.row_align, rows // src.row_align * src.row_align)


def _write_tensor(
    fout, src: SourceTensor, plan: TensorPlan, progress: Callable[[int], None]
) -> int:
    """Convert one tensor slab by slab into ``fout``; returns the bytes written."""
    qtype = int(plan.type)
    per_row_in = src.nbytes // src.n_rows
    written = 0
    step = _slab_rows(src)
    copy = src.read_raw is not None and src.raw_type == qtype
    for start in range(0, src.n_rows, step):
        stop = min(src.n_rows, start + step)
        if copy:
            out = src.read_raw(start, stop)  # type: ignore[misc]
        else:
            x = src.read_rows(start, stop)
            # one pass, no temporary: the sum is non-finite iff some value is NaN/Inf (or the
            # values are ~1e38, which no checkpoint holds)
            if not math.isfinite(float(np.add.reduce(x, axis=None))):
                raise QuantizeError(f"tensor {src.name!r} holds NaN or Inf values", src.path)
            out = K.quantize(qtype, np.ascontiguousarray(x, dtype=np.float32))
        out.tofile(fout)
        written += out.nbytes
        progress((stop - start) * per_row_in)
    return written


def write_gguf(
    source: Source,
    plans: list[TensorPlan],
    out_path: str | os.PathLike[str],
    file_type: str,
    progress: Callable[[int], None] = lambda n: None,
) -> WriteResult:
    """Write ``plans`` (in order) from ``source`` to ``out_path``. The file appears under its name
    only when complete; a failure leaves no partial output behind."""
    out = Path(out_path)
    partial = out.with_name(out.name + ".partial")
    by_name = {t.name: t for t in source.tensors}
    t0 = time.perf_counter()
    writer = GGUFWriter(partial, source.arch)
    source.add_metadata(writer)
    writer.add_file_type(int(FILE_TYPES[file_type].ftype))
    writer.add_quantization_version(GGML_QUANT_VERSION)
    sizes: list[int] = []
    for plan in plans:
        byte_shape = quant_shape_to_byte_shape(plan.shape, plan.type)
        nbytes = math.prod(byte_shape)
        sizes.append(nbytes)
        writer.add_tensor_info(
            plan.name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=plan.type
        )
    result = WriteResult(str(out), 0.0, 0, 0, len(plans))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        fout = writer.fout[0]
        align = writer.data_alignment
        for plan, nbytes in zip(plans, sizes, strict=True):
            src = by_name[plan.name]
            fout.write(bytes(-fout.tell() % align))
            got = _write_tensor(fout, src, plan, progress)
            if got != nbytes:  # a kernel/shape disagreement: never write a corrupt file
                raise QuantizeError(f"tensor {plan.name!r}: wrote {got} bytes, expected {nbytes}")
            fout.write(bytes(-nbytes % align))
            result.bytes_in += src.nbytes
            result.bytes_out += nbytes
            result.types[plan.type.name] = result.types.get(plan.type.name, 0) + 1
        writer.close()
        partial.replace(out)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    result.seconds = time.perf_counter() - t0
    return result

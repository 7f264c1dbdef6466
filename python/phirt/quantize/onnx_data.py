"""The external data file of an exported ONNX model (model.onnx.data), written in place.

Every initializer gets its byte range up front (``reserve``), 64-byte aligned, so a tensor can be
filled slab by slab, and several tensors of one weight (codes, scales, zero points) side by side,
without any of them being whole in memory. ``proto`` is the TensorProto that points at the range
(data_location EXTERNAL, location / offset / length), as ``onnx.save`` would have written it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DataFile", "Region"]

ALIGN = 64


@dataclass(frozen=True)
class Region:
    name: str
    data_type: int  # onnx TensorProto.DataType
    dims: tuple[int, ...]
    offset: int
    length: int


class DataFile:
    def __init__(self, path: str | os.PathLike[str], location: str) -> None:
        self.path = os.fspath(path)
        self.location = location  # the name initializers refer to (relative to model.onnx)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        self.regions: list[Region] = []

    def reserve(self, name: str, data_type: int, dims: tuple[int, ...], length: int) -> Region:
        offset = -(-self.size // ALIGN) * ALIGN
        region = Region(name, data_type, tuple(int(d) for d in dims), offset, int(length))
        self.size = offset + region.length
        self.regions.append(region)
        return region

    def write(self, region: Region, at: int, data: np.ndarray) -> None:
        """Bytes of `data` at byte `at` of the region."""
        buf = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if at < 0 or at + buf.size > region.length:
            raise ValueError(f"{region.name}: write of {buf.size} bytes at {at} leaves its range")
        view = memoryview(buf)
        pos = region.offset + at
        while view:
            n = os.pwrite(self._fd, view, pos)
            view, pos = view[n:], pos + n

    def close(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, self.size)  # a zero-length last tensor still sizes the file
            os.close(self._fd)
            self._fd = -1

    def proto(self, region: Region) -> Any:
        from onnx import TensorProto

        t = TensorProto()
        t.name = region.name
        t.data_type = region.data_type
        t.dims.extend(region.dims)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.location),
            ("offset", str(region.offset)),
            ("length", str(region.length)),
        ):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

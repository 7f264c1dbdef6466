"""Reading Hugging Face safetensors checkpoints one tensor (and one slab of rows) at a time.

The header is parsed with the ``safetensors`` package's own layout (u64 header length, a JSON table
of ``name -> {dtype, shape, data_offsets}``, then the data), but tensor bytes are read straight from
the file into numpy: numpy has no bfloat16, the usual dtype of Phi checkpoints, and torch is not a
runtime dependency. Each slab is read with ``np.fromfile`` at an offset (a buffered pread), so the
process holds one slab, never the model: peak RSS stays near one slab plus its quantized output.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phirt.errors import QuantizeError

__all__ = ["SafetensorsSet", "StTensor"]

# safetensors dtype -> (numpy dtype of the stored bytes, bytes per element)
_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # converted by shifting into the top half of an f32
    "F64": np.dtype("<f8"),
}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


@dataclass(frozen=True)
class StTensor:
    """One stored tensor: where its bytes are and how to read them."""

    name: str
    dtype: str  # safetensors name: F32, F16, BF16, F64
    shape: tuple[int, ...]
    path: str
    offset: int  # absolute byte offset of the data in ``path``
    nbytes: int

    @property
    def n_rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_len(self) -> int:
        return self.shape[-1] if self.shape else 1

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32 (stop - start, row_len); a 1-D tensor is one row."""
        np_dtype = _DTYPES[self.dtype]
        count = (stop - start) * self.row_len
        offset = self.offset + start * self.row_len * np_dtype.itemsize
        raw = np.fromfile(self.path, dtype=np_dtype, count=count, offset=offset)
        if raw.size != count:
            raise QuantizeError(f"tensor {self.name!r}: file is truncated", self.path)
        if self.dtype == "BF16":
            out = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out = raw.astype(np.float32, copy=False)
        return out.reshape(stop - start, self.row_len)


def _read_header(path: Path) -> dict[str, StTensor]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise QuantizeError("not a safetensors file (shorter than its 8-byte header)", path)
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise QuantizeError(f"not a safetensors file (header length {n})", path)
            try:
                table = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise QuantizeError(
                    f"not a safetensors file (bad JSON header: {exc})", path
                ) from None
    except OSError as exc:
        raise QuantizeError(f"cannot read: {exc.strerror or exc}", path) from None
    if not isinstance(table, dict):
        raise QuantizeError("not a safetensors file (header is not a JSON object)", path)
    data_start = 8 + n
    tensors: dict[str, StTensor] = {}
    for name, info in table.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise QuantizeError(f"tensor {name!r}: malformed header entry", path) from None
        if dtype not in _DTYPES:
            raise QuantizeError(
                f"tensor {name!r} has dtype {dtype}; supported: {', '.join(_DTYPES)}", path
            )
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if end - begin != expected or begin < 0 or data_start + end > size:
            raise QuantizeError(
                f"tensor {name!r}: data range [{begin}, {end}) does not fit shape {list(shape)} "
                f"{dtype} in a {size}-byte file",
                path,
            )
        tensors[name] = StTensor(
            name, dtype, shape, os.fspath(path), data_start + begin, end - begin
        )
    return tensors


class SafetensorsSet:
    """All tensors of a checkpoint folder: one ``model.safetensors``, shards listed by
    ``model.safetensors.index.json``, or (no index) every ``*.safetensors`` in the folder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.tensors: dict[str, StTensor] = {}
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            files = self._files_from_index(index)
        else:
            files = sorted(self.folder.glob("*.safetensors"))
            if not files:
                raise QuantizeError("no *.safetensors weights in the folder", self.folder)
        for file in files:
            for name, t in _read_header(file).items():
                if name in self.tensors:
                    raise QuantizeError(
                        f"tensor {name!r} is stored twice (also in {self.tensors[name].path})", file
                    )
                self.tensors[name] = t
        if index.is_file():
            self._check_index(index)

    def _files_from_index(self, index: Path) -> list[Path]:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise QuantizeError(f"unreadable shard index: {exc}", index) from None
        self._weight_map: dict[str, str] = weight_map
        missing = [s for s in shards if not (self.folder / s).is_file()]
        if missing:
            raise QuantizeError(
                f"missing shard {missing[0]} ({len(missing)} of {len(shards)} shards missing)",
                index,
            )
        return [self.folder / s for s in shards]

    def _check_index(self, index: Path) -> None:
        for name, shard in self._weight_map.items():
            t = self.tensors.get(name)
            if t is None:
                raise QuantizeError(f"tensor {name!r} listed in the index is not in {shard}", index)
            if Path(t.path).name != shard:
                raise QuantizeError(
                    f"tensor {name!r} is in {Path(t.path).name}, the index says {shard}", index
                )

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> StTensor:
        return self.tensors[name]

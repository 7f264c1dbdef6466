"""Strict GGUF reading: every header field is checked against the file before it is trusted, and
tensor data stays in a read-only memory map.

Our own header parser (not ``gguf.GGUFReader``, which trusts lengths and counts it has not checked:
on a cut or corrupt file it returns short arrays, raises numpy errors, or loops over a count of
2**64). Loading a model does not import the ``gguf`` package (27 ms and 6 MB, a quarter of the time
to load SmolLM2): the value types and the layouts of the types the kernels implement are spelled
out here and held equal to gguf-py's tables by tests/test_gguf_format.py; any other GGML type is
looked up in gguf-py when a file has one. Layout, little-endian, versions 2 and 3::

    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv x      (key: string, value_type: u32, value)
    n_tensors x (name: string, n_dims: u32, ne: u64[n_dims], ggml_type: u32, offset: u64)
    padding to general.alignment (default 32), then the data section; offsets are relative to it.
    string = length u64 + UTF-8 bytes; array = item_type u32 + count u64 + items
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from phirt import _kernels
from phirt.errors import FormatError, PhirtError, UnsupportedError

__all__ = [
    "SUPPORTED_TYPES",
    "GGUFFile",
    "GGUFSummary",
    "Tensor",
    "TypeStats",
    "type_name",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS


class GGUFValueType(IntEnum):
    """Metadata value types (GGUF spec; the same ids as gguf-py's GGUFValueType)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Weight types the native kernels implement (cpp/formats.h): GGML id -> (name, elements per block,
# bytes per block). Other valid GGML types load here and are rejected by check_types() when a model
# wants to use them.
_NATIVE_LAYOUTS: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    30: ("BF16", 1, 2),
}
SUPPORTED_TYPES: frozenset[int] = frozenset(_NATIVE_LAYOUTS)


def type_layout(ggml_type: int) -> tuple[str, int, int] | None:
    """(name, block size, block bytes) of a GGML type id, or None for an id GGML does not define."""
    layout = _NATIVE_LAYOUTS.get(ggml_type)
    if layout is not None:
        return layout
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType  # rare: a type phirt does not run

    try:
        qtype = GGMLQuantizationType(ggml_type)
    except ValueError:
        return None
    return (qtype.name, *GGML_QUANT_SIZES[qtype])


# value type -> (struct format, size in bytes) for the fixed-size metadata values
_SCALARS: dict[GGUFValueType, tuple[str, int]] = {
    GGUFValueType.UINT8: ("<B", 1),
    GGUFValueType.INT8: ("<b", 1),
    GGUFValueType.UINT16: ("<H", 2),
    GGUFValueType.INT16: ("<h", 2),
    GGUFValueType.UINT32: ("<I", 4),
    GGUFValueType.INT32: ("<i", 4),
    GGUFValueType.FLOAT32: ("<f", 4),
    GGUFValueType.UINT64: ("<Q", 8),
    GGUFValueType.INT64: ("<q", 8),
    GGUFValueType.FLOAT64: ("<d", 8),
    GGUFValueType.BOOL: ("<B", 1),
}
_MADV_POPULATE_READ = 22  # linux/mman.h (5.14+); Python's mmap module does not name it yet
_PAGE = mmap.PAGESIZE
_STRING_MIN_BYTES = 8  # an empty string is its u64 length alone
_KV_MIN_BYTES = 8 + 1 + 4 + 1  # key length, one key byte, value type, a one-byte value
_TENSOR_INFO_MIN_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name, n_dims, one dim, type, offset


def _q(name: str) -> str:
    """A key or tensor name quoted for a one-line message: control characters escaped, long cut."""
    if len(name) > 80:
        name = name[:77] + "..."
    return f"'{name}'" if name.isprintable() else repr(name)


def type_name(ggml_type: int) -> str:
    """GGML's name for a type id (``Q4_K``), or ``type#N`` for an id GGML does not define."""
    layout = type_layout(ggml_type)
    return layout[0] if layout is not None else f"type#{ggml_type}"


@dataclass(frozen=True)
class Tensor:
    """One tensor of a GGUF file; ``data`` is a read-only view into the file's memory map."""

    name: str
    ggml_type: int
    type_name: str
    shape: tuple[int, ...]  # numpy order, rows first: GGUF ne=[k, n] is shape (n, k)
    n_elements: int
    n_bytes: int
    offset: int  # absolute byte offset of the data in the file
    # u8 (rows, row_bytes) for 2-D and up (leading dims flattened), u8 (row_bytes,) for 1-D
    data: np.ndarray = field(repr=False, compare=False)
    path: str = field(default="", repr=False, compare=False)
    mm: Any = field(default=None, repr=False, compare=False)  # the file's mmap.mmap

    @property
    def row_bytes(self) -> int:
        return self.data.shape[-1]

    def load(self) -> Any:
        """What the forward pass uses (formats/source.py): a float32 copy of a vector, a
        GGMLMatrix over the memory map (no copy) for a matrix."""
        if len(self.shape) == 1:
            return np.ascontiguousarray(self.to_float32(), dtype=np.float32)
        if self.ggml_type not in SUPPORTED_TYPES:
            raise UnsupportedError(
                f"tensor {_q(self.name)} uses quant type {self.type_name}, which phirt does not "
                f"support",
                self.path,
            )
        from phirt.formats.source import GGMLMatrix

        n, k = self.shape
        try:
            return GGMLMatrix(_kernels.QMatrix(self.data, self.ggml_type, n, k), self.drop_pages)
        except ValueError as exc:  # the table check should leave none: name the tensor if one is
            raise FormatError(f"tensor {_q(self.name)}: {exc}", self.path) from None

    def drop_pages(self) -> None:
        """Drop this tensor's pages from the process's resident set (MADV_DONTNEED on the
        read-only map; a later read faults them back from the page cache): once a matrix is
        copied into the interleaved layout, the file's bytes would only double its memory."""
        if self.mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = self.offset - self.offset % _PAGE
        with contextlib.suppress(OSError, ValueError):
            self.mm.madvise(mmap.MADV_DONTNEED, start, self.offset + self.n_bytes - start)

    def to_float32(self) -> np.ndarray:
        """Dequantized copy of the tensor, f32 of ``shape``. Meant for small tensors (norms, biases,
        rope factors); weight matrices stay quantized and go to the kernels as ``data``."""
        if self.ggml_type not in SUPPORTED_TYPES:
            raise UnsupportedError(
                f"tensor {_q(self.name)}: cannot dequantize type {self.type_name}", self.path
            )
        if self.ggml_type == 0:  # F32: a copy of the mapped bytes
            return self.data.view(np.float32).reshape(self.shape).copy()
        rows = self.data.reshape(-1, self.row_bytes)
        return _kernels.dequantize(self.ggml_type, rows, self.shape[-1]).reshape(self.shape)


@dataclass(frozen=True)
class TypeStats:
    """How many tensors of one GGML type a file holds, and their bytes."""

    count: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFSummary:
    """What ``phirt info`` prints about a GGUF file."""

    path: str
    file_size: int
    version: int
    arch: str | None
    name: str | None
    file_type: str | None  # general.file_type as llama.cpp names it (Q4_K_M), if present
    n_params: int
    n_tensors: int
    tensor_types: dict[str, TypeStats]  # type name -> stats, largest byte count first
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    tokenizer_model: str | None
    vocab_size: int | None
    has_chat_template: bool


class _Cursor:
    """Reads little-endian header fields from a buffer, never past its end."""

    def __init__(self, buf: memoryview, path: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.path = path
        self.pos = 0

    def fail(self, message: str) -> FormatError:
        return FormatError(message, self.path)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(
                f"truncated {what}: needs {n} bytes at offset {self.pos}, file size {self.size}"
            )

    def scalar(self, fmt: str, n: int, what: str) -> Any:
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        n = self.u64(f"{what} length")
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        try:
            text = str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} at offset {self.pos} is not valid UTF-8") from exc
        self.pos += n
        return text

    def _strings(self, count: int, what: str) -> list[str]:
        """`count` strings read in C++ (vocabularies hold ~100k); on any problem, the checked
        reader re-reads the offending item and names it."""
        out, self.pos = _kernels.read_strings(self.buf, self.pos, count)
        if len(out) == count:
            return out
        self.string(f"{what}[{len(out)}]")  # raises with the precise message
        raise AssertionError("unreachable")

    def check_count(self, count: int, min_bytes: int, what: str) -> None:
        """Reject a count that cannot fit in the rest of the file before looping over it."""
        if count * min_bytes > self.size - self.pos:
            raise self.fail(
                f"{what} count {count} at offset {self.pos} cannot fit in the "
                f"{self.size - self.pos} bytes left in the file (truncated or corrupt)"
            )

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.u32(f"{what} type")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(f"{what} has unknown value type id {raw}") from None

    def value(self, vtype: GGUFValueType, what: str) -> Any:
        """A string or scalar value (arrays go through array())."""
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        fmt, n = _SCALARS[vtype]
        value = self.scalar(fmt, n, what)
        if vtype == GGUFValueType.BOOL:
            if value > 1:
                raise self.fail(f"{what} is a bool holding {value}")
            return bool(value)
        return value

    def array(self, what: str) -> tuple[GGUFValueType, list[Any]]:
        """(item type, items) of an array value."""
        itype = self.value_type(f"{what} item")
        count = self.u64(f"{what} array length")
        if itype == GGUFValueType.ARRAY:
            raise UnsupportedError(f"{what} is an array of arrays", self.path)
        if itype == GGUFValueType.STRING:
            self.check_count(count, _STRING_MIN_BYTES, f"{what} array")
            return itype, self._strings(count, what)
        fmt, n = _SCALARS[itype]
        self.check_count(count, n, f"{what} array")
        values = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=count, offset=self.pos)
        self.pos += count * n
        if itype == GGUFValueType.BOOL:
            if count and int(values.max()) > 1:
                raise self.fail(f"{what} is a bool array holding values other than 0 and 1")
            return itype, [bool(v) for v in values.tolist()]
        return itype, values.tolist()


@dataclass(frozen=True)
class _TensorInfo:
    name: str
    ne: tuple[int, ...]  # GGUF order: ne[0] is the row length
    ggml_type: int
    offset: int  # relative to the data section


class GGUFFile:
    """A validated, memory-mapped GGUF file.

    Raises FormatError for anything truncated, corrupt or inconsistent, UnsupportedError for valid
    files this reader does not handle (big-endian files, versions other than 2 and 3), and
    PhirtError when the path cannot be opened at all. Tensor data is never copied: the mapping
    stays alive while this object or any ``Tensor.data`` view is referenced.
    """

    path: str
    native_kv_type = "f16"  # llama.cpp's default cache, which phirt's numerics follow
    version: int
    metadata: dict[str, Any]
    # key -> (value type, item type for arrays else None); lets writers copy keys with their types
    metadata_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]]
    alignment: int
    data_offset: int
    file_size: int
    tensors: dict[str, Tensor]

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.file_size = self._check_path()
        try:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        except OSError as exc:
            raise PhirtError(f"cannot open: {exc.strerror or exc}", self.path) from None
        cur = _Cursor(memoryview(self._mm), self.path)
        n_tensors = self._read_header(cur)
        infos = self._read_tensor_infos(cur, n_tensors)
        self._read_alignment()
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        self.tensors = self._map_tensors(infos)

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, arch={self.arch!r}, tensors={len(self.tensors)})"

    # -- public API ----------------------------------------------------------------------------

    @property
    def arch(self) -> str | None:
        """``general.architecture`` (e.g. ``phi3``), or None when the file does not say."""
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value that must be present; FormatError naming the key otherwise."""
        if key not in self.metadata:
            raise FormatError(f"missing metadata key {_q(key)}", self.path)
        return self.metadata[key]

    def prefault(self, names: Iterable[str]) -> None:
        """Map these tensors' pages now, in one system call per run of adjacent tensors, instead of
        one page fault per 4 KiB when the first token reads them (SmolLM2: the first token takes
        10 ms instead of 25). Skipped when they would fill more than half the RAM, where pages
        must stay evictable, and on kernels without MADV_POPULATE_READ (before Linux 5.14)."""
        ranges = sorted((t.offset, t.offset + t.n_bytes) for t in map(self.tensors.get, names) if t)
        total = sum(end - start for start, end in ranges)
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return
        if not ranges or total > ram // 2:
            return
        runs: list[list[int]] = []
        for start, end in ranges:
            if runs and start - runs[-1][1] < _PAGE:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([start, end])
        mm = self._mm._mmap
        for start, end in runs:
            start -= start % _PAGE
            try:
                mm.madvise(_MADV_POPULATE_READ, start, end - start)
            except (OSError, ValueError):
                return  # an old kernel: the first token faults the pages in as before

    def check_types(self, names: Iterable[str] | None = None) -> None:
        """Raise UnsupportedError if any of these tensors (default: all) has a GGML type phirt's
        kernels do not implement, FormatError if one of the names is not in the file."""
        for name in self.tensors if names is None else names:
            tensor = self.tensors.get(name)
            if tensor is None:
                raise FormatError(f"missing tensor {_q(name)}", self.path)
            if tensor.ggml_type not in SUPPORTED_TYPES:
                supported = ", ".join(type_name(t) for t in sorted(SUPPORTED_TYPES))
                raise UnsupportedError(
                    f"tensor {_q(name)} has type {tensor.type_name}, which phirt does not support "
                    f"(supported: {supported})",
                    self.path,
                )

    def summary(self) -> GGUFSummary:
        stats: dict[str, list[int]] = {}
        for t in self.tensors.values():
            entry = stats.setdefault(t.type_name, [0, 0])
            entry[0] += 1
            entry[1] += t.n_bytes
        by_bytes = sorted(stats.items(), key=lambda kv: (-kv[1][1], kv[0]))
        arch = self.arch

        def arch_int(key: str) -> int | None:
            value = self.metadata.get(f"{arch}.{key}") if arch else None
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def text(key: str) -> str | None:
            value = self.metadata.get(key)
            return value if isinstance(value, str) else None

        tokens = self.metadata.get("tokenizer.ggml.tokens")
        return GGUFSummary(
            path=self.path,
            file_size=self.file_size,
            version=self.version,
            arch=arch,
            name=text("general.name"),
            file_type=_file_type_name(self.metadata.get("general.file_type")),
            n_params=sum(t.n_elements for t in self.tensors.values()),
            n_tensors=len(self.tensors),
            tensor_types={name: TypeStats(c, b) for name, (c, b) in by_bytes},
            context_length=arch_int("context_length"),
            block_count=arch_int("block_count"),
            embedding_length=arch_int("embedding_length"),
            tokenizer_model=text("tokenizer.ggml.model"),
            vocab_size=len(tokens) if isinstance(tokens, list) else None,
            has_chat_template=bool(text("tokenizer.chat_template")),
        )

    # -- parsing -------------------------------------------------------------------------------

    def _check_path(self) -> int:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise PhirtError("no such file", self.path) from None
        except OSError as exc:
            raise PhirtError(f"cannot open: {exc.strerror or exc}", self.path) from None
        if stat.S_ISDIR(st.st_mode):
            raise FormatError("is a directory, not a GGUF file", self.path)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError("is not a regular file", self.path)
        if st.st_size == 0:
            raise FormatError("empty file (0 bytes), not a GGUF file", self.path)
        return st.st_size

    def _read_header(self, cur: _Cursor) -> int:
        """Magic, version, counts and metadata; returns the tensor count."""
        cur.need(4, "header (magic)")
        magic = bytes(cur.buf[:4])
        if magic != GGUF_MAGIC:
            raise cur.fail(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
        cur.pos = 4
        version = cur.u32("header (version)")
        if version & 0xFFFF == 0 and version != 0:
            raise UnsupportedError("big-endian GGUF files are not supported", self.path)
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedError(
                f"GGUF version {version} is not supported (supported: 2, 3)", self.path
            )
        self.version = version
        n_tensors = cur.u64("header (tensor count)")
        n_kv = cur.u64("header (metadata count)")
        cur.check_count(n_kv, _KV_MIN_BYTES, "metadata")

        self.metadata = {}
        self.metadata_types = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            if not key:
                raise cur.fail(f"metadata key #{i} is empty")
            if key in self.metadata:
                raise cur.fail(f"duplicate metadata key {_q(key)}")
            what = f"metadata {_q(key)}"
            vtype = cur.value_type(what)
            item_type: GGUFValueType | None = None
            if vtype == GGUFValueType.ARRAY:
                item_type, value = cur.array(what)
            else:
                value = cur.value(vtype, what)
            self.metadata[key] = value
            self.metadata_types[key] = (vtype, item_type)
        return n_tensors

    def _read_tensor_infos(self, cur: _Cursor, n_tensors: int) -> list[_TensorInfo]:
        cur.check_count(n_tensors, _TENSOR_INFO_MIN_BYTES, "tensor")
        infos: list[_TensorInfo] = []
        seen: set[str] = set()
        for i in range(n_tensors):
            name = cur.string(f"tensor info #{i} name")
            if not name:
                raise cur.fail(f"tensor info #{i} has an empty name")
            if name in seen:
                raise cur.fail(f"duplicate tensor name {_q(name)}")
            seen.add(name)
            what = f"tensor info {_q(name)}"
            n_dims = cur.u32(f"{what} (n_dims)")
            if not 1 <= n_dims <= MAX_DIMS:
                raise cur.fail(f"tensor {_q(name)} has {n_dims} dimensions (must be 1..{MAX_DIMS})")
            ne = tuple(cur.u64(f"{what} (dims)") for _ in range(n_dims))
            raw_type = cur.u32(f"{what} (type)")
            offset = cur.u64(f"{what} (offset)")
            infos.append(_TensorInfo(name, ne, raw_type, offset))
        return infos

    def _read_alignment(self) -> None:
        self.alignment = DEFAULT_ALIGNMENT
        if "general.alignment" not in self.metadata:
            return
        value = self.metadata["general.alignment"]
        if self.metadata_types["general.alignment"][0] != GGUFValueType.UINT32:
            raise FormatError("metadata 'general.alignment' must be a uint32", self.path)
        if value == 0 or value & (value - 1):
            raise FormatError(
                f"metadata 'general.alignment' is {value}, not a power of two", self.path
            )
        self.alignment = value

    def _map_tensors(self, infos: list[_TensorInfo]) -> dict[str, Tensor]:
        tensors: dict[str, Tensor] = {}
        for info in infos:
            tensors[info.name] = self._map_tensor(info)
        # tensors may come in any order, but no two may share bytes
        ordered = sorted(tensors.values(), key=lambda t: t.offset)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.offset + a.n_bytes > b.offset:
                raise FormatError(
                    f"tensor {_q(a.name)} data [{a.offset}, {a.offset + a.n_bytes}) overlaps "
                    f"tensor {_q(b.name)} data [{b.offset}, {b.offset + b.n_bytes})",
                    self.path,
                )
        return tensors

    def _map_tensor(self, info: _TensorInfo) -> Tensor:
        name = info.name
        layout = type_layout(info.ggml_type)
        if layout is None:
            raise FormatError(
                f"tensor {_q(name)} has unknown GGML type id {info.ggml_type}", self.path
            )
        qname, block_size, type_size = layout
        if any(d == 0 for d in info.ne):
            raise FormatError(f"tensor {_q(name)} has a zero dimension {list(info.ne)}", self.path)
        n_elements = math.prod(info.ne)
        if n_elements >= 2**63:
            raise FormatError(f"tensor {_q(name)} dimensions {list(info.ne)} overflow", self.path)
        row = info.ne[0]
        if row % block_size:
            raise FormatError(
                f"tensor {_q(name)} row length {row} is not a multiple of the {qname} "
                f"block size {block_size}",
                self.path,
            )
        if info.offset % self.alignment:
            raise FormatError(
                f"tensor {_q(name)} data offset {info.offset} is not a multiple of the "
                f"alignment {self.alignment}",
                self.path,
            )
        row_bytes = row // block_size * type_size
        n_rows = n_elements // row
        n_bytes = row_bytes * n_rows
        start = self.data_offset + info.offset
        end = start + n_bytes
        if end > self.file_size:
            raise FormatError(
                f"tensor {_q(name)} data [{start}, {end}) runs past end of file "
                f"(size {self.file_size})",
                self.path,
            )
        data = self._mm[start:end].view(np.ndarray)
        data = data.reshape(n_rows, row_bytes) if len(info.ne) > 1 else data
        return Tensor(
            name=name,
            ggml_type=info.ggml_type,
            type_name=qname,
            shape=tuple(reversed(info.ne)),
            n_elements=n_elements,
            n_bytes=n_bytes,
            offset=start,
            data=data,
            path=self.path,
            mm=self._mm._mmap,
        )


def _file_type_name(value: Any) -> str | None:
    """llama.cpp's name for general.file_type (``Q4_K_M``), or None if absent or unknown."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    from gguf import LlamaFileType  # `phirt info` only, not on the load path

    try:
        name = LlamaFileType(value).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")

"""ONNX Runtime's com.microsoft MatMulNBits (bits 4 or 8) weights -> phirt's repacked
``NBitsMatrix``.

The kernel side (``cpp/nbits.h``) describes the layout and numerics and does the lossless repack;
this module reads the node's attributes (``bits``, ``block_size``, ``accuracy_level``: the matrix
remembers the level, so ``nbits_matmul(w, x)`` computes as onnxruntime does for that node: int8
activations per block at level 4, float32 ones at levels 0..3), accepts the forms ORT allows (B as
3-D or flattened 2-D; zero points packed uint8, or unpacked floats that are whole numbers in the
code range) and turns kernel errors into ``FormatError``s that name the node.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from phirt import _kernels
from phirt.errors import FormatError, UnsupportedError

OP_TYPE = "MatMulNBits"
_ONNX_INT4 = 22  # onnx.TensorProto.INT4 (onnx itself is not imported here)
DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class MatMulNBitsAttrs:
    """The node attributes, with ONNX Runtime's names and defaults."""

    K: int
    N: int
    block_size: int
    bits: int = 4
    accuracy_level: int = 0

    @property
    def n_blocks(self) -> int:
        """Blocks per row of W (ceil(K / block_size)); 0 for a block size the kernels reject."""
        return -(-self.K // self.block_size) if self.block_size > 0 else 0

    @classmethod
    def from_node(cls, node: Any) -> MatMulNBitsAttrs:
        """From an ``onnx.NodeProto`` (read by attribute name; onnx itself is not imported)."""
        where = node.name or node.op_type
        if node.op_type != OP_TYPE or node.domain != DOMAIN:
            raise FormatError(
                f"{where}: expected {DOMAIN}.{OP_TYPE}, got {node.domain}.{node.op_type}"
            )
        ints = {a.name: int(a.i) for a in node.attribute}
        missing = [name for name in ("K", "N", "block_size") if name not in ints]
        if missing:
            raise FormatError(f"{where}: {OP_TYPE} lacks attribute(s) {', '.join(missing)}")
        return cls(
            K=ints["K"],
            N=ints["N"],
            block_size=ints["block_size"],
            bits=ints.get("bits", 4),
            accuracy_level=ints.get("accuracy_level", 0),
        )


def pack_zero_points(zero_points: np.ndarray, n: int, n_blocks: int, bits: int = 4) -> np.ndarray:
    """Unpacked zero points (one per block, any dtype) -> ORT's uint8 form: for 4 bits packed
    [n * ceil(n_blocks / 2)], low nibble first, each row starting on a new byte; for 8 bits one per
    byte. Only whole numbers in the code range convert losslessly; anything else raises
    UnsupportedError."""
    z = np.asarray(zero_points)
    if z.size != n * n_blocks:
        raise FormatError(f"zero_points hold {z.size} values, expected {n} x {n_blocks}")
    z = z.reshape(n, n_blocks)
    top = (1 << bits) - 1
    if not np.all((z >= 0) & (z <= top) & (z == np.floor(z))):
        raise UnsupportedError(
            f"zero_points must be whole numbers in 0..{top} for {bits}-bit weights"
        )
    z = z.astype(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(z.reshape(-1))
    if n_blocks % 2:
        z = np.concatenate([z, np.zeros((n, 1), np.uint8)], axis=1)
    return np.ascontiguousarray((z[:, 0::2] | (z[:, 1::2] << 4)).reshape(-1))


def load_matmulnbits(
    attrs: MatMulNBitsAttrs,
    b: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None = None,
    *,
    name: str = OP_TYPE,
    path: str | os.PathLike[str] | None = None,
) -> _kernels.NBitsMatrix:
    """Repack one MatMulNBits weight (B, scales, zero_points as the node's inputs hold them)."""
    if attrs.bits not in (4, 8):
        raise UnsupportedError(
            f"{name}: {OP_TYPE} with bits={attrs.bits} (phirt reads bits 4 and 8)", path
        )
    b = np.ascontiguousarray(b)
    if b.ndim == 2 and b.shape[0] == attrs.N and attrs.n_blocks > 0:
        blob = attrs.block_size * attrs.bits // 8  # flattened (N, n_blocks * blob) form
        if b.shape[1] == attrs.n_blocks * blob:
            b = b.reshape(attrs.N, attrs.n_blocks, blob)
    if b.ndim != 3 or b.shape[0] != attrs.N:
        raise FormatError(f"{name}: B has shape {b.shape}, attribute N={attrs.N}", path)
    if zero_points is not None and np.asarray(zero_points).dtype != np.uint8:
        try:
            zero_points = pack_zero_points(zero_points, attrs.N, attrs.n_blocks, attrs.bits)
        except (FormatError, UnsupportedError) as err:
            raise type(err)(f"{name}: {err.message}", path) from err
    try:
        return _kernels.nbits_repack(
            b,
            np.ascontiguousarray(scales),
            None if zero_points is None else np.ascontiguousarray(zero_points),
            attrs.K,
            attrs.block_size,
            attrs.bits,
            attrs.accuracy_level,
        )
    except (TypeError, ValueError) as err:
        raise FormatError(f"{name}: {err}", path) from err


# -- MatMulNBits weights as the models use them ---------------------------------------------------
# A graph's MatMulNBits node (or several: rows are independent, so projections that GGUF fuses or
# splits differently concatenate, slice and reorder losslessly before the repack) becomes one
# KernelMatrix (formats/source.py). matmul() is the node's own numerics; get_rows() dequantizes
# rows from the file's bytes, (q - zero_point) * scale as GatherBlockQuantized computes them.


@dataclass
class NBitsPart:
    """One MatMulNBits node's weights, as views of the folder's files."""

    attrs: MatMulNBitsAttrs
    b: np.ndarray  # (N, n_blocks, block_size * bits / 8) uint8
    scales: np.ndarray  # (N, n_blocks) float32 | float16
    zero_points: np.ndarray | None  # (N, ceil(n_blocks * bits / 8)) uint8, or (N, n_blocks)
    name: str
    path: str | None

    @property
    def n(self) -> int:
        return self.attrs.N

    @property
    def k(self) -> int:
        return self.attrs.K

    @classmethod
    def from_node(cls, folder: Any, node: Any, attrs: dict[str, Any], path: str) -> NBitsPart:
        """From a MatMulNBits node of an OnnxFolder (inputs A, B, scales, zero_points, g_idx)."""
        a = MatMulNBitsAttrs.from_node(node)
        where = f"node '{node.name}' ({DOMAIN}.{OP_TYPE})"
        if a.bits not in (4, 8) or a.n_blocks <= 0:
            raise UnsupportedError(
                f"{where} has bits={a.bits}, block_size={a.block_size} (phirt reads bits 4 and 8)",
                path,
            )
        inputs = list(node.input) + [""] * 6
        if inputs[4]:
            raise UnsupportedError(f"{where} has g_idx, which phirt does not implement", path)
        if inputs[5]:
            raise UnsupportedError(f"{where} has a bias input, which phirt does not map", path)
        b = folder.array(inputs[1], node.name)
        blob = a.block_size * a.bits // 8
        if b.ndim == 2 and b.shape == (a.N, a.n_blocks * blob):
            b = b.reshape(a.N, a.n_blocks, blob)
        if b.shape != (a.N, a.n_blocks, blob) or b.dtype != np.uint8:
            raise FormatError(
                f"{where}: B has shape {b.shape} {b.dtype}, expected {(a.N, a.n_blocks, blob)}",
                path,
            )
        scales = folder.array(inputs[2], node.name)
        if scales.size != a.N * a.n_blocks or scales.dtype not in (np.float32, np.float16):
            raise FormatError(
                f"{where}: scales have shape {scales.shape} {scales.dtype}, expected "
                f"{a.N} x {a.n_blocks} float",
                path,
            )
        zp = folder.array(inputs[3], node.name) if inputs[3] else None
        if zp is not None:
            cols = (a.n_blocks * a.bits + 7) // 8 if zp.dtype == np.uint8 else a.n_blocks
            if zp.size != a.N * cols:
                raise FormatError(
                    f"{where}: zero_points have shape {zp.shape}, expected {a.N} x {cols}", path
                )
            zp = zp.reshape(a.N, cols)
        return cls(a, b, scales.reshape(a.N, a.n_blocks), zp, str(node.name), path)

    @classmethod
    def from_gather(cls, folder: Any, node: Any, attrs: dict[str, Any], path: str, n: int, k: int):
        """From a GatherBlockQuantized node on a table of its own (inputs data, indices, scales,
        zero_points; ONNX Runtime's quantizer names it Gather_Q4): an (n, k) table quantized along
        rows is MatMulNBits' B with one row per token, zero point 2^(bits-1) unless given. An INT4
        table holds signed codes, copied here as unsigned ones (the quantizer's reader does the
        same, onnx_source.py)."""
        bits, block = int(attrs.get("bits", 4)), int(attrs.get("block_size", 128))
        where = f"node '{node.name}' ({DOMAIN}.GatherBlockQuantized)"
        if bits not in (4, 8) or block < 16 or block & (block - 1) or k % block:
            raise UnsupportedError(
                f"{where} has bits={bits}, block_size={block} for rows of {k} (phirt reads 4 and "
                "8 bits, power-of-two blocks of at least 16 that divide the row)",
                path,
            )
        a = MatMulNBitsAttrs(K=k, N=n, block_size=block, bits=bits)
        inputs = list(node.input) + [""] * 4
        b = folder.array(inputs[0], node.name)
        blob = block * bits // 8
        if b.dtype != np.uint8 or b.size != n * a.n_blocks * blob:
            raise FormatError(
                f"{where}: data has shape {b.shape} {b.dtype}, expected {n} x {k * bits // 8} uint8",
                path,
            )
        scales = folder.array(inputs[2], node.name) if inputs[2] else None
        if (
            scales is None
            or scales.size != n * a.n_blocks
            or scales.dtype not in (np.float32, np.float16)
        ):
            got = "none" if scales is None else f"{scales.shape} {scales.dtype}"
            raise FormatError(f"{where}: scales are {got}, expected {n} x {a.n_blocks}", path)
        zp = folder.array(inputs[3], node.name) if inputs[3] else None
        signed = folder.initializers[inputs[0]].data_type == _ONNX_INT4
        if signed and zp is not None:
            raise UnsupportedError(f"{where} has int4 codes with zero points", path)
        if signed:  # codes q - 8 in two's complement: the unsigned code is the same XOR 8
            b = np.bitwise_xor(b, np.uint8(0x88))
        if zp is not None:
            cols = (a.n_blocks * bits + 7) // 8
            if zp.dtype != np.uint8 or zp.size != n * cols:
                raise FormatError(
                    f"{where}: zero_points have shape {zp.shape} {zp.dtype}, expected {n} x "
                    f"{cols} uint8",
                    path,
                )
            zp = zp.reshape(n, cols)
        b = b.reshape(n, a.n_blocks, blob)
        return cls(a, b, scales.reshape(n, a.n_blocks), zp, str(node.name), path)


class NBitsTensor:
    """Canonical tensor made of MatMulNBits parts: rows concatenated, optionally sliced
    (``rows``) and reordered (``perm``). ``load()`` repacks it for the kernels (NBitsLinear), or
    with ``rows_only`` keeps the file's bytes for row lookups alone (NBitsRows: tied embeddings
    read the lm_head's weights, which the lm_head itself repacks)."""

    def __init__(
        self,
        parts: list[NBitsPart],
        rows: slice | None = None,
        perm: np.ndarray | None = None,
        rows_only: bool = False,
        after_repack: Callable[[], None] | None = None,
    ) -> None:
        first = parts[0]
        for p in parts[1:]:
            if (p.attrs.K, p.attrs.bits, p.attrs.block_size, p.attrs.accuracy_level) != (
                first.attrs.K,
                first.attrs.bits,
                first.attrs.block_size,
                first.attrs.accuracy_level,
            ) or p.scales.dtype != first.scales.dtype:
                raise UnsupportedError(
                    f"'{p.name}' and '{first.name}' are quantized differently; phirt fuses them "
                    f"into one matrix",
                    first.path,
                )
        self.parts, self.rows, self.perm, self.rows_only = parts, rows, perm, rows_only
        self.after_repack = after_repack  # the folder's drop_pages: see load()
        n = sum(p.n for p in parts)
        if rows is not None:
            n = len(range(*rows.indices(n)))
        if perm is not None and sorted(perm.tolist()) != list(range(n)):
            raise ValueError("perm must reorder all rows")
        self.shape = (n, first.k)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(B, scales, zero_points) of the assembled rows: the file's views when nothing is
        assembled, else copies of just this tensor's bytes."""
        parts = self.parts
        b = _cat([p.b for p in parts])
        scales = _cat([p.scales for p in parts])
        zps = [p.zero_points for p in parts]
        zp = None
        if any(z is not None for z in zps):
            zp = _cat(
                [
                    z if z is not None else _default_zero_points(p)
                    for p, z in zip(parts, zps, strict=True)
                ]
            )
        if self.rows is not None:
            b, scales = b[self.rows], scales[self.rows]
            zp = zp[self.rows] if zp is not None else None
        if self.perm is not None:
            b, scales = b[self.perm], scales[self.perm]
            zp = zp[self.perm] if zp is not None else None
        return b, scales, zp

    def load(self) -> NBitsLinear | NBitsRows:
        first = self.parts[0]
        attrs = MatMulNBitsAttrs(
            K=first.attrs.K,
            N=self.shape[0],
            block_size=first.attrs.block_size,
            bits=first.attrs.bits,
            accuracy_level=first.attrs.accuracy_level,
        )
        b, scales, zp = self.arrays()
        rows = NBitsRows(attrs, b, scales, zp)
        if self.rows_only:
            return rows
        w = load_matmulnbits(attrs, b, scales, zp, name=first.name, path=first.path)
        if self.after_repack is not None:  # the file's pages and the copy need not both stay
            self.after_repack()
        return NBitsLinear(w, rows)


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _default_zero_points(part: NBitsPart) -> np.ndarray:
    """What an absent zero_points input means, packed: 8 for 4 bits, 128 for 8 bits."""
    a = part.attrs
    fill = 0x88 if a.bits == 4 else 0x80
    return np.full((a.N, (a.n_blocks * a.bits + 7) // 8), fill, np.uint8)


class NBitsRows:
    """Row lookups straight from MatMulNBits / GatherBlockQuantized bytes (no repack)."""

    def __init__(
        self, attrs: MatMulNBitsAttrs, b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None
    ) -> None:
        self.attrs = attrs
        self.n, self.k = attrs.N, attrs.K
        self._b, self._scales, self._zp = b, scales, zp

    def get_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` of W as float32 (len(ids), K): (q - zero_point) * scale."""
        a = self.attrs
        ids = np.asarray(ids, dtype=np.int64)
        q = self._b[ids]  # (m, n_blocks, blob)
        if a.bits == 4:  # element 2i in the low nibble of byte i
            q = np.stack([q & 0x0F, q >> 4], axis=-1).reshape(len(ids), a.n_blocks, a.block_size)
        zp: Any = float(1 << (a.bits - 1))
        if self._zp is not None:
            z = self._zp[ids]
            if z.dtype == np.uint8 and a.bits == 4:
                z = np.stack([z & 0x0F, z >> 4], axis=-1).reshape(len(ids), -1)
            zp = z[:, : a.n_blocks, None].astype(np.float32)
        w = (q.astype(np.float32) - zp) * self._scales[ids].astype(np.float32)[:, :, None]
        return np.ascontiguousarray(w.reshape(len(ids), -1)[:, : a.K])

    def matmul(self, x: np.ndarray, batch_invariant: bool = False) -> np.ndarray:
        raise UnsupportedError(f"a {self.n} x {self.k} MatMulNBits row table is not multiplied")


class NBitsLinear:
    """A repacked MatMulNBits weight as a KernelMatrix: matmul() computes as onnxruntime does
    at the node's accuracy_level; get_rows() reads the file's bytes (for tied embeddings)."""

    __slots__ = ("get_rows", "k", "n", "w")

    def __init__(self, w: _kernels.NBitsMatrix, rows: NBitsRows) -> None:
        self.w = w
        self.n, self.k = int(w.n), int(w.k)
        self.get_rows = rows.get_rows

    def matmul(self, x: np.ndarray, batch_invariant: bool = False) -> np.ndarray:
        """x @ W.T; batch_invariant: each row exactly as a one-row call gives it."""
        return _kernels.nbits_matmul(self.w, x, batch_invariant=batch_invariant)

    def __repr__(self) -> str:
        return f"NBitsLinear({self.w!r})"

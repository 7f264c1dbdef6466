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
from dataclasses import dataclass
from typing import Any

import numpy as np

from phirt import _kernels
from phirt.errors import FormatError, UnsupportedError

OP_TYPE = "MatMulNBits"
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

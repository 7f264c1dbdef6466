"""ONNX Runtime's com.microsoft MatMulNBits (bits=4) weights -> phirt's repacked ``NBitsMatrix``.

The kernel side (``cpp/nbits.h``) describes the layout and does the lossless repack; this module
reads the node's attributes, accepts the zero-point forms ORT allows (packed uint8, or unpacked
float zero points that are whole numbers 0..15) and turns kernel errors into ``FormatError``s that
name the node.
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
        """Blocks per row of W (ceil(K / block_size))."""
        return -(-self.K // self.block_size)

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


def pack_zero_points(zero_points: np.ndarray, n: int, n_blocks: int) -> np.ndarray:
    """Unpacked zero points (one per block, any dtype) -> ORT's packed uint8 form
    [n * ceil(n_blocks / 2)]: low nibble first, each row starting on a new byte. Only whole numbers
    0..15 convert losslessly; anything else raises UnsupportedError."""
    z = np.asarray(zero_points)
    if z.size != n * n_blocks:
        raise FormatError(f"zero_points hold {z.size} values, expected {n} x {n_blocks}")
    z = z.reshape(n, n_blocks)
    if not np.all((z >= 0) & (z <= 15) & (z == np.floor(z))):
        raise UnsupportedError("zero_points must be whole numbers in 0..15 for 4-bit weights")
    z = z.astype(np.uint8)
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
    if attrs.bits != 4:
        raise UnsupportedError(
            f"{name}: {OP_TYPE} with bits={attrs.bits} (phirt reads bits=4)", path
        )
    b = np.ascontiguousarray(b)
    if b.ndim != 3 or b.shape[0] != attrs.N:
        raise FormatError(f"{name}: B has shape {b.shape}, attribute N={attrs.N}", path)
    if zero_points is not None and np.asarray(zero_points).dtype != np.uint8:
        try:
            zero_points = pack_zero_points(zero_points, attrs.N, attrs.n_blocks)
        except (FormatError, UnsupportedError) as err:
            raise type(err)(f"{name}: {err.message}", path) from err
    try:
        return _kernels.nbits_repack(
            b,
            np.ascontiguousarray(scales),
            None if zero_points is None else np.ascontiguousarray(zero_points),
            attrs.K,
            attrs.block_size,
        )
    except (TypeError, ValueError) as err:
        raise FormatError(f"{name}: {err}", path) from err

"""Exact re-packings between GGML blocks and ONNX MatMulNBits / GatherBlockQuantized tensors.

A GGML type and a MatMulNBits configuration that describe the same numbers convert both ways
without loss, row slab by row slab (numpy, no model in memory):

    Q4_0  <->  4 bits, block 32, no zero points: W = (q - 8)·d, d (f16) widened to the f32 scale
    Q8_0  <->  8 bits, block 32, no zero points: W = (u - 128)·d with u = q + 128
    Q6_K  <->  8 bits, block 16, zero points 32: W = (q - 32)·(d·sc), one block per sub-block; the
               f32 scale d·sc is exact (an f16 times an int8)

The way back needs scales that are f16 values (Q4_0, Q8_0), or that factor as an f16 super-scale
times int8 sub-scales with the largest-magnitude sub-scale -128, as GGML's Q6_K quantizer always
writes it (Q6_K); ``*_exact`` tell whether a slab qualifies. Code orders: GGML Q4_0 keeps element j
in the low nibble of byte j and element j + 16 in the high nibble; ONNX keeps element 2i low and
2i + 1 high. Q6_K's layout is ggml's block_q6_K (ql, qh, scales, d; 210 bytes per 256).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "NBitsArrays",
    "int4_to_signed",
    "nbits_to_q4_0",
    "nbits_to_q6_K",
    "nbits_to_q8_0",
    "q4_0_exact",
    "q4_0_to_nbits",
    "q6_K_exact",
    "q6_K_to_nbits",
    "q8_0_exact",
    "q8_0_to_nbits",
    "signed_to_int4",
]

NBitsArrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # B, scales, zero points

_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
_Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", 32)])
_Q6_K = np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")])
assert _Q4_0.itemsize == 18 and _Q8_0.itemsize == 34 and _Q6_K.itemsize == 210


def _blocks(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(rows, row bytes) u8 -> (rows, blocks) structured view."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    return raw.view(dtype).reshape(raw.shape[0], -1)


def _f16_exact(scales: np.ndarray) -> bool:
    s = np.asarray(scales, np.float32)
    return bool(np.array_equal(s.astype(np.float16).astype(np.float32), s, equal_nan=True))


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """(..., 2n) codes 0..15 in element order -> (..., n) bytes, element 2i low."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def _unpack_nibbles(b: np.ndarray) -> np.ndarray:
    out = np.empty(b.shape[:-1] + (2 * b.shape[-1],), np.uint8)
    out[..., 0::2] = b & 0x0F
    out[..., 1::2] = b >> 4
    return out


# ---- Q4_0 ---------------------------------------------------------------------------------------


def q4_0_to_nbits(raw: np.ndarray) -> NBitsArrays:
    """Q4_0 rows -> B (rows, blocks, 16), scales (rows, blocks) f32; symmetric (no zero points)."""
    blk = _blocks(raw, _Q4_0)
    qs = blk["qs"]  # (rows, blocks, 16)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # element order 0..31
    return _pack_nibbles(codes), blk["d"].astype(np.float32), None


def q4_0_exact(
    b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, bits: int, bs: int
) -> bool:
    return bits == 4 and bs == 32 and zp is None and _f16_exact(scales)


def nbits_to_q4_0(b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of q4_0_to_nbits (scales must be f16 values): (rows, row bytes) u8."""
    rows, nb = scales.shape
    codes = _unpack_nibbles(b.reshape(rows, nb, 16))
    out = np.empty((rows, nb), _Q4_0)
    out["d"] = scales.astype(np.float16)
    out["qs"] = codes[..., :16] | (codes[..., 16:] << 4)
    return out.view(np.uint8).reshape(rows, -1)


# ---- Q8_0 ---------------------------------------------------------------------------------------


def q8_0_to_nbits(raw: np.ndarray) -> NBitsArrays:
    """Q8_0 rows -> B (rows, blocks, 32) u8 = q + 128, scales (rows, blocks) f32; symmetric."""
    blk = _blocks(raw, _Q8_0)
    b = (blk["qs"].astype(np.int16) + 128).astype(np.uint8)
    return b, blk["d"].astype(np.float32), None


def q8_0_exact(
    b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, bits: int, bs: int
) -> bool:
    return bits == 8 and bs == 32 and zp is None and _f16_exact(scales)


def nbits_to_q8_0(b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    rows, nb = scales.shape
    out = np.empty((rows, nb), _Q8_0)
    out["d"] = scales.astype(np.float16)
    out["qs"] = (b.reshape(rows, nb, 32).astype(np.int16) - 128).astype(np.int8)
    return out.view(np.uint8).reshape(rows, -1)


# ---- Q6_K ---------------------------------------------------------------------------------------
# A 256-block as (half h, quarter t, l): element 128h + 32t + l. Its low 4 bits are in
# ql[h, 32·(t % 2) + l] (low nibble for t < 2, high for t >= 2), its high 2 bits are bits 2t, 2t+1
# of qh[h, l]; sub-block e // 16 has scale scales[e // 16] (ggml's dequantize_row_q6_K).


def q6_K_to_nbits(raw: np.ndarray) -> NBitsArrays:
    """Q6_K rows -> B (rows, 16·blocks, 16) u8 codes 0..63, scales (rows, 16·blocks) f32 = d·sc,
    zero points (rows, 16·blocks) u8 = 32."""
    blk = _blocks(raw, _Q6_K)
    rows, nb = blk.shape
    ql = blk["ql"].reshape(rows, nb, 2, 2, 32)  # (h, t % 2, l)
    qh = blk["qh"].reshape(rows, nb, 2, 1, 32)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=3)  # (h, t, l): t < 2 low nibbles, then high
    high = (qh >> (2 * np.arange(4).reshape(1, 1, 1, 4, 1))) & 0x03
    codes = (low | (high << 4)).astype(np.uint8).reshape(rows, nb * 16, 16)
    scales = blk["d"].astype(np.float32)[..., None] * blk["scales"].astype(np.float32)
    return codes, scales.reshape(rows, nb * 16), np.full((rows, nb * 16), 32, np.uint8)


def _q6_K_factor(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, blocks, 16) f32 sub-scales -> (d f16 (rows, blocks), sc int8 (rows, blocks, 16)) with
    d·sc == scales exactly and the largest-magnitude sc equal to -128; None when they do not."""
    s = scales.astype(np.float32)
    top = np.take_along_axis(s, np.abs(s).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    d = (top / np.float32(-128)).astype(np.float16)
    if not np.array_equal(d.astype(np.float32) * np.float32(-128), top):
        return None
    d32 = d.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 != 0, s / np.where(d32 != 0, d32, 1), 0)
    if not (np.all(sc == np.rint(sc)) and np.all((sc >= -128) & (sc <= 127))):
        return None
    sc = sc.astype(np.int8)
    if not np.array_equal(d32 * sc.astype(np.float32), s):
        return None
    return d, sc


def q6_K_exact(
    b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, bits: int, bs: int
) -> bool:
    rows = scales.shape[0]
    if bits != 8 or bs != 16 or zp is None or scales.shape[1] % 16:
        return False
    if not (np.all(np.asarray(zp) == 32) and np.all(b < 64)):
        return False
    return _q6_K_factor(scales.reshape(rows, -1, 16)) is not None


def nbits_to_q6_K(b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of q6_K_to_nbits for slabs where q6_K_exact holds."""
    rows = scales.shape[0]
    nb = scales.shape[1] // 16
    factored = _q6_K_factor(scales.reshape(rows, nb, 16))
    assert factored is not None, "nbits_to_q6_K on scales that do not factor (check q6_K_exact)"
    d, sc = factored
    codes = b.reshape(rows, nb, 2, 4, 32).astype(np.uint8)  # (h, t, l)
    low, high = codes & 0x0F, codes >> 4
    out = np.empty((rows, nb), _Q6_K)
    out["ql"] = (low[:, :, :, :2] | (low[:, :, :, 2:] << 4)).reshape(rows, nb, 128)
    shifts = 2 * np.arange(4, dtype=np.uint8).reshape(1, 1, 1, 4, 1)
    out["qh"] = np.bitwise_or.reduce(high << shifts, axis=3).reshape(rows, nb, 64)
    out["scales"], out["d"] = sc, d
    return out.view(np.uint8).reshape(rows, -1)


# ---- GatherBlockQuantized int4 ------------------------------------------------------------------


def signed_to_int4(b: np.ndarray) -> np.ndarray:
    """MatMulNBits 4-bit B (codes 0..15, zero point 8) -> ONNX INT4 bytes (codes - 8, two's
    complement nibbles, same order), the data GatherBlockQuantized reads without zero points."""
    return (b ^ 0x88).astype(np.uint8)


def int4_to_signed(b: np.ndarray) -> np.ndarray:
    """Inverse of signed_to_int4 (the same XOR)."""
    return (b ^ 0x88).astype(np.uint8)

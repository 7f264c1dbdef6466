"""Block formats against gguf-py (the numpy reference of ggml's quants):
quantize bit-identical for the legacy types, F16 and BF16; dequantize equal for every type phirt reads."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import phirt._kernels as K
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gq

from ggml_blocks import WEIGHT_TYPES, random_blocks

T = GGMLQuantizationType

QUANTIZE_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.F16, T.BF16]
DEQUANTIZE_TYPES = WEIGHT_TYPES


def gguf_quantize(x: np.ndarray, qtype: T) -> np.ndarray:
    """gguf-py's quantizer, as bytes (rows, row_bytes). Extreme inputs make numpy warn about
    overflow/invalid casts exactly where ggml's C does the same arithmetic silently."""
    with np.errstate(all="ignore"):
        q = gq.quantize(x, qtype)
    return np.ascontiguousarray(q).view(np.uint8).reshape(x.shape[0], -1)


def gguf_dequantize(data: np.ndarray, qtype: T, k: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        return gq.dequantize(data, qtype).reshape(-1, k)


def random_finite_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random finite half floats of every magnitude (normals, subnormals, zeros), both signs."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    exp = (bits >> 10) & 0x1F
    bits = np.where(exp == 0x1F, bits & 0x83FF, bits)  # inf/NaN exponent -> subnormal/zero
    return bits.astype(np.uint16).view(np.float16)


def random_blocks_any_scale(qtype: T, rows: int, k: int, seed: int) -> np.ndarray:
    """Valid random blocks: random bytes with every f16 scale field finite, of any magnitude."""
    return random_blocks(qtype, rows, k, np.random.default_rng(seed), random_finite_f16)


# ---- quantize inputs ------------------------------------------------------------------------------


def _random(scale: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def make(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
        return (rng.standard_normal((rows, k)) * scale).astype(np.float32)

    return make


def _uniform(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    # Uniform values hit the rounding boundaries (x.5 after scaling) far more often than normals.
    return rng.uniform(-1, 1, (rows, k)).astype(np.float32)


def _half_integers(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    # Exact ties after scaling: max = -8 makes d = 1 for Q4_0, so x*id lands on .5 exactly.
    x = rng.integers(-16, 17, (rows, k)).astype(np.float32) / 2
    x[:, ::32] = -8.0
    return x


def _constant(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    return np.repeat(rng.uniform(-5, 5, (rows, 1)), k, axis=1).astype(np.float32)


def _zeros(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    return np.zeros((rows, k), np.float32)


def _huge(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    return (rng.choice([-1.0, 1.0], (rows, k)) * 1e30 * rng.uniform(0.5, 1, (rows, k))).astype(
        np.float32
    )


def _denormal(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    # float32 subnormals (< 1.18e-38): scales underflow and 1/d overflows, in C as in numpy.
    return (rng.standard_normal((rows, k)) * 1e-40).astype(np.float32)


def _mixed_extremes(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    x = (rng.standard_normal((rows, k)) * 1e-41).astype(np.float32)
    mask = rng.random((rows, k)) < 0.1
    x[mask] = (rng.choice([-1.0, 1.0], mask.sum()) * rng.uniform(1e29, 1e30, mask.sum())).astype(
        np.float32
    )
    x[:, 3::37] = np.float32(65504.0 * 127)  # scale exactly at f16 overflow for Q8_0
    x[:, 5::41] = np.float32(-3.4e38)
    return x


def _f16_edges(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    # Values around f16's limits and ties: max normal, overflow, smallest subnormal, halfway points.
    edges = np.array(
        [
            65504,
            65519.99,
            65520,
            1e5,
            2**-24,
            2**-25,
            3 * 2**-26,
            6.1e-5,
            1 + 2**-11,
            1 + 3 * 2**-11,
        ],
        np.float32,
    )
    return (rng.choice(edges, (rows, k)) * rng.choice([-1, 1], (rows, k))).astype(np.float32)


INPUTS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "normal-1e-3": _random(1e-3),
    "normal-1": _random(1.0),
    "normal-1e3": _random(1e3),
    "uniform": _uniform,
    "half-integers": _half_integers,
    "constant": _constant,
    "zeros": _zeros,
    "huge-1e30": _huge,
    "denormal": _denormal,
    "mixed-extremes": _mixed_extremes,
    "f16-edges": _f16_edges,
}


@pytest.mark.parametrize("k", [32, 256, 4096])
@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("qtype", QUANTIZE_TYPES, ids=lambda t: t.name)
def test_quantize_bit_identical_to_gguf(qtype: T, kind: str, k: int) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{qtype.name}/{kind}/{k}".encode()))
    x = INPUTS[kind](rng, 9, k)
    got = K.quantize(int(qtype), x)
    want = gguf_quantize(x, qtype)
    assert got.dtype == np.uint8 and got.shape == want.shape
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)[0]
        bs, ts = GGML_QUANT_SIZES[qtype]
        blk = bad[1] // ts
        raise AssertionError(
            f"{qtype.name} {kind}: first differing byte at row {bad[0]} byte {bad[1]}: "
            f"input block {x[bad[0], blk * bs : (blk + 1) * bs]!r}"
        )


@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_quantize_f16_bf16_special_values(qtype: T) -> None:
    x = np.array(
        [[np.inf, -np.inf, np.nan, -0.0, 0.0, 3.4e38, -3.4e38, 1e-45, 2**-149, 65520.0]], np.float32
    )
    got = K.quantize(int(qtype), x)
    want = gguf_quantize(x, qtype)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
@pytest.mark.parametrize("k", [1, 7, 33])
def test_quantize_any_k_for_float_types(qtype: T, k: int) -> None:
    x = np.random.default_rng(k).standard_normal((3, k)).astype(np.float32)
    np.testing.assert_array_equal(K.quantize(int(qtype), x), gguf_quantize(x, qtype))


def test_quantize_keeps_leading_dims() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 64)).astype(np.float32)
    got = K.quantize(int(T.Q8_0), x)
    assert got.shape == (2, 3, 68)
    np.testing.assert_array_equal(got.reshape(6, -1), gguf_quantize(x.reshape(6, 64), T.Q8_0))


# ---- dequantize -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [256, 2048])
@pytest.mark.parametrize("qtype", DEQUANTIZE_TYPES, ids=lambda t: t.name)
def test_dequantize_random_blocks_equals_gguf(qtype: T, k: int) -> None:
    rows = 5
    if qtype == T.F32:
        data = np.random.default_rng(k).standard_normal((rows, k)).astype(np.float32).view(np.uint8)
    elif qtype in (T.F16, T.BF16):
        # F16: every finite bit pattern; BF16: every bit pattern except NaNs (compared apart below).
        rng = np.random.default_rng(k + 1)
        bits = (
            random_finite_f16(rng, rows * k)
            if qtype == T.F16
            else rng.integers(0, 1 << 16, rows * k, dtype=np.uint16)
        )
        if qtype == T.BF16:
            bits = np.where((bits & 0x7F80) == 0x7F80, bits & 0x807F, bits).astype(np.uint16)
        data = bits.view(np.uint8).reshape(rows, -1)
    else:
        data = random_blocks_any_scale(qtype, rows, k, seed=k + qtype.value)
    got = K.dequantize(int(qtype), data, k)
    want = gguf_dequantize(data, qtype, k)
    assert got.dtype == np.float32 and got.shape == (rows, k)
    np.testing.assert_array_equal(got, want, strict=True)


@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_dequantize_f16_bf16_inf_nan(qtype: T) -> None:
    exp_all_ones = 0x7C00 if qtype == T.F16 else 0x7F80
    mant = 0x03FF if qtype == T.F16 else 0x007F
    bits = np.array([exp_all_ones, exp_all_ones | 0x8000, exp_all_ones | 1, exp_all_ones | mant])
    data = bits.astype(np.uint16).view(np.uint8)
    got = K.dequantize(int(qtype), data, 4)
    want = gguf_dequantize(data, qtype, 4)
    np.testing.assert_array_equal(got, want)  # NaN positions compare equal
    assert np.isposinf(got[0, 0]) and np.isneginf(got[0, 1]) and np.isnan(got[0, 2:]).all()


@pytest.mark.parametrize("qtype", QUANTIZE_TYPES[:5], ids=lambda t: t.name)
def test_dequantize_of_quantized_rows_equals_gguf(qtype: T) -> None:
    x = np.random.default_rng(7).standard_normal((4, 512)).astype(np.float32)
    data = gguf_quantize(x, qtype)
    np.testing.assert_array_equal(
        K.dequantize(int(qtype), data, 512), gguf_dequantize(data, qtype, 512)
    )


def test_dequantize_accepts_flat_bytes() -> None:
    data = random_blocks_any_scale(T.Q4_K, 3, 256, seed=3)
    np.testing.assert_array_equal(
        K.dequantize(int(T.Q4_K), data.reshape(-1), 256), gguf_dequantize(data, T.Q4_K, 256)
    )


@pytest.mark.parametrize("qtype", DEQUANTIZE_TYPES, ids=lambda t: t.name)
def test_row_bytes_match_gguf_table(qtype: T) -> None:
    bs, ts = GGML_QUANT_SIZES[qtype]
    assert K.row_bytes(int(qtype), 4 * bs) == 4 * ts

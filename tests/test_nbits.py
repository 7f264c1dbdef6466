"""ONNX MatMulNBits (bits 4 and 8): nbits_repack / nbits_dequantize / nbits_matmul against
onnxruntime's own com.microsoft MatMulNBits, run on one-node graphs built here.

Dequantization. ORT computes W = (q - zp)·scale in float32; run on X = eye(K) (every output one
product with 1 plus zeros, so nothing rounds) it hands back W itself, and phirt's dequantization
must equal it bit for bit. With float16 scales ORT's output is float16 too: phirt keeps the
float32 product (exact: an integer of at most 9 bits times an 11-bit significand), so ORT's output
equals phirt's rounded to float16, and ORT run on the same scales widened to float32 equals
phirt's exactly.

accuracy_level 4 (int8 activations). ORT's CPU provider quantizes each activation row per block of
block_size elements: d = amax/127 in float32, codes round-half-even(x · (127/amax)). With weights
that pick one activation each (code zp + 1 on the diagonal, zp elsewhere, scale 1) every output is
d·q of one activation up to a rounding far below d/2, so ORT's codes can be read back exactly, and
phirt's quantizer must produce the same ones (test_activation_codes_equal_onnxruntime). Both then
compute the same integers, so the matmuls differ only in float rounding:

    |y_phirt − y_ort| ≤ (2·nb + 20)·2u·A,   A = Σ_blocks |dw·dx| · Σ_j (c_j + zp)·|x_q,j|

(c the unsigned code, u = 2⁻²⁴: each side sums at most nb + 10 rounded terms per output, and ORT
takes the zero point off in float, Σ c·x_q − zp·Σ x_q, hence the zp term in A.)

accuracy_level 0..3 (float activations): ORT multiplies x by its dequantized W, phirt sums
(c − zp)·x per block then scales it; either is within (K + 10)·2u·M of the exact sum, with
M = Σ_blocks |dw| · Σ_j (c_j + zp)·|x_j| ≥ Σ |w|·|x|, so

    |y_phirt − y_ort| ≤ (2·K + 20)·2u·M.

Both bounds are tight enough that the wrong level's numbers, a nibble swap or a wrong block length
fall far outside them (tests below check that they do).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import phirt._kernels as K
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from phirt.errors import FormatError, UnsupportedError
from phirt.formats.onnx_nbits import MatMulNBitsAttrs, load_matmulnbits, pack_zero_points

U = 2.0**-24  # float32 unit roundoff
BLOCK_SIZES = [16, 32, 64, 128, 256]
BITS = [4, 8]


# ---- weights and the onnxruntime reference ------------------------------------------------------


def n_blocks(k: int, bs: int) -> int:
    return -(-k // bs)


def zp_width(nb: int, bits: int) -> int:
    """Bytes of ORT's packed zero points per row."""
    return -(-nb * bits // 8)


def random_weights(
    rng: np.random.Generator,
    n: int,
    k: int,
    bs: int,
    zero_points: bool,
    scale_dtype: type = np.float32,
    bits: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """B, scales and (packed) zero points in ORT's layout; scales span many binades, both signs,
    with zeros and float32 subnormals, but stay small enough that 255·scale is finite."""
    nb = n_blocks(k, bs)
    b = rng.integers(0, 256, size=(n, nb, bs * bits // 8), dtype=np.uint8)
    lo, hi = (-24, 7) if scale_dtype == np.float16 else (-140, 100)
    scales = rng.choice([-1.0, 1.0], n * nb) * 2.0 ** rng.uniform(lo, hi, n * nb)
    scales[rng.random(n * nb) < 0.05] = 0.0
    zp = None
    if zero_points:
        zp = rng.integers(0, 256, size=n * zp_width(nb, bits), dtype=np.uint8)
    return b, scales.astype(scale_dtype), zp


def ort_session(
    k: int,
    n: int,
    bs: int,
    b: np.ndarray,
    scales: np.ndarray,
    zp: np.ndarray | None,
    bits: int = 4,
    accuracy_level: int = 0,
):  # -> onnxruntime.InferenceSession
    """One com.microsoft MatMulNBits node, weights as initializers; A and Y take the scales' type."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT16 if scales.dtype == np.float16 else TensorProto.FLOAT
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(scales, "scales")]
    names = ["A", "B", "scales"]
    if zp is not None:
        inits.append(numpy_helper.from_array(zp, "zero_points"))
        names.append("zero_points")
    node = helper.make_node(
        "MatMulNBits", names, ["Y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=bs,
        accuracy_level=accuracy_level,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "matmulnbits",
        [helper.make_tensor_value_info("A", elem, [None, k])],
        [helper.make_tensor_value_info("Y", elem, [None, n])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def ort_run(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {"A": x})[0]


def ort_weights(session, k: int, dtype: type = np.float32) -> np.ndarray:
    """W (n, k) as ORT dequantizes it: the op applied to the identity."""
    return np.ascontiguousarray(ort_run(session, np.eye(k, dtype=dtype)).T)


def unpacked_codes(b: np.ndarray, bits: int = 4) -> np.ndarray:
    """ORT's B (n, n_blocks, blob) as codes (n, n_blocks, bs): 4 bits: element 2i low nibble, 2i+1
    high; 8 bits: one byte each."""
    if bits == 8:
        return b.astype(np.float64)
    q = np.empty(b.shape[:2] + (2 * b.shape[2],), np.float64)
    q[..., 0::2] = b & 0x0F
    q[..., 1::2] = b >> 4
    return q


def unpacked_zero_points(zp: np.ndarray | None, n: int, nb: int, bits: int) -> np.ndarray:
    """(n, nb) zero points from ORT's packed form (the default when absent)."""
    if zp is None:
        return np.full((n, nb), 8 if bits == 4 else 128, np.float64)
    rows = zp.reshape(n, zp_width(nb, bits))
    if bits == 8:
        return rows.astype(np.float64)
    both = np.stack([rows & 0x0F, rows >> 4], axis=2).reshape(n, -1)
    return both[:, :nb].astype(np.float64)


# K per block size: whole blocks, a ragged last block, less than one block, and (for the small
# blocks) more than one 256-column step of the repacked row.
def k_cases(bs: int) -> list[int]:
    return [3 * bs, 3 * bs + 5, bs // 2 + 3]


DEQ_CASES = [
    (bits, bs, k, zp) for bits in BITS for bs in BLOCK_SIZES for k in k_cases(bs)
    for zp in (False, True)
]  # fmt: skip


# ---- dequantization: bit-identical to ORT -------------------------------------------------------


@pytest.mark.parametrize(("bits", "bs", "k", "zp"), DEQ_CASES)
def test_dequantize_equals_onnxruntime(bits: int, bs: int, k: int, zp: bool) -> None:
    rng = np.random.default_rng([bits, bs, k, zp])
    n = 13
    b, scales, zps = random_weights(rng, n, k, bs, zp, bits=bits)
    w = K.nbits_repack(b, scales, zps, k, bs, bits)
    assert (w.n, w.k, w.block_size, w.bits, w.has_zero_points) == (n, k, bs, bits, zp)
    ours = K.nbits_dequantize(w)
    ref = ort_weights(ort_session(k, n, bs, b, scales, zps, bits), k)
    assert ours.dtype == np.float32 and ours.shape == (n, k)
    np.testing.assert_array_equal(ours, ref, strict=True)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("zp", [False, True])
def test_dequantize_f16_scales(bits: int, bs: int, zp: bool) -> None:
    rng = np.random.default_rng([bits, bs, zp, 16])
    n, k = 9, 2 * bs + 7
    b, scales, zps = random_weights(rng, n, k, bs, zp, np.float16, bits)
    ours = K.nbits_dequantize(K.nbits_repack(b, scales, zps, k, bs, bits))
    ref16 = ort_weights(ort_session(k, n, bs, b, scales, zps, bits), k, np.float16)
    np.testing.assert_array_equal(ours.astype(np.float16), ref16, strict=True)
    ref32 = ort_weights(ort_session(k, n, bs, b, scales.astype(np.float32), zps, bits), k)
    np.testing.assert_array_equal(ours, ref32, strict=True)
    # 2-D scales / zero points (the shape newer ORT exports use) give the same matrix.
    nb = n_blocks(k, bs)
    zps2 = None if zps is None else zps.reshape(n, -1)
    again = K.nbits_dequantize(K.nbits_repack(b, scales.reshape(n, nb), zps2, k, bs, bits))
    np.testing.assert_array_equal(again, ours, strict=True)


@pytest.mark.parametrize(("bits", "bs"), [(4, 16), (4, 64), (8, 32)])
def test_float_zero_points_through_the_loader(bits: int, bs: int) -> None:
    """ORT also takes unpacked zero points of A's type; the loader packs whole numbers in the code
    range, so phirt's weights are (q - zp)·scale rounded once, as with uint8 zero points. ORT's
    float zero-point path rounds differently: it adds q·scale and −zp·scale, each rounded (checked
    below), so there the two agree to 4u·(q + zp)·|scale| instead of bit for bit."""
    rng = np.random.default_rng([bits, bs])
    n, k = 5, 3 * bs + 1
    nb = n_blocks(k, bs)
    b, scales, _ = random_weights(rng, n, k, bs, False, bits=bits)
    zf = rng.integers(0, 1 << bits, n * nb).astype(np.float32)
    attrs = MatMulNBitsAttrs(K=k, N=n, block_size=bs, bits=bits)
    ours = K.nbits_dequantize(load_matmulnbits(attrs, b, scales, zf))

    q = unpacked_codes(b, bits)
    s = scales.reshape(n, nb, 1)
    z = zf.reshape(n, nb, 1)
    exact = ((q - z) * s.astype(np.float64)).reshape(n, -1)[:, :k]
    np.testing.assert_array_equal(ours, exact.astype(np.float32), strict=True)
    zp_u8 = pack_zero_points(zf, n, nb, bits)
    np.testing.assert_array_equal(
        ours, ort_weights(ort_session(k, n, bs, b, scales, zp_u8, bits), k), strict=True
    )

    if bits == 8:
        return  # ORT's CPU provider refuses float zero points with 8 bits
    ref = ort_weights(ort_session(k, n, bs, b, scales, zf, bits), k)
    ort_formula = (q.astype(np.float32) * s + (-z * s)).reshape(n, -1)[:, :k]
    np.testing.assert_array_equal(ref, ort_formula, strict=True)
    lim = 4 * U * ((q + z) * np.abs(s.astype(np.float64))).reshape(n, -1)[:, :k]
    assert np.all(np.abs(ours.astype(np.float64) - ref) <= lim)


def test_pack_zero_points_layout() -> None:
    z = np.array([[1, 2, 3], [4, 5, 6]], np.float32)  # odd block count: each row starts a byte
    np.testing.assert_array_equal(pack_zero_points(z, 2, 3), [0x21, 0x03, 0x54, 0x06])
    np.testing.assert_array_equal(pack_zero_points(z * 40, 2, 3, 8), [40, 80, 120, 160, 200, 240])
    with pytest.raises(UnsupportedError, match="0..15"):
        pack_zero_points(np.array([0.5, 1.0]), 1, 2)
    with pytest.raises(UnsupportedError, match="0..15"):
        pack_zero_points(np.array([16.0, 1.0]), 1, 2)
    with pytest.raises(UnsupportedError, match="0..255"):
        pack_zero_points(np.array([256.0, 1.0]), 1, 2, 8)
    with pytest.raises(FormatError, match="expected 1 x 3"):
        pack_zero_points(np.array([1.0, 1.0]), 1, 3)


# ---- accuracy level 4: the activation codes are ORT's --------------------------------------------


def picking_weights(k: int, bs: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """B and scales of a K x K matrix whose row j is 1 at column j and 0 elsewhere: codes zp + 1
    on the diagonal and zp (the default zero point) everywhere else, scale 1."""
    zp = 8 if bits == 4 else 128
    nb = n_blocks(k, bs)
    codes = np.full((k, nb * bs), zp, np.int64)
    codes[np.arange(k), np.arange(k)] = zp + 1
    if bits == 4:
        b = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    else:
        b = codes.astype(np.uint8)
    return b.reshape(k, nb, -1), np.ones(k * nb, np.float32)


def tie_heavy_activations(rng: np.random.Generator, m: int, k: int, bs: int) -> np.ndarray:
    """Activations over many magnitudes, a third of them put on (or next to) a rounding tie of
    their block's step, where a quantizer computing x / d instead of x · (127/amax) would differ."""
    x = (rng.standard_normal((m, k)) * np.exp(2 * rng.standard_normal((m, 1)))).astype(np.float32)
    nb = n_blocks(k, bs)
    pad = np.zeros((m, nb * bs), np.float32)
    pad[:, :k] = x
    step = np.abs(pad.reshape(m, nb, bs)).max(axis=2) / np.float32(127)
    d = np.repeat(step, bs, axis=1)[:, :k]
    ties = ((np.floor(x / d) + 0.5) * d).astype(np.float32)
    x = np.where(rng.random((m, k)) < 0.35, ties, x)
    x[:, rng.integers(0, k, 2)] = 0.0
    return x.astype(np.float32)


@pytest.mark.usefixtures("each_isa")
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_activation_codes_equal_onnxruntime(bits: int, bs: int) -> None:
    rng = np.random.default_rng([bits, bs, 4])
    k = 2 * bs + 9 if bs < 256 else bs + 100
    session = ort_session(k, k, bs, *picking_weights(k, bs, bits), None, bits, accuracy_level=4)
    x = tie_heavy_activations(rng, 24, k, bs)
    y = ort_run(session, x)
    q, d = K.nbits_quantize_activations(x, bs)
    assert q.shape == (24, n_blocks(k, bs) * bs) and d.shape == (24, n_blocks(k, bs))
    assert np.all(q[:, k:] == 0)
    dq = np.repeat(d, bs, axis=1)[:, :k].astype(np.float64)
    # ORT's outputs are d·q up to the rounding of its zero-point term, Σ c·x_q − zp·Σ x_q, at most
    # (bs·127·(zp + 1) + 127)·4u·d, far below d/2: its codes read back exactly, and equal phirt's
    ort_codes = np.rint(y / np.where(dq == 0, 1, dq))
    np.testing.assert_array_equal(ort_codes, q[:, :k].astype(np.float64))
    zp = 8 if bits == 4 else 128
    assert np.all(np.abs(y - dq * q[:, :k]) <= (bs * 127 * (zp + 1) + 127) * 4 * U * dq)
    # the scales are amax / 127 in float32, per block of block_size
    pad = np.zeros((24, d.shape[1] * bs), np.float32)
    pad[:, :k] = x
    amax = np.abs(pad.reshape(24, -1, bs)).max(axis=2)
    np.testing.assert_array_equal(d, amax / np.float32(127), strict=True)


# ---- matmul: within float rounding of ORT, at the node's accuracy level ----------------------------


def magnitudes(
    b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, x: np.ndarray, bits: int, bs: int,
    level: int,
) -> np.ndarray:  # fmt: skip
    """A (level 4) or M (levels 0..3) of the module docstring, per output (m, n)."""
    n = b.shape[0]
    m, k = x.shape
    nb = n_blocks(k, bs)
    codes = unpacked_codes(b, bits).reshape(n, nb, bs)
    z = unpacked_zero_points(zp, n, nb, bits)[:, :, None]
    mag = (codes + z) * np.abs(scales.astype(np.float64)).reshape(n, nb, 1)  # (n, nb, bs)
    pad = np.zeros((m, nb * bs), np.float64)
    if level == 4:
        q, d = K.nbits_quantize_activations(x, bs)
        pad[:] = np.abs(q) * np.repeat(d, bs, axis=1)
    else:
        pad[:, :k] = np.abs(x)
    return pad @ mag.reshape(n, -1).T


def bound(mag: np.ndarray, k: int, bs: int, level: int) -> np.ndarray:
    terms = 2 * n_blocks(k, bs) + 20 if level == 4 else 2 * k + 20
    return terms * 2 * U * mag


MATMUL_CASES = [
    (bits, m, bs, zp) for bits in BITS for m in (1, 7, 40) for bs in BLOCK_SIZES
    for zp in (False, True)
]  # fmt: skip


def matmul_case(rng: np.random.Generator, bits: int, bs: int, zp: bool, m: int):
    n, k = 37, (4 * bs + 21 if bs < 256 else 3 * bs - 70)
    b, _, zps = random_weights(rng, n, k, bs, zp, bits=bits)
    scales = (rng.standard_normal(n * n_blocks(k, bs)) * 0.05).astype(np.float32)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    x[:, rng.integers(0, k, 3)] *= 50  # outliers, so blocks have different scales
    return n, k, b, scales, zps, x


@pytest.mark.usefixtures("each_isa")
@pytest.mark.parametrize("level", [0, 4])
@pytest.mark.parametrize(("bits", "m", "bs", "zp"), MATMUL_CASES)
def test_matmul_within_rounding_of_onnxruntime(bits: int, m: int, bs: int, zp: bool, level: int):
    rng = np.random.default_rng([bits, m, bs, zp, level])
    n, k, b, scales, zps, x = matmul_case(rng, bits, bs, zp, m)
    session = ort_session(k, n, bs, b, scales, zps, bits, level)
    mat = K.nbits_repack(b, scales, zps, k, bs, bits, level)
    assert mat.accuracy_level == level
    y = K.nbits_matmul(mat, x)
    assert y.dtype == np.float32 and y.shape == (m, n)
    lim = bound(magnitudes(b, scales, zps, x, bits, bs, level), k, bs, level)
    assert np.all(np.abs(y - ort_run(session, x)) <= lim)


@pytest.mark.parametrize("bits", BITS)
def test_levels_below_4_compute_in_float(bits: int) -> None:
    """Levels 1..3 are level 0 on ORT's CPU provider, and in phirt, bit for bit."""
    rng = np.random.default_rng([bits, 123])
    n, k, b, scales, zps, x = matmul_case(rng, bits, 32, True, 5)
    ort0 = ort_run(ort_session(k, n, 32, b, scales, zps, bits, 0), x)
    ours0 = K.nbits_matmul(K.nbits_repack(b, scales, zps, k, 32, bits, 0), x)
    for level in (1, 2, 3):
        np.testing.assert_array_equal(
            ort_run(ort_session(k, n, 32, b, scales, zps, bits, level), x), ort0, strict=True
        )
        np.testing.assert_array_equal(
            K.nbits_matmul(K.nbits_repack(b, scales, zps, k, 32, bits, level), x), ours0
        )


@pytest.mark.parametrize("bits", BITS)
def test_bounds_catch_the_wrong_level_and_block(bits: int) -> None:
    """The level-4 bound rejects float activations and int8 activations quantized per 32 instead
    of per block; the level-0 bound rejects int8 activations."""
    rng = np.random.default_rng([bits, 9])
    bs, n, k = 128, 48, 512
    b, _, zps = random_weights(rng, n, k, bs, True, bits=bits)
    scales = rng.uniform(0.5, 1, n * k // bs).astype(np.float32)
    x = rng.standard_normal((4, k)).astype(np.float32)
    x[:, rng.integers(0, k, 4)] *= 20
    y4 = ort_run(ort_session(k, n, bs, b, scales, zps, bits, 4), x)
    y0 = ort_run(ort_session(k, n, bs, b, scales, zps, bits, 0), x)
    lim4 = bound(magnitudes(b, scales, zps, x, bits, bs, 4), k, bs, 4)
    lim0 = bound(magnitudes(b, scales, zps, x, bits, bs, 0), k, bs, 0)
    ours4 = K.nbits_matmul(K.nbits_repack(b, scales, zps, k, bs, bits, 4), x)
    ours0 = K.nbits_matmul(K.nbits_repack(b, scales, zps, k, bs, bits, 0), x)
    assert np.all(np.abs(ours4 - y4) <= lim4) and np.all(np.abs(ours0 - y0) <= lim0)
    assert np.mean(np.abs(ours0 - y4) > lim4) > 0.9
    assert np.mean(np.abs(ours4 - y0) > lim0) > 0.5  # the looser bound: K terms, not nb
    # per-32 activation blocks (what a Q8_0 path would do) against the per-128 reference
    b32 = b.reshape(n, k // 32, -1)
    s32 = np.repeat(scales, bs // 32)
    z32 = None
    if zps is not None:
        z = unpacked_zero_points(zps, n, k // bs, bits)
        z32 = pack_zero_points(np.repeat(z, bs // 32, axis=1), n, k // 32, bits)
    ours32 = K.nbits_matmul(K.nbits_repack(b32, s32, z32, k, 32, bits, 4), x)
    np.testing.assert_array_equal(
        K.nbits_dequantize(K.nbits_repack(b32, s32, z32, k, 32, bits)),
        K.nbits_dequantize(K.nbits_repack(b, scales, zps, k, bs, bits)),
    )
    assert np.mean(np.abs(ours32 - y4) > lim4) > 0.9


def test_bound_catches_a_layout_error() -> None:
    """The bound rejects the classic mistake, nibble order swapped (element 2i high, 2i+1 low)."""
    rng = np.random.default_rng(7)
    n, k, bs = 16, 256, 32
    b, _, zps = random_weights(rng, n, k, bs, True)
    scales = rng.uniform(0.5, 1, n * k // bs).astype(np.float32)
    swapped = ((b << 4) | (b >> 4)).astype(np.uint8)
    session = ort_session(k, n, bs, b, scales, zps, 4, 4)
    x = rng.standard_normal((4, k)).astype(np.float32)
    lim = bound(magnitudes(b, scales, zps, x, 4, bs, 4), k, bs, 4)
    y_ok = K.nbits_matmul(K.nbits_repack(b, scales, zps, k, bs, 4, 4), x)
    y_bad = K.nbits_matmul(K.nbits_repack(swapped, scales, zps, k, bs, 4, 4), x)
    ref = ort_run(session, x)
    assert np.all(np.abs(y_ok - ref) <= lim)
    assert np.mean(np.abs(y_bad - ref) > lim) > 0.9


# ---- ISA twins, threads, output buffer ----------------------------------------------------------


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("level", [0, 4])
@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("m", [1, 5, 40])
def test_isa_paths_equal_scalar(bits: int, level: int, bs: int, m: int) -> None:
    """Quantized activations are the same bytes on every path and integer block sums are exact,
    so only float summation separates a SIMD path from the scalar spec: both are within half the
    bound above of the exact result."""
    isas = [i for i in K.available_isas() if i != "scalar"]
    if not isas:
        pytest.skip("no SIMD path on this CPU")
    rng = np.random.default_rng([bits, level, bs, m, 3])
    n, k = 45, 5 * bs + 9
    b, _, zps = random_weights(rng, n, k, bs, bool(m % 2), bits=bits)
    scales = (rng.standard_normal(n * n_blocks(k, bs)) * 0.05).astype(np.float32)
    mat = K.nbits_repack(b, scales, zps, k, bs, bits, level)
    x = tie_heavy_activations(rng, m, k, bs)
    previous = K.isa()
    try:
        K.set_isa("scalar")
        ref = K.nbits_matmul(mat, x)
        q_ref, d_ref = K.nbits_quantize_activations(x, bs)
        lim = bound(magnitudes(b, scales, zps, x, bits, bs, level), k, bs, level)
        for name in isas:
            K.set_isa(name)
            q, d = K.nbits_quantize_activations(x, bs)
            np.testing.assert_array_equal(q, q_ref, strict=True)
            np.testing.assert_array_equal(d, d_ref, strict=True)
            got = K.nbits_matmul(mat, x)
            assert np.all(np.abs(got - ref) <= lim), name
    finally:
        K.set_isa(previous)


@pytest.mark.usefixtures("each_isa")
@pytest.mark.parametrize("m", [1, 33])
@pytest.mark.parametrize("level", [0, 4])
def test_thread_count_does_not_change_results(m: int, level: int) -> None:
    rng = np.random.default_rng([m, level])
    n, k, bs = 77, 300, 64
    mat = K.nbits_repack(*random_weights(rng, n, k, bs, True), k, bs, 4, level)
    x = rng.standard_normal((m, k)).astype(np.float32)
    previous = K.get_num_threads()
    try:
        K.set_num_threads(1)
        one = K.nbits_matmul(mat, x)
        K.set_num_threads(max(2, previous))
        many = K.nbits_matmul(mat, x)
    finally:
        K.set_num_threads(previous)
    np.testing.assert_array_equal(one, many, strict=True)


def test_matmul_out_and_zero_rows() -> None:
    rng = np.random.default_rng(0)
    n, k, bs = 10, 64, 32
    mat = K.nbits_repack(*random_weights(rng, n, k, bs, False), k, bs)
    x = rng.standard_normal((3, k)).astype(np.float32)
    out = np.full((3, n), np.nan, np.float32)
    assert K.nbits_matmul(mat, x, out=out) is out
    np.testing.assert_array_equal(out, K.nbits_matmul(mat, x))
    assert K.nbits_matmul(mat, np.zeros((0, k), np.float32)).shape == (0, n)
    with pytest.raises(ValueError, match="out must have shape"):
        K.nbits_matmul(mat, x, out=np.zeros((3, n + 1), np.float32))


@pytest.mark.parametrize("level", [0, 4])
def test_nan_and_inf_do_not_crash(level: int) -> None:
    rng = np.random.default_rng(1)
    n, k, bs = 6, 96, 32
    b, scales, zps = random_weights(rng, n, k, bs, True)
    scales[:3] = [np.nan, np.inf, -np.inf]
    mat = K.nbits_repack(b, scales, zps, k, bs, 4, level)
    assert np.isnan(K.nbits_dequantize(mat)[0, :bs]).all()
    x = rng.standard_normal((2, k)).astype(np.float32)
    x[1, 5] = np.nan
    x[0, 40] = np.inf
    y = K.nbits_matmul(mat, x)
    assert y.shape == (2, n)


# ---- bad inputs: ValueError / TypeError, never a crash -----------------------------------------


def good(n: int = 4, k: int = 100, bs: int = 32) -> SimpleNamespace:
    nb = n_blocks(k, bs)
    return SimpleNamespace(
        b=np.zeros((n, nb, bs // 2), np.uint8),
        scales=np.ones(n * nb, np.float32),
        zp=np.zeros(n * ((nb + 1) // 2), np.uint8),
        k=k,
        bs=bs,
        bits=4,
        level=0,
    )


@pytest.mark.parametrize("bs", [8, 48, 512, 0, -32, 17, 1024])
def test_bad_block_size(bs: int) -> None:
    g = good()
    with pytest.raises(ValueError, match="block_size must be a power of two in 16..256"):
        K.nbits_repack(g.b, g.scales, g.zp, g.k, bs)


@pytest.mark.parametrize(
    ("field", "value", "exc", "match"),
    [
        ("b", np.zeros((4, 3, 16), np.uint8), ValueError, r"B must have shape .*\(4, 4, 16\)"),
        ("b", np.zeros((4, 4, 8), np.uint8), ValueError, "B must have shape"),
        ("b", np.zeros((4, 64), np.uint8), ValueError, "B must be 3-D"),
        ("b", np.zeros((0, 4, 16), np.uint8), ValueError, "N must be positive"),
        ("b", np.zeros((4, 4, 16), np.int8), TypeError, "B must have dtype uint8"),
        ("b", np.zeros((4, 4, 32), np.uint8)[:, :, ::2], ValueError, "C-contiguous"),
        ("b", b"\0" * 256, TypeError, "B must be a numpy array"),
        ("scales", np.ones(15, np.float32), ValueError, r"scales must have shape \(16,\)"),
        ("scales", np.ones(17, np.float32), ValueError, "scales must have shape"),
        ("scales", np.ones((4, 3), np.float32), ValueError, r"or \(4, 4\)"),
        ("scales", np.ones(16, np.float64), TypeError, "float32 or float16, got float64"),
        ("scales", np.ones(16, np.int32), TypeError, "float32 or float16"),
        ("scales", [1.0] * 16, TypeError, "scales must be a numpy array"),
        ("zp", np.zeros(16, np.uint8), ValueError, r"zero_points must have shape \(8,\)"),
        ("zp", np.zeros(7, np.uint8), ValueError, "zero_points must have shape"),
        ("zp", np.zeros(8, np.float32), TypeError, "zero_points must be uint8"),
        ("zp", np.zeros(8, np.int8), TypeError, "zero_points must be uint8"),
        ("k", 0, ValueError, "K must be positive"),
        ("k", -100, ValueError, "K must be positive"),
        ("k", 2**40, ValueError, "too large"),
        ("k", 129, ValueError, "B must have shape"),
        ("k", 96, ValueError, "B must have shape"),
        ("bits", 2, ValueError, "bits must be 4 or 8, got 2"),
        ("bits", 8, ValueError, r"B must have shape .*\(4, 4, 32\)"),
        ("level", 5, ValueError, "accuracy_level must be in 0..4, got 5"),
        ("level", -1, ValueError, "accuracy_level must be in 0..4"),
    ],
)
def test_bad_repack_arguments(field: str, value: object, exc: type, match: str) -> None:
    g = good()
    setattr(g, field, value)
    with pytest.raises(exc, match=match):
        K.nbits_repack(g.b, g.scales, g.zp, g.k, g.bs, g.bits, g.level)


def test_bad_matmul_arguments() -> None:
    g = good()
    mat = K.nbits_repack(g.b, g.scales, None, g.k, g.bs)
    for x, exc in [
        (np.zeros((2, 99), np.float32), ValueError),
        (np.zeros(100, np.float32), ValueError),
        (np.zeros((2, 100), np.float64), TypeError),
        (np.zeros((2, 200), np.float32)[:, ::2], ValueError),
        ([[0.0] * 100], TypeError),
    ]:
        with pytest.raises(exc):
            K.nbits_matmul(mat, x)
    with pytest.raises(TypeError):
        K.nbits_matmul(np.zeros((4, 100), np.float32), np.zeros((1, 100), np.float32))
    with pytest.raises(TypeError):
        K.nbits_dequantize(None)
    with pytest.raises(TypeError):
        K.NBitsMatrix()
    with pytest.raises(ValueError, match="block_size must be"):
        K.nbits_quantize_activations(np.zeros((1, 8), np.float32), 24)


MISTAKES = ["B blocks", "B blob", "scales", "zero_points", "scale dtype", "block_size", "N", "K"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 5),
    k=st.integers(1, 600),
    bs=st.sampled_from(BLOCK_SIZES),
    mistake=st.one_of(st.none(), st.sampled_from(MISTAKES)),
    delta=st.sampled_from([-2, -1, 1, 2]),
    bad_bs=st.sampled_from([0, 8, 24, 48, 512, -16]),
    bad_k=st.sampled_from([0, -1, 2**40]),
    sdtype=st.sampled_from([np.float32, np.float16]),
    zero_points=st.booleans(),
    two_d=st.booleans(),
    bits=st.sampled_from(BITS),
    level=st.sampled_from([0, 4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_repack_never_crashes(
    n, k, bs, mistake, delta, bad_bs, bad_k, sdtype, zero_points, two_d, bits, level, seed
) -> None:
    """Valid arrays, or with one size or type off (too short, too long, wrong dtype, bad block
    size, N or K; one at a time, as two can cancel): a ValueError/TypeError when one is off, else
    a matrix that then dequantizes and multiplies."""
    rng = np.random.default_rng(seed)
    nb = n_blocks(k, bs)
    rows = max(n + delta, 0) if mistake == "N" else n  # B says N = rows, the scales say n
    b_shape = (
        rows,
        max(nb + delta * (mistake == "B blocks"), 0),
        max(bs * bits // 8 + delta * (mistake == "B blob"), 0),
    )
    b = rng.integers(0, 256, b_shape, dtype=np.uint8)
    s_len = max(n * nb + delta * (mistake == "scales"), 0)
    scales = rng.standard_normal(s_len).astype(np.float64 if mistake == "scale dtype" else sdtype)
    if two_d and s_len % n == 0:
        scales = scales.reshape(n, -1)
    zp = None
    if zero_points or mistake == "zero_points":
        z_len = max(n * zp_width(nb, bits) + delta * (mistake == "zero_points"), 0)
        zp = rng.integers(0, 256, z_len, dtype=np.uint8)
    k_arg = bad_k if mistake == "K" else k
    bs_arg = bad_bs if mistake == "block_size" else bs
    event(f"mistake: {mistake}")
    try:
        mat = K.nbits_repack(b, scales, zp, k_arg, bs_arg, bits, level)
    except (ValueError, TypeError):
        assert mistake is not None
        return
    assert mistake is None
    assert K.nbits_dequantize(mat).shape == (n, k)
    assert K.nbits_matmul(mat, rng.standard_normal((2, k)).astype(np.float32)).shape == (2, n)


# ---- the Python loader -------------------------------------------------------------------------


def test_attrs_from_node_and_loader_errors() -> None:
    onnx = pytest.importorskip("onnx")
    node = onnx.helper.make_node(
        "MatMulNBits", ["A", "B", "s"], ["Y"], name="blk.0.attn_qkv", domain="com.microsoft",
        K=100, N=4, bits=4, block_size=32,
    )  # fmt: skip
    attrs = MatMulNBitsAttrs.from_node(node)
    assert attrs == MatMulNBitsAttrs(K=100, N=4, block_size=32, bits=4, accuracy_level=0)
    assert attrs.n_blocks == 4
    g = good()
    mat = load_matmulnbits(attrs, g.b, g.scales, g.zp)
    assert (mat.n, mat.k, mat.block_size) == (4, 100, 32)

    with pytest.raises(UnsupportedError, match="bits=2"):
        load_matmulnbits(MatMulNBitsAttrs(K=100, N=4, block_size=32, bits=2), g.b, g.scales)
    # 8 bits, accuracy level 4 and a flattened 2-D B reach the matrix
    attrs8 = MatMulNBitsAttrs(K=100, N=4, block_size=32, bits=8, accuracy_level=4)
    b8 = np.zeros((4, 4 * 32), np.uint8)
    mat8 = load_matmulnbits(attrs8, b8, g.scales, np.zeros(16, np.float32))
    assert (mat8.bits, mat8.accuracy_level, mat8.has_zero_points) == (8, 4, True)
    with pytest.raises(FormatError, match="attribute N=5"):
        load_matmulnbits(MatMulNBitsAttrs(K=100, N=5, block_size=32), g.b, g.scales)
    with pytest.raises(FormatError, match=r"^m.onnx: qkv: scales must have shape"):
        load_matmulnbits(attrs, g.b, g.scales[:-1], name="qkv", path="m.onnx")
    with pytest.raises(FormatError, match="expected com.microsoft.MatMulNBits"):
        MatMulNBitsAttrs.from_node(onnx.helper.make_node("MatMul", ["A", "B"], ["Y"]))
    bare = onnx.helper.make_node("MatMulNBits", ["A", "B", "s"], ["Y"], domain="com.microsoft", K=4)
    with pytest.raises(FormatError, match="lacks attribute"):
        MatMulNBitsAttrs.from_node(bare)

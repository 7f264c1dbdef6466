"""ONNX MatMulNBits (bits=4): nbits_repack / nbits_dequantize / nbits_matmul against onnxruntime's
own com.microsoft MatMulNBits, run on one-node graphs built here.

Dequantization. ORT computes W = (q - zp)·scale in float32; run on X = eye(K) (every output one
product with 1 plus zeros, so nothing rounds) it hands back W itself, and phirt's dequantization
must equal it bit for bit. With float16 scales ORT's output is float16 too: phirt keeps the
float32 product (exact: a 4-bit integer times an 11-bit significand), so ORT's output equals
phirt's rounded to float16, and ORT run on the same scales widened to float32 equals phirt's exactly.

The matmul error bound. nbits_matmul zero-pads each row of x to kq (a multiple of 32) and
quantizes it to Q8_0: per block of 32, d = amax/127, q_j = round(x_j·127/amax) (ties to even, in
float32: |q_j − x_j/d| ≤ 1/2 + 400u with u = 2⁻²⁴), and d is stored as f16, so the kernel sees
x̂_j = f16(d)·q_j and

    e_j := d·(1/2 + 400u) + 127·|d − f16(d)|  ≥  |x_j − x̂_j|.

(The f16 term can exceed amax/254 on its own: see test_matmul.py's
test_q8_0_scale_rounding_exceeds_half_step_bound.) The integer dot per 16 or 32 elements is exact,
so y = Σ_j w_j·x̂_j up to float32 rounding of the per-group products and the running sum:
at most (G + 10)·2u·Σ_j |w_j|·(|x_j| + e_j) for G = kq/32 groups. ORT (accuracy_level 0) multiplies
X by the float32 W, off by at most (K + 10)·2u·Σ_j |w_j|·|x_j|. So, per output,

    |y_phirt − y_ort| ≤ Σ_j |w_j|·e_j + (G + K + 20)·2u·Σ_j |w_j|·(|x_j| + e_j).

The first term is the brief's Σ_blocks amax_block/254·Σ|w| plus the f16 scale term. Random
activations leave this loose, so each case also runs on "grid" activations that Q8_0 represents
exactly (e = 0), where only float32 rounding separates the two.
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


# ---- weights and the onnxruntime reference ------------------------------------------------------


def n_blocks(k: int, bs: int) -> int:
    return -(-k // bs)


def random_weights(
    rng: np.random.Generator,
    n: int,
    k: int,
    bs: int,
    zero_points: bool,
    scale_dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """B, scales and (packed) zero points in ORT's layout; scales span many binades, both signs,
    with zeros and float32 subnormals, but stay small enough that 15·scale is finite."""
    nb = n_blocks(k, bs)
    b = rng.integers(0, 256, size=(n, nb, bs // 2), dtype=np.uint8)
    lo, hi = (-24, 8) if scale_dtype == np.float16 else (-140, 100)
    scales = rng.choice([-1.0, 1.0], n * nb) * 2.0 ** rng.uniform(lo, hi, n * nb)
    scales[rng.random(n * nb) < 0.05] = 0.0
    zp = rng.integers(0, 256, size=n * ((nb + 1) // 2), dtype=np.uint8) if zero_points else None
    return b, scales.astype(scale_dtype), zp


def ort_session(
    k: int, n: int, bs: int, b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None
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
        "MatMulNBits", names, ["Y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=bs,
        accuracy_level=0,
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


# K per block size: whole blocks, a ragged last block, less than one block. For block size 16 the
# odd block counts (3 and 1) also cover the repack's padding half-group (nbits.h).
def k_cases(bs: int) -> list[int]:
    return [3 * bs, 3 * bs + 5, bs // 2 + 3]


DEQ_CASES = [
    (bs, k, zp) for bs in BLOCK_SIZES for k in k_cases(bs) for zp in (False, True)
]  # fmt: skip


# ---- dequantization: bit-identical to ORT -------------------------------------------------------


@pytest.mark.parametrize(("bs", "k", "zp"), DEQ_CASES)
def test_dequantize_equals_onnxruntime(bs: int, k: int, zp: bool) -> None:
    rng = np.random.default_rng([bs, k, zp])
    n = 13
    b, scales, zps = random_weights(rng, n, k, bs, zp)
    w = K.nbits_repack(b, scales, zps, k, bs)
    assert (w.n, w.k, w.block_size, w.has_zero_points) == (n, k, bs, zp)
    ours = K.nbits_dequantize(w)
    ref = ort_weights(ort_session(k, n, bs, b, scales, zps), k)
    assert ours.dtype == np.float32 and ours.shape == (n, k)
    np.testing.assert_array_equal(ours, ref, strict=True)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("zp", [False, True])
def test_dequantize_f16_scales(bs: int, zp: bool) -> None:
    rng = np.random.default_rng([bs, zp, 16])
    n, k = 9, 2 * bs + 7
    b, scales, zps = random_weights(rng, n, k, bs, zp, np.float16)
    ours = K.nbits_dequantize(K.nbits_repack(b, scales, zps, k, bs))
    ref16 = ort_weights(ort_session(k, n, bs, b, scales, zps), k, np.float16)
    np.testing.assert_array_equal(ours.astype(np.float16), ref16, strict=True)
    ref32 = ort_weights(ort_session(k, n, bs, b, scales.astype(np.float32), zps), k)
    np.testing.assert_array_equal(ours, ref32, strict=True)
    # 2-D scales / zero points (the shape newer ORT exports use) give the same matrix.
    nb = n_blocks(k, bs)
    zps2 = None if zps is None else zps.reshape(n, -1)
    again = K.nbits_dequantize(K.nbits_repack(b, scales.reshape(n, nb), zps2, k, bs))
    np.testing.assert_array_equal(again, ours, strict=True)


def unpacked_codes(b: np.ndarray) -> np.ndarray:
    """ORT's B (n, n_blocks, bs/2) as codes (n, n_blocks, bs): element 2i low nibble, 2i+1 high."""
    q = np.empty(b.shape[:2] + (2 * b.shape[2],), np.float64)
    q[..., 0::2] = b & 0x0F
    q[..., 1::2] = b >> 4
    return q


@pytest.mark.parametrize("bs", [16, 64])
def test_float_zero_points_through_the_loader(bs: int) -> None:
    """ORT also takes unpacked zero points of A's type; the loader packs whole numbers 0..15, so
    phirt's weights are (q - zp)·scale rounded once, as with uint8 zero points. ORT's float
    zero-point path rounds differently: it adds q·scale and −zp·scale, each rounded (checked
    below), so there the two agree to 4u·(q + zp)·|scale| instead of bit for bit."""
    rng = np.random.default_rng(bs)
    n, k = 5, 3 * bs + 1
    nb = n_blocks(k, bs)
    b, scales, _ = random_weights(rng, n, k, bs, False)
    zf = rng.integers(0, 16, n * nb).astype(np.float32)
    ours = K.nbits_dequantize(
        load_matmulnbits(MatMulNBitsAttrs(K=k, N=n, block_size=bs), b, scales, zf)
    )

    q = unpacked_codes(b)
    s = scales.reshape(n, nb, 1)
    z = zf.reshape(n, nb, 1)
    exact = ((q - z) * s.astype(np.float64)).reshape(n, -1)[:, :k]
    np.testing.assert_array_equal(ours, exact.astype(np.float32), strict=True)
    zp_u8 = pack_zero_points(zf, n, nb)
    np.testing.assert_array_equal(
        ours, ort_weights(ort_session(k, n, bs, b, scales, zp_u8), k), strict=True
    )

    ref = ort_weights(ort_session(k, n, bs, b, scales, zf), k)
    ort_formula = (q.astype(np.float32) * s + (-z * s)).reshape(n, -1)[:, :k]
    np.testing.assert_array_equal(ref, ort_formula, strict=True)
    lim = 4 * U * ((q + z) * np.abs(s.astype(np.float64))).reshape(n, -1)[:, :k]
    assert np.all(np.abs(ours.astype(np.float64) - ref) <= lim)


def test_pack_zero_points_layout() -> None:
    z = np.array([[1, 2, 3], [4, 5, 6]], np.float32)  # odd block count: each row starts a byte
    np.testing.assert_array_equal(pack_zero_points(z, 2, 3), [0x21, 0x03, 0x54, 0x06])
    with pytest.raises(UnsupportedError, match="0..15"):
        pack_zero_points(np.array([0.5, 1.0]), 1, 2)
    with pytest.raises(UnsupportedError, match="0..15"):
        pack_zero_points(np.array([16.0, 1.0]), 1, 2)
    with pytest.raises(FormatError, match="expected 1 x 3"):
        pack_zero_points(np.array([1.0, 1.0]), 1, 3)


# ---- matmul: within the activation-rounding bound of ORT ---------------------------------------


def activation_error(x: np.ndarray, kq: int) -> np.ndarray:
    """e_j ≥ |x_j − x̂_j| for the Q8_0 activation blocks (module docstring), shape of x."""
    m, k = x.shape
    pad = np.zeros((m, kq), np.float64)
    pad[:, :k] = x
    blocks = pad.reshape(m, -1, 32)
    d = np.abs(blocks).max(axis=2) / 127.0
    d16 = d.astype(np.float16).astype(np.float64)
    e = d * (0.5 + 400 * U) + 127.0 * np.abs(d - d16)
    return np.repeat(e, 32, axis=1)[:, :k]


def grid_activations(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """Rows Q8_0 holds exactly: per block of 32 a power-of-two step times integers in
    [-127, 127], one of them ±127, so d = amax/127 is the step (exact in f16) and e = 0."""
    kq = -(-k // 32) * 32
    q = rng.integers(-127, 128, size=(m, kq // 32, 32)).astype(np.float64)
    q[:, :, 0] = rng.choice([-127.0, 127.0], size=(m, kq // 32))
    step = 2.0 ** rng.integers(-10, 4, size=(m, kq // 32, 1))
    return (q * step).reshape(m, kq)[:, :k].astype(np.float32)


def bound(w: np.ndarray, x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per output (m, n): Σ|w|·e + (G + K + 20)·2u·Σ|w|·(|x| + e)."""
    k = x.shape[1]
    groups = -(-k // 32)
    aw = np.abs(w.astype(np.float64))
    return e @ aw.T + (groups + k + 20) * 2 * U * ((np.abs(x.astype(np.float64)) + e) @ aw.T)


MATMUL_CASES = [(m, bs) for m in (1, 7, 64) for bs in BLOCK_SIZES]


@pytest.mark.usefixtures("each_isa")
@pytest.mark.parametrize(("m", "bs"), MATMUL_CASES)
@pytest.mark.parametrize("zp", [False, True])
def test_matmul_within_activation_bound(m: int, bs: int, zp: bool) -> None:
    rng = np.random.default_rng([m, bs, zp])
    n, k = 37, (4 * bs + 21 if bs < 256 else 3 * bs - 70)
    b, _, zps = random_weights(rng, n, k, bs, zp)
    scales = (rng.standard_normal(n * n_blocks(k, bs)) * 0.05).astype(np.float32)
    session = ort_session(k, n, bs, b, scales, zps)
    w_ref = ort_weights(session, k)
    mat = K.nbits_repack(b, scales, zps, k, bs)
    kq = -(-n_blocks(k, bs) * bs // 32) * 32

    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    x[:, rng.integers(0, k, 3)] *= 50  # outliers, so blocks have different scales
    y = K.nbits_matmul(mat, x)
    assert y.dtype == np.float32 and y.shape == (m, n)
    lim = bound(w_ref, x, activation_error(x, kq))
    assert np.all(np.abs(y - ort_run(session, x)) <= lim)

    xg = grid_activations(rng, m, k)
    yg = K.nbits_matmul(mat, xg)
    assert np.all(np.abs(yg - ort_run(session, xg)) <= bound(w_ref, xg, np.zeros_like(xg)))


def test_bound_catches_a_layout_error() -> None:
    """The bound rejects the classic mistake, nibble order swapped (element 2i high, 2i+1 low)."""
    rng = np.random.default_rng(7)
    n, k, bs = 16, 256, 32
    b, _, zps = random_weights(rng, n, k, bs, True)
    scales = rng.uniform(0.5, 1, n * k // bs).astype(np.float32)
    swapped = ((b << 4) | (b >> 4)).astype(np.uint8)
    session = ort_session(k, n, bs, b, scales, zps)
    x = rng.standard_normal((4, k)).astype(np.float32)
    lim = bound(ort_weights(session, k), x, activation_error(x, k))
    y_ok = K.nbits_matmul(K.nbits_repack(b, scales, zps, k, bs), x)
    y_bad = K.nbits_matmul(K.nbits_repack(swapped, scales, zps, k, bs), x)
    ref = ort_run(session, x)
    assert np.all(np.abs(y_ok - ref) <= lim)
    assert np.mean(np.abs(y_bad - ref) > lim) > 0.9


# ---- ISA twins, threads, output buffer ----------------------------------------------------------


@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("m", [1, 5, 40])
def test_isa_paths_equal_scalar(bs: int, m: int) -> None:
    """Integer group sums are exact on every path; only float summation order differs, so
    |y_isa − y_scalar| ≤ 2·(G + 10)·2u·Σ|w|·|x̂| (each path within half of it of the exact sum)."""
    isas = [i for i in K.available_isas() if i != "scalar"]
    if not isas:
        pytest.skip("no SIMD path on this CPU")
    rng = np.random.default_rng([bs, m, 3])
    n, k = 45, 5 * bs + 9
    b, scales, zps = random_weights(rng, n, k, bs, bool(m % 2))
    mat = K.nbits_repack(b, scales, zps, k, bs)
    w = K.nbits_dequantize(mat).astype(np.float64)
    x = rng.standard_normal((m, k)).astype(np.float32)
    kq = -(-n_blocks(k, bs) * bs // 32) * 32
    lim = 2 * (kq // 32 + 10) * 2 * U * ((np.abs(x) + activation_error(x, kq)) @ np.abs(w).T)
    previous = K.isa()
    try:
        K.set_isa("scalar")
        ref = K.nbits_matmul(mat, x)
        for name in isas:
            K.set_isa(name)
            got = K.nbits_matmul(mat, x)
            assert np.all(np.abs(got - ref) <= lim), name
    finally:
        K.set_isa(previous)


@pytest.mark.usefixtures("each_isa")
@pytest.mark.parametrize("m", [1, 33])
def test_thread_count_does_not_change_results(m: int) -> None:
    rng = np.random.default_rng(m)
    n, k, bs = 77, 300, 64
    mat = K.nbits_repack(*random_weights(rng, n, k, bs, True), k, bs)
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


def test_nan_and_inf_do_not_crash() -> None:
    rng = np.random.default_rng(1)
    n, k, bs = 6, 96, 32
    b, scales, zps = random_weights(rng, n, k, bs, True)
    scales[:3] = [np.nan, np.inf, -np.inf]
    mat = K.nbits_repack(b, scales, zps, k, bs)
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
    ],
)
def test_bad_repack_arguments(field: str, value: object, exc: type, match: str) -> None:
    g = good()
    setattr(g, field, value)
    with pytest.raises(exc, match=match):
        K.nbits_repack(g.b, g.scales, g.zp, g.k, g.bs)


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
    seed=st.integers(0, 2**32 - 1),
)
def test_repack_never_crashes(
    n, k, bs, mistake, delta, bad_bs, bad_k, sdtype, zero_points, two_d, seed
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
        max(bs // 2 + delta * (mistake == "B blob"), 0),
    )
    b = rng.integers(0, 256, b_shape, dtype=np.uint8)
    s_len = max(n * nb + delta * (mistake == "scales"), 0)
    scales = rng.standard_normal(s_len).astype(np.float64 if mistake == "scale dtype" else sdtype)
    if two_d and s_len % n == 0:
        scales = scales.reshape(n, -1)
    zp = None
    if zero_points or mistake == "zero_points":
        z_len = max(n * ((nb + 1) // 2) + delta * (mistake == "zero_points"), 0)
        zp = rng.integers(0, 256, z_len, dtype=np.uint8)
    k_arg = bad_k if mistake == "K" else k
    bs_arg = bad_bs if mistake == "block_size" else bs
    event(f"mistake: {mistake}")
    try:
        mat = K.nbits_repack(b, scales, zp, k_arg, bs_arg)
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

    with pytest.raises(UnsupportedError, match="bits=8"):
        load_matmulnbits(MatMulNBitsAttrs(K=100, N=4, block_size=32, bits=8), g.b, g.scales)
    with pytest.raises(FormatError, match="attribute N=5"):
        load_matmulnbits(MatMulNBitsAttrs(K=100, N=5, block_size=32), g.b, g.scales)
    with pytest.raises(FormatError, match=r"^m.onnx: qkv: scales must have shape"):
        load_matmulnbits(attrs, g.b, g.scales[:-1], name="qkv", path="m.onnx")
    with pytest.raises(FormatError, match="expected com.microsoft.MatMulNBits"):
        MatMulNBitsAttrs.from_node(onnx.helper.make_node("MatMul", ["A", "B"], ["Y"]))
    bare = onnx.helper.make_node("MatMulNBits", ["A", "B", "s"], ["Y"], domain="com.microsoft", K=4)
    with pytest.raises(FormatError, match="lacks attribute"):
        MatMulNBitsAttrs.from_node(bare)

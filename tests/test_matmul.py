"""matmul (Y = X·Wᵀ) and get_rows against float64 numpy on the weights as gguf-py dequantizes them.

Every test here runs once per ISA this machine has (the ``each_isa`` fixture); test_kernels_isa.py
compares the ISA paths with each other, this file compares each one with an external reference.

The error bound. The kernel quantizes each activation block, then computes an exact integer dot
product per block, scaled and summed in float32. So with x̂ the activation as the kernel sees it,
y = Σ_j w_j·x̂_j up to float32 rounding, and

    |y − x·wᵀ| ≤ Σ_j |w_j|·e_j  +  slack,      e_j ≥ |x_j − x̂_j|,

where e_j comes from the activation format (u = 2⁻²⁴, the float32 unit roundoff):

* Q8_0 / Q8_1 (blocks of 32, for Q4_0, Q5_0, Q8_0 / Q4_1, Q5_1): d = amax/127, q = round(x·127/amax)
  (|q − x/d| ≤ 1/2 + 254u), and the scale is stored as f16, so x̂ = f16(d)·q and
  e = d·(1/2 + 400u) + 127·|d − f16(d)|. The f16 scale term is up to 0.06·d: the bound
  amax/254 alone does not hold.
* Q8_1 also carries s = f16(d·Σq) and the kernel uses m·s for the weight offset m (Q4_1/Q5_1:
  w = d_w·q + m), so the offset term is bounded separately:
  |Σx − s| ≤ 32·e' + (2⁻¹¹ + u)·(|Σx| + 32·e') + 2⁻²⁵ with e' = d·(1/2 + 400u), and
  Σ_j |w_j|·e_j becomes Σ_j |w_j − m|·e_j + |m|·|Σx − s| per block.
* Q8_K (blocks of 256, for Q4_K, Q5_K, Q6_K): d = amax/127 kept in float32; e = d·(1/2 + 600u).
  The K-quant mins use the activation's integer bsums, so they see x̂ exactly: no extra term.
* F16: x̂ = f16(x), e = 2⁻¹¹·|x| + 2⁻²⁵ (half an ulp, normal or subnormal).
* BF16: e = 2⁻⁸·|x| + 2⁻¹³³.    F32: e = 0.

slack: float32 rounding of the per-block products and of the running sum, at most
(n_terms + 10)·2u·Σ_j A_j·(|x_j| + e_j) with n_terms = k/32 for block formats and k for float
formats, where A_j bounds every partial term: |w_j|, plus 2|m| for Q4_1/Q5_1 and 2·63·|dmin| for
Q4_K/Q5_K (their two partial sums can cancel). That also covers gguf-py's own float32 rounding of
the dequantized weights (at most 3u of the same terms).

This worst-case bound is loose for random activations, so each case also runs on "grid"
activations that the 8-bit (or f16/bf16) format represents exactly (e = 0); there the kernel must
agree with float64 to within float32 rounding, which pins down indexing and scaling exactly.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import phirt._kernels as K
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gq

from ggml_blocks import F16_FIELDS, WEIGHT_TYPES, random_blocks

T = GGMLQuantizationType
U = 2.0**-24  # float32 unit roundoff

ACT = {
    T.Q4_0: "q8_0",
    T.Q5_0: "q8_0",
    T.Q8_0: "q8_0",
    T.Q4_1: "q8_1",
    T.Q5_1: "q8_1",
    T.Q4_K: "q8_K",
    T.Q5_K: "q8_K",
    T.Q6_K: "q8_K",
    T.F16: "f16",
    T.BF16: "bf16",
    T.F32: "f32",
}
ACT_BLOCK = {"q8_0": 32, "q8_1": 32, "q8_K": 256, "f16": 1, "bf16": 1, "f32": 1}

# (m, k, n): decode (m = 1), short and long prefill; n never a multiple of a tile (32) or of 4.
CASES = [
    (1, 256, 37),
    (1, 2048, 101),
    (1, 4096, 37),
    (1, 8192, 37),
    (7, 256, 101),
    (7, 4096, 37),
    (64, 512, 101),
    (64, 1024, 37),
    (512, 256, 37),
    (3, 512, 1),
    (2, 1280, 65),
    (33, 768, 45),
]

pytestmark = pytest.mark.usefixtures("each_isa")


# ---- weights ----------------------------------------------------------------------------------


def moderate_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """f16 scales of random sign and magnitude 2^-10 .. 2^-2."""
    return rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-10, -2, n)


def make_weights(qtype: T, n: int, k: int, seed: int) -> np.ndarray:
    """(n, row_bytes) bytes. Legacy types: even rows from gguf-py's quantizer (what files hold),
    odd rows random blocks. K-quants: random blocks. Float types: gguf-py's conversion."""
    rng = np.random.default_rng(seed)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        return random_blocks(qtype, n, k, rng, moderate_scales)
    x = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    data = np.ascontiguousarray(gq.quantize(x, qtype)).view(np.uint8).reshape(n, -1).copy()
    if qtype in F16_FIELDS and n > 1:
        data[1::2] = random_blocks(qtype, n // 2, k, rng, moderate_scales)
    return data


def f16_fields(data: np.ndarray, qtype: T, off: int) -> np.ndarray:
    """The f16 field at byte `off` of every block, as float64 (n, blocks per row)."""
    ts = GGML_QUANT_SIZES[qtype][1]
    n = data.shape[0]
    blocks = data.reshape(n, -1, ts)
    return blocks[:, :, off : off + 2].copy().view(np.float16)[..., 0].astype(np.float64)


# ---- activations --------------------------------------------------------------------------------


def make_activations(act: str, m: int, k: int, grid: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not grid:
        scale = 10.0 ** rng.uniform(-1.5, 1.5, (m, 1))
        x = rng.standard_normal((m, k)) * scale
        outliers = rng.random((m, k)) < 0.01
        x[outliers] *= 20
        return x.astype(np.float32)
    if act in ("q8_0", "q8_1", "q8_K"):
        # Per block: integers in [-127, 127] times 2^e, one of them ±127, so amax = 127·2^e and
        # x·127/amax, 127/amax and amax/127 are exact.
        bs = ACT_BLOCK[act]
        nb = k // bs
        q = rng.integers(-127, 128, (m, nb, bs)).astype(np.float64)
        at = rng.integers(0, bs, (m, nb))
        np.put_along_axis(q, at[..., None], rng.choice([-127.0, 127.0], (m, nb, 1)), axis=2)
        e = rng.integers(-8, 3, (m, nb, 1)).astype(np.float64)
        return (q * 2.0**e).reshape(m, k).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    if act == "f16":
        return x.astype(np.float16).astype(np.float32)
    if act == "bf16":
        return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    return x


def activation_error(x: np.ndarray, act: str, exact: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(e, s_err): per-element bound on |x - x̂| (m, k), and for Q8_1 the per-block bound on
    |Σx - s| (m, k/32); see the module docstring."""
    m, k = x.shape
    x64 = x.astype(np.float64)
    if act in ("q8_0", "q8_1", "q8_K"):
        bs = ACT_BLOCK[act]
        amax = np.abs(x).reshape(m, k // bs, bs).max(axis=2)  # float32, exact
        d = (amax / np.float32(127)).astype(np.float64)  # float32 division, as the kernel
        if exact:
            e_round = np.zeros_like(d)
            e = np.zeros_like(d)
        elif act == "q8_K":
            e_round = e = d * (0.5 + 600 * U)
        else:
            e_round = d * (0.5 + 400 * U)
            d16 = d.astype(np.float16).astype(np.float64)
            e = e_round + 127 * np.abs(d - d16)
        s_err = None
        if act == "q8_1":
            block_sum = np.abs(x64.reshape(m, k // bs, bs).sum(axis=2))
            s_err = 32 * e_round + (2.0**-11 + U) * (block_sum + 32 * e_round) + 2.0**-25
        return np.repeat(e, bs, axis=1), s_err
    if exact or act == "f32":
        return np.zeros_like(x64), None
    if act == "f16":
        return 2.0**-11 * np.abs(x64) + 2.0**-25, None
    return 2.0**-8 * np.abs(x64) + 2.0**-133, None  # bf16


def weight_terms(
    data: np.ndarray, qtype: T, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(W_act, A, M): the weight magnitudes that multiply the activation error, the magnitudes
    bounding every partial term (for float slack), and |m| per block for Q4_1/Q5_1 (else None)."""
    n, k = w.shape
    wabs = np.abs(w)
    if qtype in (T.Q4_1, T.Q5_1):
        mins = f16_fields(data, qtype, 2)  # (n, k/32)
        m_full = np.repeat(mins, 32, axis=1)
        return np.abs(w - m_full) * (1 + 4 * U), wabs + 2 * np.abs(m_full), np.abs(mins)
    if qtype in (T.Q4_K, T.Q5_K):
        dmin = np.repeat(f16_fields(data, qtype, 2), 256, axis=1)
        return wabs, wabs + 2 * 63 * np.abs(dmin), None
    return wabs, wabs, None


def rows_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (m, k) · b (n, k)ᵀ in float64. einsum, not BLAS: OpenBLAS threads waking up beside the
    kernel's pool cost tens of ms per product on a busy 2-core machine."""
    return np.einsum("mk,nk->mn", a, b)


@cache
def case_data(
    qtype: T, m: int, k: int, n: int, grid: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(weight bytes, x, y_ref, worst-case bound, Hoeffding bound), computed once for every ISA."""
    seed = qtype.value * 1_000_003 + m * 1009 + k * 7 + n + (1 << 30) * grid
    data = make_weights(qtype, n, k, seed)
    act = ACT[qtype]
    x = make_activations(act, m, k, grid, seed + 1)
    w = gq.dequantize(data, qtype).reshape(n, k).astype(np.float64)
    assert np.isfinite(w).all()
    x64 = x.astype(np.float64)
    y_ref = rows_dot(x64, w)

    e, s_err = activation_error(x, act, exact=grid)
    w_act, a, mins = weight_terms(data, qtype, w)
    worst = rows_dot(e, w_act)
    variance = rows_dot(e * e, w_act * w_act)
    if mins is not None:
        assert s_err is not None
        worst += rows_dot(s_err, mins)
        variance += rows_dot(s_err * s_err, mins * mins)
    n_terms = k // 32 if ACT_BLOCK[act] > 1 else k
    slack = (n_terms + 10) * 2 * U * rows_dot(np.abs(x64) + e, a) + U * np.abs(y_ref) + 1e-30
    # Rounding errors of different elements, each within ±c_j = |w_j|·e_j, add up like independent
    # bounded variables: Hoeffding gives P(|Σ| > 8·sqrt(Σ c_j²)) <= 2·exp(-32) per output.
    return data, x, y_ref, worst + slack, np.minimum(worst, 8 * np.sqrt(variance)) + slack


def check_within(y: np.ndarray, y_ref: np.ndarray, bound: np.ndarray, what: str) -> None:
    err = np.abs(y.astype(np.float64) - y_ref)
    at = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), (
        f"{what}: |y - ref| = {err[at]:.4g} > bound {bound[at]:.4g} at {at} "
        f"(y={y[at]!r}, ref={y_ref[at]!r})"
    )


@pytest.mark.parametrize("grid", [False, True], ids=["random-x", "grid-x"])
@pytest.mark.parametrize(("m", "k", "n"), CASES)
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_matmul_within_activation_rounding_bound(
    qtype: T, m: int, k: int, n: int, grid: bool
) -> None:
    data, x, y_ref, worst, likely = case_data(qtype, m, k, n, grid)
    w = K.QMatrix(data, int(qtype), n, k)
    y = K.matmul(w, x)
    assert y.shape == (m, n) and y.dtype == np.float32
    check_within(y, y_ref, worst, f"{qtype.name} m={m} k={k} n={n} worst case")
    check_within(y, y_ref, likely, f"{qtype.name} m={m} k={k} n={n} Hoeffding")


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_matmul_bound_is_not_vacuous(qtype: T) -> None:
    """On grid activations the bound must be far below the outputs, or the test proves little."""
    _, _, y_ref, worst, _ = case_data(qtype, 64, 512, 101, True)
    assert np.median(worst / np.maximum(np.abs(y_ref), 1e-30)) < 5e-3


def test_matmul_writes_into_out() -> None:
    data, x, _, _, _ = case_data(T.Q4_0, 7, 256, 101, False)
    w = K.QMatrix(data, int(T.Q4_0), 101, 256)
    out = np.full((7, 101), np.nan, np.float32)
    y = K.matmul(w, x, out=out)
    assert np.shares_memory(y, out)
    np.testing.assert_array_equal(out, K.matmul(w, x))


def test_matmul_zero_rows() -> None:
    data = make_weights(T.Q8_0, 5, 64, 0)
    y = K.matmul(K.QMatrix(data, int(T.Q8_0), 5, 64), np.zeros((0, 64), np.float32))
    assert y.shape == (0, 5)


@pytest.mark.parametrize("m", [1, 33])
@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q4_K, T.Q6_K, T.F16], ids=lambda t: t.name)
def test_thread_count_does_not_change_results(qtype: T, m: int) -> None:
    """Each output is one dot product summed in a fixed order, whoever computes it."""
    k, n = 1024, 101
    data = make_weights(qtype, n, k, seed=11)
    x = make_activations(ACT[qtype], m, k, grid=False, seed=12)
    w = K.QMatrix(data, int(qtype), n, k)
    previous = K.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            K.set_num_threads(threads)
            assert K.get_num_threads() == threads
            results.append(K.matmul(w, x))
    finally:
        K.set_num_threads(previous)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_get_rows_equals_dequantize(qtype: T) -> None:
    n, k = 37, 512
    data = make_weights(qtype, n, k, seed=5)
    w = K.QMatrix(data, int(qtype), n, k)
    ids = np.array([0, 36, 5, 5, 17, 0], np.int32)
    rows = K.get_rows(w, ids)
    full = K.dequantize(int(qtype), data, k)
    np.testing.assert_array_equal(rows, full[ids], strict=True)
    np.testing.assert_array_equal(rows, gq.dequantize(data, qtype).reshape(n, k)[ids])
    assert K.get_rows(w, np.zeros(0, np.int32)).shape == (0, k)


def test_q8_0_scale_rounding_exceeds_half_step_bound() -> None:
    """Why e carries 127·|d − f16(d)|: with d just above 1 (f16(d) = 1) and every element just
    under a rounding midpoint, the error beats amax/254 per element, within the derived bound."""
    d = np.float32(127 * (1 + 2.0**-11 - 2.0**-20)) / np.float32(127)
    x = np.full((1, 32), 126.49 * d, np.float32)
    x[0, 0] = d * 127
    data = np.ascontiguousarray(gq.quantize(np.ones((1, 32), np.float32), T.Q8_0))
    w = gq.dequantize(data, T.Q8_0).reshape(1, 32).astype(np.float64)
    err = abs(
        float(K.matmul(K.QMatrix(data, int(T.Q8_0), 1, 32), x)[0, 0])
        - float((x.astype(np.float64) @ w.T)[0, 0])
    )
    half_step = float(np.abs(w).sum()) * float(np.abs(x).max()) / 254
    e, _ = activation_error(x, "q8_0", exact=False)
    assert half_step < err <= float((e @ np.abs(w).T)[0, 0])

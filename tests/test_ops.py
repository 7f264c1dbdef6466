"""The forward-pass ops against float64 numpy written from their definitions (docs/design.md,
cpp/ops.h). Tolerances are float32 error bounds derived per op (u = 2⁻²⁴, the unit roundoff),
except where ggml rounds to f16 on purpose (gelu's table, attention's q and softmax weights),
where the reference applies the same f16 rounding or the bound includes it."""

from __future__ import annotations

import zlib

import numpy as np
import phirt._kernels as K
import pytest

U = 2.0**-24
Q8_0 = 8  # GGML type id


def _seed(key: object) -> int:
    return zlib.crc32(repr(key).encode())


def assert_within(got: np.ndarray, want: np.ndarray, tol: np.ndarray | float, what: str) -> None:
    err = np.abs(got.astype(np.float64) - want)
    tol = np.broadcast_to(tol, err.shape)
    bad = ~(err <= tol)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {bad.sum()} elements out of tolerance; first at {at}: "
            f"got {got[at]!r}, want {want[at]!r}, tol {tol[at]:.3g}"
        )


# ---- norms ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize(("m", "k"), [(1, 3072), (5, 96), (3, 7)])
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_rms_norm(m: int, k: int, scale: float, eps: float) -> None:
    rng = np.random.default_rng(_seed((m, k, scale, eps)))
    x = (rng.standard_normal((m, k)) * scale).astype(np.float32)
    w = rng.uniform(-2, 2, k).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    want = x64 / np.sqrt(np.mean(x64 * x64, axis=1, keepdims=True) + eps) * w64
    # x², the mean, +eps, sqrt, 1/·, ·x, ·w: about 8 roundings of the result.
    assert_within(K.rms_norm(x, w, eps), want, 16 * U * np.abs(want) + 1e-37, "rms_norm")
    out = np.empty_like(x)
    assert np.shares_memory(K.rms_norm(x, w, eps, out=out), out)
    assert_within(out, want, 16 * U * np.abs(want) + 1e-37, "rms_norm(out=)")


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_layer_norm(with_weight: bool, with_bias: bool, offset: float) -> None:
    m, k, eps = 4, 2560, 1e-5
    rng = np.random.default_rng(_seed((with_weight, with_bias, offset)))
    x = (offset + rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(np.float32)
    x[:, ::97] *= 8  # outliers
    w = rng.uniform(-2, 2, k).astype(np.float32) if with_weight else None
    b = rng.uniform(-1, 1, k).astype(np.float32) if with_bias else None
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=1, keepdims=True)
    v = x64 - mu
    sigma = np.sqrt((v * v).mean(axis=1, keepdims=True))
    s = 1 / np.sqrt(sigma**2 + eps)
    w64 = np.ones(k) if w is None else w.astype(np.float64)
    b64 = np.zeros(k) if b is None else b.astype(np.float64)
    want = v * s * w64 + b64
    # x - mean is off by u·(|x| + |mean|); the variance's relative error, up to
    # u·(max|x| + |mean|)/sigma, scales every element by the same factor.
    spread = np.abs(x64).max(axis=1, keepdims=True) + np.abs(mu)
    tol = 16 * U * (s * np.abs(w64) * ((np.abs(x64) + np.abs(mu)) + np.abs(v) * spread / sigma))
    tol += 4 * U * np.abs(b64) + 1e-37
    assert_within(
        K.layer_norm(x, w, b, eps), want, tol, f"layer_norm w={with_weight} b={with_bias}"
    )


# ---- rope ------------------------------------------------------------------------------------------


def rope_ref(
    x: np.ndarray,
    pos: np.ndarray,
    n_rot: int,
    base: float,
    neox: bool,
    freq_factors: np.ndarray | None,
    freq_scale: float,
    attn_factor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(rotated x, angles (m, n_rot/2)). Pair i rotates by
    theta_i = pos·base^(-2i/n_rot)·freq_scale/freq_factors[i], with cos and sin scaled by
    attn_factor; pairs are (2i, 2i+1), or (i, i + n_rot/2) for NeoX."""
    i = np.arange(n_rot // 2)
    theta = pos.astype(np.float64)[:, None] * float(base) ** (-2.0 * i / n_rot)
    if freq_factors is not None:
        theta = theta / freq_factors.astype(np.float64)
    theta = theta * freq_scale
    c = (np.cos(theta) * attn_factor)[:, None, :]
    s = (np.sin(theta) * attn_factor)[:, None, :]
    a, b = (i, i + n_rot // 2) if neox else (2 * i, 2 * i + 1)
    y = x.astype(np.float64)
    x0, x1 = y[:, :, a].copy(), y[:, :, b].copy()
    y[:, :, a] = x0 * c - x1 * s
    y[:, :, b] = x0 * s + x1 * c
    return y, theta


ROPE_CASES = {
    # name: (head_dim, n_rot, base, freq_factors?, freq_scale, attn_factor)
    "full": (64, 64, 10000.0, False, 1.0, 1.0),
    "phi2-partial": (80, 32, 10000.0, False, 1.0, 1.0),
    "longrope": (96, 96, 10000.0, True, 1.0, 1.19),
    "scaled": (128, 128, 500000.0, False, 0.25, 1.0),
    "partial-factors-odd-heads": (48, 24, 1e6, True, 0.5, 0.8),
}


@pytest.mark.parametrize("neox", [False, True], ids=["normal", "neox"])
@pytest.mark.parametrize("case", list(ROPE_CASES))
def test_rope(case: str, neox: bool) -> None:
    head_dim, n_rot, base, use_ff, freq_scale, attn_factor = ROPE_CASES[case]
    rng = np.random.default_rng(_seed((case, neox)))
    pos = np.array([0, 1, 2, 7, 100, 4095, 30000], np.int32)
    m, n_head = len(pos), 3
    x = rng.standard_normal((m, n_head, head_dim)).astype(np.float32)
    ff = rng.uniform(1.0, 40.0, n_rot // 2).astype(np.float32) if use_ff else None
    want, theta = rope_ref(x, pos, n_rot, base, neox, ff, freq_scale, attn_factor)
    got = x.copy()
    assert K.rope(got, pos, n_rot, base, neox, ff, freq_scale, attn_factor) is None  # in place

    # The kernel advances theta by repeated float32 multiplication (as ggml): pair i's angle has
    # relative error up to (2i + 3)·u (powf, i products, /ff, ·freq_scale); cos/sin/products add
    # a few u of the pair's magnitude.
    i = np.arange(n_rot // 2)
    angle_err = np.abs(theta) * (2 * i + 8) * U + 2 * U  # (m, n_rot/2)
    a, b = (i, i + n_rot // 2) if neox else (2 * i, 2 * i + 1)
    pair = np.abs(x[:, :, a].astype(np.float64)) + np.abs(x[:, :, b])
    pair_tol = abs(attn_factor) * pair * (angle_err[:, None, :] + 8 * U) + 1e-37
    tol = np.zeros(x.shape)
    tol[:, :, a] = pair_tol
    tol[:, :, b] = pair_tol
    assert_within(got, want, tol, f"rope {case} neox={neox}")
    np.testing.assert_array_equal(got[:, :, n_rot:], x[:, :, n_rot:])  # untouched tail


def test_rope_position_zero_is_identity_times_attn_factor() -> None:
    x = np.random.default_rng(0).standard_normal((1, 2, 16)).astype(np.float32)
    got = x.copy()
    K.rope(got, np.zeros(1, np.int32), 16, 10000.0, True, None, 1.0, 1.0)
    np.testing.assert_array_equal(got, x)


# ---- softmax, swiglu, gelu ------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0, 1e4])
def test_softmax(scale: float) -> None:
    rng = np.random.default_rng(_seed(scale))
    x = (rng.standard_normal((6, 257)) * scale).astype(np.float32)
    x[1, ::3] = -np.inf  # masked entries
    x64 = x.astype(np.float64)
    z = x64 - x64.max(axis=1, keepdims=True)
    want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    got = x.copy()
    K.softmax(got)
    # x - max carries u·|x - max|, exp a few u, the normalisation a few u more.
    tol = want * (8 * U + 2 * U * np.abs(np.where(np.isfinite(z), z, 0))) + 1e-44
    assert_within(got, want, tol, f"softmax scale={scale}")
    assert np.all(got[1, ::3] == 0)


def silu64(g: np.ndarray) -> np.ndarray:
    return g / (1 + np.exp(-g))


def test_swiglu_and_silu_mul() -> None:
    rng = np.random.default_rng(3)
    m, f = 5, 1000
    x = (rng.standard_normal((m, 2 * f)) * 4).astype(np.float32)
    x[0, :4] = [-100.0, 100.0, -88.0, 0.0]
    with np.errstate(over="ignore"):
        want = silu64(x[:, :f].astype(np.float64)) * x[:, f:]
    tol = 8 * U * np.abs(want) + 1e-37  # exp, +1, /, · : about 5 roundings
    assert_within(K.swiglu(x), want, tol, "swiglu")
    gate, up = np.ascontiguousarray(x[:, :f]), np.ascontiguousarray(x[:, f:])
    assert_within(K.silu_mul(gate, up), want, tol, "silu_mul")
    np.testing.assert_array_equal(K.swiglu(x), K.silu_mul(gate, up))


def test_swiglu_one_row_in_chunks_equals_the_same_row_of_a_batch() -> None:
    """Decode splits one row into chunks across threads, prefill gives each thread whole rows."""
    x = (np.random.default_rng(4).standard_normal((3, 2 * 5000)) * 4).astype(np.float32)
    np.testing.assert_array_equal(K.swiglu(x[1:2]), K.swiglu(x)[1:2])


def test_kv_store_rounds_as_numpy(each_isa: str) -> None:
    rng = np.random.default_rng(11)
    m, n_head, n_ctx, hd = 5, 3, 12, 40
    x = (rng.standard_normal((m, n_head, hd)) * 3).astype(np.float32)
    edge = [70000.0, 65519.0, 65520.0, -1e-8, 1e-5, -0.0, np.inf, -np.inf, 1 + 2**-11, 3 * 2**-25]
    x[0, 0, : len(edge)] = edge  # overflow to inf, subnormals, ties to even, signed zero
    x[1, 2, 7] = np.nan
    cache = np.full((n_head, n_ctx, hd), 7, np.float16)
    K.kv_store(cache, x, 4)
    want = np.full_like(cache, 7)
    with np.errstate(over="ignore"):
        want[:, 4 : 4 + m] = x.transpose(1, 0, 2).astype(np.float16)
    assert np.isnan(cache[2, 5, 7]) and np.isnan(want[2, 5, 7])
    cache[2, 5, 7] = want[2, 5, 7] = 0
    np.testing.assert_array_equal(cache.view(np.uint16), want.view(np.uint16), err_msg=each_isa)


def q8_cache(x: np.ndarray) -> np.ndarray:
    """(n_head, n_ctx, hd) floats -> a Q8_0 cache through kv_store (uint8 (n_head, n_ctx, hd/32·34))."""
    n_head, n_ctx, hd = x.shape
    cache = np.zeros((n_head, n_ctx, hd // 32 * 34), np.uint8)
    K.kv_store(cache, np.ascontiguousarray(x.transpose(1, 0, 2)), 0)
    return cache


def test_kv_store_q8_0_quantizes_rows_as_activations(each_isa: str) -> None:
    x = (np.random.default_rng(12).standard_normal((3, 10, 64)) * 5).astype(np.float32)
    cache = np.full((3, 12, 68), 0xAB, np.uint8)
    K.kv_store(cache, np.ascontiguousarray(x.transpose(1, 0, 2)), 2)
    rows = K.quantize(int(Q8_0), x.reshape(-1, 64)).reshape(3, 10, 68)
    np.testing.assert_array_equal(cache[:, 2:], rows, err_msg=each_isa)
    assert (cache[:, :2] == 0xAB).all()


@pytest.mark.parametrize(("hd", "window"), [(96, 0), (64, 5), (160, 0)])
def test_attention_q8_0_cache(each_isa: str, hd: int, window: int) -> None:
    """Against float64 softmax attention over the dequantized cache with q rounded to Q8_0 as the
    kernel does: what is left is float32 rounding."""
    rng = np.random.default_rng(hd + window)
    m, n_head, n_kv, n_ctx, pos0 = 3, 4, 2, 40, 20
    q = rng.standard_normal((m, n_head, hd)).astype(np.float32)
    kc = q8_cache(rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32))
    vc = q8_cache(rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32))
    got = K.attention(q, kc, vc, pos0, 0.125, window)

    def dequantized(cache: np.ndarray) -> np.ndarray:
        rows = K.dequantize(int(Q8_0), cache.reshape(-1, cache.shape[-1]), hd)
        return rows.reshape(n_kv, n_ctx, hd).astype(np.float64)

    kd, vd = dequantized(kc), dequantized(vc)
    q8 = K.dequantize(int(Q8_0), K.quantize(int(Q8_0), q.reshape(-1, hd)), hd).reshape(q.shape)
    want = np.empty_like(got, dtype=np.float64)
    for i in range(m):
        p = pos0 + i
        lo = max(0, p - window + 1) if window else 0
        for h in range(n_head):
            s = kd[h // 2, lo : p + 1] @ q8[i, h].astype(np.float64) * 0.125
            w = np.exp(s - s.max())
            want[i, h] = w @ vd[h // 2, lo : p + 1] / w.sum()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(vd).max(), err_msg=each_isa)


@pytest.mark.parametrize("kv", ["f16", "q8_0"])
@pytest.mark.parametrize("window", [0, 5])
def test_attention_spans_is_a_call_per_sequence(each_isa: str, kv: str, window: int) -> None:
    """The server's batched call (several sequences, each its own cache, position and rows) stores
    and attends exactly as kv_store + attention per sequence: bit for bit, caches included."""
    rng = np.random.default_rng(_seed((kv, window)))
    n_head, n_kv, hd = 4, 2, 64
    spans = [(1, 30, 40), (3, 7, 12), (1, 0, 9), (2, 11, 13)]  # (rows, pos0, n_ctx)
    m = sum(r for r, _, _ in spans)
    q = rng.standard_normal((m, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((m, n_kv, hd)).astype(np.float32)
    v = rng.standard_normal((m, n_kv, hd)).astype(np.float32)

    def caches() -> list[np.ndarray]:
        out = []
        for _, _, n_ctx in spans:
            x = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32)
            out.append(q8_cache(x) if kv == "q8_0" else x.astype(np.float16))
        return out

    kcs, vcs = caches(), caches()
    kcs_alone, vcs_alone = [c.copy() for c in kcs], [c.copy() for c in vcs]
    bounds = np.cumsum([0] + [r for r, _, _ in spans]).tolist()
    pos0s = [p for _, p, _ in spans]
    got = K.attention_spans(q, k, v, kcs, vcs, bounds, pos0s, 0.125, window)
    for i, (r0, r1) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        K.kv_store(kcs_alone[i], k[r0:r1], pos0s[i])
        K.kv_store(vcs_alone[i], v[r0:r1], pos0s[i])
        alone = K.attention(q[r0:r1], kcs_alone[i], vcs_alone[i], pos0s[i], 0.125, window)
        np.testing.assert_array_equal(got[r0:r1], alone, err_msg=f"{each_isa} span {i}")
        np.testing.assert_array_equal(kcs[i], kcs_alone[i])
        np.testing.assert_array_equal(vcs[i], vcs_alone[i])


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"bounds": [0, 1, 1, 3]}, ValueError, "span 1 has no rows"),
        ({"bounds": [0, 1, 2]}, ValueError, r"n \+ 1 bounds"),
        ({"bounds": [0, 1, 2, 4]}, ValueError, "from 0 to the number of rows"),
        ({"pos0s": [0, 9, 0]}, ValueError, "span 1: 1 queries at position 9"),
        ({"pos0s": [0, -1, 0]}, ValueError, "span 1"),
        ({"mixed": True}, TypeError, "k_cache must have dtype float16"),
        ({"short_ctx": True}, ValueError, "v_cache must have shape"),
    ],
)
def test_attention_spans_rejects_bad_spans(change: dict, error: type, match: str) -> None:
    q = np.zeros((3, 2, 32), np.float32)
    k = np.zeros((3, 1, 32), np.float32)
    kcs = [np.zeros((1, 9, 32), np.float16) for _ in range(3)]
    vcs = [np.zeros((1, 9, 32), np.float16) for _ in range(3)]
    if change.get("mixed"):
        kcs[2] = np.zeros((1, 9, 34), np.uint8)
    if change.get("short_ctx"):
        vcs[1] = np.zeros((1, 8, 32), np.float16)
    bounds = change.get("bounds", [0, 1, 2, 3])
    pos0s = change.get("pos0s", [0, 4, 8])
    with pytest.raises(error, match=match):
        K.attention_spans(q, k, k, kcs, vcs, bounds, pos0s, 1.0)


def gelu_ref(x: np.ndarray) -> np.ndarray:
    """ggml's GELU: tanh approximation evaluated at f16(x) and rounded to f16, for |x| < 10;
    0 below -10 and identity above 10."""
    with np.errstate(over="ignore", invalid="ignore"):  # |x| >= 10 is not taken from the table
        x16 = x.astype(np.float16).astype(np.float64)
        g = 0.5 * x16 * (1 + np.tanh(np.sqrt(2 / np.pi) * x16 * (1 + 0.044715 * x16 * x16)))
        y = g.astype(np.float16).astype(np.float64)
    return np.where(x <= -10, 0.0, np.where(x >= 10, x.astype(np.float64), y))


def f16_ulp(v: np.ndarray) -> np.ndarray:
    small = np.minimum(np.abs(v), 60000.0).astype(np.float16)  # only |x| < 10 uses this
    return np.spacing(small).astype(np.float64)


def test_gelu() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate(
        [
            rng.uniform(-12, 12, 5000),
            rng.standard_normal(2000) * 1e-3,
            [-10.0, 10.0, -9.999, 9.999, 0.0, -0.0, 1e-8, -5.5, 65504.0, -1e30, 1e30],
        ]
    ).astype(np.float32)
    want = gelu_ref(x)
    got = K.gelu(x)
    assert got.shape == x.shape and got.dtype == np.float32
    # The table is built in float32 like ggml's: 1 + tanh(..) loses up to ~3u absolute (it cancels
    # for x < 0), so g is off by 0.5·|x|·3u + a few u of g, then the f16 rounding adds an ulp.
    x16 = np.minimum(np.abs(x), 10).astype(np.float16).astype(np.float64)
    tol = np.where(np.abs(x) < 10, f16_ulp(want) + 0.5 * x16 * 8 * U + 8 * U * np.abs(want), 0.0)
    assert_within(got, want, tol, "gelu")


def test_gelu_keeps_shape() -> None:
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(K.gelu(x), K.gelu(x.reshape(-1)).reshape(2, 3, 4))


# ---- attention ---------------------------------------------------------------------------------


def attention_ref(
    q: np.ndarray, kc: np.ndarray, vc: np.ndarray, pos0: int, scale: float, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """(output, tolerance). Query i at position p = pos0 + i, head h, attends to keys
    [max(0, p - window + 1), p] of KV head h // (n_head / n_kv_head). As ggml: q is rounded to f16
    before Q·K (applied here too), and the softmax weights are rounded to f16 before ·V (in the
    tolerance, since which way a weight rounds depends on its float32 value)."""
    m, n_head, hd = q.shape
    n_kv = kc.shape[0]
    group = n_head // n_kv
    q16 = q.astype(np.float16).astype(np.float64)
    k64, v64 = kc.astype(np.float64), vc.astype(np.float64)
    out = np.zeros(q.shape)
    tol = np.zeros(q.shape)
    for i in range(m):
        p = pos0 + i
        lo = max(0, p - window + 1) if window > 0 else 0
        for h in range(n_head):
            keys, vals = k64[h // group, lo : p + 1], v64[h // group, lo : p + 1]
            s = keys @ q16[i, h] * scale
            w = np.exp(s - s.max())
            w /= w.sum()
            out[i, h] = w @ vals
            # Scores: an f16·f16 dot in float32 over hd terms, then ·scale.
            ds = (hd + 2) * U * abs(scale) * (np.abs(keys) @ np.abs(q16[i, h])).max()
            # Weights: relative error rho before the f16 rounding (exp, the sum, 1/sum, ·).
            rho = 2 * (2 * ds + U * (np.abs(s - s.max()).max() + 2)) + 4 * U
            n = len(w)
            rel = 2.0**-11 + rho + (n + 2) * U * (1 + 2.0**-10)  # + the float32 ·V sum
            tol[i, h] = (w * rel + 2.0**-25) @ np.abs(vals) + 1e-37
    return out, tol


ATTENTION_CASES = {
    # name: (m, n_head, n_kv_head, hd, n_ctx, pos0, window)
    "prefill-causal-mha": (6, 4, 4, 64, 6, 0, 0),
    "prefill-gqa": (9, 8, 2, 32, 16, 0, 0),
    "mqa-continued": (3, 6, 1, 48, 40, 20, 0),
    "decode-gqa": (1, 8, 2, 96, 300, 299, 0),
    "sliding-window": (12, 4, 2, 64, 64, 30, 5),
    "window-1": (4, 2, 1, 16, 8, 2, 1),
    "window-larger-than-context": (5, 4, 2, 32, 10, 3, 100),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention(case: str) -> None:
    m, n_head, n_kv, hd, n_ctx, pos0, window = ATTENTION_CASES[case]
    rng = np.random.default_rng(_seed(case))
    q = (rng.standard_normal((m, n_head, hd)) * 1.5).astype(np.float32)
    kc = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float16)
    vc = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float16)
    # Unwritten cache slots beyond the last query must never be read: poison them.
    kc[:, pos0 + m :] = np.float16(np.nan)
    vc[:, pos0 + m :] = np.float16(np.nan)
    scale = 1 / np.sqrt(hd)
    want, tol = attention_ref(q, kc, vc, pos0, scale, window)
    got = K.attention(q, kc, vc, pos0, scale, window)
    assert got.shape == q.shape and got.dtype == np.float32
    assert_within(got, want, tol, f"attention {case}")


def test_attention_window_hides_old_keys() -> None:
    """With window w, changing a key older than w positions must not change the output."""
    rng = np.random.default_rng(9)
    q = rng.standard_normal((1, 2, 16)).astype(np.float32)
    kc = rng.standard_normal((1, 10, 16)).astype(np.float16)
    vc = rng.standard_normal((1, 10, 16)).astype(np.float16)
    before = K.attention(q, kc, vc, 9, 0.25, 3)
    kc[:, :7] = np.float16(np.nan)
    vc[:, :7] = np.float16(np.nan)
    np.testing.assert_array_equal(K.attention(q, kc, vc, 9, 0.25, 3), before)


# ---- ONNX numerics: rotary tables and the f32 KV cache -----------------------------------------


@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize(("head_dim", "n_rot"), [(32, 32), (64, 48), (96, 96)])
def test_rope_cache_applies_the_tables(neox: bool, head_dim: int, n_rot: int) -> None:
    """rope_cache rotates pair i of a row at position p by the tables' (cos[p, i], sin[p, i]):
    x0·c - x1·s and x0·s + x1·c, each one product and one sum in float32 (onnxruntime's rotary
    kernel's arithmetic), so float64 of the same terms is within one rounding of each step."""
    rng = np.random.default_rng(_seed((neox, head_dim, n_rot)))
    n_pos, half = 50, n_rot // 2
    theta = rng.uniform(-40, 40, (n_pos, half))
    cos, sin = (np.cos(theta) * 1.1).astype(np.float32), (np.sin(theta) * 1.1).astype(np.float32)
    pos = np.array([0, 3, 49, 17, 17], np.int32)
    x = rng.standard_normal((len(pos), 3, head_dim)).astype(np.float32)
    got = x.copy()
    assert K.rope_cache(got, pos, cos, sin, n_rot, neox) is None  # in place
    i = np.arange(half)
    a, b = (i, i + half) if neox else (2 * i, 2 * i + 1)
    x64 = x.astype(np.float64)
    c, s = cos[pos][:, None, :].astype(np.float64), sin[pos][:, None, :].astype(np.float64)
    want = x64.copy()
    want[:, :, a] = x64[:, :, a] * c - x64[:, :, b] * s
    want[:, :, b] = x64[:, :, a] * s + x64[:, :, b] * c
    tol = np.zeros(x.shape)
    mag = 3 * U * (np.abs(x64[:, :, a] * c) + np.abs(x64[:, :, b] * s) + 1e-30)
    tol[:, :, a], tol[:, :, b] = mag, 3 * U * (np.abs(x64[:, :, a] * s) + np.abs(x64[:, :, b] * c))
    assert_within(got, want, tol + 1e-37, f"rope_cache neox={neox} {head_dim}/{n_rot}")
    np.testing.assert_array_equal(got[:, :, n_rot:], x[:, :, n_rot:])  # untouched tail


def test_rope_cache_rejects_positions_outside_the_tables() -> None:
    tables = np.ones((8, 4), np.float32)
    x = np.zeros((1, 1, 8), np.float32)
    with pytest.raises(ValueError, match=r"position 8 is outside the rotary tables \[0, 8\)"):
        K.rope_cache(x, np.array([8], np.int32), tables, tables, 8, True)
    with pytest.raises(ValueError, match="cos"):
        K.rope_cache(x, np.array([0], np.int32), np.ones((8, 3), np.float32), tables, 8, True)


def attention_f32_ref(
    q: np.ndarray, kt: np.ndarray, vc: np.ndarray, pos0: int, scale: float, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """(output, tolerance) of float32 attention (onnxruntime's GroupQueryAttention on an f32
    cache) in float64; kt holds the keys transposed (n_kv, hd, n_ctx)."""
    m, n_head, hd = q.shape
    n_kv = kt.shape[0]
    group = n_head // n_kv
    out, tol = np.zeros(q.shape), np.zeros(q.shape)
    q64 = q.astype(np.float64)
    for i in range(m):
        p = pos0 + i
        lo = max(0, p - window + 1) if window > 0 else 0
        for h in range(n_head):
            keys = kt[h // group, :, lo : p + 1].T.astype(np.float64)
            vals = vc[h // group, lo : p + 1].astype(np.float64)
            s = keys @ q64[i, h] * scale
            w = np.exp(s - s.max())
            w /= w.sum()
            out[i, h] = w @ vals
            # scores: hd float32 products and sums; then exp, the sum over keys, 1/sum, ·V
            ds = (hd + 2) * U * abs(scale) * (np.abs(keys) @ np.abs(q64[i, h])).max()
            rho = 2 * (2 * ds + U * (np.abs(s - s.max()).max() + 2)) + 4 * U + (len(w) + 2) * U
            tol[i, h] = (w * (rho + (len(w) + 2) * U)) @ np.abs(vals) + 1e-37
    return out, tol


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_f32(case: str) -> None:
    m, n_head, n_kv, hd, n_ctx, pos0, window = ATTENTION_CASES[case]
    rng = np.random.default_rng(_seed(("f32", case)))
    q = (rng.standard_normal((m, n_head, hd)) * 1.5).astype(np.float32)
    kt = rng.standard_normal((n_kv, hd, n_ctx)).astype(np.float32)
    vc = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32)
    kt[:, :, pos0 + m :] = np.nan  # slots past the last query are never read
    vc[:, pos0 + m :] = np.nan
    scale = 1 / np.sqrt(hd)
    want, tol = attention_f32_ref(q, kt, vc, pos0, scale, window)
    got = K.attention_f32(q, kt, vc, pos0, scale, window)
    assert got.shape == q.shape and got.dtype == np.float32
    assert_within(got, want, tol, f"attention_f32 {case}")


def test_attention_f32_matches_the_f16_kernel_on_f16_values() -> None:
    """Same keys and values in both caches (f16-exact): the f32 kernel differs from the f16 one
    only by ggml's f16 roundings of q and the softmax weights."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((4, 4, 32)).astype(np.float16).astype(np.float32)
    kc = rng.standard_normal((2, 16, 32)).astype(np.float16)
    vc = rng.standard_normal((2, 16, 32)).astype(np.float16)
    f16 = K.attention(q, kc, vc, 5, 0.2, 0)
    f32 = K.attention_f32(
        q,
        np.ascontiguousarray(kc.astype(np.float32).transpose(0, 2, 1)),
        vc.astype(np.float32),
        5,
        0.2,
        0,
    )
    np.testing.assert_allclose(f32, f16, atol=2e-3)
    with pytest.raises(ValueError, match="k_cache_t"):
        K.attention_f32(q, kc.astype(np.float32), vc.astype(np.float32), 5, 0.2, 0)


def test_gelu_tanh_is_the_float32_formula() -> None:
    """onnxruntime's Gelu(approximate="tanh") / FastGelu in float32, without ggml's f16 table."""
    x = np.linspace(-12, 12, 20001, dtype=np.float32)
    x64 = x.astype(np.float64)
    want = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    got = K.gelu_tanh(x)
    assert got.shape == x.shape and got.dtype == np.float32
    assert_within(got, want, 16 * U * (np.abs(x64) + np.abs(want)) + 1e-37, "gelu_tanh")
    assert np.abs(got - K.gelu(x)).max() > 1e-4  # not the table

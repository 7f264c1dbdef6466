"""Every SIMD path this CPU runs (avx2, avx512, neon levels) against the scalar spec in cpp/dot_ref.cpp.

Two kinds of check:
- Activation converters must give the scalar's bytes. They are observed through one-hot weight
  rows, where each output is a single product (no summation), so the outputs must be equal.
- Dot products differ from the scalar only in float summation order (integer block sums are
  exact), so |y_isa - y_scalar| <= 1e-5 · Σ|terms|, with Σ|terms| bounded from the dequantized
  weights and the activations' quantization error.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from phirt import _kernels as K

ISAS = [isa for isa in K.available_isas() if isa != "scalar"]
pytestmark = pytest.mark.skipif(not ISAS, reason="no SIMD path on this CPU")

# Byte offsets of the fp16 scale fields per block: d-like fields multiply the quants, min-like
# fields are the separate offset term.
SCALE_FIELDS = {
    "Q4_0": ([0], []),
    "Q4_1": ([0], [2]),
    "Q5_0": ([0], []),
    "Q5_1": ([0], [2]),
    "Q8_0": ([0], []),
    "Q4_K": ([0], [2]),
    "Q5_K": ([0], [2]),
    "Q6_K": ([208], []),
    "F16": ([], []),
    "BF16": ([], []),
    "F32": ([], []),
}
# name -> (GGML type id, elements and bytes per block, d-like offsets, min-like offsets)
TYPES = {
    name: (int(T[name]), *GGML_QUANT_SIZES[T[name]], d_off, m_off)
    for name, (d_off, m_off) in SCALE_FIELDS.items()
}
ACT_BLOCK = {"Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "F16": 0, "BF16": 0, "F32": 0}  # others 32
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _restore_isa():
    previous = K.isa()
    yield
    K.set_isa(previous)


def matmul_on(isa: str, w: K.QMatrix, x: np.ndarray) -> np.ndarray:
    K.set_isa(isa)
    return K.matmul(w, x)


# ---------------------------------------------------------------- inputs


def f16_bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float16).view(np.uint16)


def x_row(case: str, k: int, rng: np.random.Generator) -> np.ndarray:
    """One activation row; every case keeps results finite."""
    if case == "random":
        return rng.standard_normal(k).astype(np.float32)
    if case == "constant":
        return np.full(k, 0.37, np.float32)
    if case == "zero":
        return np.zeros(k, np.float32)
    # extreme: per-block magnitudes from 1e-20 to 10, spikes, denormals, round-half ties
    kp = -(-k // 32) * 32  # whole blocks of 32, cut to k at the end
    x = rng.standard_normal(kp) * block_magnitudes(kp, -20, 1, rng)
    x[rng.integers(0, kp, size=kp // 64)] *= 1e2
    blocks = x.reshape(-1, 32)
    blocks[1::7] = rng.integers(-126, 126, size=(len(blocks[1::7]), 32)) + 0.5  # x·id on a tie
    blocks[1::7, 3] = -127.0  # amax 127 (id = 1) and a negative signed max (iscale = 1)
    blocks[2::7] = rng.standard_normal((len(blocks[2::7]), 32)) * 1e-40  # id overflows to inf
    return x[:k].astype(np.float32)


def block_magnitudes(k: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """k factors, constant over blocks of 32, log-uniform in [10^lo, 10^hi)."""
    return (10.0 ** rng.uniform(lo, hi, size=-(-k // 32))).repeat(32)[:k]


X_CASES = ["random", "constant", "zero", "extreme"]


def x_rows(m: int, k: int, rng: np.random.Generator, offset: int = 0) -> np.ndarray:
    return np.stack([x_row(X_CASES[(i + offset) % len(X_CASES)], k, rng) for i in range(m)])


def random_blocks(name: str, n: int, k: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Rows of random block bytes (every bit pattern of quants and sub-scales) with finite fp16
    scales of magnitude about `scale`."""
    _, bs, nbytes, d_off, m_off = TYPES[name]
    blocks = rng.integers(0, 256, size=(n, k // bs, nbytes), dtype=np.uint8)
    for off in d_off + m_off:
        vals = (
            rng.uniform(0.5, 1.5, size=(n, k // bs))
            * scale
            * rng.choice([-1, 1], size=(n, k // bs))
        )
        blocks[:, :, off : off + 2] = f16_bits(vals).view(np.uint8).reshape(n, k // bs, 2)
    return blocks.reshape(n, -1)


def weight_rows(name: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n weight rows cycling through: random, constant, zero, extreme magnitudes (all from the
    reference quantizer) and raw random block bytes (every bit pattern, fp16 scales from
    subnormal to near the fp16 maximum)."""
    type_id, bs, *_ = TYPES[name]
    rows = []
    for r in range(n):
        case = r % 5
        floats = [
            rng.standard_normal(k),
            np.full(k, -0.81),
            np.zeros(k),
            rng.standard_normal(k) * block_magnitudes(k, -6, 2, rng),
            rng.standard_normal(k) * 1e-3,
        ][case]
        if name == "F32":
            rows.append(np.asarray(floats, np.float32).view(np.uint8))
        elif bs > 1 and case == 4:
            rows.append(random_blocks(name, 1, k, rng, [6e-8, 1e-4, 3.0, 4e4][r % 4])[0])
        else:
            rows.append(K.quantize(type_id, np.asarray(floats, np.float32)[None, :])[0])
    return np.ascontiguousarray(np.stack(rows))


def abs_term_bound(name: str, data: np.ndarray, k: int, x: np.ndarray) -> np.ndarray:
    """Σ_j |w_j|·|x_j| over the terms both paths add, (m, n): scale and min parts of each weight
    taken separately (they cancel in w but not in the sums), activations widened by their
    quantization step."""
    type_id, bs, nbytes, d_off, m_off = TYPES[name]
    parts = [data]
    if m_off:  # scale part (min fields zeroed) and min part (scale fields zeroed)
        parts = []
        for zero in (m_off, d_off):
            p = data.reshape(len(data), -1, nbytes).copy()
            for off in zero:
                p[:, :, off : off + 2] = 0
            parts.append(p.reshape(len(data), -1))
    w_abs = sum(np.abs(K.dequantize(type_id, p, k).astype(np.float64)) for p in parts)
    ab = ACT_BLOCK.get(name, 32)
    xa = np.abs(x.astype(np.float64))
    if ab:
        amax = xa.reshape(len(x), -1, ab).max(axis=2, keepdims=True)
        xa = (xa.reshape(len(x), -1, ab) + amax / 127.0).reshape(len(x), k)
    else:
        xa *= 1 + 2.0**-7
    return xa @ w_abs.T


# ---------------------------------------------------------------- dot products, float-order bound


# k = 1184 (37 blocks of 32) and 1203 (float types) exercise the tails after whole vectors and
# steps; K-quants need k % 256 == 0.
SHAPES = [
    (name, k, m)
    for name in TYPES
    for k, m in [(256, 1), (768, 7), (1184, 3), (1203, 2), (8192, 64)]
    if k % TYPES[name][1] == 0
]


@pytest.mark.parametrize("name,k,m", SHAPES)
@pytest.mark.parametrize("isa", ISAS)
def test_matmul_matches_scalar(isa: str, name: str, k: int, m: int) -> None:
    rng = np.random.default_rng(k + m + len(name))
    n = 37
    data = weight_rows(name, n, k, rng)
    w = K.QMatrix(data, TYPES[name][0], n, k)
    for offset in range(len(X_CASES) if m == 1 else 1):  # m = 1 (GEMV): every case in turn
        x = x_rows(m, k, rng, offset)
        ref = matmul_on("scalar", w, x)
        got = matmul_on(isa, w, x)
        assert np.isfinite(ref).all()
        bound = RTOL * abs_term_bound(name, data, k, x) + 1e-35
        err = np.abs(got.astype(np.float64) - ref)
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        assert (err <= bound).all(), (
            f"{name} {isa} at {worst}: {got[worst]} vs {ref[worst]} (bound {bound[worst]:.3g})"
        )


@pytest.mark.parametrize("name", list(TYPES))
def test_gemv_and_gemm_agree_per_row(name: str) -> None:
    """Row i of a batch (packed GEMM where the ISA has one) equals a single-row call (GEMV) up to
    float summation order: both use the same activation blocks and exact integer block sums."""
    rng = np.random.default_rng(5)
    k, n = 512, 41
    data = weight_rows(name, n, k, rng)
    w = K.QMatrix(data, TYPES[name][0], n, k)
    x = x_rows(9, k, rng)
    bound = RTOL * abs_term_bound(name, data, k, x) + 1e-35
    for isa in ["scalar", *ISAS]:
        K.set_isa(isa)
        batch = K.matmul(w, x).astype(np.float64)
        rows = np.concatenate([K.matmul(w, x[i : i + 1]) for i in range(len(x))])
        err = np.abs(batch - rows)
        assert (err <= bound).all(), f"{name} {isa}: worst {err.max():.3g}"


# ---------------------------------------------------------------- converters, bit-exact


def special_rows(k: int, rng: np.random.Generator) -> np.ndarray:
    """Activation rows that stress the converters: ties, NaN payloads, infinities, denormals,
    scales that overflow, signed zeros."""
    rows = x_rows(8, k, rng)
    bits = rows.view(np.uint32)
    bits[4, 5::37] = 0x7F800001  # signalling NaN
    bits[4, 9::41] = 0xFFC12345  # negative quiet NaN with a payload
    rows[5, ::53] = np.inf
    rows[5, 7::59] = -np.inf
    rows[6] = rng.standard_normal(k) * 1e30  # q8 scales overflow fp16
    rows[6, ::3] = -0.0
    rows[7] = rng.standard_normal(k).astype(np.float32) * np.float32(2.0**-140)  # denormals
    return rows


def one_hot_blocks(
    name: str, k: int, elem_byte, scale_fields: dict[int, float], extra=None
) -> np.ndarray:
    """k weight rows; row r has quant 1 at element r (via elem_byte(r) -> (byte, value)) in its
    block, whose fp16 fields are scale_fields; every other block is all zero."""
    _, bs, nbytes, *_ = TYPES[name]
    data = np.zeros((k, k // bs, nbytes), np.uint8)
    for r in range(k):
        blk = data[r, r // bs]
        for off, v in scale_fields.items():
            blk[off : off + 2] = f16_bits([v]).view(np.uint8)
        for byte, value in elem_byte(r % bs):
            blk[byte] |= value
    return data.reshape(k, -1)


def assert_same(isa: str, name: str, data: np.ndarray, k: int, x: np.ndarray) -> None:
    w = K.QMatrix(np.ascontiguousarray(data), TYPES[name][0], len(data), k)
    np.testing.assert_array_equal(matmul_on(isa, w, x), matmul_on("scalar", w, x))


def nibble(j: int):  # Q4_0/Q4_1 element j: low nibble of qs[j] or high nibble of qs[j - 16]
    return [(j, 1)] if j < 16 else [(j - 16, 0x10)]


@pytest.mark.parametrize("isa", ISAS)
def test_to_q8_0_bytes(isa: str) -> None:
    k = 512
    x = special_rows(k, np.random.default_rng(1))
    data = one_hot_blocks("Q8_0", k, lambda j: [(2 + j, 1)], {0: 1.0})  # y[r] = d_x · q_x[r]
    assert_same(isa, "Q8_0", data, k, x)


@pytest.mark.parametrize("isa", ISAS)
def test_to_q8_1_bytes(isa: str) -> None:
    k = 512
    x = special_rows(k, np.random.default_rng(2))
    quants = one_hot_blocks("Q4_1", k, lambda j: [(4 + b, v) for b, v in nibble(j)], {0: 1.0})
    # y = s of one block: d = 0, m = 1 in that block only
    sums = np.zeros((k // 32, k // 32, 20), np.uint8)
    for b in range(k // 32):
        sums[b, b, 2:4] = f16_bits([1.0]).view(np.uint8)
    assert_same(isa, "Q4_1", np.concatenate([quants, sums.reshape(k // 32, -1)]), k, x)


def q4_k_sub(s: int, value: int, is_min: bool) -> list[tuple[int, int]]:
    """(byte, bits) in a Q4_K block setting sub-block s's 6-bit scale (or min) to value < 16."""
    if s < 4:
        return [(4 + s + (4 if is_min else 0), value)]
    return [(4 + s + 4, value << 4 if is_min else value)]


@pytest.mark.parametrize("isa", ISAS)
def test_to_q8_K_bytes(isa: str) -> None:
    k = 512
    x = special_rows(k, np.random.default_rng(3))

    def quant(j: int):  # element j of a superblock: pair j // 64, low/high nibble by (j % 64) // 32
        pair, pos = divmod(j, 64)
        byte = 16 + 32 * pair + pos % 32
        return [(byte, 1 if pos < 32 else 0x10)] + q4_k_sub(j // 32, 1, False)

    quants = one_hot_blocks("Q4_K", k, quant, {0: 1.0})  # y[r] = d_x · q_x[r]
    mins = np.zeros((k // 32, k // 256, 144), np.uint8)  # y = -d_x · Σ of one sub-block's quants
    for s in range(k // 32):
        blk = mins[s, s // 8]
        blk[2:4] = f16_bits([1.0]).view(np.uint8)
        for byte, bits in q4_k_sub(s % 8, 1, True):
            blk[byte] |= bits
    assert_same(isa, "Q4_K", np.concatenate([quants, mins.reshape(k // 32, -1)]), k, x)


@pytest.mark.parametrize("name", ["F16", "BF16"])
@pytest.mark.parametrize("isa", ISAS)
def test_to_f16_bf16_bytes(isa: str, name: str) -> None:
    k = 512
    rng = np.random.default_rng(4)
    x = special_rows(k, rng)
    x[1] = rng.standard_normal(k) * 7e4  # beyond fp16's range
    x[2] = (rng.standard_normal(k) * 2.0**-20).astype(np.float32)  # fp16 subnormals, ties
    eye = np.eye(k, dtype=np.float32)
    data = (
        eye.astype(np.float16).view(np.uint8)
        if name == "F16"
        else (eye.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    )
    assert_same(isa, name, data.reshape(k, -1), k, x)


# ---------------------------------------------------------------- attention (to_f16, f16_f16, axpy_f16)


def attention_inputs(rng: np.random.Generator, integer: bool, hd: int):
    m, n_head, n_kv, n_ctx = 5, 4, 2, 40
    if integer:  # small multiples of 1/4: every product and sum is exact in float
        q = rng.integers(-8, 9, size=(m, n_head, hd)).astype(np.float32) / 4
        kc = (rng.integers(-8, 9, size=(n_kv, n_ctx, hd)) / 4).astype(np.float16)
        vc = (rng.integers(-8, 9, size=(n_kv, n_ctx, hd)) / 4).astype(np.float16)
    else:
        q = rng.standard_normal((m, n_head, hd)).astype(np.float32)
        kc = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float16)
        vc = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float16)
    return q, kc, vc


@pytest.mark.parametrize("window,hd", [(0, 96), (16, 80)])
@pytest.mark.parametrize("isa", ISAS)
def test_attention_matches_scalar(isa: str, window: int, hd: int) -> None:
    rng = np.random.default_rng(6)
    scale = 1 / np.sqrt(hd)
    # exact scores: softmax inputs, f16 weights and the V sums are then identical bit for bit
    q, kc, vc = attention_inputs(rng, integer=True, hd=hd)
    K.set_isa("scalar")
    ref = K.attention(q, kc, vc, 30, 1 / 8, window)
    K.set_isa(isa)
    np.testing.assert_array_equal(K.attention(q, kc, vc, 30, 1 / 8, window), ref)
    # random: scores differ in the last bits, which may move a softmax weight by one fp16 step
    q, kc, vc = attention_inputs(rng, integer=False, hd=hd)
    K.set_isa("scalar")
    ref = K.attention(q, kc, vc, 30, scale, window)
    K.set_isa(isa)
    got = K.attention(q, kc, vc, 30, scale, window)
    vmax = np.abs(vc.astype(np.float32)).max()
    np.testing.assert_allclose(got, ref, rtol=0, atol=2.0**-10 * vmax)


# ---------------------------------------------------------------- x86 paths: selectable or skipped

# The CPU features each x86 path needs (dispatch.cpp's checks).
X86_PATHS = {
    "avx2": ("avx2", "fma", "f16c"),
    "avxvnni": ("avx2", "fma", "f16c", "avxvnni"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni", "f16c"),
}


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="not an x86-64 CPU"
)
@pytest.mark.parametrize("name", list(X86_PATHS))
def test_x86_path_selectable_where_the_cpu_has_it(name: str) -> None:
    missing = [f for f in X86_PATHS[name] if not K.cpu_features()[f]]
    try:
        K.set_isa(name)
    except ValueError as e:
        assert name not in K.available_isas()
        if "not compiled" in str(e):
            pytest.skip(f"the {name} path is not compiled into this build: {e}")
        assert missing, f"{name}: rejected although the CPU has {X86_PATHS[name]}: {e}"
        pytest.skip(f"this CPU lacks {', '.join(missing)}: the {name} path cannot run here")
    assert not missing, f"{name} was selected on a CPU without {missing}"
    assert K.isa() == name and name in K.available_isas()

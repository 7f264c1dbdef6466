"""Every phirt._kernels entry point answers bad input with TypeError/ValueError, never a crash:
property tests (hypothesis) over odd shapes, wrong dtypes, non-contiguous and 0-size arrays,
short buffers, bad type ids and NaN/Inf data. Inputs that once crashed the process run in a
subprocess, so a regression fails one test instead of ending the session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import phirt._kernels as K
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ggml_blocks import F16_FIELDS, WEIGHT_TYPES, random_blocks

T = GGMLQuantizationType

QUANTIZE_TYPES = WEIGHT_TYPES
MATMUL_TYPES = QUANTIZE_TYPES
BLOCK_TYPES = [t for t in QUANTIZE_TYPES if GGML_QUANT_SIZES[t][0] > 1]
# Type ids phirt does not read: gaps in GGML's numbering, types it has no kernels for, garbage.
BAD_TYPE_IDS = [-1, 4, 5, 10, 11, 16, 23, 28, 31, 1000, 2**31 - 1, -(2**31)]
WRONG_FLOAT_DTYPES = [np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]

# PHIRT_HYPOTHESIS_EXAMPLES raises the budget for a deeper local search.
PROPERTY = settings(
    max_examples=int(os.environ.get("PHIRT_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

any_float32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


def accepted_or_rejected(fn: Callable[[], Any]) -> Any:
    """Run fn: it may succeed or raise TypeError/ValueError; anything else fails the test."""
    try:
        return fn()
    except (TypeError, ValueError):
        return None


def rejected(fn: Callable[[], Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        fn()


def row_bytes(qtype: T, k: int) -> int:
    bs, ts = GGML_QUANT_SIZES[qtype]
    return k // bs * ts


def valid_matrix(qtype: T, n: int, k: int) -> K.QMatrix:
    """A valid n x k matrix: random blocks with scale 1/64 (no quantizer involved)."""
    rng = np.random.default_rng(0)
    if qtype in F16_FIELDS:
        data = random_blocks(qtype, n, k, rng, lambda _, nb: np.full(nb, 1 / 64))
    else:
        x = rng.standard_normal((n, k)).astype(np.float32)
        data = np.ascontiguousarray(gq.quantize(x, qtype)).view(np.uint8).reshape(n, -1)
    return K.QMatrix(data, int(qtype), n, k)


def non_contiguous(a: np.ndarray) -> np.ndarray:
    """Same shape and dtype as a, not C-contiguous."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else np.zeros(2, a.dtype)
    view = wide[..., ::2] if a.ndim else wide[::2]
    view[...] = a
    assert not view.flags.c_contiguous or view.size <= 1
    return view


# ---- quantize / dequantize -------------------------------------------------------------------------


@PROPERTY
@given(
    qtype=st.sampled_from(QUANTIZE_TYPES),
    rows=st.integers(0, 3),
    blocks=st.integers(0, 3),
    data=st.data(),
)
def test_quantize_any_floats_never_crashes(
    qtype: T, rows: int, blocks: int, data: st.DataObject
) -> None:
    k = blocks * GGML_QUANT_SIZES[qtype][0]
    x = data.draw(hnp.arrays(np.float32, (rows, k), elements=any_float32))
    out = accepted_or_rejected(lambda: K.quantize(int(qtype), x))
    if k > 0:
        assert out is not None, "a whole number of blocks must be accepted"
        assert out.shape == (rows, row_bytes(qtype, k)) and out.dtype == np.uint8


@PROPERTY
@given(
    qtype=st.sampled_from(BLOCK_TYPES),
    k=st.integers(1, 600),
    dtype=st.sampled_from([np.float32, *WRONG_FLOAT_DTYPES]),
    contiguous=st.booleans(),
)
def test_quantize_rejects_bad_input(qtype: T, k: int, dtype: type, contiguous: bool) -> None:
    x = np.ones((2, k), dtype)
    if not contiguous:
        x = non_contiguous(x)
    bs = GGML_QUANT_SIZES[qtype][0]
    if dtype is np.float32 and contiguous and k % bs == 0:
        assert K.quantize(int(qtype), x).shape == (2, row_bytes(qtype, k))
    else:
        rejected(lambda: K.quantize(int(qtype), x))


@pytest.mark.parametrize("type_id", [*BAD_TYPE_IDS, int(T.Q8_1), int(T.Q8_K)])
def test_bad_type_ids_rejected(type_id: int) -> None:
    x = np.ones((1, 256), np.float32)
    rejected(lambda: K.quantize(type_id, x))
    rejected(lambda: K.dequantize(type_id, np.zeros(292, np.uint8), 256))
    if type_id not in (int(T.Q8_1), int(T.Q8_K)):
        rejected(lambda: K.QMatrix(np.zeros(1 << 12, np.uint8), type_id, 1, 256))
        rejected(lambda: K.row_bytes(type_id, 256))


@PROPERTY
@given(
    qtype=st.sampled_from(QUANTIZE_TYPES),
    rows=st.integers(0, 3),
    blocks=st.integers(1, 3),
    data=st.data(),
)
def test_dequantize_any_bytes_never_crashes(
    qtype: T, rows: int, blocks: int, data: st.DataObject
) -> None:
    """Every bit pattern, including f16 scales that are Inf or NaN: output may be NaN, no crash."""
    k = blocks * GGML_QUANT_SIZES[qtype][0]
    raw = data.draw(hnp.arrays(np.uint8, (rows * row_bytes(qtype, k),)))
    out = K.dequantize(int(qtype), raw, k)
    assert out.shape == (rows, k) and out.dtype == np.float32


@PROPERTY
@given(
    qtype=st.sampled_from(QUANTIZE_TYPES),
    k=st.integers(-3, 600),
    extra=st.integers(-40, 40),
    dtype=st.sampled_from([np.uint8, np.int8, np.float32, np.uint16]),
    contiguous=st.booleans(),
)
def test_dequantize_rejects_bad_input(
    qtype: T, k: int, extra: int, dtype: type, contiguous: bool
) -> None:
    bs, ts = GGML_QUANT_SIZES[qtype]
    whole = k > 0 and k % bs == 0
    nbytes = max(0, 2 * (k // bs * ts if whole else 64) + extra)
    assume(nbytes % np.dtype(dtype).itemsize == 0)  # else no array of that dtype holds them
    raw = np.zeros(nbytes, np.uint8).view(dtype)
    if not contiguous:
        raw = non_contiguous(raw)
    ok = (
        whole
        and dtype is np.uint8
        and (contiguous or raw.size <= 1)
        and nbytes % (k // bs * ts) == 0
    )
    if ok:
        assert K.dequantize(int(qtype), raw, k).shape == (nbytes // (k // bs * ts), k)
    else:
        rejected(lambda: K.dequantize(int(qtype), raw, k))


# ---- QMatrix ---------------------------------------------------------------------------------------


@PROPERTY
@given(
    qtype=st.sampled_from(MATMUL_TYPES),
    n=st.integers(-2, 40),
    k=st.integers(-2, 600),
    missing=st.integers(-5, 40),
    contiguous=st.booleans(),
)
def test_qmatrix_validates_buffer(qtype: T, n: int, k: int, missing: int, contiguous: bool) -> None:
    bs = GGML_QUANT_SIZES[qtype][0]
    shape_ok = n > 0 and k > 0 and k % bs == 0
    need = n * row_bytes(qtype, k) if shape_ok else 64
    buf = np.zeros(max(0, need - missing), np.uint8)
    if not contiguous:
        buf = non_contiguous(buf)
    if shape_ok and missing <= 0 and (contiguous or buf.size <= 1):
        w = K.QMatrix(buf, int(qtype), n, k)
        assert (w.n, w.k, w.type) == (n, k, int(qtype))
    else:
        rejected(lambda: K.QMatrix(buf, int(qtype), n, k))


def test_qmatrix_accepts_any_buffer_kind() -> None:
    data = K.quantize(int(T.Q8_0), np.ones((3, 64), np.float32))
    for buf in (data, data.tobytes(), bytearray(data.tobytes()), memoryview(data.tobytes())):
        w = K.QMatrix(buf, int(T.Q8_0), 3, 64)
        rows = K.get_rows(w, np.arange(3, dtype=np.int32))
        np.testing.assert_array_equal(rows, K.dequantize(int(T.Q8_0), data, 64))
    rejected(lambda: K.QMatrix(42, int(T.Q8_0), 3, 64))  # type: ignore[arg-type]


# ---- matmul / get_rows -------------------------------------------------------------------------------


@PROPERTY
@given(
    qtype=st.sampled_from(MATMUL_TYPES),
    m=st.integers(0, 4),
    n=st.integers(1, 9),
    data=st.data(),
)
def test_matmul_nan_inf_activations_never_crash(
    qtype: T, m: int, n: int, data: st.DataObject
) -> None:
    k = 256
    x = data.draw(hnp.arrays(np.float32, (m, k), elements=any_float32))
    y = K.matmul(valid_matrix(qtype, n, k), x)
    assert y.shape == (m, n) and y.dtype == np.float32


@PROPERTY
@given(
    qtype=st.sampled_from(MATMUL_TYPES),
    x_shape=st.sampled_from([(2, 256), (2, 255), (2, 512), (256,), (1, 2, 256), (0, 256), (2, 0)]),
    x_dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int64]),
    x_contiguous=st.booleans(),
    out_kind=st.sampled_from(["none", "ok", "shape", "dtype", "readonly", "strided", "1d"]),
)
def test_matmul_rejects_bad_arguments(
    qtype: T,
    x_shape: tuple[int, ...],
    x_dtype: type,
    x_contiguous: bool,
    out_kind: str,
) -> None:
    w = valid_matrix(qtype, 5, 256)
    x = np.ones(x_shape, x_dtype)
    if not x_contiguous:
        x = non_contiguous(x)
    m = x_shape[0]
    out: np.ndarray | None = {
        "none": None,
        "ok": np.zeros((m, 5), np.float32),
        "shape": np.zeros((m, 6), np.float32),
        "dtype": np.zeros((m, 5), np.float64),
        "readonly": np.zeros((m, 5), np.float32),
        "strided": np.zeros((m, 10), np.float32)[:, ::2],
        "1d": np.zeros(m * 5, np.float32),
    }[out_kind]
    if out_kind == "readonly":
        assert out is not None
        out.flags.writeable = False
    x_ok = (
        x_shape in ((2, 256), (0, 256))
        and x_dtype is np.float32
        and (x_contiguous or x.flags.c_contiguous)
    )
    out_ok = out_kind in ("none", "ok") or (out_kind == "strided" and m == 0)
    if x_ok and out_ok:
        assert K.matmul(w, x, out=out).shape == (m, 5)
    else:
        rejected(lambda: K.matmul(w, x, out=out))


@PROPERTY
@given(
    qtype=st.sampled_from(MATMUL_TYPES),
    ids=st.lists(st.integers(-(2**31), 2**31 - 1) | st.integers(-2, 8), max_size=6),
    dtype=st.sampled_from([np.int32, np.int64, np.uint32, np.float32]),
    two_d=st.booleans(),
)
def test_get_rows_rejects_out_of_range_ids(
    qtype: T, ids: list[int], dtype: type, two_d: bool
) -> None:
    n = 7
    w = valid_matrix(qtype, n, 256)
    with np.errstate(over="ignore"):
        arr = np.array(ids, np.int64).astype(dtype)
    if two_d:
        arr = arr.reshape(1, -1)
    ok = dtype is np.int32 and not two_d and all(0 <= i < n for i in ids)
    if ok:
        assert K.get_rows(w, arr).shape == (len(ids), 256)
    else:
        rejected(lambda: K.get_rows(w, arr))


# ---- ops -----------------------------------------------------------------------------------------


@PROPERTY
@given(
    m=st.integers(0, 3),
    n_head=st.integers(0, 3),
    head_dim=st.integers(0, 20),
    n_rot=st.integers(-3, 24),
    pos_len_delta=st.integers(-1, 1),
    ff_len_delta=st.sampled_from([None, -1, 0, 1]),
    freq_base=st.sampled_from([10000.0, 0.0, -1.0, float("nan"), float("inf"), 1.0]),
    data=st.data(),
)
def test_rope_validates(
    m: int,
    n_head: int,
    head_dim: int,
    n_rot: int,
    pos_len_delta: int,
    ff_len_delta: int | None,
    freq_base: float,
    data: st.DataObject,
) -> None:
    x = data.draw(hnp.arrays(np.float32, (m, n_head, head_dim), elements=any_float32))
    pos = np.arange(max(0, m + pos_len_delta), dtype=np.int32)
    half = max(0, n_rot // 2)
    ff = None if ff_len_delta is None else np.ones(max(0, half + ff_len_delta), np.float32)
    ok = (
        0 < n_rot <= head_dim
        and n_rot % 2 == 0
        and len(pos) == m
        and (ff is None or len(ff) == half)
        and np.isfinite(freq_base)
        and freq_base > 0
    )
    if ok:
        assert K.rope(x, pos, n_rot, freq_base, True, ff) is None
    else:
        rejected(lambda: K.rope(x, pos, n_rot, freq_base, False, ff))


@pytest.mark.parametrize("n_rot", [0, -2, 3, 66, 2**40])
def test_rope_bad_n_rot(n_rot: int) -> None:
    x = np.ones((2, 1, 64), np.float32)
    rejected(lambda: K.rope(x, np.zeros(2, np.int32), n_rot, 10000.0, False))


def test_rope_needs_writable_contiguous_float32() -> None:
    pos = np.zeros(2, np.int32)
    ro = np.ones((2, 1, 8), np.float32)
    ro.flags.writeable = False
    rejected(lambda: K.rope(ro, pos, 8, 1e4, False))
    rejected(lambda: K.rope(non_contiguous(np.ones((2, 1, 8), np.float32)), pos, 8, 1e4, False))
    rejected(lambda: K.rope(np.ones((2, 1, 8)), pos, 8, 1e4, False))
    rejected(lambda: K.rope(np.ones((2, 8), np.float32), pos, 8, 1e4, False))
    rejected(lambda: K.rope(np.ones((2, 1, 8), np.float32), pos.astype(np.int64), 8, 1e4, False))


@PROPERTY
@given(
    shape=st.sampled_from([(0, 0), (0, 5), (3, 0), (1, 1), (2, 7), (4, 33)]),
    dtype=st.sampled_from([np.float32, np.float64, np.int32]),
    contiguous=st.booleans(),
    data=st.data(),
)
def test_elementwise_ops_never_crash(
    shape: tuple[int, int], dtype: type, contiguous: bool, data: st.DataObject
) -> None:
    with np.errstate(invalid="ignore"):  # NaN/Inf to int32
        x = data.draw(hnp.arrays(np.float32, shape, elements=any_float32)).astype(dtype)
    if not contiguous:
        x = non_contiguous(x)
    m, k = shape
    good = dtype is np.float32 and (contiguous or x.flags.c_contiguous)
    w = np.ones(k, np.float32)
    calls: dict[str, Callable[[], Any]] = {
        "rms_norm": lambda: K.rms_norm(x, w, 1e-6),
        "layer_norm": lambda: K.layer_norm(x, w, None, 1e-5),
        "softmax": lambda: K.softmax(x),
        "gelu": lambda: K.gelu(x),
        "silu_mul": lambda: K.silu_mul(x, x),
        "swiglu": lambda: K.swiglu(x),
    }
    for name, call in calls.items():
        if good and not (name == "swiglu" and k % 2):
            call()
        else:
            with pytest.raises((TypeError, ValueError)):
                call()
                raise AssertionError(f"{name} accepted {dtype.__name__} contiguous={contiguous}")


def test_op_shape_mismatches_rejected() -> None:
    x = np.ones((2, 8), np.float32)
    rejected(lambda: K.rms_norm(x, np.ones(7, np.float32), 1e-6))
    rejected(lambda: K.rms_norm(x, np.ones((1, 8), np.float32), 1e-6))
    rejected(lambda: K.rms_norm(x, np.ones(8, np.float32), 1e-6, out=np.ones((2, 7), np.float32)))
    rejected(lambda: K.rms_norm(x, np.ones(8, np.float64), 1e-6))
    rejected(lambda: K.rms_norm(np.ones(8, np.float32), np.ones(8, np.float32), 1e-6))
    rejected(lambda: K.layer_norm(x, np.ones(8, np.float32), np.ones(9, np.float32), 1e-5))
    rejected(lambda: K.layer_norm(x, None, np.ones(8, np.float64), 1e-5))
    rejected(lambda: K.silu_mul(x, np.ones((2, 9), np.float32)))
    rejected(lambda: K.silu_mul(x, np.ones((3, 8), np.float32)))
    rejected(lambda: K.swiglu(np.ones((2, 7), np.float32)))
    ro = np.ones((2, 8), np.float32)
    ro.flags.writeable = False
    rejected(lambda: K.softmax(ro))
    rejected(lambda: K.softmax(np.ones(8, np.float32)))
    rejected(lambda: K.gelu([1.0, 2.0]))  # type: ignore[arg-type]
    cache, kv = np.zeros((2, 6, 4), np.float16), np.ones((3, 2, 4), np.float32)
    rejected(lambda: K.kv_store(cache, kv, 4))  # positions 4..6 of 6
    rejected(lambda: K.kv_store(cache, kv, -1))
    rejected(lambda: K.kv_store(cache, np.ones((3, 2, 5), np.float32), 0))
    rejected(lambda: K.kv_store(cache, np.ones((3, 3, 4), np.float32), 0))
    rejected(lambda: K.kv_store(cache.astype(np.float32), kv, 0))
    rejected(lambda: K.kv_store(cache, kv.astype(np.float64), 0))
    rejected(lambda: K.kv_store(cache[:, :, ::2], np.ones((3, 2, 2), np.float32), 0))
    cache.flags.writeable = False
    rejected(lambda: K.kv_store(cache, kv, 0))
    q8, x = np.zeros((2, 6, 68), np.uint8), np.ones((3, 2, 64), np.float32)  # Q8_0 rows of 64
    K.kv_store(q8, x, 0)
    rejected(lambda: K.kv_store(np.zeros((2, 6, 64), np.uint8), x, 0))  # f16 row width
    rejected(lambda: K.kv_store(np.zeros((2, 6, 51), np.uint8), np.ones((3, 2, 48), np.float32), 0))
    q = np.ones((1, 4, 64), np.float32)
    assert K.attention(q, q8, q8, 3, 0.1).shape == (1, 4, 64)
    rejected(lambda: K.attention(q, q8, np.zeros((2, 6, 64), np.float16), 3, 0.1))
    rejected(lambda: K.attention(q, q8, q8[:, :5].copy(), 3, 0.1))
    rejected(lambda: K.attention(q, q8, q8, 6, 0.1))


@PROPERTY
@given(
    m=st.integers(0, 3),
    n_head=st.integers(0, 4),
    n_kv=st.integers(0, 3),
    hd=st.sampled_from([0, 1, 8, 16]),
    n_ctx=st.integers(0, 6),
    pos0=st.integers(-2, 6),
    window=st.integers(-1, 3),
    k_hd_delta=st.sampled_from([0, 0, 1]),
    v_ctx_delta=st.sampled_from([0, 0, -1]),
    kv_dtype=st.sampled_from([np.float16, np.float16, np.float32]),
    q_dtype=st.sampled_from([np.float32, np.float32, np.float64]),
    nan=st.booleans(),
)
def test_attention_validates(
    m: int,
    n_head: int,
    n_kv: int,
    hd: int,
    n_ctx: int,
    pos0: int,
    window: int,
    k_hd_delta: int,
    v_ctx_delta: int,
    kv_dtype: type,
    q_dtype: type,
    nan: bool,
) -> None:
    q = np.full((m, n_head, hd), np.nan if nan else 0.5, q_dtype)
    kc = np.ones((n_kv, n_ctx, hd + k_hd_delta), kv_dtype)
    vc = np.ones((n_kv, max(0, n_ctx + v_ctx_delta), hd), kv_dtype)
    ok = (
        q_dtype is np.float32
        and kv_dtype is np.float16
        and k_hd_delta == 0
        and (v_ctx_delta == 0 or n_ctx == 0)
        and n_kv > 0
        and n_head % n_kv == 0
        and pos0 >= 0
        and pos0 + m <= n_ctx
        and window >= 0
    )
    if ok:
        out = K.attention(q, kc, vc, pos0, 0.5, window)
        assert out.shape == (m, n_head, hd)
        if not nan and m and n_head and hd:
            np.testing.assert_allclose(out, 1.0, rtol=2e-3)  # V rows are 1; weights are f16
    else:
        rejected(lambda: K.attention(q, kc, vc, pos0, 0.5, window))


# ---- runtime settings ------------------------------------------------------------------------------


def test_set_isa_rejects_unknown_and_unavailable() -> None:
    previous = K.isa()
    try:
        rejected(lambda: K.set_isa("bogus"))
        rejected(lambda: K.set_isa(""))
        for name in ("scalar", "avx2", "avxvnni", "avx512", "neon", "neon_dotprod", "neon_i8mm"):
            if name not in K.available_isas():
                rejected(lambda name=name: K.set_isa(name))
        assert K.isa() == previous
    finally:
        K.set_isa(previous)


@pytest.mark.parametrize("n", [0, -1, -(2**31)])
def test_set_num_threads_clamps_to_one(n: int) -> None:
    previous = K.get_num_threads()
    try:
        K.set_num_threads(n)
        assert K.get_num_threads() == 1
        w = valid_matrix(T.Q4_0, 3, 64)
        assert K.matmul(w, np.ones((2, 64), np.float32)).shape == (2, 3)
    finally:
        K.set_num_threads(previous)


# ---- known crashes (subprocess) ----------------------------------------------------------------------


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter, so a segfault fails one test instead of the session."""
    prelude = "import numpy as np\nimport phirt._kernels as K\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_raises_cleanly(code: str) -> None:
    """code must end by raising TypeError/ValueError (caught and printed), not by a signal."""
    body = textwrap.indent(textwrap.dedent(code), "    ")
    wrapped = (
        f"try:\n{body}\n"
        "except (TypeError, ValueError) as e:\n    print('REJECTED', e)\n"
        "else:\n    print('ACCEPTED')\n"
    )
    proc = run_isolated(wrapped)
    assert proc.returncode == 0, f"crashed with exit code {proc.returncode}: {proc.stderr[-500:]}"
    assert "REJECTED" in proc.stdout, proc.stdout


def test_qmatrix_size_overflow_rejected() -> None:
    assert_raises_cleanly(
        """
        w = K.QMatrix(np.zeros(4, np.uint8), 0, 2**62, 1)
        K.get_rows(w, np.array([10**9], np.int32))
        """
    )


def test_attention_position_overflow_rejected() -> None:
    assert_raises_cleanly(
        """
        q = np.ones((1, 1, 64), np.float32)
        kc = np.ones((1, 4, 64), np.float16)
        K.attention(q, kc, kc, 2**63 - 1, 1.0, window=10**7)
        """
    )


def test_dequantize_huge_k_rejected() -> None:
    assert_raises_cleanly("K.dequantize(0, np.zeros(4, np.uint8), 2**62)")


def test_row_bytes_overflow_rejected() -> None:
    rejected(lambda: K.row_bytes(int(T.F32), 2**62))


def test_qmatrix_buffer_cannot_be_freed_under_it() -> None:
    assert_raises_cleanly(
        """
        n, k = 4096, 4096
        buf = bytearray(n * k // 32 * 18)
        w = K.QMatrix(buf, 2, n, k)
        try:
            buf.clear()  # must fail while w uses the buffer
        except BufferError as e:
            raise ValueError("buffer is still exported") from e
        K.matmul(w, np.ones((1, k), np.float32))
        """
    )


@pytest.mark.parametrize("qtype", [T.Q8_1, T.Q8_K], ids=lambda t: t.name)
def test_activation_formats_are_not_weights(qtype: T) -> None:
    # Q8_1/Q8_K have no dequantizer: a QMatrix of them would make get_rows read garbage.
    bs, ts = GGML_QUANT_SIZES[qtype]
    rejected(lambda: K.QMatrix(np.zeros(2 * ts, np.uint8), int(qtype), 2, bs))


def test_dequantize_empty_with_large_k() -> None:
    assert K.dequantize(int(T.Q4_0), np.zeros(0, np.uint8), 2**40).shape == (0, 2**40)

"""Q4_0 matrices in the interleaved 16-row layout (cpp/q4x16.h): where the active ISA has the
kernel, a GGUF's Q4_0 matrices are copied into it at their first matmul and multiplied there.

The C++ test (cpp/tests/test_kernels.cpp, test_q4x16) holds each ISA's kernel bit-equal to the
scalar spec and the spec to a restatement over the GGUF rows. Here: the same through the Python
module on every ISA this CPU has, each row the same whatever the batch, the packed GEMM's Q4_0
numerics bit for bit, the GEMV's within float order, and the loader's use of it."""

from __future__ import annotations

import numpy as np
import phirt._kernels as K
import pytest
from gguf import GGMLQuantizationType as T

from model_factory import ModelFactory
from phirt.engine import NativeEngine
from phirt.formats import source
from phirt.formats.source import interleaves

Q4_0 = int(T.Q4_0)


def q4_0_matrix(n: int, k: int, seed: int = 0) -> K.QMatrix:
    rng = np.random.default_rng(seed)
    return K.QMatrix(K.quantize(Q4_0, rng.standard_normal((n, k)).astype(np.float32)), Q4_0, n, k)


@pytest.mark.parametrize("n,k", [(16, 32), (40, 512), (7, 96), (300, 2560)])
def test_each_isa_gives_the_spec_for_every_row_alone_or_batched(
    n: int, k: int, each_isa: str
) -> None:
    w = q4_0_matrix(n, k)
    w16 = K.q4x16_repack(w)
    x = np.random.default_rng(1).standard_normal((9, k)).astype(np.float32)
    got = K.q4x16_matmul(w16, x)
    previous = K.isa()
    K.set_isa("scalar")  # no twin in the scalar table: the spec runs
    try:
        spec = K.q4x16_matmul(w16, x)
    finally:
        K.set_isa(previous)
    np.testing.assert_array_equal(got, spec, err_msg=each_isa)
    for rows in ([0], [8, 3, 0, 5], [2, 7], [4, 4, 4, 4, 1, 6]):
        part = K.q4x16_matmul(w16, np.ascontiguousarray(x[rows]))
        np.testing.assert_array_equal(part, got[rows], err_msg=f"{each_isa} rows {rows}")
    # the GEMV computes the same exact block sums, scaled and summed in another float order
    gemv = np.concatenate([K.matmul(w, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(got, gemv, rtol=0, atol=2e-5 * float(np.abs(gemv).max()))
    if K.q4x16_native():  # the x86 twins are the packed GEMM's Q4_0 arithmetic, bit for bit
        np.testing.assert_array_equal(got, K.matmul(w, x), err_msg=each_isa)


def test_calls_of_many_rows_give_each_row_its_own_result(each_isa: str) -> None:
    """From 16 activation rows on, a call may take the table's many-row kernel (AMX on a
    Sapphire Rapids Xeon, C++ test_q4x16): the spec's bits, and each row what it gets alone or in
    a short call, across the switch."""
    w16 = K.q4x16_repack(q4_0_matrix(40, 512, seed=3))
    x = np.random.default_rng(4).standard_normal((40, 512)).astype(np.float32)
    got = K.q4x16_matmul(w16, x)
    previous = K.isa()
    K.set_isa("scalar")
    try:
        spec = K.q4x16_matmul(w16, x)
    finally:
        K.set_isa(previous)
    np.testing.assert_array_equal(got, spec, err_msg=each_isa)
    for rows in (slice(0, 1), slice(3, 18), slice(5, 40), slice(24, 40)):
        np.testing.assert_array_equal(
            K.q4x16_matmul(w16, np.ascontiguousarray(x[rows])), got[rows], err_msg=each_isa
        )


def test_repack_refuses_other_types_and_shapes() -> None:
    rng = np.random.default_rng(0)
    q8 = K.QMatrix(
        K.quantize(int(T.Q8_0), rng.standard_normal((4, 64)).astype(np.float32)), 8, 4, 64
    )
    with pytest.raises(ValueError, match="holds Q4_0 weights, not Q8_0"):
        K.q4x16_repack(q8)
    w16 = K.q4x16_repack(q4_0_matrix(16, 64))
    with pytest.raises(ValueError, match="x has 32 columns, weight has k=64"):
        K.q4x16_matmul(w16, np.zeros((1, 32), np.float32))
    assert K.q4x16_matmul(w16, np.zeros((0, 64), np.float32)).shape == (0, 16)


def layer_matrices(engine: NativeEngine) -> list:
    return [v for layer in engine.model.layers for v in layer.values() if hasattr(v, "matmul")]


@pytest.mark.skipif(not interleaves(Q4_0), reason="this CPU's kernels have no interleaved Q4_0")
def test_loader_interleaves_q4_0_at_first_use(models: ModelFactory) -> None:
    engine = NativeEngine(models.phi3("Q4_0", "gqa"), n_ctx=64)
    mats = layer_matrices(engine)
    assert mats and all(m.matmul.__name__ == "_interleave_then_matmul" for m in mats)
    engine.eval([1, 2, 3])
    assert all(getattr(m.matmul, "func", None) is K.q4x16_matmul for m in mats)
    # an untied token table is only read by lookups: never copied
    embd = engine.model.w["token_embd.weight"]
    assert embd.matmul.__name__ == "_interleave_then_matmul"


@pytest.mark.skipif(not interleaves(Q4_0), reason="this CPU's kernels have no interleaved Q4_0")
def test_interleaving_changes_decode_only_within_float_order(
    models: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logits with and without the interleaved layout (PHIRT_Q4_0_INTERLEAVE=0 keeps the file's):
    a prompt's (6 rows: the packed GEMM) bit-identical; a decode step's (1 row: the GEMV) within
    float summation order."""
    path = models.phi3("Q4_0", "partial_rotary_tied")
    prompt = [5, 17, 2, 99, 41, 7]
    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("PHIRT_Q4_0_INTERLEAVE", flag)
        engine = NativeEngine(path, n_ctx=64)
        prefill = engine.eval(prompt, all_logits=True)
        out[flag] = (prefill, engine.eval([int(np.argmax(prefill[-1]))]))
    np.testing.assert_array_equal(out["1"][0], out["0"][0])
    spread = float(np.ptp(out["0"][1]))
    np.testing.assert_allclose(out["1"][1], out["0"][1], rtol=0, atol=1e-4 * spread)


@pytest.mark.skipif(not interleaves(Q4_0), reason="this CPU's kernels have no interleaved Q4_0")
def test_low_memory_keeps_the_files_layout(
    models: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With less memory available than the copy's headroom, a matrix stays in the file's layout
    for good (the copy could not be reclaimed under pressure; the file's pages can)."""
    engine = NativeEngine(models.phi3("Q4_0", "gqa"), n_ctx=64)
    mats = layer_matrices(engine)
    sizes = [int(m.q.nbytes) for m in mats]
    # the largest fits at first, and no longer once half of the copies are made
    budget = {"bytes": 4 * max(sizes) + sum(sizes) // 2}

    def available() -> int:
        return budget["bytes"]

    monkeypatch.setattr(source, "memory_available", available)
    real_repack = K.q4x16_repack

    def repack(q: K.QMatrix) -> K.Q4x16Matrix:
        budget["bytes"] -= int(q.nbytes)
        return real_repack(q)

    monkeypatch.setattr(K, "q4x16_repack", repack)
    before = engine.eval([1, 2, 3])
    copied = [m for m in mats if getattr(m.matmul, "func", None) is K.q4x16_matmul]
    kept = [m for m in mats if getattr(m.matmul, "func", None) is K.matmul]
    assert 1 <= len(copied) < len(mats) and len(copied) + len(kept) == len(mats)
    assert np.isfinite(before).all()
    again = engine.eval([4])  # the decision sticks: nothing is re-tried
    assert [getattr(m.matmul, "func", None) for m in copied + kept] == [K.q4x16_matmul] * len(
        copied
    ) + [K.matmul] * len(kept)
    assert np.isfinite(again).all()

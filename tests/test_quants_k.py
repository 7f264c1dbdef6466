"""K-quant quantizers (cpp/quants_k.cpp) against llama.cpp's own.

Two external references, both from llama-cpp-python 0.3.36:
- ggml's reference row quantizers (quantize_row_q{4,5,6}_K_ref, exported by libggml-base) called
  through ctypes on hand-made rows, edge cases included: the bytes must be identical;
- llama.cpp's file quantizer (llama_model_quantize, "pure" so every matrix gets the type) on a tiny
  F16 GGUF: per tensor, the RMSE of phirt's quantization against the source must be at most
  1.02 x llama.cpp's (our bar), and the bytes identical (what phirt actually achieves).
Dequantization for the RMSE uses gguf-py's numpy reference, not phirt.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, LlamaFileType
from gguf.quants import dequantize

from model_factory import ModelFactory, llama_cpp_quantize, requires_llama_cpp
from phirt import _kernels as K

T = GGMLQuantizationType
K_TYPES = [T.Q4_K, T.Q5_K, T.Q6_K]
BLOCK_BYTES = {t: GGML_QUANT_SIZES[t][1] for t in K_TYPES}
REF_FUNCS = {
    T.Q4_K: "quantize_row_q4_K_ref",
    T.Q5_K: "quantize_row_q5_K_ref",
    T.Q6_K: "quantize_row_q6_K_ref",
}
PURE_FTYPES = {
    T.Q4_K: LlamaFileType.MOSTLY_Q4_K_M,
    T.Q5_K: LlamaFileType.MOSTLY_Q5_K_M,
    T.Q6_K: LlamaFileType.MOSTLY_Q6_K,
}


@pytest.fixture(scope="module")
def ggml() -> ctypes.CDLL:
    llama_cpp = pytest.importorskip("llama_cpp")
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (lib_dir / name).exists():
            lib = ctypes.CDLL(str(lib_dir / name))
            break
    else:
        pytest.skip(f"no libggml-base in {lib_dir}")
    for fn in REF_FUNCS.values():
        if not hasattr(lib, fn):
            pytest.skip(f"libggml-base does not export {fn}")
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        getattr(lib, fn).restype = None
    return lib


def ggml_quantize(lib: ctypes.CDLL, qtype: T, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((x.shape[0], x.shape[1] // 256 * BLOCK_BYTES[qtype]), dtype=np.uint8)
    getattr(lib, REF_FUNCS[qtype])(x.ctypes.data, out.ctypes.data, x.size)
    return out


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    shape = (16, 512)
    n = shape[0] * shape[1]
    sparse = rng.standard_normal(n)
    sparse[rng.random(n) < 0.8] = 0.0
    outliers = rng.standard_normal(n) * 0.01
    outliers[::97] = 3.0
    mixed = rng.standard_normal(shape)
    mixed[::3] = 0.0  # whole zero rows between normal ones
    cases = {
        "gaussian": rng.standard_normal(n) * 0.02,
        "uniform": rng.uniform(-1, 1, n),
        "positive": rng.uniform(0.1, 1, n),
        "negative": -rng.uniform(0.1, 1, n),
        "zeros": np.zeros(n),
        "constant": np.full(n, 0.37),
        "negative_constant": np.full(n, -2.5),
        "tiny": rng.standard_normal(n) * 1e-20,
        "huge": rng.standard_normal(n) * 1e4,
        "heavy_tails": rng.standard_t(2, n),
        "sparse": sparse,
        "outliers": outliers,
        "f16_values": (rng.standard_normal(n) * 0.05).astype(np.float16),
        "zero_rows": mixed,
    }
    return {k: np.asarray(v, dtype=np.float32).reshape(shape) for k, v in cases.items()}


CASES = _cases()


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bytes_equal_ggml_reference(ggml: ctypes.CDLL, qtype: T, case: str) -> None:
    x = CASES[case]
    ours = K.quantize(int(qtype), x)
    ref = ggml_quantize(ggml, qtype, x)
    assert ours.shape == ref.shape
    bad = np.flatnonzero(
        (ours.reshape(-1, BLOCK_BYTES[qtype]) != ref.reshape(-1, BLOCK_BYTES[qtype])).any(1)
    )
    assert bad.size == 0, (
        f"{bad.size} of {ours.size // BLOCK_BYTES[qtype]} blocks differ, first {bad[:5]}"
    )


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_roundtrip_error_is_small(qtype: T) -> None:
    """Sanity bound independent of llama.cpp: dequantize(quantize(x)) with gguf-py's reference
    dequantizer stays within a fraction of the data's spread."""
    x = CASES["gaussian"]
    err = dequantize(K.quantize(int(qtype), x), qtype).reshape(x.shape) - x
    rel = float(np.sqrt((err**2).mean()) / x.std())
    assert rel < {T.Q4_K: 0.12, T.Q5_K: 0.06, T.Q6_K: 0.03}[qtype]


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_thread_count_does_not_change_bytes(qtype: T) -> None:
    x = np.random.default_rng(5).standard_normal((67, 768)).astype(np.float32)
    before = K.get_num_threads()
    try:
        K.set_num_threads(1)
        one = K.quantize(int(qtype), x)
        K.set_num_threads(max(2, os.cpu_count() or 2))
        many = K.quantize(int(qtype), x)
    finally:
        K.set_num_threads(before)
    np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_row_length_must_be_multiple_of_256(qtype: T) -> None:
    with pytest.raises(ValueError):
        K.quantize(int(qtype), np.zeros((2, 200), dtype=np.float32))


# -- against llama.cpp's file quantizer ------------------------------------------------------


@pytest.fixture(scope="module")
def f16_model(models: ModelFactory) -> Path:
    # 256-wide rows so every matrix takes K-quants; F16 like a converted checkpoint
    return models.phi3("F16", "gqa", n_embd=256)


def _rmse(data: np.ndarray, qtype: T, source: np.ndarray) -> float:
    values = dequantize(data, qtype).reshape(source.shape)
    return float(np.sqrt(((values.astype(np.float64) - source) ** 2).mean()))


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_rmse_vs_llama_cpp_per_tensor(f16_model: Path, tmp_path: Path, qtype: T) -> None:
    ref_file = llama_cpp_quantize(f16_model, tmp_path / "ref.gguf", PURE_FTYPES[qtype], pure=True)
    source = {t.name: t for t in GGUFReader(f16_model).tensors}
    ref = {t.name: t for t in GGUFReader(ref_file).tensors}
    checked = 0
    for name, rt in ref.items():
        if rt.tensor_type != qtype:
            continue  # 1-D tensors stay F32
        st = source[name]
        x = dequantize(st.data, st.tensor_type).astype(np.float32).reshape(-1, st.shape[0])
        ours = K.quantize(int(qtype), x)
        ref_rmse = _rmse(rt.data, qtype, x)
        our_rmse = _rmse(ours, qtype, x)
        assert our_rmse <= 1.02 * ref_rmse, (
            f"{name}: RMSE {our_rmse:.3e} vs llama.cpp {ref_rmse:.3e}"
        )
        assert np.array_equal(ours.reshape(-1), np.asarray(rt.data).reshape(-1)), (
            f"{name}: bytes differ"
        )
        checked += 1
    assert checked >= 8  # every matrix of the 2-layer model, token_embd and output included

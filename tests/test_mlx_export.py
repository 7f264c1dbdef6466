"""GGUF -> mlx-lm export (quantize/mlx.py): GGML's 32-wide blocks become MLX affine groups whose
dequantized values are GGML's exactly, checked against gguf-py's quantizers and dequantizers and
against MLX's own dequantize / quantized_matmul; and an exported tiny Phi-3 runs in mlx-lm with
phirt native's greedy tokens."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

mx = pytest.importorskip("mlx.core")

from phirt.quantize.mlx import export_mlx, gguf_block_to_mlx  # noqa: E402

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_blocks_dequantize_exactly_as_ggml(qtype: T) -> None:
    rng = np.random.default_rng(int(qtype))
    w = (rng.standard_normal((16, 256)) * np.geomspace(1e-3, 10, 16)[:, None]).astype(np.float32)
    raw = quants.quantize(w, qtype)  # gguf-py's reference quantizer: (rows, row bytes) u8
    expect = quants.dequantize(raw, qtype)  # and its dequantizer: the numbers GGML computes with
    packed, scales, biases, bits = gguf_block_to_mlx(raw, int(qtype), 256)
    assert scales.dtype == biases.dtype == np.float16  # GGML's own f16 numbers, unrounded
    assert bits == {T.Q8_0: 8, T.Q5_0: 5, T.Q5_1: 5}.get(qtype, 4)
    # The path a model's linear layers take: quantized_matmul with float32 activations evaluates
    # scale * q + bias in float32. Identity activations read the weights back bit for bit.
    eye = mx.array(np.eye(256, dtype=np.float32))
    args = dict(transpose=True, group_size=32, bits=bits)
    weights = mx.quantized_matmul(eye, mx.array(packed), mx.array(scales), mx.array(biases), **args)
    assert np.array_equal(np.array(weights).T, expect)
    # The embedding's path: dequantize returns the scales' dtype (float16 would round d * q),
    # which is why the exporter widens the embedding's scales to float32; the widening is exact.
    rows = mx.dequantize(
        mx.array(packed),
        mx.array(scales.astype(np.float32)),
        mx.array(biases.astype(np.float32)),
        group_size=32,
        bits=bits,
    )
    assert np.array_equal(np.array(rows), expect)


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q8_0], ids=lambda t: t.name)
def test_quantized_matmul_uses_the_ggml_weights(qtype: T) -> None:
    """MLX's matmul kernel with float32 activations sees the same weights (only the float
    summation order differs from a float64 product with GGML's dequantized matrix)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    raw = quants.quantize(w, qtype)
    packed, scales, biases, bits = gguf_block_to_mlx(raw, int(qtype), 128)
    x = rng.standard_normal((3, 128)).astype(np.float32)
    got = mx.quantized_matmul(
        mx.array(x),
        mx.array(packed),
        mx.array(scales),
        mx.array(biases),
        transpose=True,
        group_size=32,
        bits=bits,
    )
    expect = x.astype(np.float64) @ quants.dequantize(raw, qtype).astype(np.float64).T
    np.testing.assert_allclose(np.array(got), expect, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("qtype", "tol"), [("F32", 0.002), ("Q4_0", 0.05)])
def test_exported_phi3_runs_in_mlx_lm_like_native(models, tmp_path, qtype: str, tol: float) -> None:
    """F32: the name and layout mapping (fused qkv and gate|up, config) is right to the f16 KV
    cache native keeps. Q4_0: the same weights; native quantizes activations to Q8_0 as llama.cpp
    does while MLX keeps them float32, which moves logits by a few percent of their spread."""
    pytest.importorskip("mlx_lm")
    from pathlib import Path

    from mlx_lm.utils import load_model

    import phirt

    src = models.phi3(qtype, "gqa")
    result = export_mlx(src, tmp_path / "mlx", tokenizer_writer=None)
    if qtype == "Q4_0":  # 4 matrices per layer, the embedding and the output
        assert result.quantized == {"Q4_0": 2 * 4 + 2}
    model, config = load_model(Path(result.path))
    assert config["model_type"] == "phi3"
    native = phirt.load(src, backend="native")
    ids = native.tokenize("The quick brown fox jumps over the lazy dog")
    ref = native.logits(ids)
    got = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    spread = ref.max() - ref.min()
    assert np.abs(got - ref).max() < tol * spread
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_export_refuses_an_architecture_it_cannot_map(models, tmp_path) -> None:
    from phirt.errors import QuantizeError

    with pytest.raises(QuantizeError, match="phi2"):
        export_mlx(models.phi2("Q4_0"), tmp_path / "out", tokenizer_writer=None)


def test_quantize_cli_writes_an_mlx_folder(models, tmp_path) -> None:
    from phirt.cli import main

    out = tmp_path / "cli.mlx"
    assert main(["quantize", str(models.llama("Q8_0")), str(out), "--format", "mlx"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names

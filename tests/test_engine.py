"""NativeEngine options that the llama.cpp comparisons do not cover: the KV cache type."""

from __future__ import annotations

import subprocess
import sys

import pytest

import phirt
from model_factory import ModelFactory


def test_q8_0_cache_stores_34_bytes_per_32_values(models: ModelFactory) -> None:
    path = models.phi3("Q4_0", "gqa")
    f16 = phirt.load(path, n_ctx=64).engine.cache
    q8 = phirt.load(path, n_ctx=64, kv_type="q8_0").engine.cache
    assert (f16.kv_type, q8.kv_type) == ("f16", "q8_0")
    assert q8.k.nbytes * 64 == f16.k.nbytes * 34 and q8.v.nbytes == q8.k.nbytes


def test_kv_type_errors_are_clear(models: ModelFactory) -> None:
    with pytest.raises(ValueError, match="kv_type must be one of f16, q8_0, f32, got 'q4_0'"):
        phirt.load(models.phi3("Q4_0"), n_ctx=64, kv_type="q4_0")
    path = models.phi2("F32", "plain", n_embd=80)  # head size 40
    with pytest.raises(phirt.UnsupportedError, match="multiple of 32; this model's is 40") as info:
        phirt.load(path, n_ctx=64, kv_type="q8_0")
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_cli_takes_kv_type(models: ModelFactory) -> None:
    args = [str(models.llama("Q4_0", "gqa")), "-p", "hello", "--max-tokens", "4", "--temp", "0"]
    outs = [
        subprocess.run(
            [sys.executable, "-m", "phirt", "generate", *args, "--kv-type", kv],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for kv in ("f16", "q8_0")
    ]
    assert all(outs)

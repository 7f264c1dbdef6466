"""NativeEngine options that the llama.cpp comparisons do not cover: the KV cache type."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import phirt
from model_factory import ModelFactory
from phirt.models.common import KVCache


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


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_kv_cache_commits_memory_as_the_context_fills(models: ModelFactory, kv_type: str) -> None:
    """A Phi-3-mini-sized cache of 4096 positions (1.6 GB in f16) holding one token commits a
    page per head and layer, not the whole cache (numpy's np.zeros asks for huge pages, which
    committed it all at the first token). The f32 cache (ONNX models) keeps keys transposed,
    position last, so its first token touches every page of the keys whatever the page size."""
    cfg = phirt.load(models.phi3("Q4_0"), n_ctx=64).engine.config
    cfg = dataclasses.replace(cfg, n_layer=32, n_head=32, n_head_kv=32, head_dim=96)
    cache = KVCache(cfg, 4096, kv_type)
    before = _rss()
    row = np.ones((1, 32, 96), np.float32)
    for layer in range(32):
        cache.store(layer, 0, row, row)
    assert cache.k.nbytes + cache.v.nbytes > 800e6
    assert _rss() - before < 40e6  # 4 KiB pages: 32 layers x 32 heads x 2 (k, v) x 4-8 KiB


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

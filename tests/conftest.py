"""Shared fixtures: tiny random-weight GGUF models (model_factory.py), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_factory import VOCAB_PATH, ModelFactory


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelFactory:
    """``models.phi3(qtype, variant, **knobs)``, ``models.phi2(...)``, ``models.llama(...)`` ->
    Path of a GGUF file in a session temp dir; see model_factory.py for variants."""
    return ModelFactory(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    """The real Phi-3 tokenizer, vocabulary only (no tensors)."""
    return VOCAB_PATH

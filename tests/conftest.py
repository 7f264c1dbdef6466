"""Shared fixtures: tiny random-weight GGUF models (model_factory.py) and ONNX Runtime GenAI folders
(onnx_factory.py), built once per session, and the kernel ISA paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import phirt._kernels as K
import pytest

from model_factory import VOCAB_PATH, ModelFactory
from onnx_factory import OnnxFactory


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelFactory:
    """``models.phi3(qtype, variant, **knobs)``, ``models.phi2(...)``, ``models.llama(...)`` ->
    Path of a GGUF file in a session temp dir; see model_factory.py for variants."""
    return ModelFactory(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> OnnxFactory:
    """``onnx_models.get(name)`` -> Path of an ONNX Runtime GenAI folder made by onnxruntime-genai's
    builder from a tiny random checkpoint (names: onnx_factory.SPECS); skips without the builder."""
    return OnnxFactory(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    """The real Phi-3 tokenizer, vocabulary only (no tensors)."""
    return VOCAB_PATH


@pytest.fixture(params=K.available_isas())
def each_isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once per kernel ISA path this CPU has (scalar included), with it selected."""
    previous = K.isa()
    K.set_isa(request.param)
    try:
        yield request.param
    finally:
        K.set_isa(previous)

"""ONNX Runtime GenAI (package onnxruntime-genai, -cuda, -directml): ONNX folders with a
genai_config.json, on the execution provider that fits the machine (CUDA, DirectML, QNN, OpenVINO,
WebGPU, CPU). Exposes logits, so phirt samples on top.

Its is_*_available helpers report what a build was compiled with, not what the machine has, so a
provider is probed the only honest way: append it to the model's config and create the model. The
answer, and the model when it loaded, are kept for the rest of the process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phirt.backends.base import (
    CPU,
    GPU,
    NPU,
    Backend,
    Device,
    Engine,
    OpenOptions,
    Probe,
    model_kind,
)
from phirt.errors import ContextFullError, FormatError, UnsupportedError

# provider -> device it offers (onnxruntime-genai's provider names)
PROVIDERS: dict[str, Device] = {
    "cuda": Device("cuda", GPU, "cuda"),
    "dml": Device("dml", GPU, "dml"),
    "webgpu": Device("webgpu", GPU, "webgpu"),
    "openvino": Device("openvino", GPU, "openvino", "OpenVINO execution provider"),
    "qnn": Device("qnn", NPU, "qnn"),
    "cpu": Device("cpu", CPU, "cpu"),
}
DEFAULT_MAX_CTX = 4096


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


class OrtGenAIBackend(Backend):
    name = "ortgenai"
    title = "ONNX Runtime GenAI"
    packages = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")
    extra = "onnx"
    exposes_logits = True
    devices_note = "execution providers, each probed per model by creating it"

    def __init__(self) -> None:
        # (folder, provider) -> the created og.Model, or the error text creating it gave
        self._models: dict[tuple[str, str], Any] = {}

    def devices(self) -> list[Device]:
        # every provider is a candidate; whether it works is only known by creating a model
        return list(PROVIDERS.values()) if self.version() else []

    def _model(self, folder: str, provider: str, threads: int | None = None) -> Any:
        key = (os.path.realpath(folder), provider, threads)
        if key not in self._models:
            import onnxruntime_genai as og

            try:
                config = og.Config(folder)
                config.clear_providers()
                if provider != "cpu":
                    config.append_provider(provider)
                if threads:
                    options = {"session_options": {"intra_op_num_threads": threads}}
                    config.overlay(json.dumps({"model": {"decoder": options}}))
                self._models[key] = og.Model(config)
            except Exception as exc:  # og raises RuntimeError/OSError with the provider's words
                self._models[key] = _one_line(exc)
        return self._models[key]

    def refuses(self, path: str) -> str | None:
        if model_kind(path) != "onnx":
            return "reads ONNX Runtime GenAI folders (genai_config.json) only"
        return None

    def probe(self, path: str, device: Device) -> Probe:
        refusal = self.refuses(path)
        if refusal is not None:
            return self.no(device, refusal)
        model = self._model(path, device.name)
        if isinstance(model, str):
            return self.no(device, f"provider {device.name} did not load the model: {model}")
        return self.yes(device, f"onnxruntime-genai {self.version()}, provider {device.name}")

    def open(self, path: str, device: Device, options: OpenOptions) -> Engine:
        model = self._model(path, device.name, options.n_threads)
        if isinstance(model, str):
            raise UnsupportedError(f"onnxruntime-genai ({device.name}): {model}", path)
        return OrtGenAIEngine(path, model, device, options)


class OrtGenAIEngine:
    """One og.Generator over the model: append_tokens runs the model, get_output('logits') reads
    what it computed, rewind_to keeps a shared prefix of the cache."""

    name = "ortgenai"

    def __init__(self, path: str, model: Any, device: Device, options: OpenOptions) -> None:
        from phirt.backends.folder import FolderTokenizer, folder_metadata, read_json

        self.path = path
        self.device = device
        self._model = model
        config = read_json(Path(path) / "genai_config.json").get("model", {})
        trained = int(config.get("context_length") or DEFAULT_MAX_CTX)
        self.n_ctx = options.n_ctx or min(trained, DEFAULT_MAX_CTX)
        if self.n_ctx > trained:
            raise UnsupportedError(
                f"context {self.n_ctx} exceeds the model's context_length {trained}", path
            )
        self.n_vocab = int(config.get("vocab_size") or 0)
        if self.n_vocab <= 0:
            raise FormatError("genai_config.json has no model.vocab_size", path)
        self.tokenizer = FolderTokenizer(path)
        self.metadata = folder_metadata(path, str(config.get("type", "")) or None)
        self.tokens: list[int] = []
        self._generator: Any = None

    def _new_generator(self) -> Any:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self._model)
        params.set_search_options(max_length=self.n_ctx, batch_size=1)
        return og.Generator(self._model, params)

    def reset(self) -> None:
        self.tokens = []
        self._generator = None

    def reuse_prefix(self, tokens: Sequence[int]) -> int:
        n = 0
        limit = min(len(self.tokens), len(tokens) - 1)
        while n < limit and self.tokens[n] == tokens[n]:
            n += 1
        if n == 0:
            self.reset()
        elif n < len(self.tokens):
            self._generator.rewind_to(n)
            del self.tokens[n:]
        return n

    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        if len(tokens) == 0:
            raise ValueError("eval needs at least one token")
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise ContextFullError(
                f"context window of {self.n_ctx} tokens is full ({len(self.tokens)} in use, "
                f"{len(tokens)} more requested)",
                self.path,
            )
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            raise ValueError(f"a token id is outside the vocabulary [0, {self.n_vocab})")
        if self._generator is None:
            self._generator = self._new_generator()
        self._generator.append_tokens(ids.astype(np.int32))
        self.tokens.extend(int(t) for t in tokens)
        logits = np.asarray(self._generator.get_output("logits"), dtype=np.float32)
        logits = logits.reshape(-1, logits.shape[-1])[-len(tokens) :]
        return logits if all_logits else logits[-1]


BACKEND = OrtGenAIBackend()

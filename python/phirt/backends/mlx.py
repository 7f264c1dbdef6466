"""MLX through mlx-lm: mlx-lm / Hugging Face safetensors folders, on Apple silicon's GPU (Metal)
or, with `mlx[cpu]` (`mlx[cuda]`), on Linux. A GGUF file of an architecture phirt can export
(quantize/mlx.py, exact for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0) is converted once into phirt's cache.

mlx-lm's models are plain MLX modules: calling one with a prompt cache returns logits, so phirt's
sampler runs on top, as for every backend that exposes logits; nothing of phirt's sampling is
lost here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phirt.backends.base import (
    CPU,
    GPU,
    Backend,
    Device,
    Engine,
    OpenOptions,
    Probe,
    gguf_header,
    model_kind,
)
from phirt.errors import ContextFullError, FormatError, PhirtError, UnsupportedError

# GGUF architecture -> (mlx-lm model_type, HF architecture whose name table applies): what
# quantize/mlx.py exports. Kept here so the probe needs no quantize import (that pulls gguf-py).
MLX_ARCHS = {"llama": ("llama", "LlamaForCausalLM"), "phi3": ("phi3", "Phi3ForCausalLM")}
PREFILL_BATCH = 512
DEFAULT_MAX_CTX = 4096


def _has_model_type(model_type: str) -> bool:
    """Whether the installed mlx-lm has a module for this model_type, found without importing
    mlx-lm (its import pulls in transformers: seconds)."""
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return False
    name = model_type.replace("-", "_")
    return any(
        os.path.isfile(os.path.join(loc, "models", f"{name}.py"))
        for loc in spec.submodule_search_locations
    )


def _model_type(path: str) -> str:
    from phirt.backends.folder import hf_config

    return str(hf_config(path).get("model_type", ""))


class MLXBackend(Backend):
    name = "mlx"
    title = "MLX (mlx-lm)"
    packages = ("mlx-lm",)
    extra = "mlx"
    exposes_logits = True

    def no_accelerator(self) -> str | None:
        # Metal exists on macOS only; elsewhere an MLX GPU is the CUDA build (package mlx-cuda)
        if sys.platform == "darwin":
            return None
        import importlib.metadata

        try:
            importlib.metadata.version("mlx-cuda")
            return None
        except importlib.metadata.PackageNotFoundError:
            return "no Metal (not macOS) and no mlx-cuda build"

    def devices(self) -> list[Device]:
        import mlx.core as mx  # on Linux without mlx[cpu] this fails: probe_all reports it

        if mx.metal.is_available():
            info = mx.metal.device_info() if hasattr(mx.metal, "device_info") else {}
            return [Device("metal", GPU, "metal", str(info.get("device_name", "Apple GPU")))]
        cuda = getattr(mx, "cuda", None)
        if cuda is not None and cuda.is_available():
            return [Device("cuda", GPU, "cuda", "MLX CUDA backend")]
        return [Device("cpu", CPU, "cpu", "MLX CPU backend (no Metal here)")]

    def refuses(self, path: str) -> str | None:
        kind = model_kind(path)
        if kind == "gguf":
            return self._gguf_refusal(path)
        if kind != "safetensors":
            return "reads mlx-lm / Hugging Face safetensors folders only"
        from phirt.backends.folder import hf_config

        try:
            model_type = str(hf_config(path).get("model_type", ""))
        except FormatError as err:
            return err.message
        if not _has_model_type(model_type):
            return f"mlx-lm {self.version()} has no model_type '{model_type}'"
        if not (Path(path) / "tokenizer.json").is_file():
            return "the folder has no tokenizer.json"
        return None

    def probe(self, path: str, device: Device) -> Probe:
        refusal = self.refuses(path)
        if refusal is not None:
            return self.no(device, refusal)
        if model_kind(path) == "gguf":
            return self._probe_gguf(path, device)
        model_type = _model_type(path)
        return self.yes(device, f"mlx-lm {self.version()} ({model_type}) on {device.name}")

    def _gguf_refusal(self, path: str) -> str | None:
        try:
            g = gguf_header(path)
        except PhirtError as err:
            return f"the file does not read as GGUF: {err.message}"
        if g.arch not in MLX_ARCHS:
            return f"reads mlx-lm folders; phirt has no mlx export for '{g.arch}' GGUF files"
        return None

    def _probe_gguf(self, path: str, device: Device) -> Probe:
        g = gguf_header(path)
        types = sorted({t.type_name for t in g.tensors.values() if len(t.shape) > 1})
        return self.no(
            device,
            f"reads mlx-lm folders, not GGUF; phirt can export this file ({', '.join(types)}) "
            "to one (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 map exactly onto MLX's quantization)",
            convert="mlx",
        )

    def open(self, path: str, device: Device, options: OpenOptions) -> Engine:
        return MLXEngine(path, device, options)


class MLXEngine:
    name = "mlx"

    def __init__(self, path: str, device: Device, options: OpenOptions) -> None:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.utils import load_model

        from phirt.backends.folder import FolderTokenizer, folder_metadata, hf_config

        self.path = path
        self.device = device
        mx.set_default_device(mx.cpu if device.kind == CPU else mx.gpu)
        config = hf_config(path)
        try:
            self._model, _ = load_model(Path(path))
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise UnsupportedError(f"mlx-lm did not load it: {exc}", path) from None
        self._mx = mx
        self._make_cache = make_prompt_cache
        self._cache: list[Any] = make_prompt_cache(self._model)
        trained = int(config.get("max_position_embeddings") or DEFAULT_MAX_CTX)
        self.n_ctx = options.n_ctx or min(trained, DEFAULT_MAX_CTX)
        self.n_vocab = int(config.get("vocab_size") or 0)
        self.tokenizer = FolderTokenizer(path)
        self.metadata = folder_metadata(path, str(config.get("model_type", "")) or None)
        self.tokens: list[int] = []

    def reset(self) -> None:
        self.tokens = []
        self._cache = self._make_cache(self._model)

    def reuse_prefix(self, tokens: Sequence[int]) -> int:
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        n = 0
        limit = min(len(self.tokens), len(tokens) - 1)
        while n < limit and self.tokens[n] == tokens[n]:
            n += 1
        drop = len(self.tokens) - n
        if drop and n and can_trim_prompt_cache(self._cache):
            trim_prompt_cache(self._cache, drop)
            del self.tokens[n:]
        elif drop:
            self.reset()
            n = 0
        return n

    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        mx = self._mx
        if len(tokens) == 0:
            raise ValueError("eval needs at least one token")
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise ContextFullError(
                f"context window of {self.n_ctx} tokens is full ({len(self.tokens)} in use, "
                f"{len(tokens)} more requested)",
                self.path,
            )
        ids = [int(t) for t in tokens]
        if min(ids) < 0 or max(ids) >= self.n_vocab:
            raise ValueError(f"a token id is outside the vocabulary [0, {self.n_vocab})")
        outs = []
        for start in range(0, len(ids), PREFILL_BATCH):
            batch = ids[start : start + PREFILL_BATCH]
            logits = self._model(mx.array([batch]), cache=self._cache)[0]
            self.tokens.extend(batch)
            if all_logits:
                outs.append(np.array(logits.astype(mx.float32)))
            elif start + PREFILL_BATCH >= len(ids):
                outs.append(np.array(logits[-1:].astype(mx.float32)))
            else:
                mx.eval([c.state for c in self._cache])  # keep the graph from growing
        out = np.concatenate(outs, axis=0)
        return out if all_logits else out[-1]


BACKEND = MLXBackend()

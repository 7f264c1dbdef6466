"""llama.cpp through llama-cpp-python: GGUF files on the GPU its build offloads to (CUDA on a
Jetson, Metal on a Mac, Vulkan, ROCm, SYCL), all layers offloaded. A CPU-only build still runs on
the CPU when asked for by name (backend="llamacpp"); device="auto" prefers phirt's own kernels
there. Exposes logits, so phirt samples on top.

Tokens are evaluated through the Llama object's context and batch (the calls its own eval makes),
but logits are read straight from llama_get_logits for the rows asked for, so no n_ctx x n_vocab
score buffer is kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
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
from phirt.errors import ContextFullError, PhirtError, UnsupportedError

# ggml backend library name fragment -> device family
_GPU_LIBS = {
    "cuda": "cuda",
    "metal": "metal",
    "vulkan": "vulkan",
    "hip": "rocm",
    "sycl": "sycl",
    "opencl": "opencl",
}
PREFILL_BATCH = 512
GGML_TYPE_Q8_0 = 8


def _gpu_family() -> str:
    """Which GPU backend the installed build carries, from its shared libraries."""
    import llama_cpp

    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    names = " ".join(os.listdir(libdir)) if os.path.isdir(libdir) else ""
    for key, family in _GPU_LIBS.items():
        if f"ggml-{key}" in names:
            return family
    return "metal" if sys.platform == "darwin" else "gpu"


class LlamaCppBackend(Backend):
    name = "llamacpp"
    title = "llama.cpp (llama-cpp-python)"
    packages = ("llama-cpp-python",)
    extra = "cuda"
    exposes_logits = True

    def no_accelerator(self) -> str | None:
        if sys.platform == "darwin":
            return None
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        locations = spec.submodule_search_locations if spec else None
        if not locations:
            return None
        libdir = os.path.join(list(locations)[0], "lib")
        names = " ".join(os.listdir(libdir)) if os.path.isdir(libdir) else ""
        if not names or any(f"ggml-{key}" in names for key in _GPU_LIBS):
            return None
        return "CPU-only build (no GPU backend library in llama_cpp/lib)"

    def devices(self) -> list[Device]:
        import llama_cpp

        cpu = Device("cpu", CPU, "cpu", "used only when backend='llamacpp' is asked for", True)
        if not llama_cpp.llama_supports_gpu_offload():
            return [cpu]
        family = _gpu_family()
        return [Device(family, GPU, family, f"llama.cpp {family} build, all layers offloaded"), cpu]

    def refuses(self, path: str) -> str | None:
        if model_kind(path) != "gguf":
            return "reads GGUF files only"
        try:
            gguf_header(path)
        except PhirtError as err:
            return f"the file does not read as GGUF: {err.message}"
        return None

    def probe(self, path: str, device: Device) -> Probe:
        refusal = self.refuses(path)
        if refusal is not None:
            return self.no(device, refusal)
        arch = gguf_header(path).arch
        where = "all layers offloaded" if device.kind == GPU else "CPU-only build"
        return self.yes(device, f"llama.cpp {self.version()} ({arch}), {where}")

    def open(self, path: str, device: Device, options: OpenOptions) -> Engine:
        return LlamaCppEngine(path, device, options)


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, path: str, device: Device, options: OpenOptions) -> None:
        import llama_cpp

        from phirt.formats.gguf import GGUFFile
        from phirt.tokenizer import Tokenizer

        self.path = path
        self.device = device
        gguf = GGUFFile(path)
        self.metadata = gguf.metadata
        self.tokenizer = Tokenizer.from_metadata(gguf.metadata, path=path)
        arch = gguf.arch or ""
        trained = int(gguf.metadata.get(f"{arch}.context_length", 4096) or 4096)
        self.n_ctx = options.n_ctx or min(trained, 4096)
        kw: dict[str, Any] = {}
        if options.kv_type == "q8_0":  # llama.cpp's -ctk q8_0 -ctv q8_0 -fa
            kw.update(type_k=GGML_TYPE_Q8_0, type_v=GGML_TYPE_Q8_0, flash_attn=True)
        elif options.kv_type not in (None, "f16"):
            raise UnsupportedError(f"kv_type must be f16 or q8_0, got {options.kv_type!r}", path)
        try:
            self._llm = llama_cpp.Llama(
                model_path=path,
                n_gpu_layers=-1 if device.kind == GPU else 0,
                n_ctx=self.n_ctx,
                n_batch=PREFILL_BATCH,
                n_threads=options.n_threads,
                n_threads_batch=options.n_threads,
                logits_all=False,
                verbose=False,
                **kw,
            )
        except (ValueError, RuntimeError) as exc:
            raise UnsupportedError(f"llama.cpp did not load it: {exc}", path) from None
        self.n_vocab = int(self._llm.n_vocab())
        self.tokens: list[int] = []

    def reset(self) -> None:
        self.tokens = []

    def reuse_prefix(self, tokens: Sequence[int]) -> int:
        n = 0
        limit = min(len(self.tokens), len(tokens) - 1)
        while n < limit and self.tokens[n] == tokens[n]:
            n += 1
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
        ids = [int(t) for t in tokens]
        if min(ids) < 0 or max(ids) >= self.n_vocab:
            raise ValueError(f"a token id is outside the vocabulary [0, {self.n_vocab})")
        llm = self._llm
        # drop whatever the cache holds beyond the tokens we keep (a shorter reused prefix)
        llm._ctx.kv_cache_seq_rm(-1, len(self.tokens), -1)
        outs = []
        for start in range(0, len(ids), PREFILL_BATCH):
            batch = ids[start : start + PREFILL_BATCH]
            llm._batch.set_batch(batch=batch, n_past=len(self.tokens), logits_all=all_logits)
            llm._ctx.decode(llm._batch)
            self.tokens.extend(batch)
            rows = len(batch) if all_logits else 1
            if all_logits or start + PREFILL_BATCH >= len(ids):
                ptr = llm._ctx.get_logits()
                outs.append(np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab)).copy())
        out = np.concatenate(outs, axis=0)
        return out if all_logits else out[-1]


BACKEND = LlamaCppBackend()

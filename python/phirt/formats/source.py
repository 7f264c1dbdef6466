"""The model-source interface: what an architecture module (models/phi3.py, ...) needs from a file
format, and nothing of the format itself.

A source is a GGUF file (formats/gguf.py ``GGUFFile``) or an ONNX Runtime GenAI folder
(formats/onnx_source.py ``OnnxSource``); ``formats.open_model(path)`` picks one. Either way it
offers

- ``arch``: the GGUF architecture name (phi3, phi2, llama) that selects the module,
- ``metadata``: hyper-parameters, tokenizer and chat template under their GGUF keys
  (``phi3.block_count``, ``tokenizer.ggml.tokens``, ``tokenizer.chat_template``, ...),
- ``tensors``: the weights by canonical GGUF name (``blk.0.attn_qkv.weight``), each with its numpy
  shape and a ``load()`` that returns what the forward pass uses: a float32 array for vectors
  (norms, biases, rope factors and tables), a ``KernelMatrix`` for matrices.

A ``KernelMatrix`` is a weight matrix W (n rows x k) as the kernels hold it; ``matmul(x)`` is
x @ W.T with the format's own numerics (GGML activation blocks for GGUF types, onnxruntime's
accuracy_level rules for MatMulNBits), ``get_rows(ids)`` the embedding lookup. Both are bound once
at load, so ``linear()`` calls one method per matrix per step with no type tests.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from phirt import _kernels as K

__all__ = [
    "NUMERICS_KEY",
    "GGMLMatrix",
    "KernelMatrix",
    "ModelSource",
    "SourceTensor",
    "interleaves",
]

# Metadata a source may add beyond GGUF's keys: whose arithmetic its own runtime uses where phirt
# has a choice ("ggml", the default, or "onnxruntime"; models/common.py DecoderConfig.numerics).
NUMERICS_KEY = "phirt.numerics"


@runtime_checkable
class KernelMatrix(Protocol):
    """A weight matrix (n x k) ready for the kernels."""

    n: int
    k: int

    def matmul(self, x: np.ndarray, batch_invariant: bool = False) -> np.ndarray:
        """y (m, n) = x (m, k) @ W.T; batch_invariant: each row exactly as a one-row call gives
        it (the server's batched decode)."""
        ...

    def get_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (int32) of W as float32 (len(ids), k): the embedding lookup."""
        ...


class SourceTensor(Protocol):
    """One tensor of a source under its canonical GGUF name."""

    name: str
    shape: tuple[int, ...]  # numpy order: (out_features, in_features) for matrices

    def load(self) -> Any:
        """float32 array (1-D tensors) or KernelMatrix (2-D)."""
        ...


class ModelSource(Protocol):
    """A model file or folder, read and validated (see the module doc)."""

    path: str
    metadata: Mapping[str, Any]
    tensors: Mapping[str, SourceTensor]
    native_kv_type: (
        str  # the KV cache the format's own runtime keeps (llama.cpp f16, onnxruntime f32)
    )

    @property
    def arch(self) -> str | None: ...

    def prefault(self, names: Iterable[str]) -> None:
        """Bring these tensors' pages into memory before the first token reads them."""
        ...


_Q4_0 = 2  # GGML type id


def interleaves(ggml_type: int) -> bool:
    """Whether a matrix of this GGML type is multiplied in phirt's interleaved layout: Q4_0 where
    the active ISA has the kernel (cpp/q4x16.h: decode reads the weights at close to memory speed,
    several sequences share one read, and every row's result is independent of the others).
    ``PHIRT_Q4_0_INTERLEAVE=0`` keeps the file's layout (for A/B measurements)."""
    return (
        ggml_type == _Q4_0
        and K.q4x16_native()
        and os.environ.get("PHIRT_Q4_0_INTERLEAVE", "1") != "0"
    )


# The interleaved copy is memory the kernel cannot reclaim (the file's pages it replaces could be):
# a matrix is copied only while the system has this many times its size available, so a model
# that barely fits (a Pi 5 with 4 GB) keeps its remaining matrices in the file's layout.
_COPY_HEADROOM = 4


def memory_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class GGMLMatrix:
    """A K.QMatrix (GGML block types, F16, BF16, F32) as a KernelMatrix; ``q`` is the QMatrix.

    Where ``interleaves(type)``, the first matmul copies the matrix into the interleaved layout
    (K.q4x16_repack) and every later one uses it; ``release`` is then called, to let the file's
    pages go (get_rows still reads them). Lazily, so a table only read by get_rows (token_embd
    when the output matrix is its own) is never copied; and only while memory allows
    (_COPY_HEADROOM), else the matrix stays in the file's layout for good."""

    __slots__ = ("_release", "get_rows", "k", "matmul", "n", "q")

    def __init__(self, q: Any, release: Callable[[], None] | None = None) -> None:
        self.q = q
        self.n, self.k = int(q.n), int(q.k)
        self.get_rows = functools.partial(K.get_rows, q)
        self._release = release
        if interleaves(int(q.type)):
            self.matmul = self._interleave_then_matmul
        else:
            self.matmul = functools.partial(K.matmul, q)

    def _interleave_then_matmul(self, x: np.ndarray, batch_invariant: bool = False) -> np.ndarray:
        available = memory_available()
        if available is not None and available < _COPY_HEADROOM * int(self.q.nbytes):
            self.matmul = functools.partial(K.matmul, self.q)
            return self.matmul(x, batch_invariant=batch_invariant)
        self.matmul = functools.partial(K.q4x16_matmul, K.q4x16_repack(self.q))
        if self._release is not None:
            self._release()
        return self.matmul(x)

    @property
    def rows_invariant(self) -> bool:
        """Whether every matmul gives each row what it gives that row alone, batch_invariant or
        not (the interleaved layout, once copied); then rows of a prompt can share a pass with
        other sequences' rows at no cost."""
        return getattr(self.matmul, "func", None) is K.q4x16_matmul

    def __repr__(self) -> str:
        return f"GGMLMatrix(n={self.n}, k={self.k}, type={self.q.type})"

"""The quantizer: a Hugging Face folder or a GGUF file in, a GGUF file of the chosen type out.

    from phirt.quantize import quantize
    result = quantize("Phi-3-mini-4k-instruct/", "phi3-q4_k_m.gguf", "q4_k_m")

Tensors are read, converted and written one slab of rows at a time (writer.py); per-tensor types
follow llama.cpp's mixes (mixes.py); names and hyperparameters follow llama.cpp's converter
(names.py, hf.py, vocab.py), so llama.cpp and phirt both load the output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phirt.errors import InvalidArgumentError, QuantizeError, check_int
from phirt.quantize.mixes import FILE_TYPES, TensorPlan, plan_types
from phirt.quantize.source import Source
from phirt.quantize.writer import WriteResult, write_gguf

__all__ = ["FILE_TYPES", "QuantizeResult", "open_source", "plan", "quantize"]


@dataclass
class QuantizeResult(WriteResult):
    file_type: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # per-tensor fallbacks

    @property
    def mb_per_s(self) -> float:
        """Stored source megabytes converted per second."""
        return self.bytes_in / 1e6 / self.seconds if self.seconds > 0 else 0.0


def open_source(src: str | os.PathLike[str]) -> Source:
    """A Hugging Face model folder, an ONNX Runtime GenAI folder or a GGUF file."""
    path = Path(src)
    if path.is_dir() and (path / "genai_config.json").is_file():
        from phirt.quantize.onnx_source import open_onnx

        return open_onnx(path)
    if path.is_dir():
        from phirt.quantize.hf import open_hf

        return open_hf(path)
    if path.is_file():
        from phirt.quantize.gguf_source import open_gguf

        return open_gguf(path)
    raise QuantizeError("no such file or folder", path)


def plan(source: Source, file_type: str) -> list[TensorPlan]:
    """Output type of every tensor of ``source``, in output order."""
    if file_type not in FILE_TYPES:
        raise QuantizeError(f"unknown type {file_type!r}; choose from {', '.join(FILE_TYPES)}")
    return plan_types([(t.name, t.shape) for t in source.tensors], file_type, source.n_layer)


def quantize(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    file_type: str,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QuantizeResult:
    """Convert ``src`` to ``out`` in ``file_type`` (f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s,
    q5_1, q5_0, q4_k_m, q4_k_s, q4_1, q4_0). ``progress(done, total)`` gets source bytes."""
    from phirt import _kernels as K

    for name, value in (("src", src), ("out", out)):
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise InvalidArgumentError(f"{name} must be a file or folder path, got {value!r:.80}")
    if not isinstance(file_type, str):
        raise InvalidArgumentError(f"file_type must be a string, got {file_type!r:.80}")
    if threads is not None:
        threads = check_int("threads", threads, 1)
    file_type = file_type.lower()
    source = open_source(src)
    plans = plan(source, file_type)
    if Path(out).resolve() == Path(source.path).resolve():
        raise QuantizeError("output would overwrite the source", out)
    if threads is not None:
        K.set_num_threads(threads)
    total = sum(t.nbytes for t in source.tensors)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    try:
        written = write_gguf(source, plans, out, file_type, step)
    except OSError as exc:  # an unwritable or missing folder, a full disk, a read error
        raise QuantizeError(f"I/O error: {exc.strerror or exc}", exc.filename or out) from None
    return QuantizeResult(
        **vars(written),
        file_type=file_type,
        warnings=list(source.warnings),
        notes=[f"{p.name}: {p.note}" for p in plans if p.note],
    )

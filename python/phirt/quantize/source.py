"""What every source format (Hugging Face folder, GGUF file) hands the writer: metadata and tensors
that can be read a slab of rows at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFWriter

__all__ = ["Source", "SourceTensor"]


@dataclass(frozen=True)
class SourceTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order: (rows, row length), or (n,) for 1-D
    src_type: str  # stored type as its format names it (BF16, F16, F32, Q4_0, ...)
    path: str  # file the bytes come from (named in errors)
    nbytes: int  # stored bytes (for progress and throughput)
    # rows [start, stop) as float32 (stop - start, row length); a 1-D tensor is one row
    read_rows: Callable[[int, int], np.ndarray] = field(repr=False, compare=False)
    # slabs must start on multiples of this many rows (permutations that work within heads)
    row_align: int = 1
    # the stored bytes as (rows, row bytes) u8 when they can be copied unchanged to the output
    # because the type is the one asked for (GGUF sources only)
    read_raw: Callable[[int, int], np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )
    raw_type: int | None = None  # GGML type id of read_raw's bytes

    @property
    def n_rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_len(self) -> int:
        return self.shape[-1]


@dataclass
class Source:
    path: str
    arch: str  # general.architecture of the output
    n_layer: int
    tensors: list[SourceTensor]
    # writes general.* (except architecture and file_type), hyperparameters and tokenizer keys
    add_metadata: Callable[[GGUFWriter], None] = field(repr=False)
    warnings: list[str] = field(default_factory=list)
    # float type that holds the source exactly (for eval's reference model): f32, f16 or bf16
    exact_type: str = "f32"

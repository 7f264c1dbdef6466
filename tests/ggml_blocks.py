"""GGML block formats as the kernel tests use them: the weight types phirt reads, where each block
keeps its f16 scale fields, and random valid blocks. Block sizes come from gguf-py's table."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

T = GGMLQuantizationType

# Every type phirt's kernels take as weights (QMatrix, matmul, get_rows, dequantize).
WEIGHT_TYPES = [
    T.Q4_0,
    T.Q4_1,
    T.Q5_0,
    T.Q5_1,
    T.Q8_0,
    T.Q4_K,
    T.Q5_K,
    T.Q6_K,
    T.F16,
    T.BF16,
    T.F32,
]

# Byte offsets of the f16 scale fields (d, and m/dmin where present) inside one block; everything
# else in these blocks is free bits, so random bytes with finite scales are valid blocks.
F16_FIELDS: dict[T, tuple[int, ...]] = {
    T.Q4_0: (0,),
    T.Q4_1: (0, 2),
    T.Q5_0: (0,),
    T.Q5_1: (0, 2),
    T.Q8_0: (0,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}


def random_blocks(
    qtype: T,
    rows: int,
    k: int,
    rng: np.random.Generator,
    scales: Callable[[np.random.Generator, int], np.ndarray],
) -> np.ndarray:
    """(rows, row bytes) of random blocks of a block type: every quant bit pattern (Q8_0's -128
    included), and each f16 scale field set to ``scales(rng, n_blocks)`` (converted to float16)."""
    bs, ts = GGML_QUANT_SIZES[qtype]
    nb = rows * k // bs
    blocks = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        field = np.asarray(scales(rng, nb), np.float16)
        blocks[:, off : off + 2] = field.view(np.uint8).reshape(nb, 2)
    return blocks.reshape(rows, nb // rows * ts if rows else 0)

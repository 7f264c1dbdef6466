"""Output types: which GGML type each tensor gets, the way llama.cpp's quantizer chooses them.

Follows llama.cpp's ``llama_tensor_get_type`` (src/llama-quant.cpp) without an importance matrix,
for the file types phirt writes, so a phirt Q4_K_M file has the same per-tensor types as
``llama-quantize ... Q4_K_M`` on the same model:

- Only 2-D ``*.weight`` tensors are quantized; norms, biases and rope factors stay F32.
- ``output.weight`` (or ``token_embd.weight`` when the model has no ``output.weight``, i.e. tied
  embeddings) gets Q6_K in every quantized type except Q8_0, which keeps Q8_0; Q8_0 when its rows
  are not a multiple of the type's block.
- Q4_K_M / Q5_K_M: ``attn_v`` (``attn_qkv`` where fused) and ``ffn_down`` get Q6_K in the first
  and last eighth of the layers and in every third layer between them ("use_more_bits").
- Q4_K_S: ``attn_v``/``attn_qkv`` of the first 4 layers and ``ffn_down`` of the first eighth get
  Q5_K.
- A row length that is not a multiple of the block size falls back as llama.cpp does:
  Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 (32-wide blocks), and to F16 when even 32 does not
  divide it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from phirt.quantize.names import layer_of

__all__ = ["FILE_TYPES", "FileType", "TensorPlan", "plan_types"]

T = GGMLQuantizationType


@dataclass(frozen=True)
class FileType:
    name: str  # as users type it: q4_k_m
    ftype: LlamaFileType  # general.file_type
    base: GGMLQuantizationType  # the type of most weight matrices


FILE_TYPES: dict[str, FileType] = {
    ft.name: ft
    for ft in (
        FileType("f32", LlamaFileType.ALL_F32, T.F32),
        FileType("f16", LlamaFileType.MOSTLY_F16, T.F16),
        FileType("bf16", LlamaFileType.MOSTLY_BF16, T.BF16),
        FileType("q8_0", LlamaFileType.MOSTLY_Q8_0, T.Q8_0),
        FileType("q6_k", LlamaFileType.MOSTLY_Q6_K, T.Q6_K),
        FileType("q5_k_m", LlamaFileType.MOSTLY_Q5_K_M, T.Q5_K),
        FileType("q5_k_s", LlamaFileType.MOSTLY_Q5_K_S, T.Q5_K),
        FileType("q5_1", LlamaFileType.MOSTLY_Q5_1, T.Q5_1),
        FileType("q5_0", LlamaFileType.MOSTLY_Q5_0, T.Q5_0),
        FileType("q4_k_m", LlamaFileType.MOSTLY_Q4_K_M, T.Q4_K),
        FileType("q4_k_s", LlamaFileType.MOSTLY_Q4_K_S, T.Q4_K),
        FileType("q4_1", LlamaFileType.MOSTLY_Q4_1, T.Q4_1),
        FileType("q4_0", LlamaFileType.MOSTLY_Q4_0, T.Q4_0),
    )
}

_FLOAT = (T.F32, T.F16, T.BF16)
# llama.cpp's fallback when a row is not a multiple of a 256-wide K-quant block
_FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, row length)
    type: GGMLQuantizationType
    note: str = ""  # why it differs from the file type's base (fallback message), if it does


def block_size(t: GGMLQuantizationType) -> int:
    return GGML_QUANT_SIZES[t][0]


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _quantizable(name: str, shape: Sequence[int]) -> bool:
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name


def _is_attn_v(name: str) -> bool:
    return "attn_v.weight" in name or "attn_qkv.weight" in name


def sort_key(name: str) -> tuple[int, str]:
    """llama.cpp's tensor order (its weight map): global tensors first, then by block, then name.
    The order matters: the attn_v counter of the mixes follows it."""
    return (layer_of(name), name)


def plan_types(
    tensors: Sequence[tuple[str, tuple[int, ...]]], file_type: str, n_layer: int
) -> list[TensorPlan]:
    """Choose the output type of every (name, shape), in llama.cpp's order (see sort_key)."""
    ft = FILE_TYPES[file_type]
    ordered = sorted(tensors, key=lambda t: sort_key(t[0]))
    names = {name for name, _ in ordered}
    tied = "output.weight" not in names
    n_attn_v = sum(1 for name, shape in ordered if _is_attn_v(name) and _quantizable(name, shape))
    i_attn_v = 0
    i_ffn_down = 0
    plans: list[TensorPlan] = []
    for name, shape in ordered:
        if not _quantizable(name, shape):
            plans.append(TensorPlan(name, shape, T.F32))
            continue
        new = ft.base
        if ft.base in _FLOAT:
            plans.append(TensorPlan(name, shape, new))
            continue
        ncols = shape[-1]
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            if ncols % block_size(ft.base) != 0:
                new = T.Q8_0
            elif new != T.Q8_0:
                new = T.Q6_K
        elif _is_attn_v(name):
            if ft.name in ("q4_k_m", "q5_k_m") and _use_more_bits(i_attn_v, n_attn_v):
                new = T.Q6_K
            elif ft.name == "q4_k_s" and i_attn_v < 4:
                new = T.Q5_K
            i_attn_v += 1
        elif "ffn_down" in name:
            if ft.name in ("q4_k_m", "q5_k_m") and _use_more_bits(i_ffn_down, n_layer):
                new = T.Q6_K
            elif ft.name == "q4_k_s" and i_ffn_down < n_layer // 8:
                new = T.Q5_K
            i_ffn_down += 1
        note = ""
        if ncols % block_size(new) != 0:
            wanted = new
            new = _FALLBACK.get(new, new)
            if ncols % block_size(new) != 0:
                new = T.F16
            note = (
                f"row length {ncols} is not a multiple of {block_size(wanted)} "
                f"(required by {wanted.name}): using {new.name}"
            )
        plans.append(TensorPlan(name, shape, new, note))
    return plans

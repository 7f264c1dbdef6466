"""The tokenizer of a Hugging Face folder written into a GGUF file: the metadata comes from the
shared mapping (phirt/formats/hf_tokenizer.py, also how ONNX folders are read), the value types
from gguf-py's writer methods, so the keys are typed as llama.cpp's converter types them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf import GGUFWriter

from phirt.formats.hf_tokenizer import read_sentencepiece, tokenizer_metadata

__all__ = ["add_vocab", "read_sentencepiece"]

_ARRAYS = {
    "tokenizer.ggml.tokens": GGUFWriter.add_token_list,
    "tokenizer.ggml.scores": GGUFWriter.add_token_scores,
    "tokenizer.ggml.token_type": GGUFWriter.add_token_types,
    "tokenizer.ggml.merges": GGUFWriter.add_token_merges,
}


def add_vocab(writer: GGUFWriter, folder: Path, hf_arch: str, config: dict[str, Any]) -> None:
    """Write the tokenizer of the HF model in ``folder`` into ``writer``'s metadata."""
    meta = tokenizer_metadata(folder, hf_arch, config.get("vocab_size"))
    for key, value in meta.items():
        if key in _ARRAYS:
            _ARRAYS[key](writer, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:  # pragma: no cover - the mapping emits only the types above
            raise TypeError(f"{key}: unexpected metadata value {value!r}")

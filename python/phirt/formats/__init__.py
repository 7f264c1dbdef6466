"""Model formats: reading and validating files, and the source interface the models read through
(source.py): GGUF files (gguf.py) and ONNX Runtime GenAI folders (onnx_*.py)."""

from __future__ import annotations

import os
from collections import OrderedDict

from phirt.formats.gguf import SUPPORTED_TYPES, GGUFFile, GGUFSummary, Tensor, TypeStats, type_name
from phirt.formats.source import GGMLMatrix, KernelMatrix, ModelSource, SourceTensor

__all__ = [
    "SUPPORTED_TYPES",
    "GGMLMatrix",
    "GGUFFile",
    "GGUFSummary",
    "KernelMatrix",
    "ModelSource",
    "SourceTensor",
    "Tensor",
    "TypeStats",
    "gguf_header",
    "is_onnx_folder",
    "open_model",
    "parsed_model",
    "type_name",
]


def onnx_folder_of(path: str | os.PathLike[str]) -> str | None:
    """The ONNX Runtime GenAI folder ``path`` names: a folder, or a .onnx file inside one that
    holds genai_config.json; None for anything else (a GGUF file)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    if path.endswith(".onnx") and os.path.isfile(
        os.path.join(os.path.dirname(path) or ".", "genai_config.json")
    ):
        return os.path.dirname(path) or "."
    return None


def is_onnx_folder(path: str | os.PathLike[str]) -> bool:
    return onnx_folder_of(path) is not None


def open_model(path: str | os.PathLike[str]) -> ModelSource:
    """The model at ``path``: an ONNX Runtime GenAI folder (formats/onnx_source.py) when it is a
    folder (or its .onnx file), else a GGUF file. Errors name the path and the problem. A source
    a probe parsed (parsed_model) is taken over instead of parsed again."""
    parsed = _PARSED.pop(_identity(path), None)
    return parsed if parsed is not None else _parse(path)


def _parse(path: str | os.PathLike[str]) -> ModelSource:
    folder = onnx_folder_of(path)
    if folder is not None:
        from phirt.formats.onnx_source import OnnxSource

        return OnnxSource(folder)
    return GGUFFile(path)


# Models the backends' probes parsed (a GGUF header, an ONNX folder's mapped graph), by file
# identity: every probe reads the same header, and open_model takes the source from here instead
# of parsing it again (SmolLM2's 49k-token vocabulary takes ~20 ms, a Phi-3 folder's graph ~0.5 s).
# Taken, not copied, so no mapping outlives the model that owns it.
_PARSED: OrderedDict[tuple, ModelSource] = OrderedDict()
_PARSED_MAX = 4


def _identity(path: str | os.PathLike[str]) -> tuple:
    """The path with the size and mtime of the file, or of every file in the folder."""
    try:
        if os.path.isdir(path):
            files = tuple(
                sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path))
            )
            return (os.path.realpath(path), files)
        st = os.stat(path)
    except OSError:
        return (os.fspath(path), None)  # not cached: the reader names the problem
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def parsed_model(path: str | os.PathLike[str]) -> ModelSource:
    """The source at ``path``, parsed once while its files are unchanged (size and mtime)."""
    key = _identity(path)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse(path)
        _PARSED[key] = parsed
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return parsed


def gguf_header(path: str | os.PathLike[str]) -> GGUFFile:
    """The GGUFFile of ``path`` (a GGUF file), parsed once while it is unchanged."""
    parsed = parsed_model(path)
    assert isinstance(parsed, GGUFFile)
    return parsed

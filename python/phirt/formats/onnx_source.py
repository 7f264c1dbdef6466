"""An ONNX Runtime GenAI folder as a model source (formats/source.py): the graph mapped onto a
phirt architecture (onnx_graph.py), the tokenizer and chat template from the folder's Hugging Face
files (hf_tokenizer.py), special tokens as onnxruntime-genai uses them.

What onnxruntime-genai does with a folder, and so what phirt does with it:
- genai_config.json's bos / eos / pad ids are the model's; every id of an eos list ends generation.
- onnxruntime-genai's tokenizer adds no BOS to a prompt (tokenizer.json's post-processor
  notwithstanding): ``add_bos_token`` is false. A chat template that starts with bos_token still
  puts it in the text, where it is parsed as the special token.
- tokenizer.json's per-token lstrip / rstrip are followed, as its tokenizer follows them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from phirt.errors import FormatError
from phirt.formats.hf_tokenizer import strip_metadata, tokenizer_metadata
from phirt.formats.onnx_folder import CONFIG_NAME, OnnxFolder
from phirt.formats.onnx_graph import OnnxTensor, map_graph
from phirt.formats.source import NUMERICS_KEY
from phirt.tokenizer import EOG_IDS_KEY, LSTRIP_KEY, RSTRIP_KEY

__all__ = ["OnnxSource"]


class OnnxSource:
    """A validated ONNX Runtime GenAI folder: ``arch``, GGUF-named ``metadata``, canonical
    ``tensors`` (loaded on demand: MatMulNBits weights are repacked when the model loads them)."""

    native_kv_type = "f32"  # onnxruntime's GroupQueryAttention cache in f32 models

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.folder = OnnxFolder(path)
        self.path = self.folder.path
        graph = map_graph(self.folder)
        self._arch = graph.arch
        self.tensors: dict[str, OnnxTensor] = graph.tensors
        self.metadata: dict[str, Any] = {**graph.metadata, **self._tokenizer(graph.metadata)}

    def __repr__(self) -> str:
        return f"OnnxSource({self.path!r}, arch={self._arch!r}, tensors={len(self.tensors)})"

    @property
    def arch(self) -> str:
        return self._arch

    def prefault(self, names: Iterable[str]) -> None:
        """Nothing to do: quantized weights are repacked into memory as they load, and the float
        tables left in the map (embeddings) are read a row per token."""

    def _tokenizer(self, graph_meta: dict[str, Any]) -> dict[str, Any]:
        n_vocab = int(graph_meta[f"{self._arch}.vocab_size"])
        folder = Path(self.path)
        meta = tokenizer_metadata(folder, None, n_vocab)
        # the file's own strip flags, even none: llama.cpp's guess by model name does not apply
        meta.update({LSTRIP_KEY: [], RSTRIP_KEY: [], **strip_metadata(folder)})
        model = self.folder.config["model"]
        cfg_path = self.folder.file(CONFIG_NAME)
        for key, gguf_key in (("bos_token_id", "bos"), ("pad_token_id", "padding")):
            value = model.get(key)
            if isinstance(value, int) and value >= 0:
                meta[f"tokenizer.ggml.{gguf_key}_token_id"] = _checked(
                    value, n_vocab, key, cfg_path
                )
        eos = model.get("eos_token_id")
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        eos_ids = [_checked(i, n_vocab, "eos_token_id", cfg_path) for i in eos_ids]
        if eos_ids:
            meta.setdefault("tokenizer.ggml.eos_token_id", eos_ids[0])
            meta[EOG_IDS_KEY] = eos_ids
        meta["tokenizer.ggml.add_bos_token"] = False  # what onnxruntime-genai's tokenizer feeds
        meta[NUMERICS_KEY] = "onnxruntime"  # float32 GELU, as the graph's Gelu / FastGelu
        return meta


def describe(source: OnnxSource) -> list[tuple[str, Any]]:
    """What ``phirt info`` prints about a folder: (label, value) rows."""
    from collections import Counter

    folder = source.folder
    files = [os.path.join(folder.path, f) for f in sorted(os.listdir(folder.path))]
    size = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
    ops = Counter(n.op_type for n in folder.graph.node)
    nbits = Counter()
    for n in folder.graph.node:
        if n.op_type == "MatMulNBits":
            a = {x.name: x.i for x in n.attribute}
            zp = ", zero points" if len(n.input) > 3 and n.input[3] else ""
            nbits[
                f"{a.get('bits', 4)}-bit block {a.get('block_size')}, accuracy level "
                f"{a.get('accuracy_level', 0)}{zp}"
            ] += 1
    meta, arch = source.metadata, source.arch
    tokens = meta.get("tokenizer.ggml.tokens")
    window = meta.get(f"{arch}.attention.sliding_window")
    rows: list[tuple[str, Any]] = [
        ("folder", f"{folder.path} ({size / 1e6:.1f} MB in {len(files)} files)"),
        ("format", f"ONNX Runtime GenAI folder ({os.path.basename(folder.model_path)})"),
        ("model type", folder.model_type),
        ("architecture", arch),
        ("operators", ", ".join(f"{op} x{c}" for op, c in ops.most_common())),
        ("MatMulNBits", "; ".join(f"{k} x{c}" for k, c in nbits.items()) or None),
        ("context length", meta.get(f"{arch}.context_length")),
        ("layers", meta.get(f"{arch}.block_count")),
        ("embedding length", meta.get(f"{arch}.embedding_length")),
        ("heads", f"{meta.get(f'{arch}.attention.head_count')} "
                  f"(kv {meta.get(f'{arch}.attention.head_count_kv')})"),
        ("sliding window", window or None),
        ("LongRoPE switch", meta.get(f"{arch}.rope.scaling.original_context_length")),
        ("tokenizer", meta.get("tokenizer.ggml.model")),
        ("vocabulary", len(tokens) if isinstance(tokens, list) else None),
        ("chat template", "yes" if meta.get("tokenizer.chat_template") else "no"),
    ]  # fmt: skip
    return [(k, v) for k, v in rows if v is not None]


def _checked(value: Any, n_vocab: int, key: str, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n_vocab:
        raise FormatError(f"model.{key} {value!r} is not a token id in [0, {n_vocab})", path)
    return value

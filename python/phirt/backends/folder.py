"""Model folders (ONNX Runtime GenAI, OpenVINO IR, mlx-lm / Hugging Face): their tokenizer and
chat template, behind the same interface as phirt's GGUF tokenizer, so `Model` and the one
generator treat every backend alike.

The tokenizer is Hugging Face's `tokenizers` library reading the folder's tokenizer.json, the file
all three stacks ship; special tokens, BOS/EOS and the chat template come from
tokenizer_config.json, chat_template.jinja and generation_config.json as transformers reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from phirt.errors import FormatError
from phirt.tokenizer import EOG_TEXTS


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the folder; {} when the file is absent; FormatError when unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"cannot read {path.name}: {exc}", path.parent) from None
    if not isinstance(data, dict):
        raise FormatError(f"{path.name} is not a JSON object", path.parent)
    return data


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "<s>", ...} in older tokenizer_config files
        value = value.get("content")
    return value if isinstance(value, str) else None


class FolderTokenizer:
    """tokenizer.json through `tokenizers`, with phirt.tokenizer.Tokenizer's methods."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.path = os.fspath(folder)
        root = Path(folder)
        file = root / "tokenizer.json"
        if not file.is_file():
            raise FormatError("no tokenizer.json in the model folder", root)
        try:
            self._tok = HFTokenizer.from_file(str(file))
        except Exception as exc:  # the Rust side raises plain Exception for malformed files
            raise FormatError(f"tokenizer.json does not load: {exc}", root) from None
        config = read_json(root / "tokenizer_config.json")
        self.config = config
        self.bos_text = _token_text(config.get("bos_token")) or ""
        self.eos_text = _token_text(config.get("eos_token")) or ""
        self.bos_id = self._tok.token_to_id(self.bos_text) if self.bos_text else None
        eog: set[int] = set()
        gen = read_json(root / "generation_config.json")
        for key in ("eos_token_id",):
            ids = gen.get(key, [])
            eog.update(ids if isinstance(ids, list) else [ids])
        for text in {self.eos_text, *EOG_TEXTS}:
            i = self._tok.token_to_id(text) if text else None
            if i is not None:
                eog.add(i)
        self.eot_ids: frozenset[int] = frozenset(int(i) for i in eog if isinstance(i, int))
        # a plain token to decode pieces after, so a word-start space survives (see StreamDecoder)
        self._anchor = self._tok.token_to_id("a")

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(
        self, text: str, add_bos: bool | None = None, parse_special: bool = True
    ) -> list[int]:
        self._tok.encode_special_tokens = not parse_special
        ids = self._tok.encode(text, add_special_tokens=add_bos is not False).ids
        if add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, self.bos_id)
        return list(ids)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def stream_decoder(
        self, skip_special: bool = True, strip_leading_space: bool = False
    ) -> StreamDecoder:
        return StreamDecoder(self, skip_special, strip_leading_space)


class StreamDecoder:
    """Incremental decoding for tokenizers that only decode whole sequences: each push decodes a
    short window and emits what it adds once it is whole UTF-8 (no trailing U+FFFD).

    The window starts with an anchor token ("a"), because a sequence's decoder drops the
    word-start space of its first piece: "France is" + "▁Paris" must give " Paris".
    """

    def __init__(self, tok: FolderTokenizer, skip_special: bool, strip_leading_space: bool) -> None:
        self.tok = tok
        self.skip = skip_special
        self._strip = strip_leading_space
        self._ids: list[int] = [] if tok._anchor is None else [tok._anchor]
        self._prefix = 0  # window start
        self._read = len(self._ids)  # ids whose text has been emitted

    def _text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, self.skip)

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        return self._emit(final=False)

    def _emit(self, final: bool) -> str:
        before = self._text(self._ids[self._prefix : self._read])
        after = self._text(self._ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        out = after[len(before) :]
        self._prefix, self._read = self._read, len(self._ids)
        if self._strip and out:
            self._strip = False
            if out.startswith(" "):
                out = out[1:]
        return out

    def flush(self) -> str:
        out = self._emit(final=True) if self._read < len(self._ids) else ""
        self._ids = self._ids[-1:] if self._ids else []
        self._prefix, self._read = 0, len(self._ids)
        return out


def folder_metadata(folder: str | os.PathLike[str], arch: str | None = None) -> dict[str, Any]:
    """GGUF-style keys the runtime reads from a folder: the chat template (tokenizer_config.json
    or chat_template.jinja) and the architecture."""
    root = Path(folder)
    meta: dict[str, Any] = {}
    template = read_json(root / "tokenizer_config.json").get("chat_template")
    jinja = root / "chat_template.jinja"
    if not isinstance(template, str) and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    if isinstance(template, str):
        meta["tokenizer.chat_template"] = template
    if arch:
        meta["general.architecture"] = arch
    return meta


def hf_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(Path(folder) / "config.json")

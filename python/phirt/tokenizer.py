"""Tokenizers built from GGUF metadata that give llama.cpp's token ids (src/llama-vocab.cpp).

`tokenizer.ggml.model` picks the algorithm:
- "llama" (SentencePiece-style; Phi-3, Phi-3.5): spaces become U+2581, a space is prefixed to the
  text and to every fragment after a special token, neighbouring symbols merge by vocabulary score
  (llm_tokenizer_spm); what no token covers falls back to <0xNN> byte tokens.
- "gpt2" (byte-level BPE; Phi-2, Phi-4-mini, SmolLM2): the pre-tokenizer regexes llama.cpp uses
  for `tokenizer.ggml.pre` split the text, then the `tokenizers` library byte-encodes and merges.

Both cut special tokens (control, user-defined, unknown) out of the text first, longest first
(tokenizer_st_partition). Decoding is llama-cpp-python's `detokenize`: the pieces joined, control
tokens dropped unless asked for, and for SentencePiece one leading space removed after a BOS.
"""

from __future__ import annotations

import codecs
import heapq
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from phirt.errors import FormatError, InvalidArgumentError, UnsupportedError

if TYPE_CHECKING:
    from gguf import GGUFReader

__all__ = [
    "EOG_IDS_KEY",
    "LSTRIP_KEY",
    "PRE_TOKENIZERS",
    "RSTRIP_KEY",
    "Attr",
    "PreTokenizer",
    "StreamDecoder",
    "Tokenizer",
]

SPM_SPACE = "\u2581"  # SentencePiece's visible space

# Keys phirt adds to GGUF-named metadata for what a Hugging Face tokenizer.json or an ONNX Runtime
# GenAI config states and GGUF cannot: per-token whitespace stripping (llama.cpp guesses it from
# general.name) and further end-of-generation ids (genai_config's eos_token_id list).
LSTRIP_KEY = "phirt.tokenizer.lstrip_ids"
RSTRIP_KEY = "phirt.tokenizer.rstrip_ids"
EOG_IDS_KEY = "phirt.tokenizer.eog_ids"
_CSPACE = " \t\n\v\f\r"  # C isspace(): what llama.cpp's lstrip/rstrip remove


class Attr(IntFlag):
    """Per-token attributes, as llama.cpp's llama_token_attr."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3  # not text: hidden when decoding unless asked for
    USER_DEFINED = 1 << 4  # text, but matched whole before tokenizing
    BYTE = 1 << 5  # <0xNN>
    LSTRIP = 1 << 7  # eat whitespace on the left when matched in text
    RSTRIP = 1 << 8  # ... on the right


class TokenType(IntEnum):
    """tokenizer.ggml.token_type values (GGUF spec; the ids of gguf-py's TokenType, which is not
    imported on the load path: see formats/gguf.py)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


_TYPE_ATTR = {
    TokenType.NORMAL: Attr.NORMAL,
    TokenType.UNKNOWN: Attr.UNKNOWN,
    TokenType.CONTROL: Attr.CONTROL,
    TokenType.USER_DEFINED: Attr.USER_DEFINED,
    TokenType.UNUSED: Attr.UNUSED,
    TokenType.BYTE: Attr.BYTE,
}
_TYPE_ATTR_LUT = np.array(  # token type -> attributes, UNDEFINED for unknown types
    [_TYPE_ATTR.get(t, Attr.UNDEFINED) for t in range(max(_TYPE_ATTR) + 1)], dtype=np.int64
)
_SPECIAL = int(Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)  # matched whole in text
_HIDDEN = int(Attr.CONTROL | Attr.UNKNOWN)  # dropped by decode(skip_special=True)

# Texts llama.cpp treats as end of generation (its special_eog_ids list, with the FIM pad / repo /
# file-separator tokens it also adds); it marks them control whatever their token type says.
EOG_TEXTS = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
        "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
        "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
        "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
        "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
        "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
    }
)  # fmt: skip
# Fill-in-the-middle markers llama.cpp also forces to control (they do not end generation).
_FIM_TEXTS = frozenset(
    {
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
        "▁<PRE>", "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>",
        "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>",
        "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
        "<|code_middle|>", "<|middle|>",
    }
)  # fmt: skip

# llama.cpp's pre-tokenizer regexes, verbatim (llm_tokenizer_bpe). Where upstream's regex uses
# \p{Lu}/\p{Ll}, llama.cpp's adaptation is kept: it is what llama.cpp tokenizes with.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_UPPER = r"((?=[\p{L}])([^a-z]))"  # llama.cpp's stand-in for [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
_LOWER = r"((?=[\p{L}])([^A-Z]))"  # ... and for [\p{Ll}\p{Lm}\p{Lo}\p{M}]
_GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")


@dataclass(frozen=True)
class PreTokenizer:
    regexes: tuple[str, ...]  # applied in turn, each splitting every piece of the one before
    ignore_merges: bool = False  # a piece that is already a token skips the merges
    add_bos: bool = False  # default for tokenizer.ggml.add_bos_token


_P_GPT2 = PreTokenizer((_GPT2,))
_P_DIGITS_GPT2 = PreTokenizer((r"\p{N}", _GPT2))
_P_LLAMA3 = PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)
_P_QWEN2 = PreTokenizer((_QWEN2,))
_P_GPT4O = PreTokenizer((_GPT4O,))

# tokenizer.ggml.pre -> pre-tokenizer, names as llama.cpp spells them (llama_vocab::impl::load)
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer(_DEFAULT),
    "gpt-2": _P_GPT2,
    "phi-2": _P_GPT2,
    "mpt": _P_GPT2,
    "olmo": _P_GPT2,
    "starcoder": _P_DIGITS_GPT2,
    "refact": _P_DIGITS_GPT2,
    "smollm": _P_DIGITS_GPT2,
    "llama3": _P_LLAMA3,
    "llama-v3": _P_LLAMA3,
    "llama-bpe": _P_LLAMA3,
    "qwen2": _P_QWEN2,
    "deepseek-r1-qwen": _P_QWEN2,
    "stablelm2": _P_QWEN2,
    "gpt-4o": _P_GPT4O,
    "llama4": _P_GPT4O,
}

# tokenizer.ggml.model -> (default BOS, EOS, unknown id, add_bos_token, add_space_prefix) as
# llama.cpp assumes them when the file does not say
_MODEL_DEFAULTS: dict[str, tuple[int | None, int | None, int | None, bool, bool]] = {
    "llama": (1, 2, 0, True, True),
    "gpt2": (None, None, None, False, False),
}


class Tokenizer:
    """A GGUF file's vocabulary: text <-> token ids exactly as llama.cpp computes them."""

    def __init__(self, metadata: Mapping[str, Any], path: str | os.PathLike[str] | None = None):
        self.path = os.fspath(path) if path is not None else None
        meta = metadata
        self.model = str(meta.get("tokenizer.ggml.model", ""))
        if not self.model:
            raise FormatError("no tokenizer: metadata 'tokenizer.ggml.model' is missing", path)
        if self.model not in _MODEL_DEFAULTS:
            raise UnsupportedError(
                f"tokenizer model '{self.model}' is not supported (supported: llama, gpt2)", path
            )
        tokens = meta.get("tokenizer.ggml.tokens")
        if not tokens or not isinstance(tokens, list) or set(map(type, tokens)) != {str}:
            raise FormatError("metadata 'tokenizer.ggml.tokens' is missing or not strings", path)
        n = len(tokens)
        self.tokens: list[str] = list(tokens)
        if "" in self.tokens:  # llama.cpp renames empty tokens so every text maps back to one id
            self.tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self.token_to_id: dict[str, int] = dict(zip(self.tokens, range(n), strict=True))
        if len(self.token_to_id) != n:
            raise FormatError("metadata 'tokenizer.ggml.tokens' has duplicate tokens", path)
        self.types: list[int] = self._per_token(meta, "token_type", int, TokenType.NORMAL)
        self.scores: list[float] = self._per_token(meta, "scores", float, 0.0)

        bos, eos, unk, add_bos, add_space_prefix = _MODEL_DEFAULTS[self.model]
        self.pre: PreTokenizer | None = None
        if self.model == "gpt2":
            name = str(meta.get("tokenizer.ggml.pre", "default"))
            if name not in PRE_TOKENIZERS:
                raise UnsupportedError(
                    f"pre-tokenizer '{name}' is not supported "
                    f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})",
                    path,
                )
            self.pre = PRE_TOKENIZERS[name]
            add_bos = self.pre.add_bos
        self.bos_id = self._token_id(meta, "bos_token_id", bos)
        self.eos_id = self._token_id(meta, "eos_token_id", eos)
        self.eot_id = self._token_id(meta, "eot_token_id", None)
        self.eom_id = self._token_id(meta, "eom_token_id", None)
        self.unk_id = self._token_id(meta, "unknown_token_id", unk)
        self.pad_id = self._token_id(meta, "padding_token_id", None)
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos))
        self.add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        self.add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", add_space_prefix))
        if self.add_bos and self.bos_id is None:
            raise FormatError("add_bos_token is set but the vocabulary has no BOS token", path)

        # whole-vocabulary work in numpy: a per-token Python loop costs ~10 ms on 49k tokens
        types = np.array(self.types, dtype=np.int64)
        attrs = np.where((types >= 0) & (types < len(_TYPE_ATTR_LUT)), types, 0)
        attrs = _TYPE_ATTR_LUT[attrs]  # unknown type ids: UNDEFINED, as llama.cpp
        eog = {i for i in (self.eos_id, self.eot_id, self.eom_id) if i is not None}
        eog.update(self._id_list(meta, EOG_IDS_KEY))
        for text in EOG_TEXTS | _FIM_TEXTS:
            i = self.token_to_id.get(text)
            if i is not None:
                attrs[i] |= Attr.CONTROL
                if text in EOG_TEXTS:
                    eog.add(i)
        self.eot_ids: frozenset[int] = frozenset(eog)
        self.attrs: list[int] = attrs.tolist()
        # longest first, so "<|endoftext|>" is cut out before any special token inside it
        self._special_ids = sorted(
            np.flatnonzero(attrs & _SPECIAL).tolist(), key=lambda i: (-len(self.tokens[i]), i)
        )
        self._apply_name_rules(str(meta.get("general.name", "")))
        self._apply_strip_lists(meta)
        self._pieces: list[bytes | None] = [None] * n
        self._byte_ids: dict[int, int] = {}
        for i in np.flatnonzero(attrs & Attr.BYTE).tolist():
            self._byte_ids.setdefault(self._byte_value(i), i)
        self._bpe = _BpeModel(self, meta.get("tokenizer.ggml.merges")) if self.pre else None

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any], path: str | os.PathLike[str] | None = None
    ) -> Tokenizer:
        """The tokenizer a GGUF file's metadata (python values, as GGUFFile.metadata) describes."""
        return cls(metadata, path)

    @classmethod
    def from_gguf(cls, source: str | os.PathLike[str] | GGUFReader | Any) -> Tokenizer:
        """From a GGUF path, a gguf.GGUFReader, or any object with a `.metadata` dict."""
        if isinstance(source, (str, os.PathLike)):
            from phirt.formats.gguf import GGUFFile

            file = GGUFFile(source)
            return cls(file.metadata, file.path)
        if type(source).__name__ == "GGUFReader":  # gguf-py's reader, not imported unless used
            meta = {name: field.contents() for name, field in source.fields.items()}
            return cls(meta, getattr(source.data, "filename", None))
        metadata = getattr(source, "metadata", None)
        if not isinstance(metadata, Mapping):
            raise TypeError(f"expected a GGUF path, GGUFReader or .metadata dict, got {source!r}")
        return cls(metadata, getattr(source, "path", None))

    def _per_token(self, meta: Mapping[str, Any], key: str, kind: type, default: Any) -> list:
        values = meta.get(f"tokenizer.ggml.{key}")
        if values is None:
            return [kind(default)] * len(self.tokens)
        if len(values) < len(self.tokens):
            raise FormatError(
                f"metadata 'tokenizer.ggml.{key}' has {len(values)} entries for "
                f"{len(self.tokens)} tokens",
                self.path,
            )
        return list(map(kind, values[: len(self.tokens)]))

    def _token_id(self, meta: Mapping[str, Any], key: str, default: int | None) -> int | None:
        value = meta.get(f"tokenizer.ggml.{key}", default)
        if value is None:
            return None
        if not 0 <= int(value) < len(self.tokens):
            raise FormatError(
                f"metadata 'tokenizer.ggml.{key}' = {value} is outside [0, {len(self.tokens)})",
                self.path,
            )
        return int(value)

    def _apply_name_rules(self, name: str) -> None:
        # llama.cpp sets strip attributes by general.name, since GGUF does not store them: in
        # Phi-3 files every special token but <unk>, <s>, <|endoftext|> eats the whitespace after
        # it (as Phi-3's tokenizer.json says), so "<|user|>\nHi" is <|user|> ▁Hi.
        name = name.lower()
        if "phi-3" in name or "phi3" in name:
            for i in self._special_ids:
                self.attrs[i] |= Attr.RSTRIP
            rules = {"</s>": True, "<unk>": False, "<s>": False, "<|endoftext|>": False}
            for text, rstrip in rules.items():
                i = self.token_to_id.get(text)
                if i is not None:
                    self.attrs[i] = (self.attrs[i] & ~Attr.RSTRIP) | (Attr.RSTRIP if rstrip else 0)

    def _apply_strip_lists(self, meta: Mapping[str, Any]) -> None:
        # a tokenizer.json that says which tokens strip replaces the name rules above
        if LSTRIP_KEY not in meta and RSTRIP_KEY not in meta:
            return
        lstrip = set(self._id_list(meta, LSTRIP_KEY))
        rstrip = set(self._id_list(meta, RSTRIP_KEY))
        for i in self._special_ids:
            attr = self.attrs[i] & ~(Attr.LSTRIP | Attr.RSTRIP)
            self.attrs[i] = (
                attr | (Attr.LSTRIP if i in lstrip else 0) | (Attr.RSTRIP if i in rstrip else 0)
            )

    def _id_list(self, meta: Mapping[str, Any], key: str) -> list[int]:
        ids = meta.get(key) or []
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < len(self.tokens)]
        if bad:
            raise FormatError(
                f"metadata '{key}' holds {bad[0]!r}, not a token id in [0, {len(self.tokens)})",
                self.path,
            )
        return list(ids)

    def _byte_value(self, token_id: int) -> int:
        text = self.tokens[token_id]
        try:
            if len(text) != 6 or not text.startswith("<0x") or not text.endswith(">"):
                raise ValueError
            return int(text[3:5], 16)
        except ValueError:
            raise FormatError(
                f"byte token {token_id} is {text!r}, not of the form <0xNN>", self.path
            ) from None

    # -- properties --------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def bos_text(self) -> str:
        """The BOS token's text, for chat templates ("" when there is none)."""
        return self.tokens[self.bos_id] if self.bos_id is not None else ""

    @property
    def eos_text(self) -> str:
        return self.tokens[self.eos_id] if self.eos_id is not None else ""

    def is_special(self, token_id: int) -> bool:
        """True for control and unknown tokens: markers, not text (what skip_special drops)."""
        return bool(self.attrs[self._check(token_id)] & _HIDDEN)

    def _check(self, token_id: int) -> int:
        try:
            index = operator.index(token_id)
        except TypeError:
            raise InvalidArgumentError(
                f"token id must be an integer, got {token_id!r:.60}"
            ) from None
        if not 0 <= index < len(self.tokens):
            raise InvalidArgumentError(f"token id {index} is outside [0, {len(self.tokens)})")
        return index

    # -- encoding ----------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        add_bos: bool | None = None,
        parse_special: bool = True,
        add_eos: bool | None = None,
    ) -> list[int]:
        """Token ids of `text`. BOS/EOS follow add_bos_token/add_eos_token unless given.

        parse_special=False leaves control tokens as plain text (user-defined ones still match),
        so text from users cannot forge a turn marker.
        """
        _check_text(text)
        out: list[int] = []
        if self.add_bos if add_bos is None else add_bos:
            if self.bos_id is None:
                raise InvalidArgumentError("add_bos=True but the vocabulary has no BOS token")
            out.append(self.bos_id)
        after_special = True  # SentencePiece: prefix a space at the start and after specials
        for fragment in self._partition(text, parse_special):
            if isinstance(fragment, int):
                out.append(fragment)
                after_special = True
            elif self._bpe is not None:
                out.extend(self._bpe.encode(fragment))
            else:
                if self.add_space_prefix and after_special:
                    fragment = " " + fragment
                self._spm_encode(fragment, out)
                after_special = False
        if self.add_eos if add_eos is None else add_eos:
            if self.eos_id is None:
                raise InvalidArgumentError("add_eos=True but the vocabulary has no EOS token")
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Text cut into raw fragments (str) and special token ids (int), as llama.cpp does."""
        parts: list[str | int] = [text] if text else []
        for sid in self._special_ids:
            attr = self.attrs[sid]
            if not parse_special and attr & _HIDDEN:
                continue
            needle = self.tokens[sid]
            if not any(isinstance(p, str) and needle in p for p in parts):
                continue
            out: list[str | int] = []
            for part in parts:
                if isinstance(part, int) or needle not in part:
                    out.append(part)
                    continue
                rest = part
                while rest:
                    at = rest.find(needle)
                    if at < 0:
                        out.append(rest)
                        break
                    left, rest = rest[:at], rest[at + len(needle) :]
                    if attr & Attr.LSTRIP:
                        left = left.rstrip(_CSPACE)
                    if attr & Attr.RSTRIP:
                        rest = rest.lstrip(_CSPACE)
                    if left:
                        out.append(left)
                    out.append(sid)
            parts = out
        return parts

    def _spm_encode(self, text: str, out: list[int]) -> None:
        """llama.cpp's llm_tokenizer_spm: merge the best-scoring neighbour pair until none is a
        token. A symbol is a character; "" marks one merged into its left neighbour."""
        sym = list(text.replace(" ", SPM_SPACE))
        n = len(sym)
        if n == 0:
            return
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        vocab, scores = self.token_to_id, self.scores
        heap: list[tuple[float, int, int, int]] = []  # (-score, left, length, right)

        def add_pair(left: int, right: int) -> None:
            if left >= 0 and right >= 0:
                merged = sym[left] + sym[right]
                token = vocab.get(merged)
                if token is not None:  # best score first, then leftmost
                    heapq.heappush(heap, (-scores[token], left, len(merged), right))

        for i in range(n - 1):
            add_pair(i, i + 1)
        while heap:
            _, left, length, right = heapq.heappop(heap)
            if not sym[left] or not sym[right] or len(sym[left]) + len(sym[right]) != length:
                continue  # stale: a side has merged since
            sym[left] += sym[right]
            sym[right] = ""
            nxt[left] = nxt[right]
            if nxt[left] >= 0:
                prv[nxt[left]] = left
            add_pair(prv[left], left)
            add_pair(left, nxt[left])
        i = 0
        while i >= 0:
            token = vocab.get(sym[i])
            if token is not None:
                out.append(token)
            else:
                out.extend(self._byte_token(b) for b in sym[i].encode("utf-8"))
            i = nxt[i]

    def _byte_token(self, byte: int) -> int:
        token = self._byte_ids.get(byte)
        if token is None and byte < 0x80:
            token = self.token_to_id.get(chr(byte))
        if token is None:
            if self.unk_id is None:
                raise FormatError(f"vocabulary has no byte token <0x{byte:02X}>", self.path)
            token = self.unk_id
        return token

    # -- decoding ----------------------------------------------------------------------------

    def token_to_piece(self, token_id: int) -> bytes:
        """The bytes a token stands for; a control token's own text (llama.cpp, special=True)."""
        piece = self._pieces[self._check(token_id)]
        if piece is None:
            piece = self._pieces[token_id] = self._make_piece(token_id)
        return piece

    def _make_piece(self, token_id: int) -> bytes:
        attr, text = self.attrs[token_id], self.tokens[token_id]
        if attr & _SPECIAL:
            return text.encode()
        if attr & Attr.NORMAL:
            if self._bpe is not None:
                return self._bpe.unbyte(text)
            return text.replace(SPM_SPACE, " ").encode()
        if attr & Attr.BYTE:
            return bytes([self._byte_value(token_id)])
        return b""  # unused / undefined tokens stand for nothing

    def detokenize(self, ids: Iterable[int], skip_special: bool = True) -> bytes:
        """The bytes of `ids`, as llama-cpp-python's Llama.detokenize(ids, special=not skip)."""
        ids = list(ids)
        data = b"".join(
            self.token_to_piece(i)
            for i in ids
            if not (skip_special and self.attrs[self._check(i)] & _HIDDEN)
        )
        if ids and ids[0] == self.bos_id and self.add_space_prefix and data[:1] == b" ":
            data = data[1:]  # the space the encoder prefixed after BOS is not text
        return data

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids`; invalid UTF-8 (a cut-off character) shows as U+FFFD."""
        return self.detokenize(ids, skip_special).decode("utf-8", errors="replace")

    def stream_decoder(
        self, skip_special: bool = True, strip_leading_space: bool = False
    ) -> StreamDecoder:
        """An incremental decoder for generated tokens; see StreamDecoder."""
        return StreamDecoder(self, skip_special, strip_leading_space)


def _check_text(text: object) -> None:
    """Text to encode must be a str of valid Unicode: a lone surrogate (from JSON's "\\ud800",
    or bytes decoded with errors="surrogateescape") has no UTF-8 form, and every tokenizer works
    on UTF-8. InvalidArgumentError names its position."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"text has a lone surrogate {text[exc.start]!r} at index {exc.start}, which is not "
            f"valid Unicode (decode bytes with errors='replace')"
        ) from None


class StreamDecoder:
    """push() token ids one at a time and get text back as soon as it is whole UTF-8: a character
    split over several byte tokens comes out with the token that completes it. The concatenated
    output equals Tokenizer.decode of the same ids.

    strip_leading_space removes one space from the start of the output: SentencePiece models mark
    a word start with U+2581, so a reply's first token is usually "▁Word".
    """

    def __init__(
        self, tokenizer: Tokenizer, skip_special: bool = True, strip_leading_space: bool = False
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._strip = strip_leading_space
        self._first = True
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        tok = self.tokenizer
        if self._first:
            self._first = False
            if token_id == tok.bos_id and tok.add_space_prefix:
                self._strip = True
        if self.skip_special and tok.attrs[tok._check(token_id)] & _HIDDEN:
            return ""
        piece = tok.token_to_piece(token_id)
        if self._strip and piece:
            self._strip = False
            if piece[:1] == b" ":
                piece = piece[1:]
        return self._utf8.decode(piece)

    def flush(self) -> str:
        """What is still held back (an incomplete character, shown as U+FFFD); then reset."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


class _BpeModel:
    """Byte-level BPE: llama.cpp's pre-tokenizer regexes, then the `tokenizers` library merges."""

    def __init__(self, tok: Tokenizer, merges: Sequence[str] | None) -> None:
        from tokenizers import Regex, models, pre_tokenizers
        from tokenizers import Tokenizer as HfTokenizer

        if not merges:
            raise FormatError("byte-level BPE vocabulary without 'tokenizer.ggml.merges'", tok.path)
        assert tok.pre is not None
        vocab = tok.token_to_id
        lefts, rights = _split_merges(merges, tok.path)
        ignore = tok.pre.ignore_merges
        try:
            if len(set(merges)) != len(merges):
                raise ValueError("duplicate merges")
            # `tokenizers` checks every part and result against the vocabulary itself and raises
            # a bare Exception; only then are the merges filtered one by one
            pairs = list(zip(lefts, rights, strict=True))
            bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore)
        except Exception:
            pairs = _filter_merges(lefts, rights, vocab)
            bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore)
        hf = HfTokenizer(bpe)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in tok.pre.regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        self._hf = hf
        self._byte_of = {c: b for b, c in _bytes_to_unicode().items()}

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def unbyte(self, text: str) -> bytes:
        """A token's bytes from GPT-2's byte-to-character mapping."""
        return b"".join(
            bytes([self._byte_of[c]]) if c in self._byte_of else c.encode() for c in text
        )


def _split_merges(merges: Sequence[str], path: str | None) -> tuple[list[str], list[str]]:
    """GGUF merges ("left right") cut, as llama.cpp does, at the first space after the first
    character: (lefts, rights)."""
    if set(map(str.count, merges, repeat(" "))) == {1} and not any(
        map(str.startswith, merges, repeat(" "))
    ):  # every merge has one inner space (all real vocabularies): split them all at once
        flat = " ".join(merges).split(" ")
        return flat[0::2], flat[1::2]
    lefts: list[str] = []
    rights: list[str] = []
    for merge in merges:
        left, sep, right = merge[1:].partition(" ")
        if not sep:
            raise FormatError(f"BPE merge {merge!r} has no space", path)
        lefts.append(merge[0] + left)
        rights.append(right)
    return lefts, rights


def _filter_merges(lefts: list[str], rights: list[str], vocab: Mapping[str, int]) -> list:
    """The merges llama.cpp would use that `tokenizers` accepts: the first of duplicates, and only
    those whose parts and result are tokens (llama.cpp would spell such a result out byte by byte;
    no real vocabulary has one)."""
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for pair in zip(lefts, rights, strict=True):
        left, right = pair
        if pair in seen or left not in vocab or right not in vocab or left + right not in vocab:
            continue
        seen.add(pair)
        pairs.append(pair)
    return pairs


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values onto printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    out: dict[int, str] = {}
    extra = 256
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(extra)
            extra += 1
    return out

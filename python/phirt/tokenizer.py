"""Tokenizers built from GGUF metadata, with llama.cpp's semantics.

- `llama` (SentencePiece-style, Phi-3): spaces become U+2581, a space prefix is added at the start
  and after every special token, then adjacent symbols merge greedily by vocabulary score
  (llama.cpp's llm_tokenizer_spm); characters missing from the vocabulary fall back to <0xNN>.
- `gpt2` (byte-level BPE, Phi-4-mini, SmolLM2): the text is split by the pre-tokenizer regexes
  llama.cpp uses for `tokenizer.ggml.pre`, byte-encoded, then merged by the `tokenizers` library.

Special tokens (control and user-defined) are matched as whole strings first, longest first, as
llama.cpp's tokenizer_st_partition does; control tokens only when parse_special is true.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from phirt.errors import FormatError, UnsupportedError

# tokenizer.ggml.token_type values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPM_SPACE = "\u2581"

# Texts that end a turn in the chat formats we know, besides EOS/EOT ids from the metadata.
END_OF_TURN_TEXTS = {
    "<|end|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "</s>",
}

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
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    + _CONTRACTIONS
    + r"?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    + _CONTRACTIONS
    + r"?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizer:
    regexes: tuple[str, ...]  # applied in order, each splitting the pieces of the previous
    ignore_merges: bool = False  # a piece that is a whole vocabulary entry skips BPE merges


# tokenizer.ggml.pre -> llama.cpp's pre-tokenizer (src/llama-vocab.cpp, llm_tokenizer_bpe)
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")),
    "gpt2": PreTokenizer((_GPT2,)),
    "gpt-2": PreTokenizer((_GPT2,)),
    "phi-2": PreTokenizer((_GPT2,)),
    "smollm": PreTokenizer((r"\p{N}", _GPT2)),
    "starcoder": PreTokenizer((r"\p{N}", _GPT2)),
    "llama3": PreTokenizer((_LLAMA3,), ignore_merges=True),
    "llama-bpe": PreTokenizer((_LLAMA3,), ignore_merges=True),
    "qwen2": PreTokenizer((_QWEN2,), ignore_merges=True),
    "gpt-4o": PreTokenizer((_GPT4O,)),
}


class Tokenizer:
    """Encode/decode text with a GGUF file's vocabulary."""

    def __init__(self, meta: dict[str, Any], path: str | None = None) -> None:
        self.path = path
        model = meta.get("tokenizer.ggml.model")
        tokens = meta.get("tokenizer.ggml.tokens")
        if model is None or not tokens:
            raise FormatError("no tokenizer in the file (tokenizer.ggml.model/tokens)", path)
        self.model = str(model)
        self.tokens: list[str] = list(tokens)
        n = len(self.tokens)
        types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * n
        if len(types) != n:
            raise FormatError(f"token_type has {len(types)} entries for {n} tokens", path)
        self.types: list[int] = [int(t) for t in types]
        scores = meta.get("tokenizer.ggml.scores") or [0.0] * n
        if len(scores) != n:
            raise FormatError(f"scores has {len(scores)} entries for {n} tokens", path)
        self.scores: list[float] = [float(x) for x in scores]
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}

        def token_id(key: str) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}")
            if value is None:
                return None
            if not 0 <= int(value) < n:
                raise FormatError(f"tokenizer.ggml.{key} = {value} is outside [0, {n})", path)
            return int(value)

        self.bos_id = token_id("bos_token_id")
        self.eos_id = token_id("eos_token_id")
        self.eot_id = token_id("eot_token_id")
        self.unk_id = token_id("unknown_token_id")
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", self.model == "llama"))
        self.add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        self.add_space_prefix = bool(
            meta.get("tokenizer.ggml.add_space_prefix", self.model == "llama")
        )
        # Special tokens, longest first so "<|endoftext|>" wins over a shorter prefix.
        self._specials = sorted(
            (i for i, t in enumerate(self.types) if t in (CONTROL, USER_DEFINED, UNKNOWN)),
            key=lambda i: -len(self.tokens[i]),
        )
        self._specials = [i for i in self._specials if self.tokens[i]]
        self.eot_ids: set[int] = {i for i in (self.eos_id, self.eot_id) if i is not None}
        self.eot_ids |= {
            i for i in self._specials if self.tokens[i] in END_OF_TURN_TEXTS
        }  # fmt: skip
        if self.model == "llama":
            self._impl: _SpmModel | _BpeModel = _SpmModel(self)
        elif self.model == "gpt2":
            pre = str(meta.get("tokenizer.ggml.pre", "default"))
            if pre not in PRE_TOKENIZERS:
                raise UnsupportedError(
                    f"pre-tokenizer '{pre}' is not supported "
                    f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})",
                    path,
                )
            merges = meta.get("tokenizer.ggml.merges")
            if not merges:
                raise FormatError("byte-level BPE tokenizer without tokenizer.ggml.merges", path)
            self._impl = _BpeModel(self, list(merges), PRE_TOKENIZERS[pre])
        else:
            raise UnsupportedError(f"tokenizer model '{self.model}' is not supported", path)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], path: str | None = None) -> Tokenizer:
        return cls(meta, path)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        from phirt.formats.gguf import GGUFFile

        g = GGUFFile(path)
        return cls(g.metadata, g.path)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def bos_text(self) -> str:
        return self.tokens[self.bos_id] if self.bos_id is not None else ""

    @property
    def eos_text(self) -> str:
        return self.tokens[self.eos_id] if self.eos_id is not None else ""

    def is_special(self, token_id: int) -> bool:
        return self.types[token_id] in (CONTROL, USER_DEFINED, UNKNOWN)

    # -- encoding ----------------------------------------------------------------------------

    def encode(
        self, text: str, add_bos: bool | None = None, parse_special: bool = True
    ) -> list[int]:
        """Token ids of `text`; BOS per the file's add_bos_token unless add_bos says otherwise."""
        out: list[int] = []
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            out.append(self.bos_id)
        after_special = True
        for piece, special in self._partition(text, parse_special):
            if special is not None:
                out.append(special)
                after_special = True
            elif piece:
                out.extend(self._impl.encode(piece, after_special))
                after_special = False
        if self.add_eos and add_bos is not False and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list[tuple[str, int | None]]:
        """Split text into (fragment, None) and (token text, special id) pieces."""
        pieces: list[tuple[str, int | None]] = [(text, None)]
        for sid in self._specials:
            if not parse_special and self.types[sid] == CONTROL:
                continue
            needle = self.tokens[sid]
            split: list[tuple[str, int | None]] = []
            for frag, special in pieces:
                if special is not None or needle not in frag:
                    split.append((frag, special))
                    continue
                parts = frag.split(needle)
                for k, part in enumerate(parts):
                    if part:
                        split.append((part, None))
                    if k < len(parts) - 1:
                        split.append((needle, sid))
            pieces = split
        return pieces

    # -- decoding ----------------------------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes a token stands for; control tokens are empty unless special=True."""
        kind = self.types[token_id]
        if kind in (CONTROL, UNKNOWN, UNUSED) or (kind == USER_DEFINED and self.model == "llama"):
            return self.tokens[token_id].encode() if special or kind == USER_DEFINED else b""
        return self._impl.piece(token_id)

    def decode(self, ids: Iterable[int], special: bool = False) -> str:
        stream = self.stream_decoder(special=special)
        return "".join(stream.push(i) for i in ids) + stream.flush()

    def stream_decoder(self, special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, special)


class StreamDecoder:
    """Incremental detokenizer: push token ids, get text that never splits a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False) -> None:
        self.tok = tokenizer
        self.special = special
        self.pending = b""
        # SentencePiece: the space prefix added when encoding is not part of the text.
        self.strip_space = tokenizer.add_space_prefix and tokenizer.model == "llama"

    def push(self, token_id: int) -> str:
        if token_id == self.tok.bos_id and not self.special:
            return ""
        piece = self.tok.token_to_piece(token_id, self.special)
        if self.strip_space and piece:
            if piece.startswith(b" "):
                piece = piece[1:]
            self.strip_space = False
        self.pending += piece
        cut = _complete_utf8_prefix(self.pending)
        text, self.pending = self.pending[:cut], self.pending[cut:]
        return text.decode("utf-8", errors="replace")

    def flush(self) -> str:
        text, self.pending = self.pending, b""
        return text.decode("utf-8", errors="replace")


def _complete_utf8_prefix(data: bytes) -> int:
    """Length of the longest prefix that does not end inside a UTF-8 sequence."""
    n = len(data)
    i = n - 1
    while i >= 0 and n - i <= 4 and data[i] & 0xC0 == 0x80:  # back over continuation bytes
        i -= 1
    if i < 0 or n - i > 4:
        return n  # not UTF-8 at all: let the decoder's replacement character show it
    lead = data[i]
    need = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
    return n if n - i >= need else i


class _SpmModel:
    """SentencePiece-style merging by score (llama.cpp's llm_tokenizer_spm)."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self.scores: Sequence[float] = tok.scores
        self.byte_ids: dict[int, int] = {}
        for i, (text, kind) in enumerate(zip(tok.tokens, tok.types, strict=True)):
            if kind == BYTE and len(text) == 6 and text.startswith("<0x"):
                self.byte_ids[int(text[3:5], 16)] = i

    def encode(self, text: str, after_special: bool) -> list[int]:
        if self.tok.add_space_prefix and after_special:
            text = " " + text
        text = text.replace(" ", SPM_SPACE)
        symbols = list(text)  # one symbol per character
        if not symbols:
            return []
        prev = list(range(-1, len(symbols) - 1))
        nxt = list(range(1, len(symbols) + 1))
        nxt[-1] = -1
        vocab, scores = self.tok.token_to_id, self.scores
        heap: list[tuple[float, int, int, str]] = []

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            merged = symbols[left] + symbols[right]
            tid = vocab.get(merged)
            if tid is not None:
                # highest score first; ties: leftmost first
                heapq.heappush(heap, (-scores[tid], left, right, merged))

        for i in range(len(symbols) - 1):
            push(i, i + 1)
        while heap:
            _, left, right, merged = heapq.heappop(heap)
            if not symbols[left] or not symbols[right] or symbols[left] + symbols[right] != merged:
                continue  # stale: one side has merged since
            if nxt[left] != right:
                continue
            symbols[left] = merged
            symbols[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])
        out: list[int] = []
        i = 0
        while i >= 0:
            sym = symbols[i]
            tid = vocab.get(sym)
            if tid is not None:
                out.append(tid)
            else:
                for byte in sym.encode("utf-8"):
                    if byte in self.byte_ids:
                        out.append(self.byte_ids[byte])
                    elif self.tok.unk_id is not None:
                        out.append(self.tok.unk_id)
            i = nxt[i]
        return out

    def piece(self, token_id: int) -> bytes:
        text = self.tok.tokens[token_id]
        if self.tok.types[token_id] == BYTE:
            return bytes([int(text[3:5], 16)])
        return text.replace(SPM_SPACE, " ").encode("utf-8")


class _BpeModel:
    """Byte-level BPE on the `tokenizers` library, pre-tokenized as llama.cpp does."""

    def __init__(self, tok: Tokenizer, merges: list[str], pre: PreTokenizer) -> None:
        from tokenizers import Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HfTokenizer

        self.tok = tok
        pairs = []
        for m in merges:
            a, sep, b = m.partition(" ")
            if not sep:
                raise FormatError(f"malformed BPE merge {m!r}", tok.path)
            pairs.append((a, b))
        bpe = models.BPE(vocab=dict(tok.token_to_id), merges=pairs, ignore_merges=pre.ignore_merges)
        hf = HfTokenizer(bpe)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        hf.decoder = decoders.ByteLevel()
        self.hf = hf
        self.byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}

    def encode(self, text: str, after_special: bool) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def piece(self, token_id: int) -> bytes:
        text = self.tok.tokens[token_id]
        try:
            return bytes(self.byte_decoder[c] for c in text)
        except KeyError:  # not byte-encoded (e.g. an added token): take the text as it is
            return text.encode("utf-8")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(ord("!"), ord("~") + 1))
    keep += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out

"""Hugging Face tokenizer files -> GGUF tokenizer metadata (``tokenizer.ggml.*``,
``tokenizer.chat_template``), as llama.cpp's converter writes them (conversion/base.py, phi.py).

One mapping for the two places phirt meets such files: ``phirt quantize`` (a Hugging Face folder
becomes a GGUF file) and ONNX Runtime GenAI folders (which carry tokenizer.json only); either way
``phirt.tokenizer.Tokenizer`` is then built from the metadata. Three vocabulary shapes:

- SentencePiece ``tokenizer.model`` (Phi-3-mini, Llama 2): model ``llama``; pieces, scores and
  types from the model's protobuf, added tokens laid over them.
- SentencePiece-style ``tokenizer.json`` (what transformers converts a SentencePiece model into,
  and all an ONNX Phi-3 folder has): a BPE model with byte fallback, a ``▁`` normalizer
  (Prepend + Replace, or a Metaspace pre-tokenizer) and a Replace/ByteFallback/Fuse/Strip decoder.
  This is the same vocabulary, so it is model ``llama`` too. Its scores are gone, but the merges
  keep their order (transformers sorts them by the merged piece's score), so each token's score is
  minus the rank of the first merge that makes it: llama.cpp's SentencePiece merging, which takes
  the best-scoring neighbour pair, then picks the same pairs in the same order.
- Byte-level BPE ``tokenizer.json`` (Phi-2, Phi-4-mini, Llama 3, SmolLM2): model ``gpt2``, the
  vocabulary and merges, and ``tokenizer.ggml.pre`` named from the hash of how the tokenizer
  splits a fixed text (the converter's method; the table holds the families phirt runs).

Special token ids, add_bos/add_eos, merges and the chat template come from gguf-py's
``SpecialVocab`` (the converter's own reader of tokenizer_config.json and friends).
"""

from __future__ import annotations

import json
import re
import struct
from hashlib import sha256
from pathlib import Path
from typing import Any

from phirt.errors import FormatError
from phirt.tokenizer import LSTRIP_KEY, RSTRIP_KEY, TokenType

__all__ = [
    "is_spm_style",
    "read_sentencepiece",
    "strip_metadata",
    "tokenizer_metadata",
]

# The converter's pre-tokenizer probe text (llama.cpp convert_hf_to_gguf get_vocab_base_pre).
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(token ids of CHKTXT)) -> tokenizer.ggml.pre, for the tokenizer families of the models
# phirt runs (values from llama.cpp's converter table).
PRE_BY_HASH = {
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",  # Phi-4-mini
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
}

# SentencePiece piece types (sentencepiece_model.proto) -> GGUF token types, as the converter maps
# them: user-defined pieces count as normal.
_SPM_TYPES = {
    1: TokenType.NORMAL,
    2: TokenType.UNKNOWN,
    3: TokenType.CONTROL,
    4: TokenType.NORMAL,
    5: TokenType.UNUSED,
    6: TokenType.BYTE,
}
_ADDED_SCORE = -1000.0  # the converter's score for added (control / user-defined) tokens
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
SPM_SPACE = "\u2581"


def tokenizer_metadata(
    folder: Path, hf_arch: str | None = None, vocab_size: int | None = None
) -> dict[str, Any]:
    """The GGUF tokenizer metadata of the Hugging Face tokenizer files in ``folder``.

    ``hf_arch`` (config.json's architectures[0]) applies the converter's per-architecture rules;
    ``vocab_size`` (the model's) pads the vocabulary with ``[PAD{i}]`` tokens up to the embedding.
    """
    folder = Path(folder)
    tok_config: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        tok_config = _load_json(folder / "tokenizer_config.json")
    has_spm = (folder / "tokenizer.model").is_file()
    spec = _load_json(folder / "tokenizer.json") if (folder / "tokenizer.json").is_file() else None
    if hf_arch == "PhiForCausalLM":
        use_spm = False
    elif hf_arch == "Phi3ForCausalLM":
        # Phi-4-mini ships a GPT-2 style BPE tokenizer; older Phi-3 a SentencePiece one
        use_spm = tok_config.get("tokenizer_class") != "GPT2Tokenizer" and (has_spm or not spec)
    else:
        use_spm = has_spm
    if use_spm and has_spm:
        meta = _sentencepiece(folder, vocab_size)
    elif spec is not None and is_spm_style(spec):
        meta = _sentencepiece_json(folder, spec, vocab_size)
    elif use_spm:
        raise FormatError("no tokenizer.model (SentencePiece) in the model folder", folder)
    elif spec is not None:
        meta = _bpe(folder, spec, vocab_size)
    else:
        raise FormatError("no tokenizer.json or tokenizer.model in the model folder", folder)
    n = len(meta["tokenizer.ggml.tokens"])
    meta.update(_special_vocab(folder, n, load_merges=meta["tokenizer.ggml.model"] == "gpt2"))
    if hf_arch == "PhiForCausalLM":
        meta["tokenizer.ggml.add_bos_token"] = False  # as llama.cpp's converter writes Phi-2
    elif hf_arch == "LlamaForCausalLM" and vocab_size == 49152:
        # the converter's rule for 49152-token Llama vocabularies (SmolLM, Granite small)
        meta["tokenizer.ggml.add_bos_token"] = False
    return meta


def strip_metadata(folder: Path) -> dict[str, list[int]]:
    """``LSTRIP_KEY`` / ``RSTRIP_KEY``: ids of the added tokens tokenizer.json marks as eating the
    whitespace before / after them (omitted when none)."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return {}
    added = _load_json(path).get("added_tokens") or []
    out: dict[str, list[int]] = {}
    for key, flag in ((LSTRIP_KEY, "lstrip"), (RSTRIP_KEY, "rstrip")):
        ids = sorted(int(a["id"]) for a in added if isinstance(a, dict) and a.get(flag))
        if ids:
            out[key] = ids
    return out


# -- SentencePiece -----------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value


def read_sentencepiece(path: Path) -> list[tuple[str, float, int]]:
    """(piece, score, SentencePiece type) of every piece of a ``tokenizer.model``, in id order.
    ModelProto field 1 is ``repeated SentencePiece pieces``: piece=1 (string), score=2 (float),
    type=3 (enum, default NORMAL)."""
    try:
        data = path.read_bytes()
        pieces = []
        for number, wire, value in _fields(data):
            if number != 1 or wire != 2:
                continue
            piece, score, kind = "", 0.0, 1
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    piece = v.decode("utf-8")
                elif n == 2 and w == 5:
                    (score,) = struct.unpack("<f", v)
                elif n == 3 and w == 0:
                    kind = v
            pieces.append((piece, score, kind))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"unreadable SentencePiece model: {exc}", path) from None
    if not pieces:
        raise FormatError("SentencePiece model has no pieces", path)
    return pieces


def _sentencepiece(folder: Path, vocab_size: int | None) -> dict[str, Any]:
    pieces = read_sentencepiece(folder / "tokenizer.model")
    n = vocab_size or len(pieces)
    tokens, scores, types = _padded(n)
    for i, (piece, score, kind) in enumerate(pieces[:n]):
        tokens[i] = piece
        scores[i] = score
        types[i] = int(_SPM_TYPES.get(kind, TokenType.NORMAL))
    _overlay_added(folder, tokens, scores, types)
    return _llama_meta(tokens, scores, types)


def is_spm_style(spec: dict[str, Any]) -> bool:
    """A tokenizer.json that is a SentencePiece vocabulary in BPE form (see the module doc)."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        return False
    parts = [spec.get("normalizer"), spec.get("pre_tokenizer")]
    found = False
    while parts:
        part = parts.pop()
        if not isinstance(part, dict):
            continue
        parts.extend(part.get("normalizers") or part.get("pretokenizers") or [])
        if part.get("type") == "Metaspace":
            found = True
        if part.get("type") == "Replace" and part.get("content") == SPM_SPACE:
            found = True
    return found


def _add_space_prefix(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts a ``▁`` before the text (llama.cpp's add_space_prefix)."""
    parts = [spec.get("normalizer"), spec.get("pre_tokenizer")]
    while parts:
        part = parts.pop()
        if not isinstance(part, dict):
            continue
        parts.extend(part.get("normalizers") or part.get("pretokenizers") or [])
        if part.get("type") == "Prepend" and part.get("prepend") == SPM_SPACE:
            return True
        if part.get("type") == "Metaspace":
            scheme = part.get(
                "prepend_scheme", "always" if part.get("add_prefix_space") else "never"
            )
            return scheme in ("always", "first")
    return False


def _merge_pairs(spec: dict[str, Any], path: Path) -> list[tuple[str, str]]:
    merges = (spec.get("model") or {}).get("merges") or []
    out = []
    for m in merges:
        if isinstance(m, str):
            left, sep, right = m.partition(" ")
        elif isinstance(m, list) and len(m) == 2:
            left, sep, right = m[0], " ", m[1]
        else:
            raise FormatError(f"tokenizer.json has a malformed merge {m!r}", path)
        if not sep or not isinstance(left, str) or not isinstance(right, str):
            raise FormatError(f"tokenizer.json has a malformed merge {m!r}", path)
        out.append((left, right))
    return out


def _sentencepiece_json(
    folder: Path, spec: dict[str, Any], vocab_size: int | None
) -> dict[str, Any]:
    path = folder / "tokenizer.json"
    vocab = (spec.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise FormatError("tokenizer.json has no vocabulary", path)
    try:
        by_id = {int(i): t for t, i in vocab.items()}
    except (TypeError, ValueError):
        raise FormatError("tokenizer.json has a non-integer token id", path) from None
    added = _added_tokens(spec, path)
    n = vocab_size or (max([*by_id, *added], default=-1) + 1)
    if min([*by_id, *added], default=0) < 0:
        raise FormatError("tokenizer.json has a negative token id", path)
    tokens, scores, types = _padded(n)
    # score = -(rank of the first merge making the token); tokens no merge makes rank last
    merges = _merge_pairs(spec, path)
    rank: dict[str, int] = {}
    for r, (left, right) in enumerate(merges):
        rank.setdefault(left + right, r)
    last = float(-(len(merges) + 1))
    unk = (spec.get("model") or {}).get("unk_token")
    for i, token in by_id.items():
        if i >= n:
            continue
        tokens[i] = token
        if _BYTE_TOKEN.fullmatch(token):
            scores[i], types[i] = 0.0, int(TokenType.BYTE)
        elif token == unk:
            scores[i], types[i] = 0.0, int(TokenType.UNKNOWN)
        else:
            r = rank.get(token)
            scores[i] = float(-r) if r is not None else last
            types[i] = int(TokenType.NORMAL)
    for i, (content, special) in added.items():
        if i < n:
            tokens[i] = content
            scores[i] = _ADDED_SCORE
            types[i] = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)
    meta = _llama_meta(tokens, scores, types)
    if not _add_space_prefix(spec):
        meta["tokenizer.ggml.add_space_prefix"] = False
    return meta


def _padded(n: int) -> tuple[list[str], list[float], list[int]]:
    return [f"[PAD{i}]" for i in range(n)], [-10000.0] * n, [int(TokenType.UNUSED)] * n


def _overlay_added(folder: Path, tokens: list[str], scores: list[float], types: list[int]) -> None:
    """Added tokens over the SentencePiece pieces, in the converter's order (later sources win)."""
    n = len(tokens)

    def overlay(token_id: int, content: str, special: bool) -> None:
        if 0 <= token_id < n:
            tokens[token_id] = content
            scores[token_id] = _ADDED_SCORE
            types[token_id] = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)

    if (folder / "added_tokens.json").is_file():
        for content, token_id in _load_json(folder / "added_tokens.json").items():
            overlay(int(token_id), content, False)
    if (folder / "tokenizer_config.json").is_file():
        decoder = _load_json(folder / "tokenizer_config.json").get("added_tokens_decoder", {})
        for token_id, data in decoder.items():
            overlay(int(token_id), data["content"], bool(data.get("special")))
    if (folder / "tokenizer.json").is_file():
        path = folder / "tokenizer.json"
        for token_id, (content, special) in _added_tokens(_load_json(path), path).items():
            overlay(token_id, content, special)


def _added_tokens(spec: dict[str, Any], path: Path) -> dict[int, tuple[str, bool]]:
    out: dict[int, tuple[str, bool]] = {}
    for a in spec.get("added_tokens") or []:
        try:
            out[int(a["id"])] = (str(a["content"]), bool(a.get("special")))
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"tokenizer.json has a malformed added token {a!r}", path) from None
    return out


def _llama_meta(tokens: list[str], scores: list[float], types: list[int]) -> dict[str, Any]:
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
    }


# -- byte-level BPE ----------------------------------------------------------------------------


def _looks_special(token: str) -> bool:
    return (token.startswith("<|") and token.endswith("|>")) or (
        token.startswith("<｜") and token.endswith("｜>")
    )


def _bpe_pre(tokenizer: Any, spec: dict[str, Any]) -> str:
    digest = sha256(str(tokenizer.encode(CHKTXT).ids).encode()).hexdigest()
    if digest in PRE_BY_HASH:
        return PRE_BY_HASH[digest]
    # Not a known family: a plain byte-level pre-tokenizer splits exactly like GPT-2's regex.
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return "default"


def _bpe(folder: Path, spec: dict[str, Any], vocab_size: int | None) -> dict[str, Any]:
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception type
        raise FormatError(f"cannot load tokenizer: {exc}", path) from None
    if (spec.get("model") or {}).get("type") != "BPE":
        raise FormatError("tokenizer.json is not a BPE tokenizer", path)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    reverse = {i: t for t, i in vocab.items()}
    added = _added_tokens(spec, path)
    n = vocab_size or (max(reverse) + 1)
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
            continue
        if i in added:
            if added[i][1] or _looks_special(token):
                types.append(int(TokenType.CONTROL))
            else:
                token = token.replace(SPM_SPACE, " ")  # llama.cpp wants user tokens pre-normalized
                types.append(int(TokenType.USER_DEFINED))
        else:
            types.append(int(TokenType.NORMAL))
        tokens.append(token)
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": _bpe_pre(tokenizer, spec),
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
    }


# -- special tokens, merges, template ----------------------------------------------------------


def _special_vocab(folder: Path, n_vocab: int, load_merges: bool) -> dict[str, Any]:
    """gguf-py's SpecialVocab (the converter's reader) as metadata keys."""
    import logging

    from gguf import SpecialVocab

    gguf_log = logging.getLogger("gguf.vocab")
    level = gguf_log.level
    gguf_log.setLevel(logging.ERROR)  # its warnings about unusual files are not ours to print
    try:
        sv = SpecialVocab(folder, load_merges=load_merges, n_vocab=n_vocab)
    except (OSError, ValueError) as exc:
        raise FormatError(f"unreadable tokenizer files: {exc}", folder) from None
    finally:
        gguf_log.setLevel(level)
    meta: dict[str, Any] = {}
    if sv.merges:
        meta["tokenizer.ggml.merges"] = list(sv.merges)
    names = {"unk": "unknown", "pad": "padding", "sep": "seperator"}  # GGUF's spellings
    for typ, token_id in sv.special_token_ids.items():
        meta[f"tokenizer.ggml.{names.get(typ, typ)}_token_id"] = int(token_id)
    for typ, value in sv.add_special_token.items():
        meta[f"tokenizer.ggml.add_{typ}_token"] = bool(value)
    template = sv.chat_template
    if isinstance(template, list):  # named templates, as GGUFWriter.add_chat_template stores them
        names = []
        default = None
        for entry in template:
            name = "".join(c if c.isascii() and c.isalnum() else "_" for c in entry.get("name", ""))
            if not name or entry.get("template") is None:
                continue
            if name == "default":
                default = entry["template"]
            else:
                names.append(name)
                meta[f"tokenizer.chat_template.{name}"] = entry["template"]
        if names:
            meta["tokenizer.chat_templates"] = names
        template = default
    if isinstance(template, str):
        meta["tokenizer.chat_template"] = template
    return meta


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"unreadable JSON: {exc}", path) from None

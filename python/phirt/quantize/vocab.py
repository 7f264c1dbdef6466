"""Hugging Face tokenizer files -> GGUF ``tokenizer.ggml.*`` metadata, as llama.cpp's converter
writes it (conversion/base.py and phi.py), without transformers or sentencepiece:

- SentencePiece (``tokenizer.model``; Phi-3-mini, Llama 2): model ``llama``, pieces with scores
  and types read from the model's protobuf, added tokens from added_tokens.json,
  tokenizer_config.json and tokenizer.json laid over them.
- Byte-level BPE (``tokenizer.json``; Phi-2, Phi-4-mini, Llama 3, SmolLM2): model ``gpt2``, the
  vocabulary and merges, and ``tokenizer.ggml.pre`` named from the hash of how the tokenizer splits
  a fixed test text (the converter's method; the table holds the families phirt runs).

Special token ids, add_bos/add_eos and the chat template come from ``gguf.SpecialVocab``.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, Keys, SpecialVocab, TokenType

from phirt.errors import QuantizeError

__all__ = ["add_vocab", "read_sentencepiece"]

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
    import struct

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
        raise QuantizeError(f"unreadable SentencePiece model: {exc}", path) from None
    if not pieces:
        raise QuantizeError("SentencePiece model has no pieces", path)
    return pieces


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantizeError(f"unreadable JSON: {exc}", path) from None


def _add_sentencepiece(writer: GGUFWriter, folder: Path, vocab_size: int | None) -> None:
    pieces = read_sentencepiece(folder / "tokenizer.model")
    n = vocab_size or len(pieces)
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [int(TokenType.UNUSED)] * n
    for i, (piece, score, kind) in enumerate(pieces[:n]):
        tokens[i] = piece
        scores[i] = score
        types[i] = int(_SPM_TYPES.get(kind, TokenType.NORMAL))

    def overlay(token_id: int, content: str, special: bool) -> None:
        if 0 <= token_id < n:
            tokens[token_id] = content
            scores[token_id] = -1000.0
            types[token_id] = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)

    # Added tokens, in the converter's order (later sources win).
    if (folder / "added_tokens.json").is_file():
        for content, token_id in _load_json(folder / "added_tokens.json").items():
            overlay(int(token_id), content, False)
    if (folder / "tokenizer_config.json").is_file():
        decoder = _load_json(folder / "tokenizer_config.json").get("added_tokens_decoder", {})
        for token_id, data in decoder.items():
            overlay(int(token_id), data["content"], bool(data.get("special")))
    if (folder / "tokenizer.json").is_file():
        for data in _load_json(folder / "tokenizer.json").get("added_tokens", []):
            overlay(int(data["id"]), data["content"], bool(data.get("special")))

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    SpecialVocab(folder, n_vocab=n).add_to_gguf(writer, quiet=True)


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


def _add_bpe(writer: GGUFWriter, folder: Path, vocab_size: int | None) -> None:
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    spec = _load_json(path)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception type
        raise QuantizeError(f"cannot load tokenizer: {exc}", path) from None
    if (spec.get("model") or {}).get("type") != "BPE":
        raise QuantizeError("tokenizer.json is not a BPE tokenizer", path)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    reverse = {i: t for t, i in vocab.items()}
    added = {int(a["id"]): a for a in spec.get("added_tokens", [])}
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
            if added[i].get("special") or _looks_special(token):
                types.append(int(TokenType.CONTROL))
            else:
                token = token.replace("\u2581", " ")  # llama.cpp wants user tokens pre-normalized
                types.append(int(TokenType.USER_DEFINED))
        else:
            types.append(int(TokenType.NORMAL))
        tokens.append(token)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_bpe_pre(tokenizer, spec))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    SpecialVocab(folder, load_merges=True).add_to_gguf(writer, quiet=True)


def _set_bool(writer: GGUFWriter, key: str, value: bool) -> None:
    writer.kv_data[0].pop(key, None)
    writer.add_bool(key, value)


def add_vocab(writer: GGUFWriter, folder: Path, hf_arch: str, config: dict[str, Any]) -> None:
    """Write the tokenizer of the HF model in ``folder`` into ``writer``'s metadata."""
    vocab_size = config.get("vocab_size")
    tok_config: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        tok_config = _load_json(folder / "tokenizer_config.json")
    has_spm = (folder / "tokenizer.model").is_file()
    has_json = (folder / "tokenizer.json").is_file()
    if hf_arch == "PhiForCausalLM":
        use_spm = False
    elif hf_arch == "Phi3ForCausalLM":
        # Phi-4-mini ships a GPT-2 style BPE tokenizer; older Phi-3 a SentencePiece one
        use_spm = tok_config.get("tokenizer_class") != "GPT2Tokenizer" and (has_spm or not has_json)
    else:
        use_spm = has_spm
    if use_spm:
        if not has_spm:
            raise QuantizeError("no tokenizer.model (SentencePiece) in the model folder", folder)
        _add_sentencepiece(writer, folder, vocab_size)
    else:
        if not has_json:
            raise QuantizeError("no tokenizer.json in the model folder", folder)
        _add_bpe(writer, folder, vocab_size)
    if hf_arch == "PhiForCausalLM":
        _set_bool(writer, Keys.Tokenizer.ADD_BOS, False)  # as llama.cpp's converter writes Phi-2
    elif hf_arch == "LlamaForCausalLM" and vocab_size == 49152:
        # the converter's rule for 49152-token Llama vocabularies (SmolLM, Granite small)
        _set_bool(writer, Keys.Tokenizer.ADD_BOS, False)

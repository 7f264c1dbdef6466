"""A GGUF vocabulary written as Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json, chat_template.jinja), for ONNX folders exported from GGUF files.

The vocabulary is read by phirt's own Tokenizer (tokenizer.py), which reproduces llama.cpp, and
written as the `tokenizers` library's equivalent:

- "llama" (SentencePiece) vocabularies become a SentencePiece-style BPE, the shape of Microsoft's
  Phi-3 tokenizer.json: a ``▁`` Prepend/Replace normalizer, no pre-tokenizer, byte fallback
  (<0xNN> tokens), a Replace/ByteFallback/Fuse/Strip decoder. SentencePiece merges the adjacent
  pair whose merged token scores highest; BPE merges by rank, so the merges are every (left, right)
  split of a token into two tokens, ranked by the merged token's score (then ids).
- "gpt2" (byte-level BPE) vocabularies become GPT-2 style: llama.cpp's pre-tokenizer regexes for
  `tokenizer.ggml.pre` as Split steps, ByteLevel, the file's merges (the same `tokenizers` model
  phirt tokenizes with).

Control, unknown and user-defined tokens become added tokens (special unless user-defined), with
the strip attributes llama.cpp gives them, so "<|user|>\\nHi" splits the same way in all three.
The BOS token is added by a TemplateProcessing post-processor when the vocabulary says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from phirt.tokenizer import SPM_SPACE, Attr, Tokenizer

__all__ = ["build_hf_tokenizer", "write_tokenizer_files"]

_ADDED = int(Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)


def _spm_merges(tok: Tokenizer, mergeable: set[int]) -> list[tuple[str, str]]:
    """(left, right) pairs ranked as SentencePiece would merge them."""
    ids = tok.token_to_id
    ranked: list[tuple[float, int, int, int, str, str]] = []
    for i in mergeable:
        piece = tok.tokens[i]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            li, ri = ids.get(left), ids.get(right)
            if li is not None and ri is not None and li in mergeable and ri in mergeable:
                ranked.append((-tok.scores[i], i, li, ri, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def build_hf_tokenizer(tok: Tokenizer) -> Any:
    """The `tokenizers.Tokenizer` equivalent of a GGUF vocabulary."""
    from tokenizers import AddedToken, decoders, models, normalizers, processors
    from tokenizers import Tokenizer as HfTokenizer

    added = [i for i, a in enumerate(tok.attrs) if a & _ADDED]
    if tok.model == "llama":
        skip = set(added) | {i for i, a in enumerate(tok.attrs) if a & Attr.BYTE}
        mergeable = set(range(tok.vocab_size)) - skip
        unk = tok.tokens[tok.unk_id] if tok.unk_id is not None else None
        bpe = models.BPE(
            vocab=dict(tok.token_to_id),
            merges=_spm_merges(tok, mergeable),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
        hf = HfTokenizer(bpe)
        steps = [normalizers.Replace(" ", SPM_SPACE)]
        if tok.add_space_prefix:
            steps.insert(0, normalizers.Prepend(SPM_SPACE))
        hf.normalizer = normalizers.Sequence(steps)
        hf.decoder = decoders.Sequence(
            [
                decoders.Replace(SPM_SPACE, " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
    else:
        assert tok._bpe is not None  # gpt2 vocabularies carry their merges
        hf = HfTokenizer.from_str(tok._bpe._hf.to_str())
        hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens(
        [
            AddedToken(
                tok.tokens[i],
                single_word=False,
                lstrip=bool(tok.attrs[i] & Attr.LSTRIP),
                rstrip=bool(tok.attrs[i] & Attr.RSTRIP),
                normalized=False,
                special=not (tok.attrs[i] & Attr.USER_DEFINED),
            )
            for i in added
        ]
    )
    if tok.add_bos and tok.bos_id is not None:
        bos = tok.tokens[tok.bos_id]
        hf.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, tok.bos_id)],
        )
    return hf


def _token(tok: Tokenizer, i: int | None) -> str | None:
    return tok.tokens[i] if i is not None else None


def write_tokenizer_files(
    tok: Tokenizer, out: str | os.PathLike[str], chat_template: str | None, n_ctx: int
) -> list[str]:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json and (when the vocabulary
    has one) chat_template.jinja in ``out``; returns the names written."""
    out = Path(out)
    build_hf_tokenizer(tok).save(str(out / "tokenizer.json"))
    special = {
        "bos_token": _token(tok, tok.bos_id),
        "eos_token": _token(tok, tok.eos_id),
        "unk_token": _token(tok, tok.unk_id),
        "pad_token": _token(tok, tok.pad_id),
    }
    special = {k: v for k, v in special.items() if v is not None}
    config: dict[str, Any] = {
        "add_bos_token": tok.add_bos,
        "add_eos_token": tok.add_eos,
        "added_tokens_decoder": {
            str(i): {
                "content": tok.tokens[i],
                "lstrip": bool(tok.attrs[i] & Attr.LSTRIP),
                "normalized": False,
                "rstrip": bool(tok.attrs[i] & Attr.RSTRIP),
                "single_word": False,
                "special": not (tok.attrs[i] & Attr.USER_DEFINED),
            }
            for i, a in enumerate(tok.attrs)
            if a & _ADDED
        },
        **special,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": n_ctx,
        "tokenizer_class": "LlamaTokenizer" if tok.model == "llama" else "GPT2Tokenizer",
    }
    if tok.model == "llama":
        config["sp_model_kwargs"] = {}
        config["use_default_system_prompt"] = False
    written = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False))
    if chat_template:
        (out / "chat_template.jinja").write_text(chat_template)
        written.append("chat_template.jinja")
    return written

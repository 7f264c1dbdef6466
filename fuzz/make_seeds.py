"""Writes the seed inputs of the GGUF fuzz target into fuzz/corpus/gguf/: tiny but complete
models (about 40 kB each, so the fuzzer's mutations stay cheap) that phirt loads and runs, one per
tokenizer kind and architecture the header parser and the tokenizer builder branch on:

    seed-llama-spm.gguf   SentencePiece vocabulary with byte tokens, Q8_0 + F16 weights
    seed-llama-bpe.gguf   byte-level BPE (GPT-2 byte map, merges, "smollm" pre-tokenizer)
    seed-phi3-spm.gguf    Phi-3 layout (fused QKV and gate/up), a chat template, Q4_0 weights

and a few short inputs for the tokenizer target (fuzz/corpus/tokenizer/). Deterministic: running
it again writes the same bytes. Run from the repository root:
    python fuzz/make_seeds.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter

OUT = Path(__file__).parent / "corpus" / "gguf"
TOKENIZER_OUT = Path(__file__).parent / "corpus" / "tokenizer"
N_EMBD, N_FF, HEAD_DIM = 32, 64, 32

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """<unk> <s> </s>, the 256 byte tokens, then word pieces with SentencePiece's U+2581."""
    pieces = ["▁", "▁t", "he", "▁the", "▁a", "in", "▁in", "er", "on", "▁o", "an", "▁w"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["<|user|>", "<|assistant|>"]
    pieces += ["<|end|>", "<|system|>"]
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *pieces]
    scores = [0.0, 0.0, 0.0, *[0.0] * 256, *[-float(i) for i in range(len(pieces))]]
    special = {"<|user|>", "<|assistant|>", "<|end|>", "<|system|>"}
    types = [2, 3, 3, *[6] * 256, *[3 if p in special else 1 for p in pieces]]
    return tokens, scores, types


def bpe_vocab() -> tuple[list[str], list[str]]:
    """GPT-2's 256 byte characters, merged tokens and the merges that make them."""
    from phirt.tokenizer import _bytes_to_unicode

    chars = list(_bytes_to_unicode().values())
    merges = ["t h", "th e", "Ġ t", "Ġt he", "i n", "e r", "Ġ a", "o n"]
    merged = ["th", "the", "Ġt", "Ġthe", "in", "er", "Ġa", "on"]
    return ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *chars, *merged], merges


def weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)


def add(writer: GGUFWriter, name: str, array: np.ndarray, qtype: Q) -> None:
    if array.ndim == 1 or qtype == Q.F32:
        writer.add_tensor(name, array)
    elif qtype == Q.F16:
        writer.add_tensor(name, array.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def write_model(path: Path, arch: str, n_vocab: int, qtype: Q, add_tokenizer) -> None:
    rng = np.random.default_rng(len(path.name))
    writer = GGUFWriter(path, arch)
    writer.add_name(f"phirt fuzz seed {path.stem}")
    writer.add_uint32(f"{arch}.context_length", 256)
    writer.add_uint32(f"{arch}.embedding_length", N_EMBD)
    writer.add_uint32(f"{arch}.feed_forward_length", N_FF)
    writer.add_uint32(f"{arch}.block_count", 1)
    writer.add_uint32(f"{arch}.attention.head_count", N_EMBD // HEAD_DIM)
    writer.add_uint32(f"{arch}.attention.head_count_kv", N_EMBD // HEAD_DIM)
    writer.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    add_tokenizer(writer)
    add(writer, "token_embd.weight", weights(rng, n_vocab, N_EMBD) * 4, qtype)
    p = "blk.0."
    add(writer, p + "attn_norm.weight", np.ones(N_EMBD, np.float32), Q.F32)
    if arch == "phi3":
        add(writer, p + "attn_qkv.weight", weights(rng, 3 * N_EMBD, N_EMBD), qtype)
        add(writer, p + "ffn_up.weight", weights(rng, 2 * N_FF, N_EMBD), qtype)
    else:
        for name in ("attn_q", "attn_k", "attn_v"):
            add(writer, p + f"{name}.weight", weights(rng, N_EMBD, N_EMBD), qtype)
        add(writer, p + "ffn_gate.weight", weights(rng, N_FF, N_EMBD), qtype)
        add(writer, p + "ffn_up.weight", weights(rng, N_FF, N_EMBD), qtype)
    add(writer, p + "attn_output.weight", weights(rng, N_EMBD, N_EMBD), qtype)
    add(writer, p + "ffn_norm.weight", np.ones(N_EMBD, np.float32), Q.F32)
    add(writer, p + "ffn_down.weight", weights(rng, N_EMBD, N_FF), qtype)
    add(writer, "output_norm.weight", np.ones(N_EMBD, np.float32), Q.F32)
    add(writer, "output.weight", weights(rng, n_vocab, N_EMBD) * 4, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = spm_vocab()

    def spm(writer: GGUFWriter, template: str | None = None) -> None:
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
        if template:
            writer.add_chat_template(template)

    bpe_tokens, merges = bpe_vocab()

    def bpe(writer: GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_list(bpe_tokens)
        writer.add_token_types([3, 3, 3, *[1] * (len(bpe_tokens) - 3)])
        writer.add_token_merges(merges)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)

    write_model(OUT / "seed-llama-spm.gguf", "llama", len(tokens), Q.Q8_0, spm)
    write_model(OUT / "seed-llama-bpe.gguf", "llama", len(bpe_tokens), Q.F16, bpe)
    write_model(OUT / "seed-phi3-spm.gguf", "phi3", len(tokens), Q.Q4_0, lambda w: spm(w, TEMPLATE))
    tokenizer_seeds = {
        "seed-text": b"\x00\x00Hello, world! The quick brown fox.",
        "seed-special": b"\x00\x00<|user|>\nHi<|end|>\n<|assistant|>\n</s><s><unk>",
        "seed-unicode": "\x01\x00héllo wörld 🙂 ▁ \u2581\u00a0\t\r\n".encode(),
        "seed-bytes": b"\x00\x01\xff\xfe\xc3\x28\xed\xa0\x80\xf4\x90\x80\x80",
        "seed-ids": b"\x00\x02" + bytes(range(64)),
    }
    TOKENIZER_OUT.mkdir(parents=True, exist_ok=True)
    for name, data in tokenizer_seeds.items():
        (TOKENIZER_OUT / name).write_bytes(data)
    for p in sorted([*OUT.glob("seed-*"), *TOKENIZER_OUT.glob("seed-*")]):
        print(f"{p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the Phi-3-mini-shaped benchmark files: random weights, real Phi-3 tokenizer.

    python benchmarks/make_bench_models.py /tmp/bench_models --types q4_0,q4_k_m,q8_0

The shape is Phi-3-mini-4k-instruct's (3072 hidden, 8192 ff, 32 layers, 32 heads, 32064 vocab,
context 4096, 96 rotary dims), with its fused attn_qkv and fused gate/up ffn_up, so speed is what
the real model would show; the weights are random (matrices ~ N(0, 1/sqrt(fan_in)), norms ~ 1),
drawn from a seeded generator and rounded through f16, so every run writes the same bytes.

Tensors are generated and quantized a slab of rows at a time and streamed to disk by phirt's
quantizer (phirt.quantize.writer), which also picks each tensor's type the way llama-quantize does
(phirt.quantize.mixes): output.weight is Q6_K in Q4_0 and Q4_K_M files, Q4_K_M gives attn_qkv and
ffn_down Q6_K in llama.cpp's layers. ``--quantizer llamacpp`` instead writes an F16 file and runs
llama.cpp's own llama_model_quantize on it (needs llama-cpp-python and 2 bytes per weight of
temporary disk, 7.6 GB at full size).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

from phirt import _kernels as K
from phirt.formats.gguf import GGUFFile
from phirt.quantize import FILE_TYPES, plan
from phirt.quantize.source import Source, SourceTensor
from phirt.quantize.writer import write_gguf

VOCAB_PATH = Path(__file__).resolve().parent.parent / "tests" / "data" / "vocab"
VOCAB_PATH = VOCAB_PATH / "ggml-vocab-phi-3.gguf"
DEFAULT_TYPES = "q4_0,q4_k_m,q8_0"


@dataclass(frozen=True)
class Phi3Shape:
    """Phi-3-mini-4k-instruct's config.json, as llama.cpp's converter writes it."""

    n_layer: int = 32
    n_embd: int = 3072
    n_ff: int = 8192
    n_head: int = 32
    n_head_kv: int = 32
    n_vocab: int = 32064
    n_ctx: int = 4096
    n_rot: int = 96
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    sliding_window: int = 2047

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(GGUF name, numpy shape (rows, row length)) of every tensor."""
        d, hd = self.n_embd, self.n_embd // self.n_head
        qkv_rows = (self.n_head + 2 * self.n_head_kv) * hd
        out: list[tuple[str, tuple[int, ...]]] = [
            ("token_embd.weight", (self.n_vocab, d)),
            ("output_norm.weight", (d,)),
            ("output.weight", (self.n_vocab, d)),
        ]
        for i in range(self.n_layer):
            p = f"blk.{i}."
            out += [
                (p + "attn_norm.weight", (d,)),
                (p + "attn_qkv.weight", (qkv_rows, d)),  # fused [q; k; v]
                (p + "attn_output.weight", (d, self.n_head * hd)),
                (p + "ffn_norm.weight", (d,)),
                (p + "ffn_up.weight", (2 * self.n_ff, d)),  # fused [gate; up]
                (p + "ffn_down.weight", (d, self.n_ff)),
            ]
        return out

    def add_hparams(self, w: GGUFWriter) -> None:
        a = "phi3"
        w.add_uint32(f"{a}.context_length", self.n_ctx)
        w.add_uint32(f"{a}.rope.scaling.original_context_length", self.n_ctx)
        w.add_uint32(f"{a}.embedding_length", self.n_embd)
        w.add_uint32(f"{a}.feed_forward_length", self.n_ff)
        w.add_uint32(f"{a}.block_count", self.n_layer)
        w.add_uint32(f"{a}.attention.head_count", self.n_head)
        w.add_uint32(f"{a}.attention.head_count_kv", self.n_head_kv)
        w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", self.rms_eps)
        w.add_uint32(f"{a}.rope.dimension_count", self.n_rot)
        w.add_float32(f"{a}.rope.freq_base", self.rope_base)
        w.add_uint32(f"{a}.attention.sliding_window", self.sliding_window)


def _copy_tokenizer(w: GGUFWriter) -> None:
    """The real Phi-3 tokenizer (SentencePiece, 32064 tokens) and chat template."""
    vocab = GGUFFile(VOCAB_PATH)
    for key, value in vocab.metadata.items():
        if key.startswith("tokenizer."):
            vtype, item_type = vocab.metadata_types[key]
            w.add_key_value(key, value, vtype, sub_type=item_type)


def _random_tensor(name: str, shape: tuple[int, ...], seed: int) -> SourceTensor:
    """Rows drawn on demand; each slab from its own generator, so the result does not depend on
    what was generated before (and equals itself from run to run)."""
    key = int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little")
    n_rows = shape[0] if len(shape) > 1 else 1
    k = shape[-1]

    def read_rows(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([key, start])
        x = rng.standard_normal((stop - start, k), dtype=np.float32)
        if len(shape) == 1:  # a norm: ~1
            x = 1.0 + 0.1 * x
        else:
            x *= 1.0 / np.sqrt(k)
        # representable in f16, so an F16 file (the llama.cpp path's input) holds them exactly
        return x.astype(np.float16).astype(np.float32)

    return SourceTensor(name, shape, "F32", "<random>", 4 * n_rows * k, read_rows)


def random_source(shape: Phi3Shape, seed: int) -> Source:
    tensors = [_random_tensor(name, s, seed) for name, s in shape.tensors()]

    def add_metadata(w: GGUFWriter) -> None:
        w.add_name(f"phirt bench Phi-3-mini shape, random weights, {shape.n_layer} layers")
        shape.add_hparams(w)
        _copy_tokenizer(w)

    return Source("<random>", "phi3", shape.n_layer, tensors, add_metadata)


def _write_phirt(source: Source, out: Path, file_type: str) -> None:
    write_gguf(source, plan(source, file_type), out, file_type)


def _write_llamacpp(source: Source, out: Path, file_type: str) -> None:
    import llama_cpp

    f16 = out.with_name(out.name + ".f16.tmp")
    try:
        _write_phirt(source, f16, "f16")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = int(FILE_TYPES[file_type].ftype)
        params.nthread = os.cpu_count() or 1
        partial = out.with_name(out.name + ".partial")
        rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(partial).encode(), params)
        if rc != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"llama_model_quantize({file_type}) returned {rc} for {out}")
        partial.replace(out)
    finally:
        f16.unlink(missing_ok=True)


WRITERS: dict[str, Callable[[Source, Path, str], None]] = {
    "phirt": _write_phirt,
    "llamacpp": _write_llamacpp,
}


def file_name(file_type: str, n_layer: int) -> str:
    layers = "" if n_layer == Phi3Shape.n_layer else f"-{n_layer}L"
    return f"phi3-mini-random{layers}-{file_type.upper()}.gguf"


def type_counts(path: Path) -> str:
    counts: dict[str, int] = {}
    for t in GGUFFile(path).tensors.values():
        counts[t.type_name] = counts.get(t.type_name, 0) + 1
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda c: -c[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="folder for the .gguf files (created)")
    p.add_argument("--types", default=DEFAULT_TYPES, help=f"file types (default {DEFAULT_TYPES})")
    p.add_argument("--layers", type=int, default=Phi3Shape.n_layer, help="blocks (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantizer", choices=sorted(WRITERS), default="phirt")
    p.add_argument("--threads", type=int, default=None, help="quantizer threads (default: all)")
    p.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = p.parse_args(argv)

    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    unknown = [t for t in types if t not in FILE_TYPES]
    if unknown:
        p.error(f"unknown type {unknown[0]!r}; choose from {', '.join(FILE_TYPES)}")
    if args.layers < 1:
        p.error("--layers must be >= 1")
    K.set_num_threads(args.threads or os.cpu_count() or 1)
    shape = Phi3Shape(n_layer=args.layers)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for file_type in types:
        out = args.out_dir / file_name(file_type, args.layers)
        if out.exists() and not args.force:
            print(f"{out}: exists, {out.stat().st_size / 1e9:.2f} GB (--force rewrites it)")
            continue
        t0 = time.perf_counter()
        WRITERS[args.quantizer](random_source(shape, args.seed), out, file_type)
        seconds = time.perf_counter() - t0
        size = out.stat().st_size
        print(f"{out}: {size / 1e9:.2f} GB in {seconds:.0f} s ({type_counts(out)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

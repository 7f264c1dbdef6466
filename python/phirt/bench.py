"""`python -m phirt bench MODEL`: prefill and decode speed the way llama-bench reports them.

Prefill (pp): a batch of `--pp` tokens from an empty cache. Decode (tg): `--tg` tokens one at a
time after that prompt. One warm-up, then `--reps` repetitions; medians and spread are reported,
with load time and peak RSS. The model is loaded through `phirt.load`, so --backend / --device
pick what runs it; a backend that only streams tokens (OpenVINO GenAI) is timed from its stream:
prefill is the time to its first token, decode the tokens after it.

`--vs` benchmarks every backend that can run the model, each in its own process (so each peak RSS
is its own), and prints them side by side in one table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class BenchResult:
    model: str
    backend: str
    device: str
    isa: str
    threads: int
    n_ctx: int
    load_seconds: float
    pp_tokens: int
    tg_tokens: int
    pp_tps: list[float]
    tg_tps: list[float]
    peak_rss_mib: float

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("pp_tps", "tg_tps"):
            vals = out.pop(key)
            out[key.replace("_tps", "_tps_median")] = statistics.median(vals) if vals else 0.0
            out[key.replace("_tps", "_tps_stdev")] = statistics.pstdev(vals) if vals else 0.0
            out[key] = vals
        return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_bench(
    path: str,
    pp: int,
    tg: int,
    reps: int,
    threads: int | None,
    n_ctx: int | None = None,
    kv_type: str | None = None,
    backend: str | None = None,
    device: str = "auto",
) -> BenchResult:
    import phirt
    from phirt import _kernels as K
    from phirt.backends.base import has_logits

    t0 = time.perf_counter()
    model = phirt.load(
        path,
        n_threads=threads,
        n_ctx=n_ctx or max(pp + tg, 16),
        kv_type=kv_type,
        backend=backend,
        device=device,
    )
    engine = model.engine
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, min(model.n_vocab, model.tokenizer.vocab_size), size=pp).tolist()
    if has_logits(engine):
        engine.reset()
        engine.eval(prompt[:1])  # first token: pages in the weights it touches
        one_rep = _logits_rep(engine, prompt, tg)
    else:
        one_rep = _stream_rep(engine, prompt, tg)
        one_rep()
    load_seconds = time.perf_counter() - t0

    one_rep()  # warm-up
    pp_tps, tg_tps = [], []
    for _ in range(reps):
        a, b = one_rep()
        pp_tps.append(a)
        tg_tps.append(b)
    return BenchResult(
        model=path,
        backend=model.backend,
        device=model.device,
        isa=K.isa() if model.backend == "native" else model.backend,
        threads=K.get_num_threads() if threads is None else threads,
        n_ctx=model.n_ctx,
        load_seconds=load_seconds,
        pp_tokens=pp,
        tg_tokens=tg,
        pp_tps=pp_tps,
        tg_tps=tg_tps,
        peak_rss_mib=peak_rss_mib(),
    )


def _logits_rep(engine: Any, prompt: list[int], tg: int) -> Any:
    pp = len(prompt)

    def one_rep() -> tuple[float, float]:
        engine.reset()
        t = time.perf_counter()
        logits = engine.eval(prompt)
        pp_s = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(tg):
            logits = engine.eval([int(np.argmax(logits))])
        tg_s = time.perf_counter() - t
        return pp / pp_s, (tg / tg_s if tg else 0.0)

    return one_rep


def _stream_rep(engine: Any, prompt: list[int], tg: int) -> Any:
    """Each repetition starts with another first token: a stack with prefix caching (OpenVINO
    GenAI's default pipeline) would otherwise skip the prefill it is asked to time."""
    from phirt.sampling import SamplingParams

    pp, greedy = len(prompt), SamplingParams.greedy()
    rep = 0

    def one_rep() -> tuple[float, float]:
        nonlocal rep
        rep += 1
        prompt[0] = (prompt[0] + rep) % engine.n_vocab
        t = time.perf_counter()
        first = None
        n = 0
        for _ in engine.stream(prompt, greedy, tg + 1):
            n += 1
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        assert first is not None
        return pp / (first - t), ((n - 1) / (end - first) if n > 1 else 0.0)

    return one_rep


def format_table(r: BenchResult) -> str:
    s = r.summary()
    rows = [
        ("model", r.model),
        ("backend", f"{r.backend} on {r.device} ({r.isa}), {r.threads} threads"),
        ("load (to first token)", f"{r.load_seconds:.2f} s"),
        (f"pp{r.pp_tokens}", f"{s['pp_tps_median']:.1f} ± {s['pp_tps_stdev']:.1f} tok/s"),
        (f"tg{r.tg_tokens}", f"{s['tg_tps_median']:.2f} ± {s['tg_tps_stdev']:.2f} tok/s"),
        ("peak RSS", f"{r.peak_rss_mib:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_bench(args: argparse.Namespace) -> int:
    from phirt.fetch import resolve_model

    path = resolve_model(args.model)
    if args.vs:
        return _bench_vs(path, args)
    result = run_bench(
        path,
        args.pp,
        args.tg,
        args.reps,
        args.threads,
        args.ctx,
        args.kv_type,
        args.backend,
        args.device,
    )
    print(json.dumps(result.summary(), indent=2) if args.json else format_table(result))
    return 0


def _bench_vs(path: str, args: argparse.Namespace) -> int:
    """Every backend that can run the model (named_only devices and conversions included), one
    subprocess each, one rich table."""
    from rich.console import Console
    from rich.table import Table

    from phirt.backends.selection import probe_all

    runs = []
    for p in probe_all(path, args.device):
        if p.device is None or not (p.ok or p.convert):
            continue
        if (p.backend, p.device.name) not in runs:
            runs.append((p.backend, p.device.name))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"{os.path.basename(path)}: pp{args.pp} / tg{args.tg}, {args.reps} reps")
    for col in ("backend", "device", "load (s)", "prefill tok/s", "decode tok/s", "peak RSS"):
        table.add_column(col, justify="left" if col in ("backend", "device") else "right")
    for backend, device in runs:
        cmd = [sys.executable, "-m", "phirt", "bench", path, "--json", "--backend", backend]
        cmd += ["--device", device, "--pp", str(args.pp), "--tg", str(args.tg)]
        cmd += ["--reps", str(args.reps)]
        if args.kv_type:
            cmd += ["--kv-type", args.kv_type]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.ctx:
            cmd += ["--ctx", str(args.ctx)]
        console.print(f"[dim]running {backend} on {device} ...[/dim]")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            table.add_row(backend, device, "-", "-", "-", "-", end_section=False)
            console.print(f"[red]{backend} on {device}: {why}[/red]")
            continue
        s = json.loads(proc.stdout)
        table.add_row(
            backend,
            device,
            f"{s['load_seconds']:.2f}",
            f"{s['pp_tps_median']:.1f} ± {s['pp_tps_stdev']:.1f}",
            f"{s['tg_tps_median']:.2f} ± {s['tg_tps_stdev']:.2f}",
            f"{s['peak_rss_mib']:.0f} MiB",
        )
    console.print(table)
    return 0


def add_bench_subcommand(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure prefill and decode speed")
    p.add_argument(
        "model", help="GGUF file, ONNX Runtime GenAI folder, or a known model name (smollm2)"
    )
    p.add_argument("--pp", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("--tg", type=int, default=128, help="generated tokens (default 128)")
    p.add_argument("--reps", type=int, default=3, help="repetitions after a warm-up (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--ctx", type=int, default=None, help="context size (default pp + tg)")
    p.add_argument(
        "--kv-type",
        choices=["f16", "q8_0", "f32"],
        default=None,
        help="KV cache type (default: the format's own, f16 GGUF / f32 ONNX)",
    )
    p.add_argument("--device", default="auto", help="device (default auto)")
    p.add_argument("--backend", default=None, help="backend (default: chosen by --device)")
    p.add_argument(
        "--vs", action="store_true", help="every backend that can run the model, side by side"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench)

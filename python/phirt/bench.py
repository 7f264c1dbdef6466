"""`python -m phirt bench MODEL`: prefill and decode speed the way llama-bench reports them.

Prefill (pp): a batch of `--pp` tokens from an empty cache. Decode (tg): `--tg` tokens one at a
time after that prompt. One warm-up, then `--reps` repetitions; medians and spread are reported,
with load time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class BenchResult:
    model: str
    backend: str
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
    kv_type: str = "f16",
) -> BenchResult:
    import phirt
    from phirt import _kernels as K

    t0 = time.perf_counter()
    model = phirt.load(path, n_threads=threads, n_ctx=n_ctx or max(pp + tg, 16), kv_type=kv_type)
    engine = model.engine
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, min(model.n_vocab, model.tokenizer.vocab_size), size=pp).tolist()
    engine.reset()
    engine.eval(prompt[:1])  # first token: pages in the weights it touches
    load_seconds = time.perf_counter() - t0

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

    one_rep()  # warm-up
    pp_tps, tg_tps = [], []
    for _ in range(reps):
        a, b = one_rep()
        pp_tps.append(a)
        tg_tps.append(b)
    return BenchResult(
        model=path,
        backend=model.backend,
        isa=K.isa(),
        threads=engine.n_threads,
        n_ctx=model.n_ctx,
        load_seconds=load_seconds,
        pp_tokens=pp,
        tg_tokens=tg,
        pp_tps=pp_tps,
        tg_tps=tg_tps,
        peak_rss_mib=peak_rss_mib(),
    )


def format_table(r: BenchResult) -> str:
    s = r.summary()
    rows = [
        ("model", r.model),
        ("backend", f"{r.backend} ({r.isa}), {r.threads} threads"),
        ("load (to first token)", f"{r.load_seconds:.2f} s"),
        (f"pp{r.pp_tokens}", f"{s['pp_tps_median']:.1f} ± {s['pp_tps_stdev']:.1f} tok/s"),
        (f"tg{r.tg_tokens}", f"{s['tg_tps_median']:.2f} ± {s['tg_tps_stdev']:.2f} tok/s"),
        ("peak RSS", f"{r.peak_rss_mib:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_bench(args: argparse.Namespace) -> int:
    from phirt.fetch import resolve_model

    result = run_bench(
        resolve_model(args.model), args.pp, args.tg, args.reps, args.threads, args.ctx, args.kv_type
    )
    print(json.dumps(result.summary(), indent=2) if args.json else format_table(result))
    return 0


def add_bench_subcommand(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure prefill and decode speed")
    p.add_argument("model", help="path to a GGUF file, or a known model name (smollm2)")
    p.add_argument("--pp", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("--tg", type=int, default=128, help="generated tokens (default 128)")
    p.add_argument("--reps", type=int, default=3, help="repetitions after a warm-up (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--ctx", type=int, default=None, help="context size (default pp + tg)")
    p.add_argument("--kv-type", choices=["f16", "q8_0"], default="f16", help="KV cache type")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench)

"""`phirt serve` under concurrent streams, against the real server on loopback with the `openai`
client, and llama-cpp-python's server on the same file (batching throughput and time to first token).

    python benchmarks/serve_bench.py MODEL [--threads 2] [--streams 1,2,4,8] [--max-tokens 64]
        [--reps 2] [--llamacpp] [--json]

For each number of concurrent streams N, N streaming completions start at once (a ~32-token prompt
of its own each, max_tokens each, temperature 0); per request the client records the time to the
first token (TTFT) and to the last. Figures, medians over --reps runs:

- aggregate decode tok/s with N concurrent streams ("steady"): tokens emitted while all N are
  decoding, i.e. between the last stream's first token and the first stream's last token, per
  second. This is the batched decode step the issue's target is about (the weights read once per
  step for N streams); with one stream it is (tokens - 1) / (last token - first token).
- "span" tok/s: Σ (tokens - 1) over the N requests / (last token of any - first token of any).
  It also pays for the prompts that join while others decode (their prefill runs inside the
  span), so it falls below steady by about that prefill time; a server that runs one request at a
  time (llama-cpp-python's) has no steady window and is compared on span.
- TTFT p50 / p95 over all requests of all runs (with N > 1 a prompt may wait for others' prefill);
- ratios: each rate at N / the same rate at 1 within each run, median over runs (the aim:
  steady >= 2.5 at 4 streams). Each run goes through every N in turn, so a shared machine's drift
  in speed over the minutes of a benchmark falls on every N alike.

Beside them, measured in-process on the same file and threads (no HTTP):

- generate tok/s: phirt.load(...).generate decode rate, which the server's single stream should
  stay within 5 % of;
- GEMM ceiling = prefill tok/s (128-token prompt, the packed GEMM where the ISA has one) / decode
  tok/s: the most a batched step could gain if it ran at prefill speed;
- batch-invariant ceiling at M = M · t(1 row) / t(M rows) for NativeEngine.eval_batch decode steps
  with batch_invariant=True: what the server's decode pass can gain at most (its rows take the
  GEMV's one-row dots, so that a request's answer does not depend on its batch; docs/design.md).

--llamacpp runs `python -m llama_cpp.server` (pip install 'llama-cpp-python[server]==0.3.36') on
the same file, threads and context, with the same client load; it serves one request at a time.
The load average before and after is printed: on a shared machine these figures are noisy.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WORDS = (
    "river stone light garden window market winter music paper silver forest engine bridge "
    "story morning ocean letter planet island mountain village summer lantern harbor"
).split()


def prompts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, 30)) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    import httpx

    out = open(log, "wb")  # open as long as the server runs
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[:4]} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not come up: {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_stream(base: str, prompt: str, max_tokens: int, t0: float) -> dict[str, float]:
    from openai import OpenAI

    client = OpenAI(base_url=base, api_key="bench", max_retries=0, timeout=3600)
    times: list[float] = []  # arrival of each chunk with text
    usage = None
    stream = client.completions.create(
        model="bench",
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for c in stream:
        if c.usage:
            usage = c.usage.completion_tokens
        if c.choices and c.choices[0].text:
            times.append(time.perf_counter())
    tokens = usage if usage is not None else len(times)  # llama-cpp-python: one chunk per token
    return {"ttft": times[0] - t0, "times": times, "tokens": tokens}


def tokens_between(r: dict[str, Any], w0: float, w1: float) -> float:
    """Tokens of one stream that arrived in (w0, w1]; a chunk may carry several tokens (text held
    back until it is complete), so chunks count as the stream's tokens per chunk on average."""
    times = r["times"]
    if len(times) < 2:
        return 0.0
    per_chunk = (r["tokens"] - 1) / (len(times) - 1)
    return sum(w0 < t <= w1 for t in times) * per_chunk


def run_load(base: str, n: int, max_tokens: int, texts: list[str]) -> dict[str, Any]:
    with cf.ThreadPoolExecutor(n) as pool:
        t0 = time.perf_counter()
        rs = list(pool.map(lambda p: one_stream(base, p, max_tokens, t0), texts[:n]))
    span = max(r["times"][-1] for r in rs) - min(r["times"][0] for r in rs)
    decoded = sum(r["tokens"] - 1 for r in rs)
    # the window in which all n streams were decoding: none where the server ran them one by one
    w0, w1 = max(r["times"][0] for r in rs), min(r["times"][-1] for r in rs)
    steady = sum(tokens_between(r, w0, w1) for r in rs) / (w1 - w0) if w1 > w0 else None
    return {
        "steady": steady,
        "aggregate": decoded / span,
        "ttft": [r["ttft"] for r in rs],
        "tokens": [r["tokens"] for r in rs],
    }


def bench_server(
    name: str, base: str, streams: list[int], reps: int, max_tokens: int
) -> dict[int, dict[str, Any]]:
    # every request its own prompt (the same list for each server): a server that keeps the
    # previous prompt's KV cache (llama-cpp-python's does) must not skip a repeated prefill
    fresh = iter(prompts(1 + reps * sum(streams)))
    one_stream(base, next(fresh), 8, time.perf_counter())  # warm-up
    # each rep runs every N in turn, so that a shared machine's drift in speed falls on all N alike
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in streams}
    for _ in range(reps):
        for n in streams:
            runs[n].append(run_load(base, n, max_tokens, [next(fresh) for _ in range(n)]))
    out: dict[int, dict[str, Any]] = {}
    for n in streams:
        ttft = sorted(t for r in runs[n] for t in r["ttft"])
        out[n] = {
            "ttft_p50": float(np.percentile(ttft, 50)),
            "ttft_p95": float(np.percentile(ttft, 95)),
        }
        line = f"  {name:<10} {n} streams:"
        for rate in ("steady", "aggregate"):
            per_run = [r[rate] for r in runs[n]]
            if None in per_run:  # no window with all n decoding (one request at a time)
                out[n][rate] = out[n][rate + "_ratio"] = None
                continue
            # the ratio to the first N (1) within each rep, adjacent in time, then its median
            ratios = [a / r1[rate] for a, r1 in zip(per_run, runs[streams[0]], strict=True)]
            out[n][rate] = statistics.median(per_run)
            out[n][rate + "_runs"] = per_run
            out[n][rate + "_ratio"] = statistics.median(ratios)
            label = "steady" if rate == "steady" else "span"
            line += (
                f" {label} {out[n][rate]:6.2f} tok/s (runs {', '.join(f'{x:.2f}' for x in per_run)};"
                f" x{streams[0]} {', '.join(f'{x:.2f}' for x in ratios)});"
            )
        print(
            f"{line} TTFT p50 {out[n]['ttft_p50']:.2f} s p95 {out[n]['ttft_p95']:.2f} s", flush=True
        )
    return out


def in_process(
    path: str, threads: int, n_ctx: int, max_tokens: int, streams: list[int]
) -> dict[str, Any]:
    """generate's decode rate, the prefill rate and the batch-invariant decode step times."""
    import phirt
    from phirt import _kernels as K

    model = phirt.load(path, n_threads=threads, n_ctx=n_ctx)
    text = prompts(1)[0]
    model.generate(text, max_tokens=8, temperature=0)  # warm-up
    rates = []
    for _ in range(2):
        model.reset()
        model.generate(text, max_tokens=max_tokens, temperature=0)
        rates.append(model.last_stats.decode_tokens_per_second)
    engine = model.engine
    rng = np.random.default_rng(1)
    ids = rng.integers(100, 30000, 128).tolist()
    pp = []
    for _ in range(2):
        engine.reset()
        t = time.perf_counter()
        engine.eval(ids)
        pp.append(128 / (time.perf_counter() - t))
    # decode steps of M sequences at once, as the server's decode pass runs them
    caches = [engine.new_cache() for _ in range(max(streams))]
    for c in caches:
        engine.eval_batch([(c, 0, ids[:16])])
    step: dict[int, float] = {}
    for m in streams:
        times = []
        for i in range(6):
            spans = [(c, 16 + i, [int(rng.integers(100, 30000))]) for c in caches[:m]]
            t = time.perf_counter()
            engine.eval_batch(spans, batch_invariant=True)
            times.append(time.perf_counter() - t)
        step[m] = statistics.median(times[1:])
    return {
        "isa": K.isa(),
        "generate_tps": statistics.median(rates),
        "prefill_tps": statistics.median(pp),
        "gemm_ceiling": statistics.median(pp) / statistics.median(rates),
        "invariant_ceiling": {m: m * step[1] / step[m] for m in streams},
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "model", help="GGUF file (benchmarks/make_bench_models.py writes Phi-3-mini-shaped ones)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512, help="context per sequence (default 512)")
    ap.add_argument("--llamacpp", action="store_true", help="also llama-cpp-python's server")
    ap.add_argument(
        "--llamacpp-streams",
        default=None,
        help="stream counts for llama.cpp's server (default: --streams); it runs one request at a "
        "time, so its aggregate barely moves with N while the run takes N times as long",
    )
    ap.add_argument("--json", action="store_true", help="print all figures as JSON at the end")
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    from phirt.fetch import resolve_model

    path = resolve_model(args.model)
    load_before = os.getloadavg()
    print(
        f"{Path(path).name}, {args.threads} threads, {cpu_name()}, streams {streams}, {args.max_tokens} tokens each"
    )
    ref = in_process(path, args.threads, args.ctx, args.max_tokens, streams)
    print(
        f"  in-process ({ref['isa']}): generate {ref['generate_tps']:.2f} tok/s, prefill "
        f"{ref['prefill_tps']:.1f} tok/s -> GEMM ceiling {ref['gemm_ceiling']:.2f}x; batch-invariant "
        "decode ceiling "
        + ", ".join(f"{m}: {c:.2f}x" for m, c in ref["invariant_ceiling"].items()),
        flush=True,
    )
    results: dict[str, Any] = {
        "model": path,
        "threads": args.threads,
        "cpu": cpu_name(),
        "in_process": ref,
    }
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "phirt",
        "serve",
        path,
        "--port",
        str(port),
        "--threads",
        str(args.threads),
    ]
    cmd += ["--parallel", str(max(streams)), "--ctx", str(args.ctx)]
    proc = start(cmd, f"http://127.0.0.1:{port}/health", logs / f"serve_bench_phirt_{port}.log")
    try:
        results["phirt"] = bench_server(
            "phirt", f"http://127.0.0.1:{port}/v1", streams, args.reps, args.max_tokens
        )
    finally:
        stop(proc)
    if args.llamacpp:
        port = free_port()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--port", str(port)]
        cmd += ["--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
        cmd += ["--n_ctx", str(args.ctx * max(streams)), "--n_batch", "512"]
        proc = start(
            cmd, f"http://127.0.0.1:{port}/v1/models", logs / f"serve_bench_llamacpp_{port}.log"
        )
        try:
            ll_streams = [int(x) for x in (args.llamacpp_streams or args.streams).split(",")]
            results["llamacpp"] = bench_server(
                "llama.cpp", f"http://127.0.0.1:{port}/v1", ll_streams, args.reps, args.max_tokens
            )
        finally:
            stop(proc)
    results["loadavg"] = [load_before, os.getloadavg()]
    print_table(results, streams)
    if args.json:
        print(json.dumps(results, indent=1, default=str))


def print_table(r: dict[str, Any], streams: list[int]) -> None:
    ref = r["in_process"]
    servers = [s for s in ("phirt", "llamacpp") if s in r]
    print(f"\n{Path(r['model']).name}, {r['threads']} threads, {r['cpu']} ({ref['isa']})")
    print(f"load average 1/5/15 min: {r['loadavg'][0]} -> {r['loadavg'][1]} (before -> after)")
    print("tok/s: steady (all N decoding) / span (incl. joining prompts' prefill); xN: ratios to 1")
    head = f"{'streams':>7}"
    for s in servers:
        head += f"  {s + ' steady/span':>22} {'x1':>11} {'TTFT p50/p95 s':>15}"
    print(head + f"  {'invariant ceiling':>17}")

    def num(x: float | None, width: int) -> str:
        return f"{'-':>{width}}" if x is None else f"{x:>{width}.2f}"

    for n in streams:
        row = f"{n:>7}"
        for s in servers:
            if n not in r[s]:
                row += f"  {'-':>22} {'':>11} {'':>15}"
                continue
            x = r[s][n]
            row += f"  {num(x['steady'], 10)} / {num(x['aggregate'], 9)}"
            row += f" {num(x['steady_ratio'], 5)}/{num(x['aggregate_ratio'], 5)}"
            row += f" {x['ttft_p50']:>7.2f}/{x['ttft_p95']:<7.2f}"
        print(row + f"  {ref['invariant_ceiling'][n]:>16.2f}x")
    one = r["phirt"][streams[0]]["steady"]
    print(
        f"phirt serve 1 stream / in-process generate: {one:.2f} / {ref['generate_tps']:.2f} = "
        f"{one / ref['generate_tps']:.3f} (target >= 0.95); GEMM ceiling (prefill / decode) "
        f"{ref['gemm_ceiling']:.2f}x; target at 4 streams: steady >= 2.5x"
    )


if __name__ == "__main__":
    main()

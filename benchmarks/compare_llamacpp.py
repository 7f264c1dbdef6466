"""phirt vs llama.cpp (llama-cpp-python) on the same GGUF file, side by side with ratios.

    python benchmarks/compare_llamacpp.py MODEL [MODEL ...] [--pp 128,512] [--tg 128]
        [--threads 1,2] [--reps 3] [--long-ctx] [--kv-type f16|q8_0] [--json]
        [--phirt-isa avx2] [--llama-cpp-path DIR]

Every repetition runs each engine in a fresh process of this script (``--worker phirt|llamacpp``),
so peak RSS and load time are each engine's own; the repetitions alternate (phirt, llama.cpp,
phirt, ...) so that a change in machine load hits both. In each process: load and evaluate one
token (load time to first token), warm up (one prefill of the largest batch, 8 decoded tokens),
then one measurement of every figure:

- prefill ppN: N prompt tokens from an empty cache, as one ``eval`` call (tok/s);
- decode tgN: N tokens one at a time, each the argmax of the previous logits, after a 16-token
  prompt (tok/s);
- ``--long-ctx`` (separate processes, so the other figures keep a small KV cache): 32 decoded
  tokens after a 100-token and after a 2000-token prompt, and their ratio;
- peak RSS of the process (weights mapped or copied, KV cache, buffers, Python).

The same random token ids and the same n_ctx go to both engines; llama.cpp gets
``Llama(path, n_ctx, n_threads=t, n_threads_batch=t, n_batch=512)``, ``eval(tokens)`` for prefill and
``eval([token])`` for decode, phirt ``phirt.load(path, n_threads=t, n_ctx)`` and
``model.engine.eval`` (the calls ``python -m phirt bench`` makes). ``--kv-type q8_0`` gives both
engines a Q8_0 KV cache (phirt ``kv_type="q8_0"``; llama.cpp ``type_k = type_v = q8_0``, which
needs its ``flash_attn``). The table shows medians over the repetitions, ±half their range in
percent, and the ratio phirt / llama.cpp.

Decode is bound by memory reads: each token reads every matrix once (token_embd only for its
one row, unless the output layer shares it) plus the KV cache so far. Next to the decode figure
the table gives each engine's share of that limit: tok/s × bytes read per token ÷ the read
bandwidth numpy measures here with the same thread count (a buffer 4× the last-level cache,
np.add.reduce, as benchmarks/kernels.py).

Nothing is built here. ``--llama-cpp-path DIR`` imports llama_cpp from DIR instead (e.g. a
llama-cpp-python built for a narrower ISA: ``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON
-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF ..." pip install --no-deps --target DIR
llama-cpp-python==0.3.36``); ``--phirt-isa`` sets PHIRT_ISA for phirt's processes. A
llama-cpp-python built for instructions this CPU lacks stops its process with SIGILL: the script
says so rather than build another.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ENGINES = ("phirt", "llamacpp")
LABELS = {"phirt": "phirt", "llamacpp": "llama.cpp"}
N_BATCH = 512  # llama.cpp's n_batch; phirt's engine prefills in batches of 512 as well
SHORT_PROMPT = 16  # tokens before the decode figure
WARMUP_DECODE = 8
LONG_NEAR, LONG_FAR, LONG_TG = 100, 2000, 32  # --long-ctx: decode 32 tokens at ~100 and ~2000
RESULT_MARK = "@@compare_llamacpp@@ "  # prefixes the worker's JSON line on stdout
REPO = Path(__file__).resolve().parent.parent


# -- worker: one engine, one process -----------------------------------------------------------


class Engine(Protocol):
    def reset(self) -> None: ...
    def eval(self, tokens: list[int]) -> np.ndarray: ...  # logits of the last token
    def info(self) -> dict[str, Any]: ...


class PhirtEngine:
    def __init__(self, path: str, n_ctx: int, threads: int, kv_type: str) -> None:
        import phirt

        self.model = phirt.load(path, n_threads=threads, n_ctx=n_ctx, kv_type=kv_type)
        self.engine = self.model.engine

    def reset(self) -> None:
        self.engine.reset()

    def eval(self, tokens: list[int]) -> np.ndarray:
        return self.engine.eval(tokens)

    def info(self) -> dict[str, Any]:
        import phirt
        from phirt import _kernels as K

        return {
            "version": getattr(phirt, "__version__", "?"),
            "backend": f"{self.model.backend}, {K.isa()}",
            "threads": self.engine.n_threads,
        }


def import_llama_cpp(path: str | None) -> Any:
    """llama_cpp from `path` (a pip --target directory) when given, else the installed one."""
    if path:
        sys.path.insert(0, os.path.abspath(path))
    import llama_cpp

    if path and not Path(llama_cpp.__file__).resolve().is_relative_to(Path(path).resolve()):
        raise SystemExit(f"--llama-cpp-path {path}: no llama_cpp package there")
    return llama_cpp


class LlamaCppEngine:
    llama_cpp_path: str | None = None

    def __init__(self, path: str, n_ctx: int, threads: int, kv_type: str) -> None:
        llama_cpp = import_llama_cpp(self.llama_cpp_path)

        self._llama_cpp = llama_cpp
        q8 = {"type_k": 8, "type_v": 8, "flash_attn": True} if kv_type == "q8_0" else {}
        self.llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=N_BATCH,
            verbose=False,
            **q8,
        )
        self.n_vocab = self.llm.n_vocab()
        self.threads = threads

    def reset(self) -> None:
        self.llm.reset()

    def eval(self, tokens: list[int]) -> np.ndarray:
        self.llm.eval(tokens)
        # llama-cpp-python keeps no logits without logits_all; read the last token's from the
        # context (a view, used before the next eval overwrites it)
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def info(self) -> dict[str, Any]:
        features = self._llama_cpp.llama_print_system_info().decode().split("|")
        on = [f.split("=")[0].strip() for f in features if f.strip().endswith("= 1")]
        return {
            "version": self._llama_cpp.__version__,
            "backend": " ".join(on),
            "threads": self.threads,
            "path": str(Path(self._llama_cpp.__file__).parent),
        }


OPENERS: dict[str, Callable[[str, int, int, str], Engine]] = {
    "phirt": PhirtEngine,
    "llamacpp": LlamaCppEngine,
}


def decode_tps(engine: Engine, logits: np.ndarray, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        logits = engine.eval([int(np.argmax(logits))])
    return n / (time.perf_counter() - t)


def prefill(engine: Engine, tokens: list[int]) -> tuple[float, np.ndarray]:
    engine.reset()
    t = time.perf_counter()
    logits = engine.eval(tokens)
    return len(tokens) / (time.perf_counter() - t), logits


def peak_rss_mib() -> float:
    """This process's peak resident set. Linux's VmHWM belongs to the address space exec made;
    ru_maxrss also counts what the parent held when it forked this worker."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement of every figure of one job ("main" or "long") with one engine."""
    tokens = job_tokens(args.vocab, args.seed)
    LlamaCppEngine.llama_cpp_path = args.llama_cpp_path
    t0 = time.perf_counter()
    engine = OPENERS[args.worker](args.model, args.n_ctx, args.threads, args.kv_type)
    engine.reset()
    engine.eval(tokens[:1])
    load_s = time.perf_counter() - t0

    out: dict[str, Any] = {"engine": args.worker, "info": engine.info(), "load_s": load_s}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.job == "main":
        _, logits = prefill(engine, tokens[: min(max(args.pp), N_BATCH)])  # warm-up
        decode_tps(engine, logits, WARMUP_DECODE)
        for n in args.pp:
            out[f"pp{n}"] = prefill(engine, tokens[:n])[0]
        if args.tg:
            _, logits = prefill(engine, tokens[:SHORT_PROMPT])
            out[f"tg{args.tg}"] = decode_tps(engine, logits, args.tg)
    else:
        _, logits = prefill(engine, tokens[:64])  # warm-up
        decode_tps(engine, logits, WARMUP_DECODE)
        for pos in (LONG_NEAR, LONG_FAR):
            _, logits = prefill(engine, tokens[:pos])
            out[f"decode@{pos}"] = decode_tps(engine, logits, LONG_TG)
    out["peak_rss_mib"] = peak_rss_mib()
    # CPU seconds the process got per thread-second of measuring: well below 1 means another
    # process took the cores (llama.cpp's spinning OpenMP threads use ~1 whenever they run)
    wall = time.perf_counter() - wall0
    out["cpu_share"] = (time.process_time() - cpu0) / (wall * args.threads)
    return out


def job_tokens(vocab: int, seed: int) -> list[int]:
    n = max(LONG_FAR, N_BATCH * 8)
    return np.random.default_rng(seed).integers(0, vocab, size=n).tolist()


# -- parent: schedule workers, aggregate, print ------------------------------------------------


@dataclass
class Figure:
    key: str  # worker result key
    label: str
    unit: str
    higher_is_better: bool
    floor: float | None  # the floor phirt / llama.cpp should reach
    values: dict[str, list[float]] = field(default_factory=lambda: {e: [] for e in ENGINES})

    def median(self, engine: str) -> float:
        return statistics.median(self.values[engine])

    def spread_pct(self, engine: str) -> float:
        v = self.values[engine]
        return 50.0 * (max(v) - min(v)) / self.median(engine) if self.median(engine) else 0.0

    def ratio(self) -> float:
        return self.median("phirt") / self.median("llamacpp")

    def meets_floor(self) -> bool | None:
        if self.floor is None:
            return None
        r = self.ratio()
        return r >= self.floor if self.higher_is_better else r <= self.floor


def figures_for(args: argparse.Namespace) -> list[Figure]:
    figs = [Figure("load_s", "load to first token", "s", False, 1.0)]
    figs += [Figure(f"pp{n}", f"prefill pp{n}", "tok/s", True, 1.0) for n in args.pp]
    if args.tg:
        figs.append(Figure(f"tg{args.tg}", f"decode tg{args.tg}", "tok/s", True, 1.0))
    if args.long_ctx:
        for pos in (LONG_NEAR, LONG_FAR):
            figs.append(Figure(f"decode@{pos}", f"decode at ~{pos}", "tok/s", True, 1.0))
    figs.append(Figure("peak_rss_mib", "peak RSS", "MiB", False, 1.1))
    return figs


def n_vocab_of(path: str) -> int:
    from phirt.formats.gguf import GGUFFile

    return int(GGUFFile(path).tensors["token_embd.weight"].shape[0])


def last_level_cache_bytes() -> int:
    """Largest cache of CPU 0 from sysfs (the L3 on x86); 32 MiB when sysfs has none."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
            units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
            best = max(best, int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
        except (OSError, ValueError, KeyError):
            continue
    return best or 32 << 20


def read_bandwidth(threads: int, reps: int = 7) -> float:
    """Bytes/s numpy reads from DRAM with `threads` threads: np.add.reduce over contiguous parts
    of a buffer 4x the last-level cache (at least 1 GiB), median of `reps` passes."""
    buf = np.ones(max(1 << 30, 4 * last_level_cache_bytes()) // 4, np.float32)
    parts = np.array_split(buf, threads)

    def once() -> float:
        start = threading.Barrier(threads)
        pool = [
            threading.Thread(target=lambda p=p: (start.wait(), np.add.reduce(p))) for p in parts
        ]
        t = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        return time.perf_counter() - t

    once()  # warm-up: pages faulted in
    return buf.nbytes / statistics.median(once() for _ in range(reps))


def decode_bytes_per_token(path: str, context: int, kv_type: str) -> float:
    """Bytes one decoded token reads: every tensor but the token embedding (one row of it, or all
    of it when it is also the output layer), plus K and V of `context` cached tokens."""
    from phirt.formats.gguf import GGUFFile

    f = GGUFFile(path)
    total = 0.0
    for name, t in f.tensors.items():
        if name == "token_embd.weight" and "output.weight" in f.tensors:
            total += t.row_bytes
        else:
            total += t.n_bytes
    arch = f.arch or ""
    n_layer = f.get(f"{arch}.block_count", 0)
    n_head = f.get(f"{arch}.attention.head_count", 0)
    n_kv = f.get(f"{arch}.attention.head_count_kv", n_head)
    n_embd = f.get(f"{arch}.embedding_length", 0)
    if n_layer and n_head and n_embd:
        per_value = 2.0 if kv_type == "f16" else 34 / 32
        total += 2 * n_layer * context * n_kv * (n_embd // n_head) * per_value
    return total


def warm_page_cache(path: str) -> float:
    """Read the file once so that neither engine's first load pays for the disk."""
    t = time.perf_counter()
    buf = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t


def n_ctx_for(args: argparse.Namespace, job: str) -> int:
    if job == "main":  # the warm-up decodes after the longest prompt
        need = max(min(max(args.pp), N_BATCH) + WARMUP_DECODE, SHORT_PROMPT + args.tg)
    else:
        need = LONG_FAR + LONG_TG
    return -(-need // 256) * 256  # llama.cpp pads n_ctx to 256; give phirt the same cache


def run_job(
    engine: str, job: str, model: str, threads: int, vocab: int, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        model,
        "--worker",
        engine,
        "--job",
        job,
        "--threads",
        str(threads),
        "--pp",
        ",".join(map(str, args.pp)),
        "--tg",
        str(args.tg),
        "--n-ctx",
        str(n_ctx_for(args, job)),
        "--vocab",
        str(vocab),
        "--seed",
        str(args.seed),
        "--kv-type",
        args.kv_type,
    ]
    if args.llama_cpp_path:
        cmd += ["--llama-cpp-path", args.llama_cpp_path]
    env = dict(os.environ)
    if args.phirt_isa and engine == "phirt":
        env["PHIRT_ISA"] = args.phirt_isa
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode == -signal.SIGILL:
        raise SystemExit(
            f"{LABELS[engine]} stopped on an illegal instruction: it was built for instructions "
            "this CPU lacks (llama-cpp-python built on another machine? pass --llama-cpp-path to "
            "one built for this CPU; nothing is built here)"
        )
    raise SystemExit(f"{LABELS[engine]} worker failed (exit {proc.returncode}) on {model}")


def git_describe() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def compare(model: str, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    vocab = n_vocab_of(model)
    figs = figures_for(args)
    by_key = {f.key: f for f in figs}
    jobs = ["main"] + (["long"] if args.long_ctx else [])
    info: dict[str, Any] = {}
    cpu_share: dict[str, list[float]] = {e: [] for e in ENGINES}
    load_before = os.getloadavg()
    bandwidth = read_bandwidth(threads)
    # the decode figure runs from SHORT_PROMPT to SHORT_PROMPT + tg cached tokens
    bytes_per_token = decode_bytes_per_token(model, SHORT_PROMPT + args.tg // 2, args.kv_type)
    print(
        f"  read bandwidth {bandwidth / 1e9:.1f} GB/s ({threads} threads), "
        f"{bytes_per_token / 1e9:.3f} GB read per decoded token",
        file=sys.stderr,
        flush=True,
    )
    for rep in range(1, args.reps + 1):
        for job in jobs:
            for engine in ENGINES:
                r = run_job(engine, job, model, threads, vocab, args)
                info[engine] = r["info"]
                shown = []
                for key, value in r.items():
                    fig = by_key.get(key)
                    # load time and RSS come from the main job, whose n_ctx is the small one
                    if fig is None or (job == "long" and key in ("load_s", "peak_rss_mib")):
                        continue
                    fig.values[engine].append(float(value))
                    shown.append(f"{key} {value:.4g}")
                shown.append(f"cpu_share {r['cpu_share']:.2f}")
                cpu_share[engine].append(r["cpu_share"])
                print(
                    f"  [{threads}t rep {rep}/{args.reps} {job}] {LABELS[engine]:9}: "
                    + ", ".join(shown),
                    file=sys.stderr,
                    flush=True,
                )
    return {
        "model": model,
        "size_gb": os.path.getsize(model) / 1e9,
        "threads": threads,
        "reps": args.reps,
        "kv_type": args.kv_type,
        "n_ctx": {job: n_ctx_for(args, job) for job in jobs},
        "phirt_commit": git_describe(),
        "engines": info,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_share": cpu_share,
        "read_bandwidth_gbps": bandwidth / 1e9,
        "decode_bytes_per_token": bytes_per_token,
        "phirt_isa_env": args.phirt_isa or os.environ.get("PHIRT_ISA", ""),
        "figures": figs,
    }


def _cell(fig: Figure, engine: str) -> str:
    m = fig.median(engine)
    digits = 2 if fig.unit == "s" or m < 100 else 0 if fig.unit == "MiB" else 1
    return f"{m:.{digits}f} ±{fig.spread_pct(engine):.0f}%"


def format_table(res: dict[str, Any]) -> str:
    figs: list[Figure] = res["figures"]
    eng = res["engines"]
    n_ctx = res["n_ctx"]
    ctx = f"n_ctx {n_ctx['main']}" + (f" (long-ctx {n_ctx['long']})" if "long" in n_ctx else "")
    load = " -> ".join(
        "/".join(f"{x:.2f}" for x in res[k]) for k in ("loadavg_before", "loadavg_after")
    )
    head = [
        f"{Path(res['model']).name} ({res['size_gb']:.2f} GB), {res['threads']} threads, "
        f"{res['reps']} interleaved reps, {ctx}, {res['kv_type']} KV cache",
        f"  phirt {eng['phirt']['version']} ({res['phirt_commit']}): {eng['phirt']['backend']}",
        f"  llama.cpp (llama-cpp-python {eng['llamacpp']['version']}, "
        f"{eng['llamacpp'].get('path', '?')}): {eng['llamacpp']['backend']}",
        f"  read bandwidth {res['read_bandwidth_gbps']:.1f} GB/s (numpy, {res['threads']} "
        f"threads); decode reads {res['decode_bytes_per_token'] / 1e9:.3f} GB per token",
        f"  load average 1/5/15 min: {load} (before -> after); CPU share per thread, "
        + ", ".join(
            f"{LABELS[e]} {min(res['cpu_share'][e]):.2f}-{max(res['cpu_share'][e]):.2f}"
            for e in ENGINES
        ),
    ]
    rows = [("figure", "phirt", "llama.cpp", "phirt/llama.cpp", "floor")]
    for f in figs:
        floor = ""
        if f.floor is not None:
            ok = "ok" if f.meets_floor() else "BELOW"
            floor = f"{'>=' if f.higher_is_better else '<='} {f.floor:.2f} {ok}"
        rows.append(
            (
                f"{f.label} ({f.unit})",
                _cell(f, "phirt"),
                _cell(f, "llamacpp"),
                f"{f.ratio():.2f}x",
                floor,
            )
        )
        if f.key.startswith("tg"):
            limit = 1e9 * res["read_bandwidth_gbps"] / res["decode_bytes_per_token"]
            share = {e: f.median(e) / limit for e in ENGINES}
            rows.append(
                (
                    f"  share of read-bandwidth limit ({limit:.1f} tok/s)",
                    f"{100 * share['phirt']:.0f} %",
                    f"{100 * share['llamacpp']:.0f} %",
                    "",
                    "aim >= 90 %",
                )
            )
    near, far = (
        next((f for f in figs if f.key == f"decode@{p}"), None) for p in (LONG_NEAR, LONG_FAR)
    )
    if near is not None and far is not None:
        per = {e: far.median(e) / near.median(e) for e in ENGINES}
        ok = "ok" if per["phirt"] >= 0.8 else "BELOW"
        rows.append(
            (
                f"decode ~{LONG_FAR} / ~{LONG_NEAR}",
                f"{per['phirt']:.2f}",
                f"{per['llamacpp']:.2f}",
                "",
                f"phirt >= 0.80 {ok}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(head + lines)


def to_json(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in res.items() if k != "figures"}
    out["figures"] = {
        f.key: {
            "label": f.label,
            "unit": f.unit,
            **{
                e: {"median": f.median(e), "spread_pct": f.spread_pct(e), "values": f.values[e]}
                for e in ENGINES
            },
            "ratio": f.ratio(),
            "floor": f.floor,
            "meets_floor": f.meets_floor(),
        }
        for f in res["figures"]
    }
    return out


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="MODEL", help="GGUF files (or smollm2)")
    p.add_argument("--pp", type=_int_list, default=[128, 512], help="prompt sizes (128,512)")
    p.add_argument("--tg", type=int, default=128, help="decoded tokens (128; 0: none)")
    p.add_argument("--threads", type=_int_list, default=[2, 1], help="thread counts (2,1)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per engine (3)")
    p.add_argument("--long-ctx", action="store_true", help=f"decode at ~{LONG_FAR} vs ~{LONG_NEAR}")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt token ids")
    p.add_argument("--kv-type", choices=("f16", "q8_0"), default="f16", help="KV cache type (f16)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--phirt-isa", help="PHIRT_ISA for phirt's processes (e.g. avx2)")
    p.add_argument(
        "--llama-cpp-path", help="import llama_cpp from this directory (a pip --target dir)"
    )
    # internal: one engine in this process
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--job", choices=("main", "long"), default="main", help=argparse.SUPPRESS)
    p.add_argument("--n-ctx", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tg < 0 or args.reps < 1:
        p.error("--tg must be >= 0 and --reps >= 1")
    if max(args.pp) > N_BATCH * 8:
        p.error(f"--pp is limited to {N_BATCH * 8} tokens")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        args.model = args.models[0]
        args.threads = args.threads[0]
        print(RESULT_MARK + json.dumps(run_worker(args)), flush=True)
        return 0
    from phirt.fetch import resolve_model

    results = []
    for model in map(resolve_model, args.models):
        seconds = warm_page_cache(model)
        print(f"{model}: read once in {seconds:.1f} s (page cache warm)", file=sys.stderr)
        for threads in args.threads:
            res = compare(model, threads, args)
            results.append(res)
            if not args.json:
                print(format_table(res) + "\n", flush=True)
    if args.json:
        print(json.dumps([to_json(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

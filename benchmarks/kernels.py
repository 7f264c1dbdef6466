"""Kernel throughput on this machine: decode GEMV as weight-streaming bandwidth next to the read
bandwidth numpy gets from the same memory, and prefill GEMM as GOP/s.

    python benchmarks/kernels.py [--reps 40] [--isa avx2,avx512] [--threads 1,2] [--json]

GEMV (m = 1) is bandwidth-bound, so it is reported as weight bytes / median time, with the weights
cold: the script rotates through enough copies of the matrix (together > 4x the last-level cache)
that every call streams its matrix from DRAM. The read bandwidth is the same measurement for
numpy: np.add.reduce over a buffer of the same size, split across the same number of Python
threads (numpy releases the GIL). GEMM (m = 128) is compute-bound: 2·m·n·k / median time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import phirt._kernels as K
from gguf import GGMLQuantizationType

T = GGMLQuantizationType
GiB = 1 << 30
DEFAULT_TYPES = ["Q4_0", "Q8_0", "Q4_K"]


@dataclass
class Result:
    isa: str
    type: str
    threads: int
    weight_mib: float
    gemv_ms: float
    gemv_gbps: float
    read_gbps: float
    gemv_over_read: float
    gemm_ms: float
    gemm_gops: float


# ---- machine ---------------------------------------------------------------------------------------


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def last_level_cache_bytes() -> int:
    """Largest cache of CPU 0 from sysfs (the L3 on x86); 32 MiB when sysfs has none."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            best = max(best, _parse_size((index / "size").read_text()))
        except (OSError, ValueError):
            continue
    return best or 32 << 20


def median_time(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_bandwidth(buf: np.ndarray, threads: int, reps: int) -> float:
    """Bytes/s of np.add.reduce over buf, split in `threads` contiguous parts read concurrently."""
    parts = np.array_split(buf, threads)

    def once() -> None:
        if threads == 1:
            np.add.reduce(buf)
            return
        start = threading.Barrier(threads)

        def work(part: np.ndarray) -> None:
            start.wait()
            np.add.reduce(part)

        pool = [threading.Thread(target=work, args=(p,)) for p in parts]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

    once()  # warm-up
    return buf.nbytes / median_time(once, reps)


# ---- weights ---------------------------------------------------------------------------------------


def weight_bytes(qtype: T, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, row_bytes) weights: N(0, 0.02) values through phirt's quantizer."""
    x = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    return K.quantize(int(qtype), x)


# ---- measurements ----------------------------------------------------------------------------------


def measure_gemv(copies: list[K.QMatrix], x: np.ndarray, reps: int) -> float:
    """Median seconds per GEMV, each call on the next copy, so its weights come from DRAM."""
    y = np.empty((1, copies[0].n), np.float32)
    for w in copies:  # one full rotation: warms the pool and faults nothing in the timed part
        K.matmul(w, x, out=y)
    times = []
    for i in range(reps):
        w = copies[i % len(copies)]
        t0 = time.perf_counter()
        K.matmul(w, x, out=y)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_gemm(w: K.QMatrix, x: np.ndarray, reps: int) -> float:
    y = np.empty((x.shape[0], w.n), np.float32)
    K.matmul(w, x, out=y)  # warm-up
    return median_time(lambda: K.matmul(w, x, out=y), reps)


# ---- report ----------------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    head = [
        "isa",
        "type",
        "thr",
        "MiB",
        "GEMV ms",
        "GEMV GB/s",
        "read GB/s",
        "GEMV/read",
        "GEMM ms",
        "GEMM GOP/s",
    ]
    rows = [
        [
            r.isa,
            r.type,
            str(r.threads),
            f"{r.weight_mib:.1f}",
            f"{r.gemv_ms:.3f}",
            f"{r.gemv_gbps:.2f}",
            f"{r.read_gbps:.2f}",
            f"{100 * r.gemv_over_read:.0f} %",
            f"{r.gemm_ms:.1f}",
            f"{r.gemm_gops:.1f}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--reps", type=int, default=40, help="timed GEMV calls and bandwidth passes/4 (default 40)"
    )
    ap.add_argument("--gemm-reps", type=int, default=3, help="timed GEMM calls (default 3)")
    ap.add_argument(
        "--isa",
        default=",".join(K.available_isas()),
        help="comma-separated ISA paths (default: all available)",
    )
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument(
        "--types", default=",".join(DEFAULT_TYPES), help="weight types (default Q4_0,Q8_0,Q4_K)"
    )
    ap.add_argument("--n", type=int, default=3072, help="matrix rows (default 3072)")
    ap.add_argument("--k", type=int, default=8192, help="matrix columns (default 8192)")
    ap.add_argument("--gemm-m", type=int, default=128, help="GEMM activation rows (default 128)")
    ap.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of a table"
    )
    args = ap.parse_args()

    isas = [s for s in args.isa.split(",") if s]
    unknown = [s for s in isas if s not in K.available_isas()]
    if unknown:
        ap.error(
            f"ISA not available here: {', '.join(unknown)} (available: {', '.join(K.available_isas())})"
        )
    thread_counts = [int(t) for t in args.threads.split(",")]
    qtypes = [T[name] for name in args.types.split(",")]
    rng = np.random.default_rng(0)
    llc = last_level_cache_bytes()
    stream_bytes = max(GiB, 4 * llc)
    load_before = os.getloadavg()
    say: Callable[[str], None] = (lambda s: None) if args.json else (lambda s: print(s, flush=True))

    say(
        f"phirt kernels: {args.n}x{args.k} weights, GEMV m=1, GEMM m={args.gemm_m}; last-level cache {llc >> 20} MiB"
    )
    say(
        f"available ISAs {K.available_isas()}, physical cores {K.physical_cores()}, load average {load_before[0]:.2f}"
    )

    # Read bandwidth first, then free its buffer before the weight copies take the memory.
    buf = np.ones(stream_bytes // 4, np.float32)
    read_bw = {t: read_bandwidth(buf, t, max(3, args.reps // 4)) for t in thread_counts}
    del buf
    say(
        "numpy read bandwidth over "
        + f"{stream_bytes / GiB:.1f} GiB: "
        + ", ".join(f"{t} thread(s) {bw / 1e9:.2f} GB/s" for t, bw in read_bw.items())
    )

    x1 = rng.standard_normal((1, args.k)).astype(np.float32)
    xm = rng.standard_normal((args.gemm_m, args.k)).astype(np.float32)
    previous_isa, previous_threads = K.isa(), K.get_num_threads()
    results: list[Result] = []
    try:
        for qtype in qtypes:
            data = weight_bytes(qtype, args.n, args.k, rng)
            n_copies = -(-stream_bytes // data.nbytes) + 1
            copies = [K.QMatrix(data.copy(), int(qtype), args.n, args.k) for _ in range(n_copies)]
            say(f"{qtype.name}: {data.nbytes / 2**20:.1f} MiB, rotating {n_copies} copies")
            for isa in isas:
                K.set_isa(isa)
                for threads in thread_counts:
                    K.set_num_threads(threads)
                    gemv = measure_gemv(copies, x1, args.reps)
                    gemm = measure_gemm(copies[0], xm, args.gemm_reps)
                    gbps = data.nbytes / gemv / 1e9
                    results.append(
                        Result(
                            isa=isa,
                            type=qtype.name,
                            threads=threads,
                            weight_mib=data.nbytes / 2**20,
                            gemv_ms=gemv * 1e3,
                            gemv_gbps=gbps,
                            read_gbps=read_bw[threads] / 1e9,
                            gemv_over_read=gbps * 1e9 / read_bw[threads],
                            gemm_ms=gemm * 1e3,
                            gemm_gops=2 * args.gemm_m * args.n * args.k / gemm / 1e9,
                        )
                    )
            del copies, data
    finally:
        K.set_isa(previous_isa)
        K.set_num_threads(previous_threads)

    if args.json:
        doc = {
            "n": args.n,
            "k": args.k,
            "gemm_m": args.gemm_m,
            "last_level_cache_bytes": llc,
            "stream_bytes": stream_bytes,
            "read_gbps": {str(t): bw / 1e9 for t, bw in read_bw.items()},
            "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(doc, indent=2))
    else:
        print()
        print(table(results))
        print(
            f"\nload average after: {os.getloadavg()[0]:.2f} (other work on the machine skews these numbers)"
        )


if __name__ == "__main__":
    main()

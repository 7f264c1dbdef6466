"""phirt's NEON kernels next to ggml's, per NEON level, on Phi-3-mini's matrix shapes.

    python benchmarks/neon_vs_ggml.py [--types q4_0,q4_k,...] [--shapes 3072x3072,...] [--json]

On an x86-64 machine (no ARM hardware needed) both are cross-compiled for aarch64 and run under
qemu-user with the CPU model of each level, counting retired guest instructions with a small TCG
plugin (benchmarks/neon/insn_count.c); the figure is instructions per weight byte of one matmul,
taken as the difference between runs of 1 and 3 calls, so setup cancels out:

    level         qemu -cpu     phirt table    ggml build (GGML_CPU_ARM_ARCH)
    neon          cortex-a72    neon           armv8-a
    neon_dotprod  cortex-a76    neon_dotprod   armv8.2-a+dotprod
    neon_i8mm     max           neon_i8mm      armv8.2-a+dotprod+i8mm

Instruction counts are what can be measured honestly without the hardware: they say how much work
each kernel does per byte, not how the core schedules it (a 2-cycle SDOT and a 1-cycle AND count the
same). On an aarch64 machine (Raspberry Pi, Jetson) the same script builds both natively
(ggml with GGML_NATIVE) and prints measured GB/s per matrix and an estimate of Phi-3-mini decode
tokens/s from the four per-layer GEMVs (32 layers; the output matrix and attention left out), for
every level the CPU runs.

ggml is the CPU backend of the llama-cpp-python 0.3.36 sdist (pip download, into the work folder;
nothing of it is kept in this repository), built with its defaults (repacking on, llamafile on);
the weight goes to ggml's repacking buffer type whenever ggml takes it there, as llama.cpp does
(Q4_0, Q4_K, Q5_K, Q6_K and Q8_0 with dotprod/i8mm), else to the plain CPU buffer. Both run on one
thread, on the same random weight bytes, and `--check` compares their outputs.

Needs cmake, g++-aarch64-linux-gnu, qemu-user (7.2 or any with plugin support) and a host C
compiler when not on aarch64. First run: ~15 minutes of builds on 2 cores, then ~1 s per count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_SRC = ROOT / "benchmarks" / "neon"
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"

LEVELS = {  # phirt table -> (qemu CPU model, ggml's -march)
    "neon": ("cortex-a72", "armv8-a"),
    "neon_dotprod": ("cortex-a76", "armv8.2-a+dotprod"),
    "neon_i8mm": ("max", "armv8.2-a+dotprod+i8mm"),
}
TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k"]
# Phi-3-mini's per-layer matrices (n x k): attention qkv and output, FFN gate+up and down.
PHI3_LAYER = ["9216x3072", "3072x3072", "16384x3072", "3072x8192"]
PHI3_LAYERS = 32
BLOCK = {"q4_k": (256, 144), "q5_k": (256, 176), "q6_k": (256, 210), "q4_0": (32, 18),
         "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "q8_0": (32, 34)}  # fmt: skip


@dataclass
class Row:
    level: str
    op: str  # gemv (m = 1) or gemm (m = --gemm-rows)
    type: str
    shape: str
    phirt: float  # instructions per weight byte (qemu) or GB/s (native)
    ggml: float
    ggml_buffer: str


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def ggml_sources(work: Path) -> Path:
    """vendor/llama.cpp/ggml of the llama-cpp-python sdist, downloaded once into `work`."""
    src = work / "ggml-src"
    ggml = (
        next(src.glob("llama_cpp_python-*/vendor/llama.cpp/ggml"), None) if src.exists() else None
    )
    if ggml is not None:
        return ggml
    src.mkdir(parents=True, exist_ok=True)
    print(f"downloading the {LLAMA_CPP_PYTHON} sdist (ggml's sources) into {src}", flush=True)
    run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
         "--no-build-isolation", LLAMA_CPP_PYTHON, "-d", str(src)])  # fmt: skip
    (sdist,) = src.glob("llama_cpp_python-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(src, filter="data")
    return next(src.glob("llama_cpp_python-*/vendor/llama.cpp/ggml"))


def build(work: Path, name: str, cmake_args: list[str]) -> Path:
    """bench_matmul (phirt + ggml) in work/name; returns the binary."""
    out = work / name
    binary = out / "bench_matmul"
    if not binary.exists():
        print(f"building {name} (phirt's kernels + ggml's CPU backend)", flush=True)
        args = [f"-DGGML_SOURCE_DIR={ggml_sources(work)}", "-DGGML_OPENMP=OFF",
                "-DCMAKE_BUILD_TYPE=Release", *cmake_args]  # fmt: skip
        run(["cmake", "-S", str(BENCH_SRC), "-B", str(out), *args])
    # every time: an existing build is brought up to date with phirt's sources (seconds)
    run(["cmake", "--build", str(out), "-j", str(os.cpu_count() or 1), "--target",
         "bench_matmul"])  # fmt: skip
    return binary


def plugin(work: Path) -> Path:
    so = work / "insn_count.so"
    if not so.exists():
        cc = os.environ.get("CC", "cc")
        run([cc, "-shared", "-fPIC", "-O2", "-o", str(so), str(BENCH_SRC / "insn_count.c")])
    return so


def weight_bytes(type_: str, n: int, k: int) -> int:
    block, size = BLOCK[type_]
    return n * (k // block) * size


class Counter:
    """Instructions of one call, counted under qemu: (count(3 calls) - count(1 call)) / 2."""

    def __init__(self, work: Path, binary: Path, cpu: str) -> None:
        self.cmd = ["qemu-aarch64", "-cpu", cpu, "-L", "/usr/aarch64-linux-gnu",
                    "-plugin", str(plugin(work)), str(binary)]  # fmt: skip

    def count(self, impl: str, type_: str, n: int, k: int, m: int, reps: int) -> tuple[int, str]:
        p = run([*self.cmd, impl, type_, str(n), str(k), str(m), str(reps)])
        insns = int(re.search(r"insns: (\d+)", p.stderr).group(1))
        buf = re.search(r"ggml weight buffer: (\S+)", p.stderr)
        return insns, buf.group(1) if buf else ""

    def per_call(self, impl: str, type_: str, n: int, k: int, m: int) -> tuple[float, str]:
        c1, buf = self.count(impl, type_, n, k, m, 1)
        c3, _ = self.count(impl, type_, n, k, m, 3)
        return (c3 - c1) / 2, buf


def seconds_per_call(binary: Path, impl: str, type_: str, n: int, k: int, m: int) -> float:
    reps = "20" if m == 1 else "3"
    p = run([str(binary), impl, type_, str(n), str(k), str(m), reps, "time"])
    return float(p.stdout.split()[-1])


def shapes_of(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",")]  # type: ignore[misc]


def print_table(rows: list[Row], unit: str) -> None:
    better = "lower" if unit == "insn/B" else "higher"
    print(f"\n| level | op | type | n x k | phirt {unit} | ggml {unit} | phirt/ggml "
          f"({better} is better for phirt) | ggml weight buffer |")  # fmt: skip
    print("|---|---|---|---|---:|---:|---:|---|")
    for r in rows:
        ratio = r.phirt / r.ggml if r.ggml else float("nan")
        print(f"| {r.level} | {r.op} | {r.type} | {r.shape} | {r.phirt:.3f} | {r.ggml:.3f} | "
              f"{ratio:.2f} | {r.ggml_buffer} |")  # fmt: skip


def emulated(args: argparse.Namespace, work: Path) -> list[Row]:
    for tool in ("cmake", "aarch64-linux-gnu-g++", "qemu-aarch64"):
        if shutil.which(tool) is None:
            sys.exit(f"neon_vs_ggml: {tool} not found (apt-get install cmake g++-aarch64-linux-gnu "
                     "qemu-user)")  # fmt: skip
    toolchain = ROOT / "cpp" / "tests" / "aarch64-toolchain.cmake"
    rows = []
    for level in args.levels.split(","):
        cpu, march = LEVELS[level]
        binary = build(work, f"aarch64-{level}", [f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
                                                  "-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={march}"])  # fmt: skip
        counter = Counter(work, binary, cpu)
        for op, m in (("gemv", 1), ("gemm", args.gemm_rows)):
            for type_ in args.types.split(","):
                for n, k in shapes_of(args.shapes):
                    wb = weight_bytes(type_, n, k)
                    ours, _ = counter.per_call(f"phirt:{level}", type_, n, k, m)
                    theirs, buf = counter.per_call("ggml", type_, n, k, m)
                    rows.append(Row(level, op, type_, f"{n}x{k}", ours / wb, theirs / wb, buf))
                    r = rows[-1]
                    print(f"{level:13s} {op} m={m:<3d} {type_} {n}x{k}: phirt {r.phirt:.3f} "
                          f"ggml {r.ggml:.3f} insn/B ({buf})", flush=True)  # fmt: skip
        if args.check:
            for type_ in args.types.split(","):
                p = run(["qemu-aarch64", "-cpu", cpu, "-L", "/usr/aarch64-linux-gnu", str(binary),
                         "-", type_, "256", "3072", str(args.gemm_rows), "1", "check"])  # fmt: skip
                print(p.stdout, end="")
    return rows


def native(args: argparse.Namespace, work: Path) -> list[Row]:
    binary = build(work, "native", ["-DGGML_NATIVE=ON"])
    p = run([str(binary), "-", "q4_0", "16", "256", "1", "1", "check"])
    levels = [lv for lv in LEVELS if f" {lv} " in p.stdout]  # the levels this CPU runs
    rows = []
    for level in levels:
        for op, m in (("gemv", 1), ("gemm", args.gemm_rows)):
            for type_ in args.types.split(","):
                decode_s = {"phirt": 0.0, "ggml": 0.0}
                for n, k in shapes_of(args.shapes):
                    wb = weight_bytes(type_, n, k)
                    ours = seconds_per_call(binary, f"phirt:{level}", type_, n, k, m)
                    theirs = seconds_per_call(binary, "ggml", type_, n, k, m)
                    rows.append(Row(level, op, type_, f"{n}x{k}", wb / ours / 1e9,
                                    wb / theirs / 1e9, ""))  # fmt: skip
                    if f"{n}x{k}" in PHI3_LAYER:
                        decode_s["phirt"] += ours * PHI3_LAYERS
                        decode_s["ggml"] += theirs * PHI3_LAYERS
                if op == "gemv" and all(decode_s.values()):
                    print(f"{level} {type_}: Phi-3-mini decode estimate (per-layer GEMVs x 32, 1 "
                          f"thread): phirt {1 / decode_s['phirt']:.2f} tok/s, ggml "
                          f"{1 / decode_s['ggml']:.2f} tok/s", flush=True)  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default="q4_0,q8_0,q4_k,q6_k", help=f"of {','.join(TYPES)}")
    ap.add_argument("--shapes", default=",".join(PHI3_LAYER), help="n x k, comma-separated")
    ap.add_argument("--levels", default=",".join(LEVELS), help="emulated levels (qemu only)")
    ap.add_argument("--gemm-rows", type=int, default=32, help="activation rows of the GEMM")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "neon-bench",
                    help="sources and builds (reused)")  # fmt: skip
    ap.add_argument("--check", action="store_true", help="also compare phirt's and ggml's outputs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    on_arm = platform.machine() in ("aarch64", "arm64")
    rows = native(args, args.work) if on_arm else emulated(args, args.work)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print_table(rows, "GB/s" if on_arm else "insn/B")


if __name__ == "__main__":
    main()

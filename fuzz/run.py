"""Run the coverage-guided fuzz targets for a fixed time, and file what they find.

    python fuzz/run.py all --seconds 60          # each target for 60 s
    python fuzz/run.py gguf --seconds 600 --jobs 2
    python fuzz/run.py replay                    # the committed corpus once through each target

Each target starts from its committed corpus (fuzz/corpus/<target>/: seeds and every input that
ever failed) plus a working corpus it grows under build/fuzz/<target>/. A failing input (an
exception other than the documented PhirtError, a crash, a hang past --timeout, memory past
--rss-mb) is written by libFuzzer to fuzz/crashes/<target>/ and copied here into
fuzz/corpus/<target>/ under its hash: commit it with the fix, and the replay in the tests
(tests/test_fuzz_replay.py) holds the fix. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# target -> (script, libFuzzer -max_len: a GGUF seed is ~60 kB, a tokenizer input a few kB)
TARGETS = {"gguf": ("fuzz_gguf.py", 131072), "tokenizer": ("fuzz_tokenizer.py", 8192)}


def libfuzzer_cmd(target: str, extra: list[str]) -> list[str]:
    script, max_len = TARGETS[target]
    return [sys.executable, str(HERE / script), f"-max_len={max_len}", *extra]


def run_target(target: str, seconds: int, jobs: int, timeout: int, rss_mb: int, seed: int) -> int:
    corpus = HERE / "corpus" / target
    work = ROOT / "build" / "fuzz" / target
    crashes = HERE / "crashes" / target
    for d in (corpus, work, crashes):
        d.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    flags = [
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
    ]
    if seed:
        flags.append(f"-seed={seed}")
    if jobs > 1:
        flags += [f"-fork={jobs}", "-ignore_crashes=1"]
    cmd = libfuzzer_cmd(target, flags) + [str(work), str(corpus)]
    print(f"== fuzz {target}: {seconds} s ({' '.join(cmd[1:])})", flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, errors="replace")
    log = proc.stdout + proc.stderr
    stats = [
        line
        for line in log.splitlines()
        if line.startswith(("stat::", "#", "INFO: Seed")) and not line.startswith("###")
    ]
    for line in [*stats[:1], *stats[-8:]]:
        print(f"  {line}")
    found = sorted(set(crashes.iterdir()) - before)
    for path in found:
        kept = corpus / f"{path.name}{'.gguf' if target == 'gguf' else ''}"
        shutil.copyfile(path, kept)
        data = path.read_bytes()
        print(f"  FOUND {path.name} ({len(data)} bytes) -> {kept.relative_to(ROOT)}")
        if len(data) <= 2048:
            print(f"    hex: {data.hex()}")
    if found or proc.returncode not in (0,):
        print(log[-6000:])
    print(f"== fuzz {target}: {time.monotonic() - start:.0f} s, {len(found)} new failing inputs")
    return 1 if found or proc.returncode else 0


def replay(target: str) -> int:
    """Every committed input once through the target (libFuzzer -runs=0 over the corpus)."""
    corpus = HERE / "corpus" / target
    cmd = libfuzzer_cmd(target, ["-runs=0"]) + [str(corpus)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, errors="replace")
    n = len(list(corpus.iterdir())) if corpus.is_dir() else 0
    print(f"== replay {target}: {n} inputs, exit status {proc.returncode}")
    if proc.returncode:
        print((proc.stdout + proc.stderr)[-6000:])
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("target", choices=[*TARGETS, "all", "replay"])
    p.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    p.add_argument("--jobs", type=int, default=1, help="libFuzzer -fork processes (default 1)")
    p.add_argument("--timeout", type=int, default=10, help="seconds per input (default 10)")
    p.add_argument("--rss-mb", type=int, default=2048, help="memory limit (default 2048 MB)")
    p.add_argument("--seed", type=int, default=0, help="libFuzzer seed (default: random)")
    args = p.parse_args(argv)
    if args.target == "replay":
        return max(replay(t) for t in TARGETS)
    targets = list(TARGETS) if args.target == "all" else [args.target]
    codes = [
        run_target(t, args.seconds, args.jobs, args.timeout, args.rss_mb, args.seed)
        for t in targets
    ]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())

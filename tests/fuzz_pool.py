"""Runs fuzz cases in a pool of long-lived worker processes (fuzz_worker.py): a crash or a hang
ends one worker, which is replaced, and is reported against the case it was running.

Starting an interpreter, importing numpy and phirt and warming up costs ~0.3 s; a case costs
~10-60 ms. So workers stay up, one case in flight each, and a case's file is written just before
it is sent. Each case runs under RLIMIT_AS = the worker's address space before the case + a
budget scaled by the case's file size, and a wall-clock limit enforced here (SIGKILL).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fuzz_cases import Case, CaseFamily

WORKER = Path(__file__).with_name("fuzz_worker.py")
FAILURES = ("leaked", "bad_message", "memory", "crash", "hang")
MiB = 1 << 20


@dataclass
class Result:
    case: Case
    outcome: str  # loaded | rejected, or one of FAILURES
    detail: str = ""
    error_type: str = ""
    seconds: float = 0.0
    path: str = ""
    cpu: float = 0.0  # the worker's CPU seconds (wall time depends on what else runs)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILURES

    def report(self) -> str:
        head = f"{self.outcome.upper()} {self.case}"
        if self.error_type:
            head += f" -> {self.error_type}"
        return f"{head}\n    " + self.detail.strip().replace("\n", "\n    ")


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    rejected_by: Counter = field(default_factory=Counter)  # PhirtError subclass -> cases
    base_seconds: Counter = field(default_factory=Counter)  # base input -> worker CPU seconds
    base_cases: Counter = field(default_factory=Counter)
    failures: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    slowest: tuple[float, str] = (0.0, "")

    def add(self, r: Result) -> None:
        self.counts[r.outcome] += 1
        self.base_seconds[r.case.base] += r.cpu
        self.base_cases[r.case.base] += 1
        if r.outcome == "rejected":
            self.rejected_by[r.error_type] += 1
        if r.failed:
            self.failures.append(r)
        if r.seconds > self.slowest[0]:
            self.slowest = (r.seconds, str(r.case))

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    def lines(self, title: str) -> str:
        """The counts for the CI log: a headline, then the rejections by error type."""
        c = self.counts
        by = ", ".join(f"{name} {n}" for name, n in self.rejected_by.most_common())
        times = ", ".join(
            f"{b} {s:.0f} s/{self.base_cases[b]}" for b, s in self.base_seconds.most_common()
        )
        return (
            f"{title}: {self.cases} cases, {c['loaded']} loaded, {c['rejected']} rejected, "
            f"{c['crash']} crashes, {c['hang']} hangs, {c['memory']} over the memory bound, "
            f"{c['leaked']} non-phirt errors, {c['bad_message']} bad messages "
            f"({self.seconds:.0f} s; slowest case {self.slowest[0]:.2f} s)\n"
            f"  rejected as: {by or 'none'}\n"
            f"  worker CPU seconds / cases by base: {times} "
            f"(total {sum(self.base_seconds.values()):.0f} s)"
        )


def check_message(message: str, path: str) -> str | None:
    """Why a PhirtError message is not acceptable, or None: it must be one line that names the
    input (the file, or for a folder the folder or a file in it)."""
    if "\n" in message or "\r" in message:
        return "message is more than one line"
    if path not in message:
        return "message does not name the file"
    if not message.strip():
        return "empty message"
    return None


class _Worker:
    def __init__(self, index: int, root: Path, env: dict[str, str], start_timeout: float) -> None:
        self.dir = root / f"worker{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "stderr.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=self.dir,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.out: IO[bytes] = self.proc.stdout
        self.case: Case | None = None
        self.path: Path | None = None
        self.started = 0.0
        self.deadline = 0.0
        self.log_mark = 0
        hello = self._read_line(start_timeout)
        if hello is None or not json.loads(hello).get("ready"):
            self.kill()
            raise RuntimeError(f"fuzz worker did not start:\n{self.log_tail(0)}")

    def _read_line(self, timeout: float) -> bytes | None:
        sel = selectors.DefaultSelector()
        sel.register(self.out, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        return self.out.readline() if ready else None

    def send(self, case: Case, path: Path, budget: int, timeout: float) -> None:
        self.case, self.path = case, path
        self.log.flush()
        self.log_mark = self.log_path.stat().st_size
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"path": str(path), "budget": budget}).encode() + b"\n")
        self.proc.stdin.flush()

    def log_tail(self, start: int, limit: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self.log.close()

    def finish_case(self) -> None:
        if self.path is not None:
            if self.path.is_dir():
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                self.path.unlink(missing_ok=True)
        self.case = self.path = None


def _signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class WorkerPool:
    """`run(pairs)` yields one Result per (family, case), in completion order.

    timeout: seconds per case; mem_factor / mem_slack: a case may grow the worker's address space
    by mem_factor x its base input's size + mem_slack; env: extra environment for the workers (the
    sanitizer job passes LD_PRELOAD and ASAN_OPTIONS here)."""

    def __init__(
        self,
        root: Path,
        n_workers: int = 2,
        timeout: float = 20.0,
        mem_factor: float = 3.0,
        mem_slack: int = 64 * MiB,
        env: dict[str, str] | None = None,
        warm: Iterable[Path] = (),
        start_timeout: float = 120.0,
    ) -> None:
        self.root = Path(root)
        self.n_workers = n_workers
        self.timeout = timeout
        self.mem_factor = mem_factor
        self.mem_slack = mem_slack
        self.start_timeout = start_timeout
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(WORKER.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PYTHONFAULTHANDLER": "1",  # a crash prints the Python stack to the worker's log
            "MALLOC_ARENA_MAX": "2",  # each malloc arena reserves 64 MiB of address space
            "PHIRT_FUZZ_WARM": os.pathsep.join(map(str, warm)),
            **(env or {}),
        }
        self.workers: list[_Worker] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []

    def _spawn(self, index: int) -> _Worker:
        return _Worker(index, self.root, self.env, self.start_timeout)

    def run(self, pairs: Iterable[tuple[CaseFamily, Case]]) -> Iterator[Result]:
        todo = iter(pairs)
        if not self.workers:
            self.workers = [self._spawn(i) for i in range(self.n_workers)]
        sel = selectors.DefaultSelector()
        busy: dict[int, _Worker] = {}
        exhausted = False
        try:
            while True:
                for i, w in enumerate(self.workers):
                    if i in busy or exhausted:
                        continue
                    pair = next(todo, None)
                    if pair is None:
                        exhausted = True
                        break
                    family, case = pair
                    path = family.materialize(case, w.dir)
                    budget = (
                        int(self.mem_factor * family.base_size(case)) + self.mem_slack
                        if self.mem_factor > 0
                        else 0  # no limit (a sanitizer build reserves terabytes up front)
                    )
                    w.send(case, path, budget, self.timeout)
                    busy[i] = w
                    sel.register(w.out, selectors.EVENT_READ, i)
                if not busy:
                    return
                wait = min(w.deadline for w in busy.values()) - time.monotonic()
                for key, _ in sel.select(max(wait, 0.0)):
                    i = key.data
                    w = busy.pop(i)
                    sel.unregister(w.out)
                    yield self._collect(i, w, w.out.readline())
                now = time.monotonic()
                for i, w in list(busy.items()):
                    if now >= w.deadline:
                        busy.pop(i)
                        sel.unregister(w.out)
                        yield self._hang(i, w)
        finally:
            sel.close()

    def _collect(self, i: int, w: _Worker, line: bytes) -> Result:
        assert w.case is not None and w.path is not None
        seconds = time.monotonic() - w.started
        case, path = w.case, str(w.path)
        if not line:  # the worker died
            w.proc.wait()
            detail = f"worker died ({_signal_name(w.proc.returncode)})\n" + w.log_tail(w.log_mark)
            w.finish_case()
            w.kill()
            self.workers[i] = self._spawn(i)
            return Result(case, "crash", detail, "", seconds, path)
        w.finish_case()
        msg = json.loads(line)
        outcome, detail, etype = msg["outcome"], msg.get("detail", ""), msg.get("type", "")
        if outcome == "rejected":
            problem = check_message(detail, path)
            if problem:
                outcome, detail = "bad_message", f"{problem}: {detail!r}"
        return Result(case, outcome, detail, etype, seconds, path, float(msg.get("cpu", 0.0)))

    def _hang(self, i: int, w: _Worker) -> Result:
        assert w.case is not None
        case, path = w.case, str(w.path)
        w.proc.send_signal(signal.SIGABRT)  # faulthandler prints where it was stuck
        try:
            w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        detail = f"no answer in {self.timeout:.0f} s\n" + w.log_tail(w.log_mark)
        w.finish_case()
        w.kill()
        self.workers[i] = self._spawn(i)
        return Result(case, "hang", detail, "", self.timeout, path)


def run_corpus(
    pool: WorkerPool, pairs: Iterable[tuple[CaseFamily, Case]], save_dir: Path | None = None
) -> Summary:
    """Run every case; failing inputs are copied to save_dir (to replay, or to commit to the
    regression corpus)."""
    summary = Summary()
    start = time.monotonic()
    families: dict[str, CaseFamily] = {}

    def remember(items: Iterable[tuple[CaseFamily, Case]]) -> Iterator[tuple[CaseFamily, Case]]:
        for family, case in items:
            families[family.name] = family
            yield family, case

    for result in pool.run(remember(pairs)):
        summary.add(result)
        if result.failed and save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            n = len(summary.failures)
            families[result.case.family].materialize(result.case, save_dir)
            made = save_dir / Path(result.path).name
            if made.exists():
                made.rename(save_dir / f"{n:03d}-{result.outcome}-{made.name}")
    summary.seconds = time.monotonic() - start
    return summary

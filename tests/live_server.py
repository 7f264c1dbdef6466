"""`python -m phirt serve` in a subprocess on a free loopback port, for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def rss_kib(self) -> int:
        """Resident memory of the server process (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def wait_idle(self, timeout: float = 10.0) -> dict:
        """/health once no slot is busy and nothing waits (fails the test after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if h["slots_processing"] == 0 and h["queued"] == 0:
                return h
            if time.monotonic() > deadline:
                pytest.fail(f"server still busy after {timeout} s: {h}")
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(
    model: Path | str, *args: str, log_dir: Path, env: dict | None = None
) -> Iterator[LiveServer]:
    """Start the server, wait for /health, yield it; stop it (SIGINT, as Ctrl-C) afterwards. A
    server that exits or does not come up fails the test with its log."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "phirt",
        "serve",
        str(model),
        "--port",
        str(port),
        "--threads",
        "1",
        *args,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = LiveServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phirt serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"phirt serve did not come up in 120 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
        assert proc.poll() is None, f"the server died during the test:\n{log.read_text()}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

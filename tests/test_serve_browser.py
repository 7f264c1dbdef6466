"""The chat page at / in a real browser: headless Chromium (Debian's `chromium`) loads it, types a
message, clicks Send and reads the reply as it streams in. Chromium is driven over the DevTools
protocol on a pipe (--remote-debugging-pipe: JSON messages ending in NUL on fds 3 and 4), so no
driver or websocket package is needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from live_server import LiveServer, live_server
from smollm2 import smollm2_path

openai = pytest.importorskip("openai")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt install chromium)"
)


class DevTools:
    """A headless Chromium and one page, driven over the DevTools protocol pipe."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        flags = [
            "--headless=new",
            "--no-sandbox",  # tests run as root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        # Chromium reads commands from fd 3 and writes replies to fd 4
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, CHROMIUM, *flags],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session is not None:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:  # skip events and anything else until our reply
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            data = os.read(self._from_chrome, 1 << 16)
            if not data:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += data
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.js(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)
        return value

    def close(self) -> None:
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    b = DevTools(tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(smollm2_path(), "--ctx", "512", "--parallel", "2", log_dir=tmp_path) as s:
        yield s


def test_chat_page_streams_a_reply(browser: DevTools, server: LiveServer) -> None:
    question = "What is the capital of France?"
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    want = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0
    )
    browser.call("Page.navigate", url=server.url + "/")
    model_id = browser.wait_for(
        "document.readyState === 'complete' && document.getElementById('model').textContent !== '…'"
        " && document.getElementById('model').textContent"
    )
    assert model_id == Path(smollm2_path()).stem
    browser.js(
        "document.getElementById('temperature').value = '0';"
        "document.getElementById('max-tokens').value = '24';"
        f"document.getElementById('input').value = {json.dumps(question)};"
        "document.getElementById('send').click(); true"
    )
    state = browser.wait_for(
        "['done', 'error'].includes(document.getElementById('status').dataset.state)"
        " && document.getElementById('status').dataset.state"
    )
    status = browser.js("document.getElementById('status').textContent")
    assert state == "done", status
    bubbles = browser.js(
        "[...document.querySelectorAll('.msg')].map(e => [e.className, e.textContent])"
    )
    assert bubbles == [["msg user", question], ["msg assistant", want.choices[0].message.content]]
    chunks = int(browser.js("document.getElementById('status').dataset.chunks"))
    assert chunks > 1, "the reply arrived in one piece: not streamed"
    assert status.startswith(f"{want.usage.completion_tokens} tokens in ")

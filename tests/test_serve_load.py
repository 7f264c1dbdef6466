"""`phirt serve` under load and abuse: batched answers equal solo ones, a full queue answers 503, a
client that leaves frees its slot, bad requests get OpenAI-style errors and never hurt the server,
and a soak of concurrent streams leaves memory flat."""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, live_server
from model_factory import ModelFactory
from smollm2 import smollm2_path

openai = pytest.importorskip("openai")

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three colors.",
    "Explain what a CPU does in two sentences. " * 6,  # several prefill chunks of 16
    "Who wrote Hamlet?",
    "Count from one to ten.",
    "Say hi.",
    "What is 12 times 12? Think step by step, then give the answer. " * 3,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        smollm2_path(),
        *("--ctx", "256", "--parallel", "8", "--prefill-chunk", "16"),
        log_dir=tmp_path_factory.mktemp("serve"),
    ) as s:
        yield s


def chat(
    server: LiveServer, content: str, max_tokens: int = 32, **kw
) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": content}]
    return client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, **kw)


def test_batched_greedy_answers_equal_solo_answers(server: LiveServer) -> None:
    """Eight requests at once (joining while others decode, long prompts prefilled in chunks
    between decode steps, finishing at different steps) get exactly the answers each gets alone."""
    solo = [chat(server, p, temperature=0).choices[0].message.content for p in PROMPTS]
    with cf.ThreadPoolExecutor(len(PROMPTS)) as pool:
        batched = list(
            pool.map(lambda p: chat(server, p, temperature=0).choices[0].message.content, PROMPTS)
        )
    assert batched == solo
    assert len(set(solo)) == len(solo)  # different answers: no crossed wires between slots


def test_q4_0_prompts_that_share_the_decode_pass_get_their_solo_answers(
    models: ModelFactory, tmp_path: Path
) -> None:
    """A Q4_0 model (interleaved where the CPU has the kernel): prompt chunks ride in the decode
    pass of the others (BatchScheduler._fuse), and every answer is still the one it gets alone.
    The answers are checked in raw completions (the fixture's random weights), so ties decide
    nothing: solo and batched must match token for token."""
    prompts = [f"{w} " * n for w, n in [("river", 3), ("stone", 40), ("light", 9), ("paper", 25)]]
    with live_server(
        models.phi3("Q4_0", "gqa"),
        *("--ctx", "128", "--parallel", "4", "--prefill-chunk", "8"),
        log_dir=tmp_path,
    ) as s:
        client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0, timeout=300)

        def complete(p: str) -> str:
            r = client.completions.create(model="m", prompt=p, max_tokens=12, temperature=0)
            return r.choices[0].text

        solo = [complete(p) for p in prompts]
        with cf.ThreadPoolExecutor(len(prompts)) as pool:
            batched = list(pool.map(complete, prompts))
    assert batched == solo


def test_a_chats_next_turn_is_served_from_its_slots_cache(server: LiveServer) -> None:
    """The next turn resends the history; its prompt's whole prefill chunks (16 here) come from the
    slot that served the turn before, as usage.prompt_tokens_details.cached_tokens says, and the
    answer is the one a repeat of the request gets."""
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": PROMPTS[3]}]
    first = client.chat.completions.create(
        model="m", messages=messages, max_tokens=12, temperature=0
    )
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "Now in one sentence."},
    ]
    turns = [
        client.chat.completions.create(model="m", messages=messages, max_tokens=12, temperature=0)
        for _ in range(2)
    ]
    prompt_tokens = turns[0].usage.prompt_tokens
    cached = [t.usage.prompt_tokens_details.cached_tokens for t in turns]
    assert first.usage.prompt_tokens // 16 * 16 <= cached[0] < prompt_tokens
    assert cached[0] % 16 == 0 and cached[1] == (prompt_tokens - 1) // 16 * 16
    assert turns[0].choices[0].message.content == turns[1].choices[0].message.content


def test_sampled_answers_do_not_depend_on_the_batch(server: LiveServer) -> None:
    kw = dict(temperature=1.0, seed=7)
    solo = [chat(server, p, **kw).choices[0].message.content for p in PROMPTS[:4]]
    with cf.ThreadPoolExecutor(4) as pool:
        batched = list(
            pool.map(lambda p: chat(server, p, **kw).choices[0].message.content, PROMPTS[:4])
        )
    assert batched == solo


def post(server: LiveServer, path: str, body, headers: dict | None = None) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(server.v1 + path, content=data, headers=headers, timeout=60)


MSG = [{"role": "user", "content": "hi"}]
BAD_REQUESTS = [
    ("/chat/completions", b"{bad json", 400, "not valid JSON"),
    ("/chat/completions", b"", 400, "body is empty"),
    ("/chat/completions", b"[1, 2]", 400, "valid dictionary"),
    ("/chat/completions", {"model": "m"}, 400, "'messages' is required"),
    ("/chat/completions", {"messages": "hi"}, 400, "'messages'"),
    ("/chat/completions", {"messages": []}, 400, "'messages'"),
    (
        "/chat/completions",
        {"messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages.0.role",
    ),
    ("/chat/completions", {"messages": MSG, "temperature": "hot"}, 400, "'temperature'"),
    ("/chat/completions", {"messages": MSG, "temperature": 3}, 400, "'temperature'"),
    ("/chat/completions", {"messages": MSG, "max_tokens": -1}, 400, "'max_tokens'"),
    ("/chat/completions", {"messages": MSG, "max_tokens": 1.5}, 400, "'max_tokens'"),
    ("/chat/completions", {"messages": MSG, "top_p": 0}, 400, "'top_p'"),
    ("/chat/completions", {"messages": MSG, "stream": "yes please"}, 400, "'stream'"),
    ("/chat/completions", {"messages": MSG, "n": 2}, 400, "'n' is not supported"),
    (
        "/chat/completions",
        {"messages": MSG, "tools": [{"type": "function"}]},
        400,
        "'tools' is not supported",
    ),
    (
        "/chat/completions",
        {"messages": MSG, "logit_bias": {"5": 3}},
        400,
        "'logit_bias' is not supported",
    ),
    (
        "/chat/completions",
        {"messages": MSG, "logprobs": True, "top_logprobs": 21},
        400,
        "'top_logprobs'",
    ),
    ("/chat/completions", {"messages": MSG, "top_logprobs": 2}, 400, "needs 'logprobs'"),
    ("/chat/completions", {"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
    ("/chat/completions", {"messages": MSG, "presence_penalty": 5}, 400, "'presence_penalty'"),
    (
        "/chat/completions",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        },
        400,
        "only text",
    ),
    ("/completions", {"prompt": 5}, 400, "'prompt'"),
    ("/completions", {"prompt": ["a", "b"]}, 400, "one per request"),
    ("/completions", {"prompt": [1, 10**9]}, 400, "outside the vocabulary"),
    ("/completions", {"prompt": ""}, 400, "empty"),
    ("/completions", {"prompt": "hi", "suffix": "x"}, 400, "'suffix' is not supported"),
    ("/completions", {"prompt": "hi", "best_of": 3}, 400, "'best_of' is not supported"),
    ("/completions", {"prompt": "hi", "echo": True, "logprobs": 1}, 400, "'echo' is not supported"),
]


@pytest.mark.parametrize("path,body,status,message", BAD_REQUESTS)
def test_bad_requests_get_openai_errors(
    server: LiveServer, path: str, body, status: int, message: str
) -> None:
    r = post(server, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert message in err["message"] and "\n" not in err["message"]
    assert err["type"] == "invalid_request_error"
    assert set(err) == {"message", "type", "param", "code"}


def test_a_prompt_longer_than_the_context_gets_a_400_with_the_counts(server: LiveServer) -> None:
    r = post(server, "/completions", {"prompt": [42] * 300})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert (
        "context is 256 tokens" in err["message"]
        and "the prompt has 300 tokens (44 too many)" in err["message"]
    )
    r = post(
        server, "/chat/completions", {"messages": [{"role": "user", "content": "hello " * 300}]}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_unknown_routes_and_methods(server: LiveServer) -> None:
    for r in (httpx.get(server.v1 + "/nothing"), httpx.get(server.v1 + "/chat/completions")):
        assert r.status_code in (404, 405) and "no route" in r.json()["error"]["message"]


def test_the_server_survives_every_bad_request(server: LiveServer) -> None:
    for path, body, _, _ in BAD_REQUESTS * 2:
        post(server, path, body)
    assert server.proc.poll() is None
    assert chat(server, "Say hi.", max_tokens=4).usage.completion_tokens > 0
    assert server.wait_idle()["slots_idle"] == 8


def read_some(server: LiveServer, n_events: int, body: dict) -> None:
    """Open a stream, read n_events server-sent events, hang up."""
    with httpx.stream("POST", server.v1 + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data:")
            if seen >= n_events:
                return


LONG = {
    "messages": [{"role": "user", "content": "Tell me a very long story."}],
    "max_tokens": 120,
    "stream": True,
}


def hang_up_while_generating(server: LiveServer, body: dict) -> None:
    """Send a non-streaming request, close the connection once its slot is busy."""
    host, port = server.url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
        )
        deadline = time.monotonic() + 10
        while server.health()["slots_processing"] == 0:
            assert time.monotonic() < deadline, "the request never reached a slot"
            time.sleep(0.005)


def test_a_client_that_leaves_frees_its_slot(tmp_path: Path) -> None:
    with live_server(
        smollm2_path(), "--ctx", "512", "--parallel", "1", "--queue", "0", log_dir=tmp_path
    ) as s:
        for _ in range(3):  # a stream dropped after a few tokens
            read_some(s, 4, LONG)
            s.wait_idle(timeout=5)
        # a non-streaming client that hangs up; 440 tokens take a second even at 400 tok/s
        hang_up_while_generating(s, {**LONG, "stream": False, "max_tokens": 440})
        # the slot is free because the server dropped the requests, not because they ended
        assert s.wait_idle(timeout=5)["cancelled"] == 4
        assert chat(s, "Say hi.", max_tokens=4).usage.completion_tokens > 0  # the one slot is free
        assert s.health()["cancelled"] == 4


def test_a_full_queue_answers_503(tmp_path: Path) -> None:
    with live_server(
        smollm2_path(), "--ctx", "512", "--parallel", "1", "--queue", "1", log_dir=tmp_path
    ) as s:
        with cf.ThreadPoolExecutor(2) as pool:
            busy = pool.submit(read_some, s, 10**9, LONG)  # holds the slot until its tokens are out
            while s.health()["slots_processing"] == 0:
                time.sleep(0.01)
            waiting = pool.submit(chat, s, "Say hi.", 4)
            while s.health()["queued"] == 0:
                time.sleep(0.01)
            t0 = time.monotonic()
            r = post(s, "/chat/completions", {"messages": MSG})
            assert time.monotonic() - t0 < 5  # answered at once, not after the queue drains
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            err = r.json()["error"]
            assert (
                err["code"] == "server_busy"
                and "--parallel 1" in err["message"]
                and "--queue 1" in err["message"]
            )
            busy.result()
            assert waiting.result().usage.completion_tokens > 0  # the queued one was served
        s.wait_idle()


def stream_one(server: LiveServer, i: int) -> tuple[str, str, int]:
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        max_tokens=4 + i % 13,
        temperature=0.8,
        seed=i,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for c in stream:
        if c.usage:
            usage = c.usage
        if c.choices:
            text += c.choices[0].delta.content or ""
            finish = c.choices[0].finish_reason or finish
    assert usage is not None and finish in ("stop", "length")
    return text, finish, usage.completion_tokens


def test_soak_eight_streams_keep_memory_flat(server: LiveServer) -> None:
    """8 concurrent streams for 48 requests: every response complete, RSS flat after warm-up."""
    with cf.ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(lambda i: stream_one(server, i), range(16)))
        server.wait_idle()
        rss0 = server.rss_kib()
        rest = list(pool.map(lambda i: stream_one(server, i), range(16, 48)))
    server.wait_idle()
    rss1 = server.rss_kib()
    for text, finish, n in warm + rest:
        assert n > 0 and text
        assert finish == "stop" or n >= 4  # "length" only at its max_tokens (4..16)
    assert rss1 - rss0 < 8 * 1024, f"RSS grew {rss0} -> {rss1} KiB over 32 requests"

"""`phirt serve` driven as its users drive it: the `openai` client against the real server in a
subprocess, with SmolLM2-135M-Instruct (real weights, real chat template). Responses are checked
against the openai package's own response types and against phirt's in-process API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, live_server
from smollm2 import smollm2_path

openai = pytest.importorskip("openai")
from openai.types import Completion  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

import phirt  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CTX = 512


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        smollm2_path(),
        "--ctx",
        str(CTX),
        "--parallel",
        "4",
        log_dir=tmp_path_factory.mktemp("serve"),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local() -> phirt.Model:
    """The same model in-process: what the server's answers must equal. Tests reset it before
    each reference call: its KV cache reuse would evaluate a prompt in other chunks than the
    server does, and other chunks take other float summation orders."""
    return phirt.load(smollm2_path(), n_ctx=CTX, n_threads=1)


def test_chat_matches_the_in_process_model(client: openai.OpenAI, local: phirt.Model) -> None:
    r = client.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=24, temperature=0
    )
    ChatCompletion.model_validate(r.model_dump())  # strict: the openai package's own schema
    local.reset()
    want = local.chat(QUESTION, max_tokens=24, temperature=0)
    assert r.choices[0].message.content == want and want
    assert r.choices[0].message.role == "assistant"
    prompt_tokens = len(local.chat_tokens(QUESTION))
    assert r.usage.prompt_tokens == prompt_tokens
    assert r.usage.completion_tokens == local.last_stats.generated_tokens
    assert r.usage.total_tokens == prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason == (
        "length" if local.last_stats.finish_reason == "length" else "stop"
    )


def test_chat_stream_equals_non_stream(client: openai.OpenAI) -> None:
    args = dict(model="smollm2", messages=QUESTION, max_tokens=24, temperature=0)
    whole = client.chat.completions.create(**args)
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    for c in chunks:
        ChatCompletionChunk.model_validate(c.model_dump())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # it streamed
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_max_tokens_ends_with_length_and_eos_with_stop(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    r = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Say just: yes"}],
        max_tokens=64,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 64


def test_stop_strings_cut_the_text(client: openai.OpenAI, local: phirt.Model) -> None:
    local.reset()
    full = local.generate("The capital of France is", max_tokens=12, temperature=0)
    cut = full.strip()[3:5]  # a stop string from the middle of the greedy answer
    want = full[: full.index(cut)]
    for stream in (False, True):
        r = client.completions.create(
            model="m",
            prompt="The capital of France is",
            max_tokens=12,
            temperature=0,
            stop=[cut],
            stream=stream,
        )
        text = "".join(c.choices[0].text for c in r) if stream else r.choices[0].text
        assert text == want


def test_completions_stream_and_not(client: openai.OpenAI, local: phirt.Model) -> None:
    prompt = "Once upon a time"
    r = client.completions.create(model="m", prompt=prompt, max_tokens=20, temperature=0)
    Completion.model_validate(r.model_dump())
    local.reset()
    assert r.choices[0].text == local.generate(prompt, max_tokens=20, temperature=0)
    assert r.usage.prompt_tokens == len(local.tokenize(prompt)) and r.usage.completion_tokens == 20
    chunks = list(
        client.completions.create(
            model="m", prompt=prompt, max_tokens=20, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    ids = local.tokenize(prompt)
    by_ids = client.completions.create(model="m", prompt=ids, max_tokens=20, temperature=0)
    assert by_ids.choices[0].text == r.choices[0].text
    echo = client.completions.create(
        model="m", prompt=prompt, max_tokens=5, temperature=0, echo=True
    )
    assert echo.choices[0].text.startswith(prompt + r.choices[0].text[:3])


def test_seeded_sampling_is_reproducible_and_matches_in_process(
    client: openai.OpenAI, local: phirt.Model
) -> None:
    args = dict(model="m", messages=QUESTION, max_tokens=16, temperature=0.9, top_p=0.95, seed=1234)
    a = client.chat.completions.create(**args).choices[0].message.content
    b = client.chat.completions.create(**args).choices[0].message.content
    assert a == b
    # OpenAI's defaults where the request is silent: top_k and min_p off
    local.reset()
    want = local.chat(
        QUESTION, max_tokens=16, temperature=0.9, top_p=0.95, top_k=0, min_p=0.0, seed=1234
    )
    assert a == want


def test_penalties_change_the_answer(client: openai.OpenAI, local: phirt.Model) -> None:
    args = dict(model="m", prompt="one one one one one", max_tokens=12, temperature=0)
    plain = client.completions.create(**args).choices[0].text
    pen = (
        client.completions.create(**args, presence_penalty=1.5, frequency_penalty=1.0)
        .choices[0]
        .text
    )
    local.reset()
    want = local.generate(
        "one one one one one",
        max_tokens=12,
        temperature=0,
        presence_penalty=1.5,
        frequency_penalty=1.0,
    )
    assert pen == want and pen != plain


def test_chat_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="m", messages=QUESTION, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content).strip() == r.choices[0].message.content.strip()
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        lps = [x.logprob for x in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert (
            t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == t.logprob
        )  # greedy
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    stream = client.chat.completions.create(
        model="m",
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    streamed = [
        t
        for c in stream
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def test_completion_logprobs_are_the_models(client: openai.OpenAI, local: phirt.Model) -> None:
    import numpy as np

    prompt = "The capital of France is"
    r = client.completions.create(model="m", prompt=prompt, max_tokens=1, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    logits = local.logits(local.tokenize(prompt))[-1].astype(np.float64)
    want = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    top = np.argsort(-want)[:2]
    assert lp.tokens == [local.tokenizer.token_to_piece(int(top[0])).decode()]
    assert lp.token_logprobs[0] == pytest.approx(want[top[0]], abs=1e-4)
    assert list(lp.top_logprobs[0].values()) == pytest.approx(want[top].tolist(), abs=1e-4)
    assert lp.text_offset == [0]


def test_models_and_health(client: openai.OpenAI, server: LiveServer) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [Path(smollm2_path()).stem]
    h = server.health()
    assert h["status"] == "ok" and h["slots_idle"] + h["slots_processing"] == 4


def test_chat_page_is_served(server: LiveServer) -> None:
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in r.text


def test_api_key_is_required_when_set(tmp_path: Path) -> None:
    with live_server(
        smollm2_path(), "--ctx", "128", log_dir=tmp_path, env={"PHIRT_API_KEY": "s3cret"}
    ) as s:
        body = {"model": "m", "prompt": "hi", "max_tokens": 1}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.post(s.v1 + "/completions", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(s.v1 + "/models").status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200  # probes need no key
        ok = openai.OpenAI(base_url=s.v1, api_key="s3cret", max_retries=0)
        assert (
            ok.completions.create(model="m", prompt="hi", max_tokens=1).usage.completion_tokens == 1
        )


def test_serial_scheduler_serves_any_model_one_at_a_time(local: phirt.Model) -> None:
    """Backends without a batched forward (phirt.load(..., device=...) picking a vendor stack) are
    served one request at a time through the Model API; here the native Model stands in."""
    from fastapi.testclient import TestClient

    from phirt.serve.app import create_app
    from phirt.serve.scheduler import SerialScheduler

    local.reset()
    scheduler = SerialScheduler(local, max_queue=2)
    try:
        with TestClient(create_app(local, scheduler, "m")) as http:
            body = {"messages": QUESTION, "max_tokens": 12, "temperature": 0}
            r = http.post("/v1/chat/completions", json=body).json()
            local.reset()  # the served request left its prompt in the cache
            want = local.chat(QUESTION, max_tokens=12, temperature=0)
            assert r["choices"][0]["message"]["content"] == want
            assert r["usage"]["completion_tokens"] == local.last_stats.generated_tokens
            local.reset()
            with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
                lines = [x for x in s.iter_lines() if x.startswith("data: {")]
            text = "".join(
                json.loads(x[6:])["choices"][0]["delta"].get("content") or "" for x in lines
            )
            assert text == want
            r = http.post("/v1/chat/completions", json={**body, "logprobs": True})
            assert (
                r.status_code == 400
                and "'logprobs' is not supported" in r.json()["error"]["message"]
            )
            assert http.get("/health").json()["slots_idle"] == 1
    finally:
        scheduler.close()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--parallel", "0"], "--parallel must be >= 1, got 0"),
        (["--queue", "-1"], "--queue must be >= 0, got -1"),
        (["--prefill-chunk", "0"], "--prefill-chunk must be >= 1, got 0"),
    ],
)
def test_bad_serve_options_are_one_line_errors(flags: list[str], message: str) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "phirt", "serve", str(smollm2_path()), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.strip() == f"phirt: error: {message}"

"""The HTTP side of `phirt serve`: OpenAI's chat and text completion endpoints (streamed as
server-sent events or not), /v1/models, /health and the chat page at /.

Handlers validate and tokenize, submit a Job to the scheduler and turn its events into OpenAI's
response objects. Every failure a request can cause becomes an OpenAI-style error object
({"error": {"message", "type", "param", "code"}}) with a 4xx/5xx status; none reaches the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

import phirt
from phirt.errors import PhirtError
from phirt.sampling import SamplingParams
from phirt.serve.scheduler import Busy, Failure, Finish, GenRequest, Job, Piece
from phirt.serve.schemas import ChatRequest, CompletionRequest

log = logging.getLogger("phirt.serve")


class APIError(Exception):
    """An error answered to the client as OpenAI does."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def _refuse(name: str, why: str) -> APIError:
    return APIError(400, f"'{name}' is not supported: {why}", param=name, code="unsupported")


def create_app(model: Any, scheduler: Any, model_id: str, api_key: str | None = None) -> FastAPI:
    """The ASGI app serving `model` (a phirt Model) through `scheduler` (scheduler.py)."""
    app = FastAPI(title="phirt", version=phirt.__version__, docs_url=None, redoc_url=None)
    created = int(time.time())
    fingerprint = f"phirt-{phirt.__version__}-{model.backend}"
    tokenizer = model.tokenizer

    # -- errors ----------------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc.errors()).response()

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = (
            f"no route {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return APIError(exc.status_code, message).response()

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return APIError(
            500, f"internal error: {type(exc).__name__}: {exc}", "server_error"
        ).response()

    # -- auth ------------------------------------------------------------------------------------

    def authorized(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>' with the key the server was started with",
                code="invalid_api_key",
            )

    # -- routes ----------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(resources.files("phirt.serve").joinpath("chat.html").read_text("utf-8"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_id, **scheduler.stats()}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        meta = {"n_ctx": scheduler.n_ctx, "parallel": scheduler.parallel, "backend": model.backend}
        entry = {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "phirt",
            "meta": meta,
        }
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        if body.tools:
            raise _refuse("tools", "phirt serve does not do function calling")
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise _refuse("response_format", "only plain text replies are generated")
        messages = [_message_dict(i, m) for i, m in enumerate(body.messages)]
        try:
            prompt = model.chat_tokens(messages)
        except PhirtError as exc:
            raise APIError(
                400, f"the chat template rejected the messages: {exc.message}", param="messages"
            ) from None
        n_top = None
        if body.logprobs:
            n_top = body.top_logprobs or 0
        elif body.top_logprobs:
            raise APIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        limit = (
            body.max_completion_tokens
            if body.max_completion_tokens is not None
            else body.max_tokens
        )
        job = _submit(body, prompt, limit, n_top, reply=True)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _sse(_chat_chunks(job, rid, include_usage), job)
        result = await _collect(job, request)
        message = {"role": "assistant", "content": result.text}
        logprobs = (
            {"content": [_chat_logprob(p) for p in result.tokens], "refusal": None}
            if n_top is not None
            else None
        )
        choice = {
            "index": 0,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": result.finish.reason,
        }
        return {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "system_fingerprint": fingerprint,
            "choices": [choice],
            "usage": _usage(result.finish),
        }

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request) -> Any:
        if body.suffix:
            raise _refuse("suffix", "phirt serve does not do fill-in-the-middle")
        if body.best_of is not None and body.best_of > 1:
            raise _refuse("best_of", "phirt generates one completion per request")
        if body.echo and body.logprobs is not None:
            raise _refuse("echo", "echo with logprobs would need the prompt's logprobs")
        prompt, text_prompt = _completion_prompt(body.prompt)
        job = _submit(body, prompt, body.max_tokens, body.logprobs, reply=False)
        rid = f"cmpl-{uuid.uuid4().hex}"
        echo = (
            (text_prompt if text_prompt is not None else tokenizer.decode(prompt))
            if body.echo
            else ""
        )
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _sse(_completion_chunks(job, rid, include_usage, echo), job)
        result = await _collect(job, request)
        logprobs = (
            _completion_logprobs(result.tokens, len(echo)) if body.logprobs is not None else None
        )
        choice = {
            "index": 0,
            "text": echo + result.text,
            "logprobs": logprobs,
            "finish_reason": result.finish.reason,
        }
        return {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_id,
            "system_fingerprint": fingerprint,
            "choices": [choice],
            "usage": _usage(result.finish),
        }

    # -- request -> job ----------------------------------------------------------------------------

    def _completion_prompt(prompt: Any) -> tuple[list[int], str | None]:
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise APIError(
                    400,
                    f"'prompt' holds {len(prompt)} prompts; send one per request (the server batches concurrent requests itself)",
                    param="prompt",
                    code="unsupported",
                )
            prompt = prompt[0]
        if isinstance(prompt, str):
            return model.tokenize(prompt), prompt
        bad = [t for t in prompt if not 0 <= t < model.n_vocab]
        if bad:
            raise APIError(
                400,
                f"token id {bad[0]} in 'prompt' is outside the vocabulary [0, {model.n_vocab})",
                param="prompt",
            )
        return list(prompt), None

    def _submit(
        body: Any, prompt: list[int], max_tokens: int | None, n_top: int | None, reply: bool
    ) -> Job:
        if body.n != 1:
            raise _refuse("n", "phirt generates one choice per request")
        if body.logit_bias:
            raise _refuse("logit_bias", "phirt's sampler has no per-token bias")
        if n_top is not None and not scheduler.supports_logprobs:
            raise _refuse("logprobs", f"the {model.backend} backend does not expose logits")
        n_ctx = scheduler.n_ctx
        if not prompt:
            raise APIError(400, "the prompt is empty", param="prompt")
        if len(prompt) > n_ctx:
            raise APIError(
                400,
                f"this model's context is {n_ctx} tokens per request, but the prompt has {len(prompt)} tokens "
                f"({len(prompt) - n_ctx} too many); shorten it or start the server with a larger --ctx",
                param="messages" if reply else "prompt",
                code="context_length_exceeded",
            )
        stops = body.stop_list()
        if len(stops) > 4:
            raise APIError(400, f"'stop' takes at most 4 sequences, got {len(stops)}", param="stop")
        try:
            sampling = SamplingParams(
                temperature=body.temperature,
                top_k=body.top_k,
                top_p=body.top_p,
                min_p=body.min_p,
                repeat_penalty=body.repeat_penalty,
                presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty,
                seed=body.seed,
            )
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        limit = n_ctx if max_tokens is None else max_tokens  # a full context ends it first
        request = GenRequest(prompt, limit, sampling, stops, n_top, reply)
        job = Job(request, asyncio.get_running_loop())
        try:
            scheduler.submit(job)
        except Busy as exc:
            raise APIError(503, str(exc), "server_error", code="server_busy") from None
        return job

    # -- job -> response ---------------------------------------------------------------------------

    def _sse(chunks: AsyncIterator[dict[str, Any]], job: Job) -> StreamingResponse:
        async def frames() -> AsyncIterator[str]:
            try:
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                job.cancel()  # the client went away (or we are done): free the slot now

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    async def _events(job: Job) -> AsyncIterator[Piece | Finish]:
        while True:
            event = await job.events.get()
            if isinstance(event, Failure):
                raise APIError(500, event.message, "server_error")
            yield event
            if isinstance(event, Finish):
                return

    async def _chat_chunks(
        job: Job, rid: str, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        n_top = job.request.logprobs

        def chunk(
            delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
        ) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model_id,
                "system_fingerprint": fingerprint,
                "choices": [choice],
            }

        yield chunk({"role": "assistant", "content": ""})
        try:
            async for event in _events(job):
                if isinstance(event, Piece):
                    lp = None
                    if n_top is not None and event.token is not None:
                        lp = {"content": [_chat_logprob(event)], "refusal": None}
                    if event.text or lp:
                        yield chunk({"content": event.text}, logprobs=lp)
                else:
                    yield chunk({}, event.reason)
                    if include_usage:
                        last = chunk({})
                        last["choices"], last["usage"] = [], _usage(event)
                        yield last
        except APIError as exc:
            yield exc.body()

    async def _completion_chunks(
        job: Job, rid: str, include_usage: bool, echo: str
    ) -> AsyncIterator[dict[str, Any]]:
        n_top = job.request.logprobs
        offset = len(echo)

        def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
            return {
                "id": rid,
                "object": "text_completion",
                "created": int(time.time()),
                "model": model_id,
                "system_fingerprint": fingerprint,
                "choices": [choice],
            }

        if echo:
            yield chunk(echo)
        try:
            async for event in _events(job):
                if isinstance(event, Piece):
                    lp = None
                    if n_top is not None and event.token is not None:
                        lp = _completion_logprobs([event], offset)
                    offset += len(event.text)
                    if event.text or lp:
                        yield chunk(event.text, logprobs=lp)
                else:
                    yield chunk("", event.reason)
                    if include_usage:
                        last = chunk("")
                        last["choices"], last["usage"] = [], _usage(event)
                        yield last
        except APIError as exc:
            yield exc.body()

    def _token_text(token: int) -> tuple[str, list[int]]:
        data = tokenizer.token_to_piece(token)
        return data.decode("utf-8", errors="replace"), list(data)

    def _chat_logprob(p: Piece) -> dict[str, Any]:
        text, data = _token_text(p.token)
        top = []
        for t, lp in p.top_logprobs or []:
            tt, td = _token_text(t)
            top.append({"token": tt, "logprob": lp, "bytes": td})
        return {"token": text, "logprob": p.logprob, "bytes": data, "top_logprobs": top}

    def _completion_logprobs(pieces: list[Piece], offset: int) -> dict[str, Any]:
        out: dict[str, list[Any]] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }
        for p in pieces:
            out["tokens"].append(_token_text(p.token)[0])
            out["token_logprobs"].append(p.logprob)
            out["top_logprobs"].append({_token_text(t)[0]: lp for t, lp in p.top_logprobs or []})
            out["text_offset"].append(offset)
            offset += len(p.text)
        return out

    return app


class _Result:
    def __init__(self) -> None:
        self.text = ""
        self.tokens: list[Piece] = []
        self.finish: Finish


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _collect(job: Job, request: Request) -> _Result:
    """All of a job's events; cancels it (ClientGone) if the client disconnects first."""
    result = _Result()
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            get = asyncio.ensure_future(job.events.get())
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                raise ClientGone
            event = get.result()
            if isinstance(event, Failure):
                raise APIError(500, event.message, "server_error")
            if isinstance(event, Finish):
                result.finish = event
                return result
            result.text += event.text
            if event.token is not None:
                result.tokens.append(event)
    finally:
        gone.cancel()
        job.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field_path(loc: Any) -> str:
    """'messages.0.role' from pydantic's error location, without 'body' and union branch tags."""
    parts = [
        str(p)
        for p in loc
        if p != "body" and not (isinstance(p, str) and ("[" in p or p.lower() in _TYPE_NAMES))
    ]
    return ".".join(parts)


def _validation_error(errors: Any) -> APIError:
    """One 400 for pydantic's errors: the first field's problem (all of a union's alternatives)."""
    if not errors:
        return APIError(400, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        why = first.get("ctx", {}).get("error", first.get("msg"))
        return APIError(400, f"the request body is not valid JSON: {why}")
    path = _field_path(first.get("loc", ()))
    if first.get("type") == "missing" and not path:
        return APIError(400, "the request body is empty: send a JSON object")
    if first.get("type") == "missing":
        return APIError(400, f"'{path}' is required", param=path)
    msgs = []
    for e in errors:
        if _field_path(e.get("loc", ())) == path and e["msg"] not in msgs:
            msgs.append(e["msg"])
    return APIError(400, f"'{path or 'body'}': {'; or '.join(msgs)}", param=path or None)


def _usage(finish: Finish) -> dict[str, Any]:
    return {
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
        # OpenAI's field for prompt tokens served from the cache (a chat's resent history)
        "prompt_tokens_details": {"cached_tokens": finish.cached_tokens},
    }


def _message_dict(i: int, m: Any) -> dict[str, Any]:
    """A chat message for the template: content parts joined into one text."""
    content = m.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.type != "text" or part.text is None:
                raise _refuse(
                    f"messages[{i}].content",
                    f"content part of type '{part.type}' (only text is read)",
                )
            texts.append(part.text)
        content = "".join(texts)
    extra = {k: v for k, v in (m.model_extra or {}).items() if v is not None}
    return {**extra, "role": m.role, "content": content or ""}

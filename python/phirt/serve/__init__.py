"""`phirt serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) with continuous batching.

    python -m phirt serve MODEL [--host 127.0.0.1] [--port 8080] [--parallel 4] [--ctx N]

scheduler.py runs the model (many requests per forward pass on the native engine, one at a time
on other backends); app.py is the HTTP side; schemas.py the request bodies; chat.html the page at /.
Needs the `serve` extra: pip install 'phirt[serve]'.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from phirt.errors import PhirtError

API_KEY_ENV = "PHIRT_API_KEY"


class ServeError(PhirtError):
    """The server cannot start (missing extra, bad option)."""


def build_server(
    model_path: str | os.PathLike[str],
    *,
    parallel: int = 4,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    device: str = "auto",
    kv_type: str = "f16",
    max_queue: int | None = None,
    prefill_chunk: int = 128,
    model_id: str | None = None,
    api_key: str | None = None,
) -> tuple[Any, Any]:
    """Load the model and return (app, scheduler); the caller serves app and closes scheduler."""
    try:
        from phirt.serve.app import create_app
    except ImportError as exc:
        raise ServeError(
            f"phirt serve needs the serve extra ({exc.name} is missing): pip install 'phirt[serve]'"
        ) from None
    import phirt
    from phirt.serve.scheduler import BatchScheduler, SerialScheduler

    if parallel < 1:
        raise ServeError(f"--parallel must be >= 1, got {parallel}")
    if prefill_chunk < 1:
        raise ServeError(f"--prefill-chunk must be >= 1, got {prefill_chunk}")
    queue = 4 * parallel if max_queue is None else max_queue
    if queue < 0:
        raise ServeError(f"--queue must be >= 0, got {queue}")
    model = phirt.load(model_path, n_threads=n_threads, n_ctx=n_ctx, device=device, kv_type=kv_type)
    if hasattr(model.engine, "eval_batch"):
        scheduler: Any = BatchScheduler(model.engine, parallel, queue, prefill_chunk)
    else:  # a vendor backend: one request at a time
        scheduler = SerialScheduler(model, queue)
    app = create_app(model, scheduler, model_id or Path(model_path).stem, api_key)
    return app, scheduler


def serve(
    model_path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8080, **options: Any
) -> None:
    """Run the server until interrupted (Ctrl-C)."""
    import uvicorn

    if options.get("api_key") is None:
        options["api_key"] = os.environ.get(API_KEY_ENV) or None
    app, scheduler = build_server(model_path, **options)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if hasattr(scheduler, "model"):  # SerialScheduler: a vendor backend
        mode = f"{scheduler.model.backend} backend, one request at a time"
    else:
        mode = f"up to {scheduler.parallel} sequences batched"
    logging.getLogger("phirt.serve").info(
        "phirt serve: %s on http://%s:%d (%s, %d-token context each%s)",
        model_path,
        host,
        port,
        mode,
        scheduler.n_ctx,
        ", API key required" if options.get("api_key") else "",
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=2)
    finally:
        scheduler.close()

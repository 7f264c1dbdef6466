"""A long-lived fuzz worker (started by fuzz_pool.py): reads one JSON request per line on stdin,
runs the case under an address-space limit, and answers one JSON line on its own pipe.

A case is loaded with phirt.load and, if that works, generates a few tokens (sampled, so the
sampler meets whatever logits a damaged model produces), chats one turn (the file's chat
template) and round-trips a text through the tokenizer. The outcome is "loaded", "rejected"
(a PhirtError: the message goes back for the parent to check), "memory" (MemoryError: the case
wanted more than its bound) or "leaked" (any other exception, with its traceback). A crash or a
hang is the parent's to see: this process dies or stops answering.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
from typing import Any

SAMPLE_TEXT = "Hello <|end|> wörld 🙂\n\tdone"


def vm_bytes() -> int:
    """Current address-space size (what RLIMIT_AS limits)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def run_case(path: str) -> dict[str, Any]:
    import phirt

    model = None
    try:
        model = phirt.load(path, n_threads=1)
        text = model.generate("Once upon a time", max_tokens=3, temperature=0.8, seed=1)
        model.chat([{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0)
        ids = model.tokenize(SAMPLE_TEXT)
        model.detokenize(ids)
        return {"outcome": "loaded", "detail": text[:80]}
    except phirt.PhirtError as exc:
        return {"outcome": "rejected", "type": type(exc).__name__, "detail": str(exc)}
    except MemoryError as exc:
        return {"outcome": "memory", "type": "MemoryError", "detail": _tb(exc)}
    except Exception as exc:
        return {"outcome": "leaked", "type": type(exc).__name__, "detail": _tb(exc)}
    finally:
        del model


def _tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)[-6:])


def warm_up() -> None:
    """Import everything a case may import, outside the memory limit: a lazy import inside a
    case would be charged to it."""
    import gguf  # noqa: F401  (type names of types phirt does not run)
    import jinja2.sandbox  # noqa: F401
    import tokenizers  # noqa: F401

    import phirt
    import phirt.chat_template  # noqa: F401
    import phirt.runtime  # noqa: F401

    for base in os.environ.get("PHIRT_FUZZ_WARM", "").split(os.pathsep):
        if base:
            run_case(base)


def main() -> None:
    # the protocol gets its own descriptor: anything printed to stdout goes to stderr instead
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    warm_up()
    gc.collect()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    proto.write(json.dumps({"ready": True, "vm": vm_bytes()}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        budget = int(req["budget"])
        base = vm_bytes()
        cpu = time.process_time()
        if budget:
            resource.setrlimit(resource.RLIMIT_AS, (base + budget, hard))
        try:
            result = run_case(req["path"])
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        gc.collect()  # unmap the case's file before the parent deletes it
        result["vm_growth"] = vm_bytes() - base
        result["cpu"] = time.process_time() - cpu
        proto.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""`python -m phirt doctor [MODEL] [--verify]`: what this machine has and what phirt would do.

Without a model: the CPU (model, ISA path, threads), memory, and every backend (installed or not,
version, devices it sees). With a model: each backend's answer for it on each device, and the
choice device="auto" makes. --verify runs a short greedy continuation on every backend that can
run the model and compares it with phirt's CPU reference: tokens agreed, the largest logit
difference (backends that expose logits), and a verdict that tells numeric noise from an
accelerator that answers differently.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from phirt.backends.base import Probe
from phirt.backends.selection import PREFERENCE, choose, get_backend, probe_all
from phirt.errors import PhirtError

VERIFY_PROMPT = "The capital of France is"
VERIFY_TOKENS = 16
# A divergence from the reference counts as numeric noise when the reference's top-2 margin at
# that step is under this share of its logit range (phirt vs llama.cpp on SmolLM2-135M reaches
# ~3 % of the range at some steps: docs/design.md); above it, the backend answers differently.
NEAR_TIE = 0.05


def memory_gib() -> tuple[float, float] | None:
    """(total, available) GiB from /proc/meminfo; None where there is none."""
    try:
        info = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) / 2**20
        return info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0.0))
    except (OSError, KeyError, ValueError):
        return None


def system_rows() -> list[tuple[str, str]]:
    import platform

    from phirt import __version__
    from phirt import _kernels as K
    from phirt.backends.native import cpu_name

    mem = memory_gib()
    return [
        ("phirt", f"{__version__} (Python {platform.python_version()}, {platform.platform()})"),
        ("CPU", f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} logical CPUs)"),
        ("ISA path", f"{K.isa()} (this CPU has: {', '.join(K.available_isas())})"),
        ("threads", str(K.get_num_threads())),
        ("memory", f"{mem[0]:.1f} GiB total, {mem[1]:.1f} GiB available" if mem else "unknown"),
    ]


def backend_rows() -> list[tuple[str, str, str]]:
    """(backend, installed, devices) for every backend."""
    rows = []
    for name in PREFERENCE:
        b = get_backend(name)
        version = b.version()
        if b.packages and version is None:
            rows.append((name, f"no: {b.missing()}", "-"))
            continue
        try:
            devices = b.devices()
        except Exception as exc:  # a vendor stack failing to enumerate is itself the finding
            rows.append((name, f"{b.packages[0] if b.packages else 'phirt'} {version}", str(exc)))
            continue
        found = (
            "; ".join(f"{d}{': ' + d.detail if d.detail else ''}" for d in devices) or "none found"
        )
        if b.devices_note:
            found = f"{b.devices_note}: {', '.join(d.name for d in devices)}"
        pkg = b.packages[0] if b.packages else "built in"
        rows.append((name, f"{pkg} {version}", found))
    return rows


@dataclass
class Verification:
    backend: str
    device: str
    tokens: list[int]
    agreed: int  # leading tokens equal to the reference's
    max_logit_diff: float | None  # over the reference sequence; None without logits
    verdict: str
    text: str


def _reference(path: str) -> tuple[Any, list[int], list[int], np.ndarray]:
    """phirt native's greedy continuation: (model, prompt, tokens, logits of prompt+tokens)."""
    import phirt

    ref = phirt.load(path, backend="native")
    prompt = ref.tokenize(VERIFY_PROMPT)
    tokens = _steps(ref, prompt)
    logits = ref.logits(prompt + tokens)
    return ref, prompt, tokens, logits


def _steps(model: Any, prompt: list[int]) -> list[int]:
    """Greedy token ids (stop tokens included as the last id) through the model's own path."""
    from phirt.backends.base import has_logits
    from phirt.generate import sampled_tokens
    from phirt.sampling import Sampler, SamplingParams

    greedy = SamplingParams.greedy()
    engine = model.engine
    if has_logits(engine):
        stream = sampled_tokens(engine, prompt, Sampler(greedy))
    else:
        stream = engine.stream(prompt, greedy, VERIFY_TOKENS)
    out = []
    try:
        for token in stream:
            out.append(token)
            if len(out) >= VERIFY_TOKENS:
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return out


def verify(path: str, probes: list[Probe]) -> list[Verification]:
    import phirt
    from phirt.backends.base import has_logits

    ref, prompt, ref_tokens, ref_logits = _reference(path)
    n_prompt = len(prompt)
    results = [Verification("native", "cpu", ref_tokens, len(ref_tokens), 0.0, "reference", "")]
    results[0].text = ref.detokenize(ref_tokens)
    seen = {("native", "cpu")}
    for p in probes:
        if p.device is None or not (p.ok or p.convert) or (p.backend, p.device.name) in seen:
            continue
        seen.add((p.backend, p.device.name))
        try:
            model = phirt.load(path, device=p.device.name, backend=p.backend)
            tokens = _steps(model, prompt)
            diff = None
            if has_logits(model.engine):
                got = model.logits(prompt + ref_tokens)
                diff = float(np.abs(got[:, : ref_logits.shape[1]] - ref_logits).max())
        except (PhirtError, RuntimeError, ValueError) as exc:
            results.append(
                Verification(p.backend, p.device.name, [], 0, None, f"failed: {exc}", "")
            )
            continue
        agreed = 0
        while agreed < min(len(tokens), len(ref_tokens)) and tokens[agreed] == ref_tokens[agreed]:
            agreed += 1
        verdict = _verdict(agreed, tokens, ref_tokens, ref_logits[n_prompt - 1 :])
        results.append(
            Verification(
                p.backend, p.device.name, tokens, agreed, diff, verdict, model.detokenize(tokens)
            )
        )
    return results


def _verdict(agreed: int, tokens: list[int], ref: list[int], step_logits: np.ndarray) -> str:
    """Same tokens; a first difference at a near-tie of the reference (rounding); or DIFFERS."""
    if agreed == len(ref) == len(tokens):
        return "agrees"
    if agreed >= len(tokens) or agreed >= len(ref):
        return f"agrees for {agreed} tokens, then stops {'early' if len(tokens) < len(ref) else 'late'}"
    row = step_logits[agreed]
    top2 = np.sort(row)[-2:]
    margin = float(top2[1] - top2[0])
    span = float(row.max() - row.min()) or 1.0
    rel = margin / span
    if rel <= NEAR_TIE:
        return (
            f"agrees for {agreed}, then a near-tie (reference margin {rel:.1%} of the logit range)"
        )
    return f"DIFFERS at token {agreed} (reference margin {rel:.1%} of the logit range)"


def cmd_doctor(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    sys_table = Table(title="phirt doctor", show_header=False)
    sys_table.add_column("what")
    sys_table.add_column("value")
    for k, v in system_rows():
        sys_table.add_row(k, v)
    console.print(sys_table)

    table = Table(title="backends")
    for col in ("backend", "installed", "devices found"):
        table.add_column(col)
    for row in backend_rows():
        table.add_row(*row)
    console.print(table)
    if not args.model:
        return 0

    from phirt.fetch import resolve_model

    path = resolve_model(args.model)
    probes = probe_all(path, args.device)
    table = Table(title=f"{os.path.basename(path)}: what each backend would do")
    for col in ("backend", "device", "runs it?", "why"):
        table.add_column(col)
    for p in probes:
        ok = "yes" if p.ok else ("after conversion" if p.convert else "no")
        if p.ok and p.device is not None and p.device.named_only:
            ok = f"only with --backend {p.backend}"
        table.add_row(p.backend, str(p.device) if p.device else "-", ok, p.reason)
    console.print(table)
    try:
        chosen = choose(probes, path, args.device, None, convert=not args.no_convert)
        console.print(f"device='{args.device}' chooses: {chosen.reason}")
    except PhirtError as err:
        console.print(f"device='{args.device}': {err}")
    if args.verify:
        native = next((p for p in probes if p.backend == "native"), None)
        if native is None or not native.ok:
            why = native.reason if native else "not probed"
            console.print(f"verify: no CPU reference, phirt native cannot run this model ({why})")
        else:
            _print_verification(console, verify(path, probes))
    return 0


def _print_verification(console: Any, results: list[Verification]) -> None:
    from rich.table import Table

    table = Table(title=f"verify: greedy {VERIFY_TOKENS} tokens after {VERIFY_PROMPT!r}")
    for col in ("backend", "device", "tokens agreed", "max |logit diff|", "verdict", "text"):
        table.add_column(col)
    n = len(results[0].tokens)
    for r in results:
        diff = "-" if r.max_logit_diff is None else f"{r.max_logit_diff:.4f}"
        style = "bold red" if r.verdict.startswith(("DIFFERS", "failed")) else None
        table.add_row(
            r.backend, r.device, f"{r.agreed}/{n}", diff, r.verdict, repr(r.text), style=style
        )
    console.print(table)


def add_doctor_subcommand(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="the CPU, memory and every backend; with MODEL, what each would do with it",
    )
    p.add_argument("model", nargs="?", help="a GGUF file or model folder (optional)")
    p.add_argument("--device", default="auto", help="device to consider (default auto)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="run a short greedy continuation on every usable backend vs phirt's CPU reference",
    )
    p.add_argument("--no-convert", action="store_true", help="never convert the model")
    p.set_defaults(func=cmd_doctor)

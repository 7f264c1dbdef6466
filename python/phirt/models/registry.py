"""Architecture lookup by GGUF `general.architecture` name: one table, with aliases."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from phirt.errors import UnsupportedError
from phirt.models import llama, phi2, phi3


@dataclass(frozen=True)
class Architecture:
    module: ModuleType
    model_class: type

    def read_config(self, meta: dict[str, Any], path: str, n_vocab: int) -> Any:
        return self.module.read_config(meta, path, n_vocab)


ARCHITECTURES: dict[str, Architecture] = {
    "phi3": Architecture(phi3, phi3.Phi3),
    "phi2": Architecture(phi2, phi2.Phi2),
    "llama": Architecture(llama, llama.Llama),
}

# Other `general.architecture` names that denote one of the graphs above (none needed yet).
ALIASES: dict[str, str] = {}


def find_architecture(name: str, path: str) -> Architecture:
    key = ALIASES.get(name, name)
    if key not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedError(
            f"unsupported architecture '{name}' (phirt supports {supported})", path
        )
    return ARCHITECTURES[key]

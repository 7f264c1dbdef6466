"""What the fuzz corpus is made of: a Case (a base input and the edits that damage it) and the
CaseFamily interface each kind of model input implements (GGUF files in fuzz_gguf.py; the
regression corpus of saved inputs below). A family that produces folders (ONNX) implements the
same three methods and writes a folder in materialize().
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_TO_END = -1


@dataclass(frozen=True)
class Edit:
    """Replace `size` bytes at `pos` with `new` (size 0 inserts; size -1 cuts the file there)."""

    pos: int
    size: int
    new: bytes = b""

    @classmethod
    def cut(cls, pos: int) -> Edit:
        return cls(pos, _TO_END)

    @property
    def shifts(self) -> bool:
        """True when the edit moves the bytes after it (it must be applied last)."""
        return self.size == _TO_END or len(self.new) != self.size

    def apply(self, buf: bytearray) -> None:
        if self.size == _TO_END:
            del buf[self.pos :]
        else:
            buf[self.pos : self.pos + self.size] = self.new


@dataclass(frozen=True)
class Case:
    """One fuzz input: `base` damaged by `edits`, described by `name`; `seed` replays a random
    case (None for deterministic ones)."""

    family: str
    base: str
    name: str
    edits: tuple[Edit, ...]
    seed: int | None = None

    def apply(self, data: bytes) -> bytes:
        buf = bytearray(data)
        for e in self.edits:
            e.apply(buf)
        return bytes(buf)

    def __str__(self) -> str:
        seed = f" seed={self.seed}" if self.seed is not None else ""
        return f"[{self.family}:{self.base}{seed}] {self.name}"


class CaseFamily(Protocol):
    """A kind of model input. cases() is deterministic for a seed; materialize() writes one case
    (a file or a folder) under out_dir and returns the path phirt.load gets; base_size() is the
    size the memory bound is scaled by."""

    name: str

    def cases(self, n_random: int, seed: int) -> Iterator[Case]: ...
    def materialize(self, case: Case, out_dir: Path) -> Path: ...
    def base_size(self, case: Case) -> int: ...


class SavedInputs:
    """The committed regression corpus: every file under `root` (inputs that once crashed, hung
    or leaked a non-phirt error, saved by the fuzzers) is one case, run as it is."""

    name = "saved"

    def __init__(self, root: Path, suffix: str = ".gguf") -> None:
        self.files = sorted(p for p in Path(root).glob(f"*{suffix}") if p.is_file())
        self.suffix = suffix

    def cases(self, n_random: int = 0, seed: int = 0) -> Iterator[Case]:
        for p in self.files:
            yield Case(self.name, p.name, "saved input", ())

    def materialize(self, case: Case, out_dir: Path) -> Path:
        path = out_dir / case.base
        path.write_bytes(self._data(case))
        return path

    def base_size(self, case: Case) -> int:
        return len(self._data(case))

    def _data(self, case: Case) -> bytes:
        return next(p for p in self.files if p.name == case.base).read_bytes()

"""Conversions `phirt.load` makes once, into phirt's cache, when the chosen backend cannot read
the model as it is (a GGUF file for MLX on Apple silicon). `phirt.load(..., convert=False)` or the
CLI's --no-convert turns this off."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from phirt.errors import UnsupportedError

DONE = ".phirt-converted"  # written last: a folder without it is an interrupted conversion


def cache_path(src: str, fmt: str) -> Path:
    """Where `src` converted to `fmt` lives: named by the source's path, size and mtime, so an
    edited or replaced file converts again."""
    from phirt.fetch import cache_dir

    st = os.stat(src)
    key = f"{os.path.realpath(src)}|{st.st_size}|{st.st_mtime_ns}|{fmt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{Path(src).stem}-{digest}.{fmt}"


def converted_path(src: str, fmt: str) -> tuple[str, str]:
    """(path of the converted model, a note saying what happened)."""
    out = cache_path(src, fmt)
    if (out / DONE).is_file():
        return str(out), f"using {out}, converted from it earlier"
    if fmt != "mlx":
        raise UnsupportedError(f"phirt cannot convert to {fmt}", src)
    from phirt.quantize.mlx import export_mlx

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        export_mlx(src, tmp)
        (tmp / DONE).write_text(src + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out), f"converted once to {out} (pass convert=False / --no-convert to forbid)"

"""Coverage for the fuzz targets: atheris instruments phirt's own Python functions after they are
imported. (atheris.instrument_imports cannot see through the import redirect of an editable
install, and instrument_all would also instrument numpy, jinja2 and the rest: minutes of start-up
for code we are not fuzzing.)"""

from __future__ import annotations

import gc
import sys
import types

import atheris


def instrument_package(prefix: str = "phirt") -> int:
    """Instrument every function (and method, and what they nest) of already-imported modules
    named `prefix` or `prefix.*`; returns how many."""
    funcs = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, types.FunctionType)
        and isinstance(getattr(obj, "__module__", None), str)
        and (obj.__module__ == prefix or obj.__module__.startswith(prefix + "."))
        and obj.__module__ in sys.modules
    ]
    for func in funcs:
        atheris.instrument_func(func)
    print(f"INFO: instrumented {len(funcs)} functions of {prefix}", file=sys.stderr)
    return len(funcs)

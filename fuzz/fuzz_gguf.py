"""Coverage-guided fuzz target (atheris): the GGUF header and metadata parser, and everything that
reads metadata before the weights: the tokenizer, the architecture config and the chat template.

An input is a whole file. It must parse, or raise a PhirtError whose one-line message names the
file; anything else (another exception, a crash in the C++ string reader, a hang past -timeout,
memory past -rss_limit_mb) is a finding, saved by libFuzzer as a crash-* file. Run it through
fuzz/run.py, which seeds it with fuzz/corpus/gguf/ and files what it finds there.

    python fuzz/fuzz_gguf.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import atheris
from instrument import instrument_package

from phirt.chat_template import ChatTemplate
from phirt.errors import PhirtError
from phirt.formats.gguf import GGUFFile
from phirt.models.registry import find_architecture
from phirt.tokenizer import Tokenizer

_DIR = tempfile.mkdtemp(prefix="phirt-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(_DIR, "input.gguf")
atexit.register(shutil.rmtree, _DIR, True)


def parse(path: str) -> None:
    """What phirt.load does with a file before it touches a weight."""
    g = GGUFFile(path)
    g.summary()
    for t in g.tensors.values():
        if t.n_bytes <= 1 << 16 and len(t.shape) == 1:
            t.to_float32()
    meta = g.metadata
    if "tokenizer.ggml.model" in meta:
        tok = Tokenizer.from_metadata(meta, path=path)
        ids = tok.encode("Hello <|user|> wörld\n", add_bos=None)
        tok.decode(ids)
        template = ChatTemplate.from_metadata(meta, tok)
        template.render([{"role": "user", "content": "hi"}])
    embd = g.tensors.get("token_embd.weight")
    if g.arch and embd is not None and len(embd.shape) == 2:
        find_architecture(g.arch, path).read_config(meta, path, embd.shape[0])


def test_one_input(data: bytes) -> None:
    # a new file each time: the previous input's mapping must never see this one's bytes
    if os.path.exists(PATH):
        os.unlink(PATH)
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        parse(PATH)
    except PhirtError as exc:
        message = str(exc)
        if "\n" in message or PATH not in message:
            raise AssertionError(f"bad PhirtError message: {message!r}") from exc


def main() -> None:
    instrument_package("phirt")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Greedy decoding end to end, for .ci/neon_e2e.sh: the x86 build and the aarch64 build (under
qemu-user, one CPU model per NEON level) on the same GGUF file must agree as phirt's ISAs agree
with each other.

    neon_greedy.py run MODEL OUT.npz [--prompt TEXT] [--n 8]   # any Python, any ISA
    neon_greedy.py compare REF.npz GOT.npz                      # REF: the x86 run

`run` records the active ISA, the prompt's tokens and logits, the greedy continuation and the
logits each token was picked from. `compare` applies tests/test_smollm2.py's bounds between ISAs:
prompt logits within 6 % (max) and 1 % (mean) of the logit range, the same argmax at every prompt
position, and the same greedy tokens except where the reference's top-2 margin is within the bound
and the runner-up was picked (tests/greedy.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run(model: str, out: Path, prompt: str, n: int) -> None:
    from phirt import _kernels as K
    from phirt.engine import NativeEngine

    engine = NativeEngine(model, n_ctx=128, n_threads=2)
    tokens = engine.tokenizer.encode(prompt)
    logits = engine.eval(tokens, all_logits=True)
    greedy, steps, last = [], [], logits[-1]
    for _ in range(n):
        steps.append(last)
        greedy.append(int(np.argmax(last)))
        last = engine.eval([greedy[-1]])
    np.savez(out, isa=K.isa(), tokens=np.array(tokens), logits=logits, greedy=np.array(greedy),
             steps=np.array(steps))  # fmt: skip
    print(f"{K.isa()}: prompt {len(tokens)} tokens, greedy {greedy}")


def compare(ref_path: Path, got_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from greedy import assert_same_greedy

    ref, got = np.load(ref_path), np.load(got_path)
    what = f"{got['isa']} vs {ref['isa']}"
    assert (got["tokens"] == ref["tokens"]).all(), f"{what}: prompts tokenized differently"
    scale = float(np.abs(ref["logits"]).max()) + 1.0
    diff = np.abs(got["logits"] - ref["logits"])
    print(f"{what}: prompt logits max |diff| {diff.max() / scale:.2%} of the range, mean "
          f"{diff.mean() / scale:.3%}; greedy {got['greedy'].tolist()} vs "
          f"{ref['greedy'].tolist()}")  # fmt: skip
    assert diff.max() <= 0.06 * scale and diff.mean() <= 0.01 * scale, f"{what}: logits differ"
    assert (got["logits"].argmax(axis=1) == ref["logits"].argmax(axis=1)).all(), what
    assert_same_greedy(got["greedy"].tolist(), ref["greedy"].tolist(), list(ref["steps"]),
                       0.06 * scale)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("model")
    r.add_argument("out", type=Path)
    r.add_argument("--prompt", default="The capital of France is")
    r.add_argument("--n", type=int, default=8)
    c = sub.add_parser("compare")
    c.add_argument("ref", type=Path)
    c.add_argument("got", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.model, args.out, args.prompt, args.n)
    else:
        compare(args.ref, args.got)


if __name__ == "__main__":
    main()

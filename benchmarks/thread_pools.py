"""Decode speed of a model on a pool of its own (phirt.load(n_threads=N): the pool is installed
around each evaluation) against the same model on the process's default pool resized to N, in
interleaved rounds so machine noise hits both alike; medians of tokens per second.

    python benchmarks/thread_pools.py MODEL.gguf [--threads 2] [--rounds 12] [--tokens 48]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import phirt._kernels as K

import phirt


def decode_tps(model: phirt.Model, prompt: list[int], n: int) -> float:
    engine = model.engine
    engine.reset()
    logits = engine.eval(prompt)
    t = time.perf_counter()
    for _ in range(n):
        logits = engine.eval([int(np.argmax(logits))])
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--tokens", type=int, default=48)
    args = p.parse_args()
    K.set_num_threads(args.threads)
    own = phirt.load(args.model, n_threads=args.threads, n_ctx=512)
    shared = phirt.load(args.model, n_ctx=512)
    prompt = own.tokenize("The history of the city begins")
    runs: dict[str, list[float]] = {"own pool": [], "default pool": []}
    models = {"own pool": own, "default pool": shared}
    for m in models.values():
        decode_tps(m, prompt, 8)  # warm-up: page in the weights
    for i in range(args.rounds):
        order = list(models) if i % 2 == 0 else list(reversed(models))
        for name in order:
            runs[name].append(decode_tps(models[name], prompt, args.tokens))
    print(f"{args.model}: {K.isa()}, {args.threads} threads, {args.rounds} rounds x {args.tokens}")
    for name, tps in runs.items():
        print(f"  {name:13} median {statistics.median(tps):7.2f} tok/s (min {min(tps):.2f}, "
              f"max {max(tps):.2f})")  # fmt: skip
    ratio = [a / b for a, b in zip(runs["own pool"], runs["default pool"], strict=True)]
    print(f"  own / default per round: median {statistics.median(ratio):.3f}")


if __name__ == "__main__":
    main()

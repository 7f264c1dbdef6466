"""phirt vs onnxruntime-genai on the same ONNX Runtime GenAI folder, side by side with ratios.

    python benchmarks/compare_genai.py FOLDER [FOLDER ...] [--pp 128,512] [--tg 64]
        [--threads 2] [--reps 3] [--json]

The folder is what ``phirt quantize SRC OUT --format onnx`` writes (MatMulNBits int4 block 32,
accuracy_level 4: int8 activations on both sides), e.g. from make_bench_models.py's Phi-3-mini
shaped GGUF:

    python benchmarks/make_bench_models.py /tmp/bench --types q4_0
    python -m phirt quantize /tmp/bench/phi3-mini-random-Q4_0.gguf /tmp/bench/onnx --format onnx

Every repetition runs each engine in a fresh process of this script (``--worker phirt|genai``),
alternating (phirt, genai, phirt, ...), so a change in machine load hits both and peak RSS and
load time are each engine's own. In each process: load and run one token (load to first token),
warm up (one prefill of the largest batch, 8 decoded tokens), then one measurement of each figure:

- prefill ppN: N prompt tokens from an empty cache in one call (tok/s). onnxruntime-genai:
  ``Generator.append_tokens(prompt)``; phirt: ``model.engine.eval(prompt)``.
- decode tgN: N tokens one at a time after a 16-token prompt (tok/s), each the argmax of the
  previous logits. onnxruntime-genai: ``generate_next_token()`` (greedy search); phirt: ``eval``.
- peak RSS of the process.

``--phirt-model PATH`` has phirt load PATH instead of the folder (one folder only): a GGUF of the
same weights, e.g. ``phirt quantize FOLDER out.gguf``, which copies a symmetric int4 block-32
folder's weights as Q4_0 bit for bit. That compares phirt's GGUF kernels, rather than its
MatMulNBits ones, with onnxruntime-genai on the same weights.

onnxruntime-genai's threads: the folder's session options get ``intra_op_num_threads`` =
``--threads`` (through ``og.Config.overlay``). The table shows medians, ±half the range in
percent, and the ratio phirt / onnxruntime-genai (load time and RSS: lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("phirt", "genai")
LABELS = {"phirt": "phirt", "genai": "onnxruntime-genai"}
SHORT_PROMPT = 16
WARMUP_DECODE = 8
RESULT_MARK = "@@compare_genai@@ "


def peak_rss_mib() -> float:
    """This process's peak resident set. Linux's VmHWM belongs to the address space exec made;
    ru_maxrss also counts what the parent held when it forked this worker."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Phirt:
    def __init__(self, folder: str, n_ctx: int, threads: int) -> None:
        import phirt

        self.model = phirt.load(folder, n_threads=threads, n_ctx=n_ctx)

    def prefill(self, tokens: list[int]) -> np.ndarray:
        self.model.engine.reset()
        return self.model.engine.eval(tokens)

    def decode(self, logits: np.ndarray, n: int) -> None:
        for _ in range(n):
            logits = self.model.engine.eval([int(np.argmax(logits))])

    def info(self) -> dict[str, Any]:
        from phirt import _kernels as K

        return {"isa": K.isa(), "threads": K.get_num_threads()}


class GenAI:
    def __init__(self, folder: str, n_ctx: int, threads: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(folder)
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)
        self.n_ctx = n_ctx
        self.gen: Any = None

    def prefill(self, tokens: list[int]) -> np.ndarray:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.n_ctx, do_sample=False)
        self.gen = self.og.Generator(self.model, params)
        self.gen.append_tokens(tokens)
        return np.asarray(self.gen.get_logits())

    def decode(self, logits: np.ndarray, n: int) -> None:
        for _ in range(n):
            self.gen.generate_next_token()

    def info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime_genai": self.og.__version__, "onnxruntime": ort.__version__}


OPENERS = {"phirt": Phirt, "genai": GenAI}


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    tokens = np.random.default_rng(args.seed).integers(0, args.vocab, size=4096).tolist()
    t0 = time.perf_counter()
    engine = OPENERS[args.worker](args.model, args.n_ctx, args.threads)
    engine.prefill(tokens[:1])
    out: dict[str, Any] = {"load_s": time.perf_counter() - t0, "info": engine.info()}
    logits = engine.prefill(tokens[: max(args.pp)])  # warm-up
    engine.decode(logits, WARMUP_DECODE)
    for n in args.pp:
        t = time.perf_counter()
        engine.prefill(tokens[:n])
        out[f"pp{n}"] = n / (time.perf_counter() - t)
    if args.tg:
        logits = engine.prefill(tokens[:SHORT_PROMPT])
        t = time.perf_counter()
        engine.decode(logits, args.tg)
        out[f"tg{args.tg}"] = args.tg / (time.perf_counter() - t)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_job(engine: str, args: argparse.Namespace, model: str, vocab: int) -> dict[str, Any]:
    n_ctx = max(max(args.pp) + WARMUP_DECODE, SHORT_PROMPT + args.tg) + 8
    cmd = [sys.executable, str(Path(__file__).resolve()), model, "--worker", engine,
           "--threads", str(args.threads), "--pp", ",".join(map(str, args.pp)),
           "--tg", str(args.tg), "--n-ctx", str(n_ctx), "--vocab", str(vocab),
           "--seed", str(args.seed)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    sys.stderr.write(proc.stdout + proc.stderr)
    raise SystemExit(f"{LABELS[engine]} worker failed (exit {proc.returncode}) on {model}")


def compare(model: str, args: argparse.Namespace) -> dict[str, Any]:
    genai = json.loads((Path(model) / "genai_config.json").read_text())
    vocab = int(genai["model"]["vocab_size"])
    keys = ["load_s", *[f"pp{n}" for n in args.pp]] + ([f"tg{args.tg}"] if args.tg else [])
    keys.append("peak_rss_mib")
    values: dict[str, dict[str, list[float]]] = {k: {e: [] for e in ENGINES} for k in keys}
    info: dict[str, Any] = {}
    load_before = os.getloadavg()
    for rep in range(1, args.reps + 1):
        for engine in ENGINES:
            path = args.phirt_model if engine == "phirt" and args.phirt_model else model
            r = run_job(engine, args, path, vocab)
            info[engine] = r["info"]
            for k in keys:
                values[k][engine].append(float(r[k]))
            shown = ", ".join(f"{k} {r[k]:.4g}" for k in keys)
            print(f"  [rep {rep}/{args.reps}] {LABELS[engine]:17}: {shown}", file=sys.stderr,
                  flush=True)  # fmt: skip
    return {"model": model, "phirt_model": args.phirt_model or model, "threads": args.threads, "reps": args.reps, "engines": info,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "values": values}  # fmt: skip


def format_table(res: dict[str, Any]) -> str:
    phirt_on = "" if res["phirt_model"] == res["model"] else f", phirt on {res['phirt_model']}"
    rows = [f"{res['model']}  ({res['threads']} threads, {res['reps']} reps{phirt_on}, load average "
            f"{res['loadavg_before'][0]:.1f} -> {res['loadavg_after'][0]:.1f})",
            f"{'figure':22} {'phirt':>18} {'onnxruntime-genai':>20} {'phirt / genai':>14}"]  # fmt: skip
    units = {"load_s": "s", "peak_rss_mib": "MiB"}
    for key, per in res["values"].items():
        cells = []
        for e in ENGINES:
            v = per[e]
            med = statistics.median(v)
            spread = 50.0 * (max(v) - min(v)) / med if med else 0.0
            cells.append(f"{med:10.4g} ±{spread:3.0f}%")
        ratio = statistics.median(per["phirt"]) / statistics.median(per["genai"])
        label = {"load_s": "load to first token", "peak_rss_mib": "peak RSS"}.get(key, key)
        unit = units.get(key, "tok/s")
        rows.append(f"{label + ' (' + unit + ')':22} {cells[0]:>18} {cells[1]:>20} {ratio:13.2f}x")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("models", nargs="+", help="ONNX Runtime GenAI folders")
    p.add_argument("--pp", default="128,512", help="prefill sizes (default 128,512)")
    p.add_argument("--tg", type=int, default=64, help="decoded tokens (default 64)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--phirt-model", help="what phirt loads instead of the folder (a GGUF of it)")
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--n-ctx", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.pp = [int(v) for v in args.pp.split(",") if v]
    if args.worker:
        args.model = args.models[0]
        print(RESULT_MARK + json.dumps(run_worker(args)), flush=True)
        return 0
    if args.phirt_model and len(args.models) != 1:
        p.error("--phirt-model goes with exactly one folder")
    results = [compare(model, args) for model in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n\n".join(format_table(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

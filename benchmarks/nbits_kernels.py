"""MatMulNBits kernels, phirt against onnxruntime on the same weights: decode GEMV (m = 1) and
prefill GEMM (m = 128, 512) for the matrices of a Phi-3-mini layer and its lm_head, int4 block 32
symmetric, accuracy_level 4 (int8 activations) unless told otherwise.

    python benchmarks/nbits_kernels.py [--threads 2] [--reps 15] [--isa avx512] [--level 4]

onnxruntime runs a one-node graph per matrix (com.microsoft MatMulNBits, intra-op threads =
--threads, its own prepacked copy); phirt runs nbits_matmul on nbits_repack of the same B and
scales. Decode weights are cold: each side rotates through enough copies of the matrix (> 4x the
last-level cache) that every call streams it from DRAM. Calls alternate phirt / onnxruntime, and
each figure is the median (--best: the fastest, on a busy machine); the ratio is onnxruntime's
time over phirt's (> 1: phirt faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import phirt._kernels as K

SHAPES = {  # name: (N, K) of Phi-3-mini
    "qkv_proj": (9216, 3072),
    "o_proj": (3072, 3072),
    "gate/up_proj": (8192, 3072),
    "down_proj": (3072, 8192),
    "lm_head": (32064, 3072),
}


def llc_bytes() -> int:
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            size = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
        best = max(best, int(size.rstrip("KM")) * mult)
    return best or 32 << 20


def ort_session(n: int, k: int, bs: int, b: np.ndarray, s: np.ndarray, level: int, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=k,
                            N=n, bits=4, block_size=bs, accuracy_level=level)  # fmt: skip
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
        initializer=[numpy_helper.from_array(b, "B"), numpy_helper.from_array(s, "S")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def bench(name: str, n: int, k: int, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    bs = 32
    w = rng.standard_normal((n, k)).astype(np.float32)
    b, s = K.nbits_quantize(w, bs, 4, False)
    del w
    bytes_per = b.nbytes + s.nbytes
    copies = max(1, min(16, 4 * llc_bytes() // bytes_per + 1))
    mats = [K.nbits_repack(b, s, None, k, bs, 4, args.level) for _ in range(copies)]
    sessions = [ort_session(n, k, bs, b, s, args.level, args.threads) for _ in range(copies)]
    for m in (1, *args.prefill):
        x = rng.standard_normal((m, k)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        ours, theirs = [], []
        reps = args.reps if m == 1 else max(3, args.reps // 3)
        for i in range(reps + 2):
            j = i % copies if m == 1 else 0
            t0 = time.perf_counter()
            K.nbits_matmul(mats[j], x, out=out)
            t1 = time.perf_counter()
            sessions[j].run(None, {"A": x})
            t2 = time.perf_counter()
            if i >= 2:
                ours.append(t1 - t0)
                theirs.append(t2 - t1)
        pick = min if args.best else statistics.median
        a, o = pick(ours), pick(theirs)
        if m == 1:
            print(f"{name:13} decode    phirt {a * 1e3:7.3f} ms ({bytes_per / a / 1e9:5.1f} GB/s)   "
                  f"onnxruntime {o * 1e3:7.3f} ms ({bytes_per / o / 1e9:5.1f} GB/s)   "
                  f"ratio {o / a:4.2f}")  # fmt: skip
        else:
            gop = 2 * m * n * k / 1e9
            print(f"{name:13} m={m:<4}    phirt {a * 1e3:7.2f} ms ({gop / a:6.0f} GOP/s)  "
                  f"onnxruntime {o * 1e3:7.2f} ms ({gop / o:6.0f} GOP/s)  ratio {o / a:4.2f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--isa", default=None, help="phirt kernel path (default: the best)")
    p.add_argument("--level", type=int, default=4, help="accuracy_level of both (default 4)")
    p.add_argument("--prefill", default="128,512", help="prefill row counts (default 128,512)")
    p.add_argument("--only", default=None, help="comma-separated matrix names")
    p.add_argument(
        "--best", action="store_true", help="best time instead of the median (noisy machines)"
    )
    args = p.parse_args()
    args.prefill = [int(v) for v in args.prefill.split(",") if v]
    if args.isa:
        K.set_isa(args.isa)
    K.set_num_threads(args.threads)
    print(f"phirt isa {K.isa()}, {args.threads} threads, accuracy_level {args.level}")
    for name, (n, k) in SHAPES.items():
        if args.only and name not in args.only.split(","):
            continue
        bench(name, n, k, args)


if __name__ == "__main__":
    main()

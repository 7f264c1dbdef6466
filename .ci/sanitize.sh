#!/usr/bin/env bash
# Sanitizer job: AddressSanitizer + UndefinedBehaviorSanitizer builds of
#   1. the C++ kernel tests (cpp/tests: every ISA twin against scalar, and test_odd_shapes: row
#      lengths that leave every unroll a tail, N = 1, M = 1, contexts of one), and
#   2. the Python extension, loaded by the ordinary interpreter with the ASan runtime preloaded,
#      running the kernel-argument property tests, the runtime-fault tests, a share of the fuzz
#      corpus and a short generation (prefill and decode, both KV cache types) on every ISA.
# Any report (out-of-bounds read or write, use after free, undefined behaviour) aborts the
# process that hit it, and this script exits non-zero. Needs g++ with libasan/libubsan, cmake,
# and pybind11 (pip). Usage: .ci/sanitize.sh [--quick]   (--quick: C++ tests and the generation)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs="$(nproc)"
python="$(command -v python)"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
libasan="$(g++ -print-file-name=libasan.so)"
[ -f "$libasan" ] || { echo "sanitize.sh: libasan.so not found (install gcc's libasan)" >&2; exit 1; }
# libstdc++ preloaded too: python itself does not link it, and ASan's __cxa_throw interceptor
# must find the real one at start-up, or the first C++ exception (a ValueError) aborts
libstdcxx="$(g++ -print-file-name=libstdc++.so)"
# Python leaks by design at exit; a synchronous SIGBUS is left to phirt's own note (the
# truncated-file test expects it); an allocation too big to make returns NULL (numpy's
# MemoryError, which phirt names) as it does without ASan; any report aborts, and the exit status
# says so
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:handle_sigbus=0:strict_init_order=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
started=$SECONDS
stamp() { echo "-- $1 ($((SECONDS - started)) s)"; }

# One build tree for both: the kernel objects are compiled once, at -O1, and linked into the test
# binaries and into the module.
build=build/asan
stamp "configure and build the kernel tests and the extension ($build)"
cmake -S cpp/tests -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPHIRT_OPT_FLAGS=-O1 \
    -DPHIRT_PYTHON_MODULE=ON -DPython_EXECUTABLE="$python" \
    -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" -DCMAKE_CXX_FLAGS="$san" \
    -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$jobs"
stamp "C++ kernel tests under ASan + UBSan"
ctest --test-dir "$build" --output-on-failure

# The package as source plus the sanitized extension, ahead of any installed phirt on the path.
# sitecustomize drops the import redirect of an editable install, which would otherwise win.
site="$build/site"
rm -rf "$site" && mkdir -p "$site"
cp -r python/phirt "$site/phirt"
find "$site/phirt" -name '_kernels*.so' -delete
cp "$build"/_kernels*.so "$site/phirt/"
cat >"$site/sitecustomize.py" <<'PY'
import sys

sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable_")]
PY
export PYTHONPATH="$PWD/$site${PYTHONPATH:+:$PYTHONPATH}"
export LD_PRELOAD="$libasan $libstdcxx"
python - <<'PY'
import phirt, phirt._kernels as K
assert "build/asan/site" in K.__file__, f"the sanitized extension is not the one loaded: {K.__file__}"
print(f"   loaded {K.__file__} (ISAs: {', '.join(K.available_isas())})")
PY

stamp "a short generation on every ISA (sanitized extension)"
smollm2="${PHIRT_SMOLLM2_GGUF:-}"
isas="$(python -c "import phirt._kernels as K; print(' '.join(K.available_isas()))")"
for isa in $isas; do
    PHIRT_ISA="$isa" python - "$smollm2" "$([ "$isa" = "${isas##* }" ] && echo best)" <<'PY'
import sys, phirt
from pathlib import Path
sys.path.insert(0, "tests")
from model_factory import build, llama_spec, phi3_spec, phi2_spec

out = Path("build/asan/models")  # fixture models, written once
out.mkdir(exist_ok=True)
paths = [build(phi3_spec("Q4_0", "gqa"), out), build(phi2_spec("Q5_1", "fused_qkv"), out),
         build(llama_spec("Q8_0", "gqa"), out), build(phi3_spec("F16", "longrope", n_embd=64), out)]
if sys.argv[1] and Path(sys.argv[1]).is_file() and sys.argv[2] == "best":
    paths.append(Path(sys.argv[1]))  # the real model once, on the best ISA (slow under ASan)
prompt = "The quick brown fox jumps over the lazy dog. " * 4  # > 16 tokens: the prefill GEMM
for path in paths:
    for kv in ("f16", "q8_0"):
        try:
            model = phirt.load(path, n_ctx=256, n_threads=2, kv_type=kv)
        except phirt.UnsupportedError:
            continue  # q8_0 needs a head size that is a multiple of 32
        text = model.generate(prompt, max_tokens=8, temperature=0)
        model.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.7, seed=1)
        print(f"   {phirt._kernels.isa():7} {path.name[:28]:28} kv {kv}: {text[:30]!r}")
PY
done

if [ "$quick" = 1 ]; then
    stamp "done (quick)"
    exit 0
fi

stamp "kernel-argument property tests and runtime faults (sanitized extension)"
# -s: a sanitizer report goes to stderr as the process aborts; pytest must not be capturing it
PHIRT_HYPOTHESIS_EXAMPLES=25 python -m pytest -q -s -p no:cacheprovider \
    tests/test_kernel_errors.py tests/test_ops.py tests/test_runtime_faults.py tests/test_errors.py

stamp "fuzz corpus share (sanitized extension, no address-space limit: ASan reserves terabytes)"
PHIRT_FUZZ_CASES="${PHIRT_SANITIZE_FUZZ_CASES:-400}" PHIRT_FUZZ_BOUNDARIES=0 \
    PHIRT_FUZZ_MEM_FACTOR=0 PHIRT_FUZZ_TIMEOUT=120 PHIRT_FUZZ_SEED=7 \
    python -m pytest -q -s -p no:cacheprovider tests/test_fuzz_corpus.py

stamp "sanitizer job passed"

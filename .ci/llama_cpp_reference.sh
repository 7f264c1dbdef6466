#!/usr/bin/env bash
# Install llama-cpp-python 0.3.36, the test and benchmark reference, built for the CPU it runs on,
# and check the result against the CPU:
#   - GGML_NATIVE=ON everywhere, except on CPUs with AMX (amx_int8 in /proc/cpuinfo), where
#     llama.cpp's AMX path segfaults on quantized models (ggml-org/llama.cpp#20824): there the
#     explicit AVX-512/VNNI set with AMX off;
#   - pip's wheel cache ignores CMAKE_ARGS, so a cached wheel built for another CPU (AVX-512 on an
#     AVX2-only machine: illegal instruction) is detected from llama_print_system_info() and
#     replaced by a build with --no-cache-dir.
set -euo pipefail
VERSION=0.3.36

cpu_has() { grep -qw "$1" /proc/cpuinfo; }

if cpu_has amx_int8; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON"
    CMAKE_ARGS+=" -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    why="AMX CPU: explicit AVX-512/VNNI, AMX off"
else
    CMAKE_ARGS="-DGGML_NATIVE=ON"
    why="native build for this CPU"
fi
export CMAKE_ARGS

# Prints why the installed build does not fit this CPU, or nothing when it fits. A wheel that dies
# on import (an illegal instruction) does not fit either.
check_build() {
    local out rc=0
    out=$(python - 2>&1 <<'PY'
import re
import sys

import llama_cpp

info = llama_cpp.llama_print_system_info().decode()
flags = set(open("/proc/cpuinfo").read().split())
problems = []
if "AMX_INT8 = 1" in info:
    problems.append("built with AMX, whose path crashes on quantized models")
if re.search(r"AVX512 = 1", info) and "avx512f" not in flags:
    problems.append("built with AVX-512 on a CPU without it")
if "AVX2 = 1" not in info and "avx2" in flags:
    problems.append("built without AVX2 on an AVX2 CPU (not native)")
if problems:
    sys.exit("; ".join(problems) + ": " + info)
PY
    ) || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "${out:-llama_cpp failed to import (exit status $rc)}" | tail -n 3
    fi
}

installed=$(python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))" 2>/dev/null || true)
if [ "$installed" = "$VERSION" ] && [ -z "$(check_build)" ]; then
    echo "llama-cpp-python $VERSION already installed and built for this CPU"
else
    echo "building llama-cpp-python $VERSION ($why): CMAKE_ARGS=$CMAKE_ARGS"
    python -m pip install -q --force-reinstall --no-deps llama-cpp-python==$VERSION
    python -m pip install -q llama-cpp-python==$VERSION  # its own dependencies
    problem=$(check_build)
    if [ -n "$problem" ]; then
        echo "the wheel pip handed back does not fit this CPU ($problem); rebuilding without the cache"
        python -m pip install -q --no-cache-dir --force-reinstall --no-deps llama-cpp-python==$VERSION
        problem=$(check_build)
        if [ -n "$problem" ]; then
            echo "llama-cpp-python still does not fit this CPU: $problem" >&2
            exit 1
        fi
    fi
fi
python -c "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"

#!/usr/bin/env bash
# C++ kernel tests (cpp/tests): every ISA twin against the scalar spec, built twice:
#   native  (build/native-tests): scalar + avx2/avx512 where this CPU has them;
#   aarch64 (build/neon-tests):   cross-compiled, run under qemu-user, whose default CPU ("max")
#                                 has dotprod, so the neon path is tested.
# Needs cmake >= 3.20, a native g++, and:
#   apt-get install -y g++-aarch64-linux-gnu qemu-user
# Exits non-zero on any build or test failure.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cmake ctest g++ aarch64-linux-gnu-g++ qemu-aarch64; do
    if ! command -v "$tool" >/dev/null; then
        echo "neon_tests.sh: '$tool' not found (apt-get install -y g++-aarch64-linux-gnu qemu-user)" >&2
        exit 1
    fi
done

jobs="$(nproc)"

run_suite() {  # name, build dir, extra cmake args...
    local name="$1" dir="$2"
    shift 2
    echo "-- $name: configure + build ($dir)"
    cmake -S cpp/tests -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; echo "neon_tests.sh: $name configure failed" >&2; exit 1; }
    cmake --build "$dir" -j "$jobs" || { echo "neon_tests.sh: $name build FAILED" >&2; exit 1; }
    echo "-- $name: ctest"
    # -V shows the test's per-section lines and its final "N passed, 0 failed".
    ctest --test-dir "$dir" -V --output-on-failure ||
        { echo "neon_tests.sh: $name kernel tests FAILED" >&2; exit 1; }
}

mkdir -p build
run_suite "native ($(uname -m))" build/native-tests
run_suite "aarch64 neon under qemu" build/neon-tests \
    -DCMAKE_TOOLCHAIN_FILE="$PWD/cpp/tests/aarch64-toolchain.cmake"
echo "neon_tests.sh: native and aarch64 (qemu) kernel tests passed"

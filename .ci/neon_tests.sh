#!/usr/bin/env bash
# C++ kernel tests (cpp/tests): every ISA twin against the scalar spec, built twice:
#   native  (build/native-tests): scalar + avx2/avx512 where this CPU has them;
#   aarch64 (build/neon-tests):   cross-compiled and run under qemu-user with CPU models of each
#                                 NEON level, checking which level dispatch picks on each:
#     cortex-a53, cortex-a57, cortex-a72 (Pi 3, Jetson Nano, Pi 4) -> neon (Armv8.0)
#     cortex-a76, neoverse-n1 (Pi 5 class)                          -> neon_dotprod
#     max (every feature qemu has, i8mm included)                    -> neon_i8mm
#   Each level's tests run under a model that has it (a72: neon; a76: neon, neon_dotprod; max:
#   all three); the other models check the selection only. The objects are checked with objdump:
#   the baseline ones hold no SDOT/SMMLA, and the dotprod/i8mm ones export nothing but their table.
# Needs cmake >= 3.20, a native g++, and:
#   apt-get install -y g++-aarch64-linux-gnu qemu-user
# Exits non-zero on any build or test failure.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cmake ctest g++ aarch64-linux-gnu-g++ aarch64-linux-gnu-objdump qemu-aarch64; do
    if ! command -v "$tool" >/dev/null; then
        echo "neon_tests.sh: '$tool' not found (apt-get install -y g++-aarch64-linux-gnu qemu-user)" >&2
        exit 1
    fi
done

jobs="$(nproc)"

build() {  # name, build dir, extra cmake args...
    local name="$1" dir="$2"
    shift 2
    echo "-- $name: configure + build ($dir)"
    cmake -S cpp/tests -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; echo "neon_tests.sh: $name configure failed" >&2; exit 1; }
    cmake --build "$dir" -j "$jobs" || { echo "neon_tests.sh: $name build FAILED" >&2; exit 1; }
}

mkdir -p build
build "native ($(uname -m))" build/native-tests
echo "-- native: ctest"
# -V shows the test's per-section lines and its final "N passed, 0 failed".
ctest --test-dir build/native-tests -V --output-on-failure ||
    { echo "neon_tests.sh: native kernel tests FAILED" >&2; exit 1; }

dir=build/neon-tests
build "aarch64" "$dir" -DCMAKE_TOOLCHAIN_FILE="$PWD/cpp/tests/aarch64-toolchain.cmake"

echo "-- aarch64: instruction sets of the objects"
objects="$(find "$dir" -name '*.o')"
level_insns='\s(sdot|udot|usdot|sudot|smmla|ummla|usmmla|bfmmla|bfdot)\s'
for o in $objects; do
    case "$o" in
        *dot_neon_dotprod.cpp.o) forbidden='\s(usdot|sudot|smmla|ummla|usmmla|bfmmla|bfdot)\s' ;;
        *dot_neon_i8mm.cpp.o) forbidden='' ;;
        *) forbidden="$level_insns" ;;
    esac
    if [ -n "$forbidden" ] && aarch64-linux-gnu-objdump -d "$o" | grep -qE "$forbidden"; then
        echo "neon_tests.sh: $o holds instructions beyond its level:" >&2
        aarch64-linux-gnu-objdump -d "$o" | grep -E "$forbidden" | head -5 >&2
        exit 1
    fi
    case "$o" in
        *dot_neon_dotprod.cpp.o | *dot_neon_i8mm.cpp.o)
            # only the table function may be global: a shared (weak) symbol could hand this
            # level's code to baseline callers through the linker
            extra="$(aarch64-linux-gnu-nm --defined-only --extern-only "$o" |
                grep -vE ' (_ZN5phirt[0-9]+dot_kernels_neon_(dotprod|i8mm)Ev|DW\.ref\.__gxx_personality_v0)$' ||
                true)"
            if [ -n "$extra" ]; then
                echo "neon_tests.sh: $o exports more than its table:" >&2
                echo "$extra" >&2
                exit 1
            fi
            ;;
    esac
done
echo "baseline objects hold no dotprod/i8mm instruction; level objects export only their table"

qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
expect_isa() {  # cpu, expected active ISA, [PHIRT_ISA]
    local line
    line="$(PHIRT_ISA="${3:-}" QEMU_CPU="$1" "${qemu[@]}" "$dir/test_kernels" --isas)"
    echo "  $1${3:+ (PHIRT_ISA=$3)}: $line"
    if [[ "$line" != *"(active at start: $2)" ]]; then
        echo "neon_tests.sh: $1 should select $2" >&2
        exit 1
    fi
}
echo "-- aarch64: level selected per CPU model"
expect_isa cortex-a53 neon
expect_isa cortex-a57 neon
expect_isa cortex-a72 neon
expect_isa cortex-a76 neon_dotprod
expect_isa neoverse-n1 neon_dotprod
expect_isa max neon_i8mm
expect_isa max neon neon
expect_isa max neon_dotprod neon_dotprod
if out="$(PHIRT_ISA=neon_dotprod QEMU_CPU=cortex-a72 "${qemu[@]}" "$dir/test_kernels" --isas 2>&1)" ||
    [[ "$out" != *"'neon_dotprod' is not supported by this CPU"* ]]; then
    echo "neon_tests.sh: PHIRT_ISA=neon_dotprod on a Cortex-A72 must be refused, got: $out" >&2
    exit 1
fi
echo "  cortex-a72 (PHIRT_ISA=neon_dotprod): refused"

for cpu in cortex-a72 cortex-a76 max; do
    for t in test_kernels test_attn_q8; do
        echo "-- aarch64 under qemu -cpu $cpu: $t"
        QEMU_CPU="$cpu" "${qemu[@]}" "$dir/$t" ||
            { echo "neon_tests.sh: $t FAILED under -cpu $cpu" >&2; exit 1; }
    done
done
echo "neon_tests.sh: native and aarch64 (qemu: cortex-a72, cortex-a76, max) kernel tests passed"

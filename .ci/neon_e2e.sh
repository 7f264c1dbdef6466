#!/usr/bin/env bash
# End to end on aarch64 without ARM hardware: phirt's extension cross-compiled for aarch64, run by
# an aarch64 Python under qemu-user, decodes greedily with a real model (SmolLM2-135M Q4_1,
# $PHIRT_SMOLLM2_GGUF) on one CPU model per NEON level (cortex-a72: neon, cortex-a76: neon_dotprod,
# max: neon_i8mm), and each run must match this machine's own build on the same file as closely as
# phirt's ISAs match each other (.ci/neon_greedy.py).
#
# The aarch64 Python is Debian bookworm's (3.11), not installed: debootstrap only downloads the
# packages (no chroot, no second stage) and the few needed are unpacked into build/aarch64-root,
# which qemu -L serves as the guest's /. numpy and tokenizers are PyPI's aarch64 wheels of the
# versions this machine has, unzipped. That is the cheapest honest route: no emulated apt or pip,
# no system image, and the guest runs the same Python code as the host. Everything lands in build/
# and is reused if present; a fresh clone (CI) builds it from scratch (~1.5 min of downloads and
# unpacking, ~2 min of compiling on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

model="${PHIRT_SMOLLM2_GGUF:?set PHIRT_SMOLLM2_GGUF (python -m phirt fetch smollm2)}"
pyver="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$pyver" != "3.11" ]; then
    echo "neon_e2e.sh: the aarch64 Python is Debian bookworm's 3.11; this Python is $pyver" >&2
    exit 1
fi
root="$PWD/build/aarch64-root"
site="$PWD/build/aarch64-site"
ext="$PWD/build/aarch64-ext"
pkg="$PWD/build/aarch64-py"
out="$PWD/build/aarch64-e2e"

echo "-- aarch64 Python 3.11 (Debian packages, unpacked) + numpy/tokenizers wheels"
if [ ! -x "$root/usr/bin/python3.11" ]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    rm -rf "$root.debs" "$root"
    debootstrap --arch=arm64 --variant=minbase --download-only \
        --include=python3.11-minimal,libpython3.11-stdlib,libpython3.11-dev bookworm "$root.debs" \
        >"$root.debootstrap.log" 2>&1 ||
        { tail -20 "$root.debootstrap.log"; echo "neon_e2e.sh: debootstrap failed" >&2; exit 1; }
    mkdir -p "$root"
    for deb in "$root.debs"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
    rm -rf "$root.debs"
fi
if [ ! -d "$site/numpy" ] || [ ! -d "$site/tokenizers" ]; then
    rm -rf "$site" "$site.wheels"
    python -m pip download -q --only-binary=:all: --no-deps --python-version 3.11 \
        --implementation cp --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        -d "$site.wheels" \
        "numpy==$(python -c 'import numpy; print(numpy.__version__)')" \
        "tokenizers==$(python -c 'import tokenizers; print(tokenizers.__version__)')"
    for whl in "$site.wheels"/*.whl; do python -m zipfile -e "$whl" "$site"; done
    rm -rf "$site.wheels"
fi

echo "-- phirt's extension for aarch64"
if [ ! -f "$ext/CMakeCache.txt" ]; then
    cmake -S . -B "$ext" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_TOOLCHAIN_FILE="$PWD/cpp/tests/aarch64-toolchain.cmake" \
        -DSKBUILD_PROJECT_NAME=phirt -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" \
        -DPython_EXECUTABLE="$(command -v python)" -DPython_INCLUDE_DIR="$root/usr/include/python3.11" \
        "-DCMAKE_CXX_FLAGS=-idirafter $root/usr/include" >"$ext.configure.log" 2>&1 ||
        { cat "$ext.configure.log"; echo "neon_e2e.sh: configure failed" >&2; exit 1; }
fi
cmake --build "$ext" -j "$(nproc)" >"$ext.build.log" 2>&1 ||
    { tail -30 "$ext.build.log"; echo "neon_e2e.sh: build failed" >&2; exit 1; }
# phirt's Python sources beside the aarch64 module (pybind11 named it for this machine's Python)
rm -rf "$pkg"
mkdir -p "$pkg"
cp -r python/phirt "$pkg/"
find "$pkg" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
cp "$ext"/_kernels*.so "$pkg/phirt/_kernels.cpython-311-aarch64-linux-gnu.so"

mkdir -p "$out"
echo "-- greedy decoding on this machine ($(python -c 'from phirt import _kernels as K; print(K.isa())'))"
python .ci/neon_greedy.py run "$model" "$out/host.npz"
for cpu in cortex-a72:neon cortex-a76:neon_dotprod max:neon_i8mm; do
    model_cpu="${cpu%%:*}" level="${cpu##*:}"
    echo "-- greedy decoding on aarch64 under qemu -cpu $model_cpu (expects $level)"
    QEMU_CPU="$model_cpu" PYTHONPATH="$pkg:$site" PYTHONNOUSERSITE=1 \
        qemu-aarch64 -L "$root" "$root/usr/bin/python3.11" -S .ci/neon_greedy.py run "$model" \
        "$out/$level.npz"
    python - "$out/$level.npz" "$level" <<'PY'
import sys

import numpy as np

isa = str(np.load(sys.argv[1])["isa"])
assert isa == sys.argv[2], f"qemu's CPU model selected {isa}, not {sys.argv[2]}"
PY
    python .ci/neon_greedy.py compare "$out/host.npz" "$out/$level.npz"
done
echo "neon_e2e.sh: aarch64 greedy decoding (neon, neon_dotprod, neon_i8mm) matches this machine's"

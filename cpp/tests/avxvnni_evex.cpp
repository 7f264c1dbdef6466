// The AVX-VNNI kernel table (x86/dot_avxvnni.cpp's source: table_avx2.h with Int8Vnni) compiled for
// AVX512-VL + VNNI instead of AVX-VNNI, so int8_avx2.h's VPDPBUSD/VPDPWSSD are the EVEX forms of
// the same ymm operations. Only in the C++ test binary: it runs the AVX-VNNI kernels' logic on
// AVX-512 VNNI CPUs (Ice Lake, Zen 4), which lack the VEX encoding. Not the same machine code:
// the compiler may also pick EVEX encodings and registers elsewhere in this file.
#include "../x86/table_avx2.h"

namespace phirt {

const DotKernels *dot_kernels_avxvnni_evex() {
    static const DotKernels table = avx2_family_table<Int8Vnni>("avxvnni-evex");
    return &table;
}

}  // namespace phirt

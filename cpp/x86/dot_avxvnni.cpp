// AVX-VNNI twin of dot_ref.cpp (Alder Lake and later, Zen 5): the AVX2 family's kernels with VEX
// VPDPBUSD/VPDPWSSD summing the byte products (int8_avx2.h), the rest as dot_avx2.cpp.
//
// Compiled with -mavx2 -mfma -mf16c -mavxvnni. Everything but dot_kernels_avxvnni() has internal
// linkage, so no AVX-VNNI code can be picked by the linker for a baseline caller.
#include "table_avx2.h"

namespace phirt {

const DotKernels *dot_kernels_avxvnni() {
    static const DotKernels table = avx2_family_table<Int8Vnni>("avxvnni");
    return &table;
}

}  // namespace phirt

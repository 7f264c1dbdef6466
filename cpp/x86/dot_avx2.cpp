// AVX2 + FMA + F16C twin of dot_ref.cpp: same activation bytes, dot products that differ from the
// scalar spec only in float summation order. The kernels are the AVX2 family's (gemv_avx2.h,
// float_avx2.h) with VPMADDUBSW/VPMADDWD for the byte products.
//
// Compiled with -mavx2 -mfma -mf16c. Everything but dot_kernels_avx2() has internal linkage, so
// no AVX2 code can be picked by the linker for a baseline caller.
#include "table_avx2.h"

namespace phirt {

const DotKernels *dot_kernels_avx2() {
    static const DotKernels table = avx2_family_table<Int8Maddubs>("avx2");
    return &table;
}

}  // namespace phirt

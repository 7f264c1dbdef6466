// NEON with the dot product extension (table "neon_dotprod": Cortex-A55/A76/A78 and later, i.e.
// Raspberry Pi 5 and Jetson Orin; HWCAP ASIMDDP): the baseline table with the quantized dots of
// neon_dots.h, the packed GEMM of neon_gemm.h and the interleaved Q4_0 kernel rebuilt on SDOT.
// Compiled with -march=armv8.2-a+dotprod (sources.cmake); everything but dot_kernels_neon_dotprod()
// has internal linkage.
#include "../dot.h"
#include "neon_dots.h"
#include "neon_gemm.h"
#include "q4x16_neon.h"

namespace phirt {

const DotKernels *dot_kernels_neon_dotprod() {
    static const DotKernels table = [] {
        DotKernels t = *dot_kernels_neon();
        t.isa = "neon_dotprod";
        set_quant_kernels(t, pack_panel_neon, gemm_panel_neon);
        t.q4_0x16 = q4x16_gemm_neon;
        return t;
    }();
    return &table;
}

}  // namespace phirt

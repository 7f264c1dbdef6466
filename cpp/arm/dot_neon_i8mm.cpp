// NEON with the int8 matrix multiply extension (table "neon_i8mm": Cortex-A510/A710/X2, Neoverse
// V1/N2 and later, Apple M2+ under Linux; HWCAP2 I8MM): the dotprod table with the prefill GEMM of
// neon_gemm.h rebuilt on USMMLA (2 rows × 2 activation rows × 8 columns per instruction). Decode's
// one activation row would leave half of every USMMLA unused, so the GEMV stays on SDOT. Compiled
// with -march=armv8.2-a+dotprod+i8mm (sources.cmake).
#include "../dot.h"
#include "neon_gemm.h"

namespace phirt {

const DotKernels *dot_kernels_neon_i8mm() {
    static const DotKernels table = [] {
        DotKernels t = *dot_kernels_neon_dotprod();
        t.isa = "neon_i8mm";
        for (const WeightFormat &f : kWeightFormats) {
            TypeKernels &k = t.*f.kernels;
            if (k.gemm_panel != nullptr)
                k.pack_panel = pack_panel_neon, k.gemm_panel = gemm_panel_neon;
        }
        return t;
    }();
    return &table;
}

}  // namespace phirt

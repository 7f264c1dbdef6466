// avx512 twin of dot_ref.cpp. Compiled with per-file ISA flags; shares no inline code with
// baseline files except formats.h's static inline helpers.
#include "../dot.h"

namespace phirt {

const DotKernels *dot_kernels_avx512() {
    static const DotKernels table = [] {
        DotKernels t = dot_kernels_scalar();
        t.isa = "avx512";
        return t;
    }();
    return &table;
}

}  // namespace phirt

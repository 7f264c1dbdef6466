// NEON (+dotprod) twin of dot_ref.cpp.
#include "../dot.h"

namespace phirt {

const DotKernels *dot_kernels_neon() {
    static const DotKernels table = [] {
        DotKernels t = dot_kernels_scalar();
        t.isa = "neon";
        return t;
    }();
    return &table;
}

}  // namespace phirt

// Run-time ISA selection: detect the CPU once, pick the best compiled DotKernels table,
// let PHIRT_ISA (or set_isa) pin a path.
#pragma once

#include <string>
#include <vector>

#include "dot.h"

namespace phirt {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
    bool avxvnni = false;
    bool neon = false, dotprod = false, i8mm = false;
};

const CpuFeatures &cpu_features();

// ISA names this build has compiled in and this CPU can run, scalar first, best last.
std::vector<std::string> available_isas();

// The active kernel table (set at import from PHIRT_ISA or the best available).
const DotKernels &active_kernels();

// Pin a path; throws std::invalid_argument naming the ISA when it is unknown or unsupported here.
void set_isa(const std::string &name);

// Make `table` active as it is, with no CPU check: for the C++ tests of a table no name selects
// (the caller checks the CPU runs it).
void set_kernels(const DotKernels &table);

}  // namespace phirt

// Kernel-table entries built from smaller entries of the same table: a multi-row dot that runs the
// one-row dot per row, and the f16 attention loops over the f16 dot and axpy. The scalar table is
// made of them; an ISA that overrides a one-row dot without a multi-row kernel of its own pairs it
// with rows_by_dot<its dot>, so the rows stay bit-identical to its one-row dot. Also the dispatch
// of an ISA's C-activation kernels as one VecDotActsFn.
//
// Included by baseline and SIMD translation units: everything is in an anonymous namespace, so
// each object file compiles its own copy with its own flags and none can reach another's callers.
#pragma once

#include "dot.h"

namespace phirt {
namespace {

// y[r] = Dot(row r) for r < nr.
template <VecDotFn Dot>
void rows_by_dot(int64_t n, const void *w, int64_t row_bytes, int nr, const void *x, float *y) {
    const auto *p = static_cast<const uint8_t *>(w);
    for (int r = 0; r < nr; ++r) y[r] = Dot(n, p + r * row_bytes, x);
}

// The same, fetching each next row (the call's next, then the one after its last) while the dot
// runs: K-quant one-row dots spend long enough per byte that the hardware prefetcher falls behind
// in decode (cold Q4_K GEMV went from ~35 % to ~54 % of read bandwidth on AVX2 with it, while it
// slowed the cheaper Q4_0/Q8_0 dots). Prefetches do not fault, past the matrix's end included.
template <VecDotFn Dot>
void rows_by_dot_prefetch(int64_t n, const void *w, int64_t row_bytes, int nr, const void *x,
                          float *y) {
    const auto *p = static_cast<const uint8_t *>(w);
    for (int r = 0; r < nr; ++r) {
        const uint8_t *next = p + (r + 1) * row_bytes;
        for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(next + off, 0, 3);
        y[r] = Dot(n, p + r * row_bytes, x);
    }
}

// A VecDotActsFn (nc = 1..kMaxDotActs) from an ISA's C-activation kernel: Acts<C>::run(n, w, x,
// x_row_bytes, y, ldy) for each C, dispatched on nc.
template <template <int> class Acts>
void dot_acts(int64_t n, const void *vw, const void *vx, int64_t x_row_bytes, int nc, float *y,
              int64_t ldy) {
    using Fn = void (*)(int64_t, const uint8_t *, const uint8_t *, int64_t, float *, int64_t);
    static_assert(kMaxDotActs == 8, "one entry per activation count");
    static constexpr Fn kByCount[kMaxDotActs] = {Acts<1>::run, Acts<2>::run, Acts<3>::run,
                                                 Acts<4>::run, Acts<5>::run, Acts<6>::run,
                                                 Acts<7>::run, Acts<8>::run};
    kByCount[nc - 1](n, static_cast<const uint8_t *>(vw), static_cast<const uint8_t *>(vx),
                     x_row_bytes, y, ldy);
}

// scores[j] = F16Dot(k[j], q) · scale.
template <VecDotFn F16Dot>
void attn_scores_by_dot(int64_t hd, int64_t n, const ggml_half *k, const ggml_half *q, float scale,
                        float *scores) {
    for (int64_t j = 0; j < n; ++j) scores[j] = F16Dot(hd, k + j * hd, q) * scale;
}

// o += p[j]·v[j] for j in order, one axpy per row.
template <AxpyF16Fn Axpy>
void attn_values_by_axpy(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v, float *o) {
    for (int64_t j = 0; j < n; ++j) Axpy(hd, fp16_to_fp32(p[j]), v + j * hd, o);
}

}  // namespace
}  // namespace phirt

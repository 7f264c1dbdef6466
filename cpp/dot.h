// The per-ISA kernel table: activation quantizers and dot products of one weight row with one
// activation row. dot_ref.cpp is the scalar spec; x86/ and arm/ hold twins with the same semantics
// (integer block sums are exact, so twins differ only in float summation order).
#pragma once

#include <cstdint>

#include "attn_q8.h"
#include "formats.h"
#include "gemm.h"

namespace phirt {

// Dot product of n elements: weight row `w` (its own block format) with activation row `x`
// (already converted to the weight type's activation format).
using VecDotFn = float (*)(int64_t n, const void *w, const void *x);
// Dots of nr consecutive weight rows (row w + r·row_bytes, 1 <= nr <= kMaxDotRows) with one
// activation row: y[r] = the same ISA's VecDotFn on that row, bit for bit. Decode's GEMV runs on
// these: the activation side of the work (loads, scales, offset sums) is shared by the rows.
constexpr int kMaxDotRows = 4;
using VecDotRowsFn = void (*)(int64_t n, const void *w, int64_t row_bytes, int nr, const void *x,
                              float *y);
// Convert n floats to an activation format (n a multiple of its block size).
using ConvertFn = void (*)(const float *x, void *y, int64_t n);
// Dot of one repacked ONNX MatMulNBits 4-bit row (layout in nbits.h) with kq/32 Q8_0 blocks.
struct NBitsShape;
using NBitsDotFn = float (*)(const NBitsShape &s, const uint8_t *row, const block_q8_0 *x);
// y[i] += a * x[i] for an f16 row (attention's V accumulation).
using AxpyF16Fn = void (*)(int64_t n, float a, const ggml_half *x, float *y);
// Attention over n cached f16 rows of hd elements (rows hd apart):
// scores[j] = scale · Σ_d k[j][d]·q[d], with q holding f16-representable values;
using AttnScoresFn = void (*)(int64_t hd, int64_t n, const ggml_half *k, const float *q,
                              float scale, float *scores);
// o[d] += p[j]·v[j][d] for j = 0..n-1 in order with f16 weights p, each product rounded before
// its add (as axpy_f16).
using AttnValuesFn = void (*)(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v,
                              float *o);
// s[j] = exp(s[j] - max) for j < n; returns Σ s[j] (softmax numerators and denominator).
using ExpSumFn = double (*)(int64_t n, float max, float *s);

struct DotKernels {
    const char *isa;
    ConvertFn to_q8_0;  // round ties to even, see quantize_row_q8_0_act
    ConvertFn to_q8_1;
    ConvertFn to_q8_K;
    ConvertFn to_f16;
    ConvertFn to_bf16;
    VecDotFn q4_0_q8_0;
    VecDotFn q4_1_q8_1;
    VecDotFn q5_0_q8_0;
    VecDotFn q5_1_q8_1;
    VecDotFn q8_0_q8_0;
    VecDotFn q4_K_q8_K;
    VecDotFn q5_K_q8_K;
    VecDotFn q6_K_q8_K;
    VecDotFn f16_f16;
    VecDotFn bf16_bf16;
    VecDotFn f32_f32;
    NBitsDotFn nbits4_q8_0;
    AxpyF16Fn axpy_f16;
    // Packed GEMM for prefill (gemm.h); nullptr where the one-row dots are faster (no VNNI).
    PackPanelFn pack_panel;
    GemmPanelFn gemm_panel;
    // Whole-row attention loops; nullptr: ops.cpp loops over f16_f16 and axpy_f16 per key.
    AttnScoresFn attn_scores;
    AttnValuesFn attn_values;
    ExpSumFn exp_sum;  // nullptr: std::exp per element
    // Attention loops over a Q8_0 KV cache (attn_q8.h); nullptr: the scalar table's.
    AttnQ8ScoresFn attn_q8_scores;
    AttnQ8ValuesFn attn_q8_values;
    // Multi-row dots; nullptr: matmul runs the one-row dot per row.
    VecDotRowsFn q4_0_q8_0_rows;
    VecDotRowsFn q4_K_q8_K_rows;
    VecDotRowsFn q5_K_q8_K_rows;
    VecDotRowsFn q6_K_q8_K_rows;
    VecDotRowsFn q4_1_q8_1_rows;
    VecDotRowsFn q5_0_q8_0_rows;
    VecDotRowsFn q5_1_q8_1_rows;
    VecDotRowsFn q8_0_q8_0_rows;
};

// The scalar reference table (always available).
const DotKernels &dot_kernels_scalar();

// ISA tables; each returns nullptr when that path was not compiled into this build.
// They start from the scalar table and override what they implement.
const DotKernels *dot_kernels_avx2();
const DotKernels *dot_kernels_avx512();
const DotKernels *dot_kernels_neon();

}  // namespace phirt

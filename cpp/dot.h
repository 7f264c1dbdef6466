// The per-ISA kernel table: activation quantizers, and per weight type its dot products and packed
// GEMM. dot_ref.cpp is the scalar spec; x86/ and arm/ hold twins with the same semantics (integer
// block sums are exact, so twins differ only in float summation order).
//
// The scalar table is complete: every entry is set. An ISA table is built by copying it and
// overriding, by name, what the ISA implements (see dot_kernels_avx512() for the pattern); an
// entry it does not override runs the scalar spec. The only entries that may be nullptr are the
// ones marked optional below.
#pragma once

#include <cstdint>

#include "attn_q8.h"
#include "formats.h"
#include "gemm.h"
#include "nbits_kernels.h"
#include "q4x16.h"

namespace phirt {

// Dot product of n elements: weight row `w` (its own block format) with activation row `x`
// (already converted to the weight type's activation format).
using VecDotFn = float (*)(int64_t n, const void *w, const void *x);
// Dots of nr consecutive weight rows (row w + r·row_bytes, 1 <= nr <= kMaxDotRows) with one
// activation row: y[r] = the same table's VecDotFn on that row, bit for bit. Matmul runs on
// these: the activation side of the work (loads, scales, offset sums) is shared by the rows.
constexpr int kMaxDotRows = 4;
using VecDotRowsFn = void (*)(int64_t n, const void *w, int64_t row_bytes, int nr, const void *x,
                              float *y);
// Dots of one weight row with nc activation rows (x + c·x_row_bytes, 1 <= nc <= kMaxDotActs):
// y[c·ldy] = the same table's VecDotFn on that activation, bit for bit. Batched decode runs on
// these where a type decodes its weights at a cost (K-quants): each block is decoded once for all
// the batch's rows instead of once per row.
constexpr int kMaxDotActs = 8;
using VecDotActsFn = void (*)(int64_t n, const void *w, const void *x, int64_t x_row_bytes, int nc,
                              float *y, int64_t ldy);
// Convert n floats to an activation format (n a multiple of its block size).
using ConvertFn = void (*)(const float *x, void *y, int64_t n);
// y[i] += a * x[i] for an f16 row (attention's V accumulation), each product rounded before its
// add.
using AxpyF16Fn = void (*)(int64_t n, float a, const ggml_half *x, float *y);
// Attention over n cached f16 rows of hd elements (rows hd apart) and an f16 query:
// scores[j] = scale · (the table's f16 dot of k[j] and q), up to float summation order.
using AttnScoresFn = void (*)(int64_t hd, int64_t n, const ggml_half *k, const ggml_half *q,
                              float scale, float *scores);
// o[d] += p[j]·v[j][d] for j = 0..n-1 in order with f16 weights p, each product rounded before
// its add (as axpy_f16).
using AttnValuesFn = void (*)(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v,
                              float *o);
// s[j] = exp(s[j] - max) for j < n; returns Σ s[j] (softmax numerators and denominator).
using ExpSumFn = double (*)(int64_t n, float max, float *s);

// The kernels of one weight type.
struct TypeKernels {
    VecDotFn dot;
    VecDotRowsFn dot_rows;  // its multi-row twin
    // Optional: packed GEMM for prefill (gemm.h), both or neither; nullptr: this ISA runs prefill
    // on dot_rows for this type (no packed form, or the dots are faster, e.g. scalar).
    PackPanelFn pack_panel = nullptr;
    GemmPanelFn gemm_panel = nullptr;
    // Optional: its activation-side twin; nullptr: several activation rows run dot_rows each.
    VecDotActsFn dot_acts = nullptr;
};

struct DotKernels {
    const char *isa;
    // Activation converters (the bytes are the scalar spec's on every ISA).
    ConvertFn to_q8_0;  // round ties to even, see quantize_row_q8_0_act
    ConvertFn to_q8_1;
    ConvertFn to_q8_K;
    ConvertFn to_f16;
    ConvertFn to_bf16;
    // Weight types (kWeightFormats lists them with their activation formats).
    TypeKernels q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K, f16, bf16, f32;
    NBitsKernels nbits;  // ONNX MatMulNBits (nbits_kernels.h)
    // Interleaved Q4_0 panels (q4x16.h); nullptr: the ISA has no twin, and phirt keeps the GGUF
    // layout (the spec would be slower than the GEMV).
    Q4x16GemmFn q4_0x16 = nullptr;
    // The same for calls of many activation rows (kMinManyRows and more: prefill), where this CPU
    // has a faster unit for them (AMX); nullptr: q4_0x16 serves every call.
    Q4x16GemmFn q4_0x16_many = nullptr;
    // Attention over an f16 KV cache.
    AxpyF16Fn axpy_f16;
    AttnScoresFn attn_scores;
    AttnValuesFn attn_values;
    ExpSumFn exp_sum;
    // Attention over a Q8_0 KV cache (attn_q8.h).
    AttnQ8ScoresFn attn_q8_scores;
    AttnQ8ValuesFn attn_q8_values;
};

// An activation format: its converter in the table (nullptr: f32 rows are used as they are) and
// its block shape.
struct ActFormat {
    ConvertFn DotKernels::*convert;
    int block;  // elements per block
    int bytes;  // bytes per block
};

// What matmul runs for each GGML weight type: its kernels in the table and the activation format
// its dots take (a fact of the type, the same on every ISA). A new weight type is one line here
// and one TypeKernels member above.
struct WeightFormat {
    GgmlType type;
    TypeKernels DotKernels::*kernels;
    ActFormat act;
};

constexpr ActFormat kActQ8_0{&DotKernels::to_q8_0, QK8_0, sizeof(block_q8_0)};
constexpr ActFormat kActQ8_1{&DotKernels::to_q8_1, QK8_1, sizeof(block_q8_1)};
constexpr ActFormat kActQ8_K{&DotKernels::to_q8_K, QK_K, sizeof(block_q8_K)};
constexpr ActFormat kActF16{&DotKernels::to_f16, 1, sizeof(ggml_half)};
constexpr ActFormat kActBF16{&DotKernels::to_bf16, 1, sizeof(ggml_bf16)};
constexpr ActFormat kActF32{nullptr, 1, sizeof(float)};

constexpr WeightFormat kWeightFormats[] = {
    {GgmlType::Q4_0, &DotKernels::q4_0, kActQ8_0}, {GgmlType::Q4_1, &DotKernels::q4_1, kActQ8_1},
    {GgmlType::Q5_0, &DotKernels::q5_0, kActQ8_0}, {GgmlType::Q5_1, &DotKernels::q5_1, kActQ8_1},
    {GgmlType::Q8_0, &DotKernels::q8_0, kActQ8_0}, {GgmlType::Q4_K, &DotKernels::q4_K, kActQ8_K},
    {GgmlType::Q5_K, &DotKernels::q5_K, kActQ8_K}, {GgmlType::Q6_K, &DotKernels::q6_K, kActQ8_K},
    {GgmlType::F16, &DotKernels::f16, kActF16},    {GgmlType::BF16, &DotKernels::bf16, kActBF16},
    {GgmlType::F32, &DotKernels::f32, kActF32},
};

// The weight format of a GGML type id; nullptr when it is not a matmul weight type.
static inline const WeightFormat *weight_format(int type) {
    for (const WeightFormat &f : kWeightFormats)
        if ((int)f.type == type) return &f;
    return nullptr;
}

// The scalar reference table (always available, every entry set).
const DotKernels &dot_kernels_scalar();

// ISA tables; each returns nullptr when that path was not compiled into this build. Each runs its
// ISA's instructions (building the table is compiled with that ISA's flags): call one only on a
// CPU that has the ISA (dispatch.cpp checks first).
const DotKernels *dot_kernels_avx2();
const DotKernels *dot_kernels_avxvnni();
const DotKernels *dot_kernels_avx512();
// NEON levels: Armv8.0 (every AArch64 CPU), + dotprod (SDOT), + i8mm (USMMLA prefill GEMM).
const DotKernels *dot_kernels_neon();
const DotKernels *dot_kernels_neon_dotprod();
const DotKernels *dot_kernels_neon_i8mm();

}  // namespace phirt

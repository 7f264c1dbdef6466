// The kernel table of the AVX2 family: AVX2 and AVX-VNNI build it from the same kernel source,
// each with its int8 policy (int8_avx2.h). Only included by those ISA files (anonymous namespace).
#pragma once

#include "../dot_loops.h"
#include "../nbits_kernels.h"
#include "float_avx2.h"
#include "gemm_avx2.h"
#include "gemv_avx2.h"
#include "q4x16_avx2.h"

namespace phirt {
namespace {

template <class I8>
DotKernels avx2_family_table(const char *isa) {
    DotKernels t = dot_kernels_scalar();
    t.isa = isa;
    t.to_q8_0 = to_q8_0;
    t.to_q8_1 = to_q8_1;
    t.to_q8_K = to_q8_K;
    t.to_f16 = to_f16;
    t.to_bf16 = to_bf16;
    t.q4_0 = quant_kernels<LegacyRows<I8, Q4_0A>, block_q4_0, QK4_0>();
    t.q4_1 = quant_kernels<LegacyRows<I8, Q4_1A>, block_q4_1, QK4_1>();
    t.q5_0 = quant_kernels<LegacyRows<I8, Q5_0A>, block_q5_0, QK5_0>();
    t.q5_1 = quant_kernels<LegacyRows<I8, Q5_1A>, block_q5_1, QK5_1>();
    t.q8_0 = quant_kernels<LegacyRows<I8, Q8_0A>, block_q8_0, QK8_0>();
    t.q4_K = quant_kernels<Q45KRows<I8, block_q4_K>, block_q4_K, QK_K>();
    t.q5_K = quant_kernels<Q45KRows<I8, block_q5_K>, block_q5_K, QK_K>();
    t.q6_K = quant_kernels<Q6KRows<I8>, block_q6_K, QK_K>();
    t.q4_K.dot_acts = dot_acts<Q45KActs<I8, block_q4_K>::template Of>;
    t.q5_K.dot_acts = dot_acts<Q45KActs<I8, block_q5_K>::template Of>;
    t.q6_K.dot_acts = dot_acts<Q6KActs<I8>::template Of>;
    // Packed GEMM for prefill, one micro-kernel per type.
    const PackPanelFn pack = pack_panel_avx2;
    t.q4_0.pack_panel = t.q4_1.pack_panel = t.q5_0.pack_panel = t.q5_1.pack_panel = pack;
    t.q8_0.pack_panel = t.q4_K.pack_panel = t.q5_K.pack_panel = t.q6_K.pack_panel = pack;
    t.q4_0.gemm_panel = gemm_panel_avx2<I8, PanelQ4_0>;
    t.q4_1.gemm_panel = gemm_panel_avx2<I8, PanelQ4_1>;
    t.q5_0.gemm_panel = gemm_panel_avx2<I8, PanelQ5_0>;
    t.q5_1.gemm_panel = gemm_panel_avx2<I8, PanelQ5_1>;
    t.q8_0.gemm_panel = gemm_panel_avx2<I8, PanelQ8_0>;
    t.q4_K.gemm_panel = gemm_panel_avx2<I8, PanelQ4_K>;
    t.q5_K.gemm_panel = gemm_panel_avx2<I8, PanelQ5_K>;
    t.q6_K.gemm_panel = gemm_panel_avx2<I8, PanelQ6_K>;
    t.f16 = {dot_f16_f16, rows_by_dot<dot_f16_f16>};
    t.bf16 = {dot_bf16_bf16, rows_by_dot<dot_bf16_bf16>};
    t.f32 = {dot_f32_f32, rows_by_dot<dot_f32_f32>};
    t.nbits = nbits_kernels_avx2();
    t.q4_0x16 = q4x16_gemm_avx2<I8>;
    t.axpy_f16 = axpy_f16;
    t.attn_scores = attn_scores;
    t.attn_values = attn_values;
    t.exp_sum = exp_sum;
    t.attn_q8_scores = attn_q8_scores_avx2;
    t.attn_q8_values = attn_q8_values_avx2;
    return t;
}

}  // namespace
}  // namespace phirt

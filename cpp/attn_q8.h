// Attention over a Q8_0 KV cache: each cached row of head_dim values is head_dim/32 Q8_0 blocks,
// 34 bytes per 32 values instead of 64, so decoding at long context reads half the bytes. The
// numerics are llama.cpp's flash-attention path for a q8_0 cache (type_k = type_v = q8_0): q is
// quantized to Q8_0 like the activations, each score is an integer block dot, and values are
// accumulated in f32 with unnormalized softmax weights, divided by their sum at the end.
#pragma once

#include <cstdint>

#include "formats.h"

namespace phirt {

// scores[j] = scale · Σ_b (d_k[j][b] · d_q[b]) · Σ_i k[j][b][i] · q[b][i], blocks b in order, for
// n rows of k (hd / 32 blocks each, consecutive).
using AttnQ8ScoresFn = void (*)(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                                float scale, float *scores);
// o[d] = fma(v[j][d], d_v[j][b] · p[j], o[d]) for j = 0..n-1 in order (one rounded product of the
// block scale and the weight, then a fused multiply-add: every ISA gives the same bits).
using AttnQ8ValuesFn = void (*)(int64_t hd, int64_t n, const float *p, const block_q8_0 *v,
                                float *o);

// The spec (attn_q8_ref.cpp, in the scalar kernel table), the AVX2 twin (x86/attn_q8_avx2.cpp, in
// the avx2 and avxvnni tables), the AVX-512 VNNI twin (x86/attn_q8_avx512.cpp, in the avx512
// table) and the NEON twin (arm/attn_q8_neon.cpp, Armv8.0 instructions, in every NEON level's
// table); the twins are reached only through their tables (see dot.h).
void attn_q8_scores_ref(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                        float scale, float *scores);
void attn_q8_values_ref(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o);
void attn_q8_scores_avx2(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                         float scale, float *scores);
void attn_q8_values_avx2(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o);
void attn_q8_scores_avx512(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                           float scale, float *scores);
void attn_q8_values_avx512(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o);
void attn_q8_scores_neon(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                         float scale, float *scores);
void attn_q8_values_neon(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o);

}  // namespace phirt

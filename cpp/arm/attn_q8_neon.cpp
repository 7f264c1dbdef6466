// NEON twin of attn_q8_ref.cpp for every NEON level (Armv8.0 instructions only), bit-identical to
// it: block sums are exact integers and the float operations are the reference's, in its order
// (built with -ffp-contract=off: GCC's NEON add and multiply intrinsics are plain vector operators
// it would otherwise fuse).
#include <arm_neon.h>

#include <cstring>

#include "../attn_q8.h"

namespace phirt {

namespace {

float f16_to_f32(ggml_half h) {
    __fp16 v;
    std::memcpy(&v, &h, sizeof(v));
    return (float)v;
}

// Σ of one block's 32 products in four lanes: two products per 16-bit lane (|k|, |q| <= 128).
int32x4_t block_lanes(const int8_t *k, const int8_t *q) {
    const int8x16_t k0 = vld1q_s8(k), k1 = vld1q_s8(k + 16);
    const int8x16_t q0 = vld1q_s8(q), q1 = vld1q_s8(q + 16);
    const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(k0), vget_low_s8(q0)), k0, q0);
    const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(k1), vget_low_s8(q1)), k1, q1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

}  // namespace

void attn_q8_scores_neon(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                         float scale, float *scores) {
    const int64_t nb = hd / QK8_0;
    int64_t j = 0;
    // 4 keys at a time: lane r belongs to key j + r, whose float sum runs over its blocks in
    // order, as the reference's does.
    for (; j + 4 <= n; j += 4) {
        const block_q8_0 *rows = k + j * nb;
        float32x4_t s = vdupq_n_f32(0.0f);
        for (int64_t b = 0; b < nb; ++b) {
            const int32x4_t l0 = block_lanes(rows[b].qs, q[b].qs);
            const int32x4_t l1 = block_lanes(rows[nb + b].qs, q[b].qs);
            const int32x4_t l2 = block_lanes(rows[2 * nb + b].qs, q[b].qs);
            const int32x4_t l3 = block_lanes(rows[3 * nb + b].qs, q[b].qs);
            const int32x4_t sums = vpaddq_s32(vpaddq_s32(l0, l1), vpaddq_s32(l2, l3));
            uint16x4_t h = vdup_n_u16(0);
            h = vld1_lane_u16(&rows[b].d, h, 0);
            h = vld1_lane_u16(&rows[nb + b].d, h, 1);
            h = vld1_lane_u16(&rows[2 * nb + b].d, h, 2);
            h = vld1_lane_u16(&rows[3 * nb + b].d, h, 3);
            const float32x4_t d =
                vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(h)), f16_to_f32(q[b].d));
            s = vaddq_f32(s, vmulq_f32(vcvtq_f32_s32(sums), d));
        }
        vst1q_f32(scores + j, vmulq_n_f32(s, scale));
    }
    for (; j < n; ++j) {
        const block_q8_0 *row = k + j * nb;
        float s = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            const float d = f16_to_f32(row[b].d) * f16_to_f32(q[b].d);
            s += (float)vaddvq_s32(block_lanes(row[b].qs, q[b].qs)) * d;
        }
        scores[j] = s * scale;
    }
}

namespace {

// o = fma(v_j, d · p_j, o) for one block column of 32 outputs held in eight registers.
inline void add_block(const block_q8_0 &blk, float pj, float32x4_t o[8]) {
    const float w = f16_to_f32(blk.d) * pj;
    const int8x16_t v0 = vld1q_s8(blk.qs), v1 = vld1q_s8(blk.qs + 16);
    const int16x8_t h[4] = {vmovl_s8(vget_low_s8(v0)), vmovl_high_s8(v0), vmovl_s8(vget_low_s8(v1)),
                            vmovl_high_s8(v1)};
    for (int i = 0; i < 4; ++i) {
        o[2 * i] = vfmaq_n_f32(o[2 * i], vcvtq_f32_s32(vmovl_s16(vget_low_s16(h[i]))), w);
        o[2 * i + 1] = vfmaq_n_f32(o[2 * i + 1], vcvtq_f32_s32(vmovl_high_s16(h[i])), w);
    }
}

// NB block columns (NB <= 3: 24 accumulators) in registers while all n rows pass, read in order.
template <int NB>
void values_cols(int64_t nb, int64_t n, const float *p, const block_q8_0 *v, float *o) {
    float32x4_t acc[NB][8];
    for (int b = 0; b < NB; ++b)
        for (int i = 0; i < 8; ++i) acc[b][i] = vld1q_f32(o + 32 * b + 4 * i);
    for (int64_t j = 0; j < n; ++j)
        for (int b = 0; b < NB; ++b) add_block(v[j * nb + b], p[j], acc[b]);
    for (int b = 0; b < NB; ++b)
        for (int i = 0; i < 8; ++i) vst1q_f32(o + 32 * b + 4 * i, acc[b][i]);
}

}  // namespace

void attn_q8_values_neon(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o) {
    const int64_t nb = hd / QK8_0;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) values_cols<2>(nb, n, p, v + b, o + 32 * b);
    if (b < nb) values_cols<1>(nb, n, p, v + b, o + 32 * b);
}

}  // namespace phirt

// The NEON dotprod twin of q4x16_ref.cpp (interleaved Q4_0, see q4x16.h), for the neon_dotprod and
// neon_i8mm tables. A 64-byte chunk of a panel is four 16-byte registers of 4 rows × 4 columns,
// the packed GEMM's step layout (neon_gemm.h): SDOT's element form multiplies each by 4 bytes of
// the activation row, the low nibbles with columns 4c.. and the high ones with 16 + 4c.. . The
// nibbles (0..15) are valid signed bytes, so no bias is needed; the zero point comes off in the
// integer start (zs = -8·Σq). Baseline Armv8.0 NEON has no twin: there phirt keeps the GGUF
// layout, whose SMULL/SADALP dots are the faster path. Included by arm/dot_neon_dotprod.cpp only.
#pragma once

#include <arm_neon.h>

#include "../q4x16.h"

namespace phirt {
namespace {

template <int MR>
void q4x16_tile_neon(const uint8_t *codes, const uint16_t *scales, int64_t nb, const GemmActs &a,
                     int64_t i0, float *y, int64_t ldy, int n_rows) {
    float32x4_t acc[MR][4];
    for (int i = 0; i < MR; ++i)
        for (int rq = 0; rq < 4; ++rq) acc[i][rq] = vdupq_n_f32(0.0f);
    const uint8x16_t low = vdupq_n_u8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t *cb = codes + b * kQ4x16BlockCodes;
        __builtin_prefetch(cb + 2048);
        __builtin_prefetch(cb + 2048 + 64);
        __builtin_prefetch(cb + 2048 + 128);
        __builtin_prefetch(cb + 2048 + 192);
        int8x16_t x_lo[MR], x_hi[MR];
        int32x4_t isum[MR][4];
        for (int i = 0; i < MR; ++i) {
            const int64_t row = i0 + i;
            x_lo[i] = vld1q_s8(a.q + row * a.ldq + b * 32);
            x_hi[i] = vld1q_s8(a.q + row * a.ldq + b * 32 + 16);
            const int32x4_t z = vdupq_n_s32(a.zs[row * a.ldg + b]);
            for (int rq = 0; rq < 4; ++rq) isum[i][rq] = z;
        }
#define PHIRT_Q4X16_CHUNK(c)                                              \
    for (int rq = 0; rq < 4; ++rq) {                                      \
        const uint8x16_t v = vld1q_u8(cb + 64 * (c) + 16 * rq);           \
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, low));       \
        const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));       \
        for (int i = 0; i < MR; ++i) {                                    \
            isum[i][rq] = vdotq_laneq_s32(isum[i][rq], lo, x_lo[i], (c)); \
            isum[i][rq] = vdotq_laneq_s32(isum[i][rq], hi, x_hi[i], (c)); \
        }                                                                 \
    }
        PHIRT_Q4X16_CHUNK(0)
        PHIRT_Q4X16_CHUNK(1)
        PHIRT_Q4X16_CHUNK(2)
        PHIRT_Q4X16_CHUNK(3)
#undef PHIRT_Q4X16_CHUNK
        for (int rq = 0; rq < 4; ++rq) {
            const float32x4_t sc =
                vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(scales + b * kPanelRows + 4 * rq)));
            for (int i = 0; i < MR; ++i)
                acc[i][rq] = vfmaq_f32(acc[i][rq], vcvtq_f32_s32(isum[i][rq]),
                                       vmulq_n_f32(sc, a.d[(i0 + i) * a.ldg + b]));
        }
    }
    for (int i = 0; i < MR; ++i) {
        float out[16];
        for (int rq = 0; rq < 4; ++rq) vst1q_f32(out + 4 * rq, acc[i][rq]);
        for (int r = 0; r < n_rows; ++r) y[(i0 + i) * ldy + r] = out[r];
    }
}

void q4x16_gemm_neon(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                     int64_t ldy, int n_rows) {
    const auto *scales = reinterpret_cast<const uint16_t *>(panel + nb * kQ4x16BlockCodes);
    int64_t i0 = 0;
    for (; i0 + 2 <= m; i0 += 2) q4x16_tile_neon<2>(panel, scales, nb, a, i0, y, ldy, n_rows);
    if (i0 < m) q4x16_tile_neon<1>(panel, scales, nb, a, i0, y, ldy, n_rows);
}

}  // namespace
}  // namespace phirt

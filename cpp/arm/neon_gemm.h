// Packed GEMM for prefill (gemm.h) at every NEON level, on gemm.h's panel layout: per step of 4
// columns, 64 bytes holding 4 columns of the 16 rows, i.e. four 16-byte registers of 4 rows × 4
// columns. The micro kernel takes MR activation rows against the panel and keeps one int32 sum
// per (row, activation row) and column group; at the end of a group the sums are converted and
// scaled into float accumulators. The integer sums are exact, so each output differs from the
// scalar spec (gemm_ref.cpp) only in float summation order.
//
// Levels (chosen by the flags of the including translation unit, arm/dot_neon*.cpp):
// - i8mm (__ARM_FEATURE_MATMUL_INT8): USMMLA, unsigned panel bytes × signed activations, 2 rows ×
//   2 activation rows × 8 columns per instruction. Two steps zipped by 32-bit lanes give a row pair
//   × 8 columns; eight panel rows at a time against MR = 4 activation rows.
// - dotprod: SDOT by element: a panel register × 4 activation bytes broadcast from a lane, 16 rows
//   × MR = 2. SDOT is signed × signed, so Q8_0's biased bytes are flipped back to q (XOR 0x80) and
//   its sums start at 0 instead of at zs = -128·Σq (the same integer).
// - Armv8.0: SMULL/SMLAL of a panel register half (2 rows × 4 columns) with 4 activation bytes
//   duplicated, into 16-bit lanes (row, column mod 4) that hold a whole group (8 products of at
//   most 31·127, or 4 of 63·127 for Q6_K's groups of 16) before SADDLP/ADDP fold them per row; Q8_0
//   (signed, up to 128·127) widens every two steps.
#pragma once

#include <arm_neon.h>

#include <cstring>

#include "../gemm_pack.h"
#include "neon_dots.h"

namespace phirt {
namespace {  // one copy per level's translation unit

// Columns per pass: the panel slice (16 rows × kKc bytes, 16 KiB) stays in L1 while every
// activation row meets it.
constexpr int64_t kGemmKc = 1024;
static_assert(kGemmKc % QK_K == 0, "a pass holds whole super-blocks");

// rows [16][k] -> u [k/4][16][4]: a 4×4 transpose of 32-bit words per 4 rows and 16 columns.
inline void interleave_neon(const uint8_t *rows, int64_t k, uint8_t *u) {
    int64_t c = 0;
    for (; c + 16 <= k; c += 16) {
        for (int rq = 0; rq < 4; ++rq) {
            const uint8_t *r0 = rows + 4 * rq * k + c;
            const uint32x4_t a = vreinterpretq_u32_u8(vld1q_u8(r0));
            const uint32x4_t b = vreinterpretq_u32_u8(vld1q_u8(r0 + k));
            const uint32x4_t cc = vreinterpretq_u32_u8(vld1q_u8(r0 + 2 * k));
            const uint32x4_t d = vreinterpretq_u32_u8(vld1q_u8(r0 + 3 * k));
            const uint32x4_t ab0 = vtrn1q_u32(a, b), ab1 = vtrn2q_u32(a, b);
            const uint32x4_t cd0 = vtrn1q_u32(cc, d), cd1 = vtrn2q_u32(cc, d);
            const uint64x2_t ab0l = vreinterpretq_u64_u32(ab0), ab1l = vreinterpretq_u64_u32(ab1);
            const uint64x2_t cd0l = vreinterpretq_u64_u32(cd0), cd1l = vreinterpretq_u64_u32(cd1);
            uint8_t *o = u + (c / 4 * kPanelRows + 4 * rq) * 4;
            vst1q_u64(reinterpret_cast<uint64_t *>(o), vtrn1q_u64(ab0l, cd0l));
            vst1q_u64(reinterpret_cast<uint64_t *>(o + 64), vtrn1q_u64(ab1l, cd1l));
            vst1q_u64(reinterpret_cast<uint64_t *>(o + 128), vtrn2q_u64(ab0l, cd0l));
            vst1q_u64(reinterpret_cast<uint64_t *>(o + 192), vtrn2q_u64(ab1l, cd1l));
        }
    }
    for (; c < k; c += 4)  // k is a multiple of 16 for every packed type; kept for safety
        for (int r = 0; r < kPanelRows; ++r)
            std::memcpy(u + (c / 4 * kPanelRows + r) * 4, rows + r * k + c, 4);
}

// y rows i0.. (MR of them) at columns [0, n_rows): stored from 16-lane rows of float vectors.
inline void store_rows16(float *y, const float32x4_t v[4], int n_rows, bool first) {
    float t[kPanelRows];
    for (int q = 0; q < 4; ++q) vst1q_f32(t + 4 * q, v[q]);
    for (int r = 0; r < n_rows; ++r) y[r] = first ? t[r] : y[r] + t[r];
}

#if defined(__ARM_FEATURE_MATMUL_INT8)

// 8 panel rows (half h) × MR activation rows, groups [g0, g1). Lanes of a sum vector for row
// pair (2p, 2p+1) and activation pair (2i, 2i+1): [r0·a0, r0·a1, r1·a0, r1·a1]. An odd last
// activation row is paired with itself and its second result dropped.
template <int MR, int kGroup, bool kOffset>
void micro_half(const GemmPanel &p, const GemmActs &a, int64_t i0, int h, int64_t g0, int64_t g1,
                float *y, int64_t ldy, int n_rows, bool first) {
    constexpr int NP = (MR + 1) / 2;  // activation pairs
    // offset of the pair's second row from its first, in rows
    auto second = [](int ip) { return 2 * ip + 1 < MR ? 1 : 0; };
    float32x4_t acc[4][NP];
    for (int rp = 0; rp < 4; ++rp)
        for (int ip = 0; ip < NP; ++ip) acc[rp][ip] = vdupq_n_f32(0.0f);
    for (int64_t g = g0; g < g1; ++g) {
        int32x4_t isum[4][NP];
        for (int ip = 0; ip < NP; ++ip) {
            const int64_t at = (i0 + 2 * ip) * a.ldg + g;
            const int32x2_t zs = {a.zs[at], a.zs[at + second(ip) * a.ldg]};
            for (int rp = 0; rp < 4; ++rp) isum[rp][ip] = vcombine_s32(zs, zs);
        }
        const uint8_t *u = p.u + g * (kGroup / 4) * 64 + 32 * h;
        const int8_t *q = a.q + i0 * a.ldq + g * kGroup;
        for (int c = 0; c < kGroup; c += 16) {
            int8x16_t xp[NP][2];  // pair ip, columns c..c+7 and c+8..c+15
            for (int ip = 0; ip < NP; ++ip) {
                const int64x2_t r0 = vreinterpretq_s64_s8(vld1q_s8(q + 2 * ip * a.ldq + c));
                const int64x2_t r1 =
                    vreinterpretq_s64_s8(vld1q_s8(q + (2 * ip + second(ip)) * a.ldq + c));
                xp[ip][0] = vreinterpretq_s8_s64(vzip1q_s64(r0, r1));
                xp[ip][1] = vreinterpretq_s8_s64(vzip2q_s64(r0, r1));
            }
            for (int e = 0; e < 2; ++e) {  // 8 columns: steps c/4 + 2e and c/4 + 2e + 1
                const uint8_t *s0 = u + (c / 4 + 2 * e) * 64;
                for (int rq = 0; rq < 2; ++rq) {  // rows 8h + 4rq .. + 3
                    const uint32x4_t wa = vreinterpretq_u32_u8(vld1q_u8(s0 + 16 * rq));
                    const uint32x4_t wb = vreinterpretq_u32_u8(vld1q_u8(s0 + 64 + 16 * rq));
                    const uint8x16_t lo = vreinterpretq_u8_u32(vzip1q_u32(wa, wb));
                    const uint8x16_t hi = vreinterpretq_u8_u32(vzip2q_u32(wa, wb));
                    for (int ip = 0; ip < NP; ++ip) {
                        isum[2 * rq][ip] = vusmmlaq_s32(isum[2 * rq][ip], lo, xp[ip][e]);
                        isum[2 * rq + 1][ip] = vusmmlaq_s32(isum[2 * rq + 1][ip], hi, xp[ip][e]);
                    }
                }
            }
        }
        const float32x4_t sc0 = vld1q_f32(p.scale + g * kPanelRows + 8 * h);
        const float32x4_t sc1 = vld1q_f32(p.scale + g * kPanelRows + 8 * h + 4);
        const float32x4_t sp[4] = {vzip1q_f32(sc0, sc0), vzip2q_f32(sc0, sc0), vzip1q_f32(sc1, sc1),
                                   vzip2q_f32(sc1, sc1)};
        float32x4_t op[4];
        if constexpr (kOffset) {
            const float32x4_t of0 = vld1q_f32(p.offset + g * kPanelRows + 8 * h);
            const float32x4_t of1 = vld1q_f32(p.offset + g * kPanelRows + 8 * h + 4);
            op[0] = vzip1q_f32(of0, of0), op[1] = vzip2q_f32(of0, of0);
            op[2] = vzip1q_f32(of1, of1), op[3] = vzip2q_f32(of1, of1);
        }
        for (int ip = 0; ip < NP; ++ip) {
            const int64_t at = (i0 + 2 * ip) * a.ldg + g;
            const float32x2_t d2 = {a.d[at], a.d[at + second(ip) * a.ldg]};
            const float32x4_t d = vcombine_f32(d2, d2);
            float32x4_t s;
            if constexpr (kOffset) {
                const float32x2_t s2 = {a.s[at], a.s[at + second(ip) * a.ldg]};
                s = vcombine_f32(s2, s2);
            }
            for (int rp = 0; rp < 4; ++rp) {
                acc[rp][ip] =
                    vfmaq_f32(acc[rp][ip], vcvtq_f32_s32(isum[rp][ip]), vmulq_f32(sp[rp], d));
                if constexpr (kOffset) acc[rp][ip] = vfmaq_f32(acc[rp][ip], op[rp], s);
            }
        }
    }
    // acc[rp][ip] lanes (r0·a0, r0·a1, r1·a0, r1·a1) -> y[a][8h + 2rp + r]
    for (int ip = 0; ip < NP; ++ip) {
        float t0[8], t1[8];  // activation rows 2ip and 2ip + 1
        for (int rp = 0; rp < 4; ++rp) {
            float l[4];
            vst1q_f32(l, acc[rp][ip]);
            t0[2 * rp] = l[0], t1[2 * rp] = l[1], t0[2 * rp + 1] = l[2], t1[2 * rp + 1] = l[3];
        }
        float *y0 = y + (i0 + 2 * ip) * ldy + 8 * h, *y1 = y0 + ldy;
        const int nr = n_rows - 8 * h < 8 ? n_rows - 8 * h : 8;
        for (int r = 0; r < nr; ++r) y0[r] = first ? t0[r] : y0[r] + t0[r];
        if (second(ip))
            for (int r = 0; r < nr; ++r) y1[r] = first ? t1[r] : y1[r] + t1[r];
    }
}

template <int MR, int kGroup, bool kOffset>
void micro(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1, float *y,
           int64_t ldy, int n_rows, bool first) {
    for (int h = 0; h < 2 && 8 * h < n_rows; ++h)
        micro_half<MR, kGroup, kOffset>(p, a, i0, h, g0, g1, y, ldy, n_rows, first);
}

constexpr int kGemmMR = 4;

#elif defined(__ARM_FEATURE_DOTPROD)

// One step (4 columns, panel bytes at s) for 16 rows × MR activation rows: activation bytes
// 4·kLane.. of each xv broadcast by SDOT's element form.
template <int MR, bool kSigned, int kLane>
inline void sdot_step(const uint8_t *s, const int8x16_t xv[MR], int32x4_t isum[MR][4]) {
    for (int rq = 0; rq < 4; ++rq) {
        int8x16_t w = vreinterpretq_s8_u8(vld1q_u8(s + kLane * 64 + 16 * rq));
        if (kSigned) w = veorq_s8(w, vdupq_n_s8(-128));
        for (int i = 0; i < MR; ++i) isum[i][rq] = vdotq_laneq_s32(isum[i][rq], w, xv[i], kLane);
    }
}

// 16 panel rows × MR activation rows, groups [g0, g1).
template <int MR, int kGroup, bool kOffset, bool kSigned>
void micro_sdot(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1, float *y,
                int64_t ldy, int n_rows, bool first) {
    float32x4_t acc[MR][4];
    for (int i = 0; i < MR; ++i)
        for (int rq = 0; rq < 4; ++rq) acc[i][rq] = vdupq_n_f32(0.0f);
    for (int64_t g = g0; g < g1; ++g) {
        int32x4_t isum[MR][4];
        for (int i = 0; i < MR; ++i) {
            const int32x4_t z = vdupq_n_s32(kSigned ? 0 : a.zs[(i0 + i) * a.ldg + g]);
            for (int rq = 0; rq < 4; ++rq) isum[i][rq] = z;
        }
        const uint8_t *u = p.u + g * (kGroup / 4) * 64;
        const int8_t *q = a.q + i0 * a.ldq + g * kGroup;
        for (int c = 0; c < kGroup; c += 16) {
            int8x16_t xv[MR];
            for (int i = 0; i < MR; ++i) xv[i] = vld1q_s8(q + i * a.ldq + c);
            const uint8_t *s0 = u + c / 4 * 64;
            sdot_step<MR, kSigned, 0>(s0, xv, isum);
            sdot_step<MR, kSigned, 1>(s0, xv, isum);
            sdot_step<MR, kSigned, 2>(s0, xv, isum);
            sdot_step<MR, kSigned, 3>(s0, xv, isum);
        }
        for (int rq = 0; rq < 4; ++rq) {
            const float32x4_t sc = vld1q_f32(p.scale + g * kPanelRows + 4 * rq);
            float32x4_t of;
            if constexpr (kOffset) of = vld1q_f32(p.offset + g * kPanelRows + 4 * rq);
            for (int i = 0; i < MR; ++i) {
                const int64_t at = (i0 + i) * a.ldg + g;
                acc[i][rq] =
                    vfmaq_f32(acc[i][rq], vcvtq_f32_s32(isum[i][rq]), vmulq_n_f32(sc, a.d[at]));
                if constexpr (kOffset) acc[i][rq] = vfmaq_n_f32(acc[i][rq], of, a.s[at]);
            }
        }
    }
    for (int i = 0; i < MR; ++i) store_rows16(y + (i0 + i) * ldy, acc[i], n_rows, first);
}

template <int MR, int kGroup, bool kOffset>
void micro(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1, float *y,
           int64_t ldy, int n_rows, bool first) {
    if (p.form.zero == 128)  // Q8_0
        micro_sdot<MR, kGroup, kOffset, true>(p, a, i0, g0, g1, y, ldy, n_rows, first);
    else
        micro_sdot<MR, kGroup, kOffset, false>(p, a, i0, g0, g1, y, ldy, n_rows, first);
}

constexpr int kGemmMR = 2;

#else  // Armv8.0

// One step (4 columns, panel bytes at s): activation bytes 4·kLane.. of each xv duplicated to
// both halves, multiplied with each register half (2 rows × 4 columns) into p16.
template <int MR, bool kSigned, int kLane>
inline void smull_step(const uint8_t *s, const int8x16_t xv[MR], int16x8_t p16[MR][8]) {
    int8x16_t xd[MR];
    for (int i = 0; i < MR; ++i)
        xd[i] = vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(xv[i]), kLane));
    for (int rq = 0; rq < 4; ++rq) {
        int8x16_t w = vreinterpretq_s8_u8(vld1q_u8(s + kLane * 64 + 16 * rq));
        if (kSigned) w = veorq_s8(w, vdupq_n_s8(-128));
        for (int i = 0; i < MR; ++i) {
            p16[i][2 * rq] = vmlal_s8(p16[i][2 * rq], vget_low_s8(w), vget_low_s8(xd[i]));
            p16[i][2 * rq + 1] = vmlal_high_s8(p16[i][2 * rq + 1], w, xd[i]);
        }
    }
}

// 16 panel rows × MR activation rows, groups [g0, g1). kSigned (Q8_0): panel bytes flipped to q
// and the 16-bit lanes widened every two steps into acc32.
template <int MR, int kGroup, bool kOffset, bool kSigned>
void micro_smull(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1,
                 float *y, int64_t ldy, int n_rows, bool first) {
    float32x4_t acc[MR][4];
    for (int i = 0; i < MR; ++i)
        for (int rq = 0; rq < 4; ++rq) acc[i][rq] = vdupq_n_f32(0.0f);
    for (int64_t g = g0; g < g1; ++g) {
        // lanes of p16[i][2rq + h]: rows 4rq + 2h, 4rq + 2h + 1, × columns mod 4
        int16x8_t p16[MR][8];
        int32x4_t p32[MR][8];
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < 8; ++j) p16[i][j] = vdupq_n_s16(0), p32[i][j] = vdupq_n_s32(0);
        const uint8_t *u = p.u + g * (kGroup / 4) * 64;
        const int8_t *q = a.q + i0 * a.ldq + g * kGroup;
        for (int c = 0; c < kGroup; c += 16) {
            int8x16_t xv[MR];
            for (int i = 0; i < MR; ++i) xv[i] = vld1q_s8(q + i * a.ldq + c);
            const uint8_t *s0 = u + c / 4 * 64;
            smull_step<MR, kSigned, 0>(s0, xv, p16);
            smull_step<MR, kSigned, 1>(s0, xv, p16);
            if (kSigned)
                for (int i = 0; i < MR; ++i)
                    for (int j = 0; j < 8; ++j)
                        p32[i][j] = vpadalq_s16(p32[i][j], p16[i][j]), p16[i][j] = vdupq_n_s16(0);
            smull_step<MR, kSigned, 2>(s0, xv, p16);
            smull_step<MR, kSigned, 3>(s0, xv, p16);
            if (kSigned)
                for (int i = 0; i < MR; ++i)
                    for (int j = 0; j < 8; ++j)
                        p32[i][j] = vpadalq_s16(p32[i][j], p16[i][j]), p16[i][j] = vdupq_n_s16(0);
        }
        for (int rq = 0; rq < 4; ++rq) {
            const float32x4_t sc = vld1q_f32(p.scale + g * kPanelRows + 4 * rq);
            float32x4_t of;
            if constexpr (kOffset) of = vld1q_f32(p.offset + g * kPanelRows + 4 * rq);
            for (int i = 0; i < MR; ++i) {
                const int64_t at = (i0 + i) * a.ldg + g;
                int32x4_t s;  // [row 4rq .. 4rq + 3]
                if constexpr (kSigned)
                    s = vpaddq_s32(p32[i][2 * rq], p32[i][2 * rq + 1]);
                else
                    s = vaddq_s32(
                        vpaddq_s32(vpaddlq_s16(p16[i][2 * rq]), vpaddlq_s16(p16[i][2 * rq + 1])),
                        vdupq_n_s32(a.zs[at]));
                acc[i][rq] = vfmaq_f32(acc[i][rq], vcvtq_f32_s32(s), vmulq_n_f32(sc, a.d[at]));
                if constexpr (kOffset) acc[i][rq] = vfmaq_n_f32(acc[i][rq], of, a.s[at]);
            }
        }
    }
    for (int i = 0; i < MR; ++i) store_rows16(y + (i0 + i) * ldy, acc[i], n_rows, first);
}

template <int MR, int kGroup, bool kOffset>
void micro(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1, float *y,
           int64_t ldy, int n_rows, bool first) {
    if (p.form.zero == 128)  // Q8_0: one activation row (its 32-bit lanes need the registers)
        for (int i = 0; i < MR; ++i)
            micro_smull<1, kGroup, kOffset, true>(p, a, i0 + i, g0, g1, y, ldy, n_rows, first);
    else
        micro_smull<MR, kGroup, kOffset, false>(p, a, i0, g0, g1, y, ldy, n_rows, first);
}

constexpr int kGemmMR = 2;

#endif

using GemmMicroFn = void (*)(const GemmPanel &, const GemmActs &, int64_t, int64_t, int64_t,
                             float *, int64_t, int, bool);

// The micro kernels for a form and MR = 1..kGemmMR (gemm_form's combinations only).
template <int kGroup, bool kOffset>
GemmMicroFn micro_for(int mr) {
    static_assert(kGemmMR == 2 || kGemmMR == 4, "one case per height");
    switch (mr) {
        case 1:
            return micro<1, kGroup, kOffset>;
        case 2:
            return micro<2, kGroup, kOffset>;
        case 3:
            return micro<(kGemmMR >= 3 ? 3 : 2), kGroup, kOffset>;
        default:
            return micro<kGemmMR, kGroup, kOffset>;
    }
}

// Four rows' 16 codes (r[i]: row i, columns c..c+15) to the panel: the 4×4 transpose of 32-bit
// words puts columns c + 4j.. of the four rows into one 16-byte store at step (c / 4 + j), rows
// 4rq..4rq + 3.
inline void store_quad(uint8_t *u, int64_t c, int rq, const uint8x16_t r[4]) {
    const uint32x4_t a = vreinterpretq_u32_u8(r[0]), b = vreinterpretq_u32_u8(r[1]);
    const uint32x4_t cc = vreinterpretq_u32_u8(r[2]), d = vreinterpretq_u32_u8(r[3]);
    const uint64x2_t ab0 = vreinterpretq_u64_u32(vtrn1q_u32(a, b));
    const uint64x2_t ab1 = vreinterpretq_u64_u32(vtrn2q_u32(a, b));
    const uint64x2_t cd0 = vreinterpretq_u64_u32(vtrn1q_u32(cc, d));
    const uint64x2_t cd1 = vreinterpretq_u64_u32(vtrn2q_u32(cc, d));
    uint8_t *o = u + (c / 4 * kPanelRows + 4 * rq) * 4;
    vst1q_u64(reinterpret_cast<uint64_t *>(o), vtrn1q_u64(ab0, cd0));
    vst1q_u64(reinterpret_cast<uint64_t *>(o + 64), vtrn1q_u64(ab1, cd1));
    vst1q_u64(reinterpret_cast<uint64_t *>(o + 128), vtrn2q_u64(ab0, cd0));
    vst1q_u64(reinterpret_cast<uint64_t *>(o + 192), vtrn2q_u64(ab1, cd1));
}

// A full panel of Q4_0, Q4_1 or Q8_0 rows unpacked and interleaved in one pass, four rows and one
// block at a time (gemm_pack.h's row-by-row unpack and then the transpose cost ~3x as much): the
// same bytes and scales as pack_panel_ref.
template <class Block, bool kQ8, bool kMin>
void pack_panel_direct(const uint8_t *w, int64_t row_bytes, GemmPanel *p) {
    const int64_t nb = p->k / 32;
    for (int rq = 0; rq < 4; ++rq) {
        const Block *row[4];
        for (int i = 0; i < 4; ++i)
            row[i] = reinterpret_cast<const Block *>(w + (4 * rq + i) * row_bytes);
        for (int64_t ib = 0; ib < nb; ++ib) {
            uint8x16_t lo[4], hi[4];
            uint16_t d[4], m[4];
            for (int i = 0; i < 4; ++i) {
                const Block &b = row[i][ib];
                if constexpr (kQ8) {
                    lo[i] = veorq_u8(vld1q_u8(reinterpret_cast<const uint8_t *>(b.qs)),
                                     vdupq_n_u8(0x80));
                    hi[i] = veorq_u8(vld1q_u8(reinterpret_cast<const uint8_t *>(b.qs) + 16),
                                     vdupq_n_u8(0x80));
                } else {
                    const uint8x16_t q = vld1q_u8(b.qs);
                    lo[i] = vandq_u8(q, vdupq_n_u8(0x0F)), hi[i] = vshrq_n_u8(q, 4);
                }
                d[i] = b.d;
                if constexpr (kMin) m[i] = b.m;
            }
            // FCVTL: the exact conversion fp16_to_fp32 spells out (NaN payloads aside)
            vst1q_f32(p->scale + ib * kPanelRows + 4 * rq,
                      vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d))));
            if constexpr (kMin)
                vst1q_f32(p->offset + ib * kPanelRows + 4 * rq,
                          vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(m))));
            store_quad(p->u, 32 * ib, rq, lo);
            store_quad(p->u, 32 * ib + 16, rq, hi);
        }
    }
}

// Columns 0..3 of a 4×4 float matrix given as rows a..d, i.e. its transpose.
inline void transpose4(float32x4_t m[4]) {
    const float32x4_t t0 = vtrn1q_f32(m[0], m[1]), t1 = vtrn2q_f32(m[0], m[1]);
    const float32x4_t t2 = vtrn1q_f32(m[2], m[3]), t3 = vtrn2q_f32(m[2], m[3]);
    m[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    m[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    m[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    m[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}

// Eight unsigned bytes of each of four rows as floats, one vector per byte position: out[g] =
// [b0[g], b1[g], b2[g], b3[g]].
inline void bytes_by_position(const uint8x8_t b[4], float32x4_t out[8]) {
    float32x4_t lo[4], hi[4];
    for (int r = 0; r < 4; ++r) {
        const uint16x8_t h = vmovl_u8(b[r]);
        lo[r] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(h)));
        hi[r] = vcvtq_f32_u32(vmovl_high_u16(h));
    }
    transpose4(lo);
    transpose4(hi);
    for (int g = 0; g < 4; ++g) out[g] = lo[g], out[g + 4] = hi[g];
}

// A full panel of Q4_K or Q5_K rows in one pass, four rows and one super-block at a time: codes as
// gemm_pack.h's unpack_k45 lays them out, scale d·sc and offset -(dmin·m) per group of 32 (the
// same float products, so the same bits).
template <class Block>
void pack_panel_k45(const uint8_t *w, int64_t row_bytes, GemmPanel *p) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const int64_t nb = p->k / QK_K;
    for (int rq = 0; rq < 4; ++rq) {
        const Block *row[4];
        for (int i = 0; i < 4; ++i)
            row[i] = reinterpret_cast<const Block *>(w + (4 * rq + i) * row_bytes);
        for (int64_t ib = 0; ib < nb; ++ib) {
            uint16_t dh[4], mh[4];
            uint8x8_t sc[4], mn[4];
            for (int i = 0; i < 4; ++i) {
                dh[i] = row[i][ib].d, mh[i] = row[i][ib].dmin;
                unpack_scales_mins(row[i][ib].scales, &sc[i], &mn[i]);
            }
            const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));
            const float32x4_t dmin = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(mh)));
            float32x4_t s[8], m[8];
            bytes_by_position(sc, s);
            bytes_by_position(mn, m);
            for (int g = 0; g < 8; ++g) {
                const int64_t at = (ib * 8 + g) * kPanelRows + 4 * rq;
                vst1q_f32(p->scale + at, vmulq_f32(d, s[g]));
                vst1q_f32(p->offset + at, vnegq_f32(vmulq_f32(dmin, m[g])));
            }
            uint8x16_t h[4][2];
            if constexpr (kQ5)
                for (int i = 0; i < 4; ++i)
                    h[i][0] = vld1q_u8(row[i][ib].qh), h[i][1] = vld1q_u8(row[i][ib].qh + 16);
            for (int pair = 0; pair < 4; ++pair) {  // groups 2·pair (low nibbles), 2·pair + 1
                uint8x16_t lo[2][4], hi[2][4];      // [16-column half][row]
                for (int i = 0; i < 4; ++i)
                    for (int e = 0; e < 2; ++e) {
                        const uint8x16_t q = vld1q_u8(row[i][ib].qs + 32 * pair + 16 * e);
                        lo[e][i] = vandq_u8(q, vdupq_n_u8(0x0F)), hi[e][i] = vshrq_n_u8(q, 4);
                        if constexpr (kQ5) {
                            const uint8x16_t b = h[i][e];
                            lo[e][i] =
                                vorrq_u8(lo[e][i], vshlq_n_u8(vandq_u8(b, vdupq_n_u8(1)), 4));
                            hi[e][i] =
                                vorrq_u8(hi[e][i], vshlq_n_u8(vandq_u8(b, vdupq_n_u8(2)), 3));
                            h[i][e] = vshrq_n_u8(b, 2);
                        }
                    }
                const int64_t c = ib * QK_K + 64 * pair;
                store_quad(p->u, c, rq, lo[0]);
                store_quad(p->u, c + 16, rq, lo[1]);
                store_quad(p->u, c + 32, rq, hi[0]);
                store_quad(p->u, c + 48, rq, hi[1]);
            }
        }
    }
}

// The 32 codes of quarter qi (elements 32·qi.. of a 128-element half) of a Q6_K half, as
// q6_K_rows builds them: SLI/SRI join nibble and high bits, & 0x3F.
inline void q6_quarter(const uint8_t *ql, const uint8_t *qh, int qi, uint8x16_t out[2]) {
    const uint8x16_t m6 = vdupq_n_u8(0x3F);
    const uint8_t *l = ql + (qi % 2) * 32;  // quarters 1, 3: ql[32..63]
    for (int e = 0; e < 2; ++e) {
        const uint8x16_t lv = vld1q_u8(l + 16 * e);
        uint8x16_t hv = vld1q_u8(qh + 16 * e);
        if (qi % 2) hv = vshrq_n_u8(hv, 2);  // bits 2-3 (quarter 1), 6-7 (quarter 3)
        out[e] = vandq_u8(qi < 2 ? vsliq_n_u8(lv, hv, 4) : vsriq_n_u8(hv, lv, 4), m6);
    }
}

// A full panel of Q6_K rows in one pass, four rows and one super-block at a time: codes as
// gemm_pack.h's unpack_q6_K lays them out, scale d·sc per group of 16 (the same float products).
void pack_panel_q6_K(const uint8_t *w, int64_t row_bytes, GemmPanel *p) {
    const int64_t nb = p->k / QK_K;
    for (int rq = 0; rq < 4; ++rq) {
        const block_q6_K *row[4];
        for (int i = 0; i < 4; ++i)
            row[i] = reinterpret_cast<const block_q6_K *>(w + (4 * rq + i) * row_bytes);
        for (int64_t ib = 0; ib < nb; ++ib) {
            uint16_t dh[4];
            float32x4_t sc[4][4];  // [group quad][row], then transposed to [group quad][group]
            for (int i = 0; i < 4; ++i) {
                dh[i] = row[i][ib].d;
                const int8x16_t s = vld1q_s8(row[i][ib].scales);
                const int16x8_t s0 = vmovl_s8(vget_low_s8(s)), s1 = vmovl_high_s8(s);
                sc[0][i] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(s0)));
                sc[1][i] = vcvtq_f32_s32(vmovl_high_s16(s0));
                sc[2][i] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(s1)));
                sc[3][i] = vcvtq_f32_s32(vmovl_high_s16(s1));
            }
            const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));
            for (int gq = 0; gq < 4; ++gq) {
                transpose4(sc[gq]);
                for (int g = 0; g < 4; ++g)
                    vst1q_f32(p->scale + (ib * 16 + 4 * gq + g) * kPanelRows + 4 * rq,
                              vmulq_f32(d, sc[gq][g]));
            }
            for (int half = 0; half < 2; ++half)
                for (int qi = 0; qi < 4; ++qi) {
                    uint8x16_t c[2][4];  // [16-column half][row]
                    for (int i = 0; i < 4; ++i) {
                        uint8x16_t q[2];
                        q6_quarter(row[i][ib].ql + 64 * half, row[i][ib].qh + 32 * half, qi, q);
                        c[0][i] = q[0], c[1][i] = q[1];
                    }
                    const int64_t col = ib * QK_K + 128 * half + 32 * qi;
                    store_quad(p->u, col, rq, c[0]);
                    store_quad(p->u, col + 16, rq, c[1]);
                }
        }
    }
}

void pack_panel_neon(int type, const uint8_t *w, int64_t row_bytes, int n_rows, GemmPanel *p,
                     uint8_t *rows) {
    if (n_rows == kPanelRows) {
        switch ((GgmlType)type) {
            case GgmlType::Q4_0:
                return pack_panel_direct<block_q4_0, false, false>(w, row_bytes, p);
            case GgmlType::Q4_1:
                return pack_panel_direct<block_q4_1, false, true>(w, row_bytes, p);
            case GgmlType::Q8_0:
                return pack_panel_direct<block_q8_0, true, false>(w, row_bytes, p);
            case GgmlType::Q4_K:
                return pack_panel_k45<block_q4_K>(w, row_bytes, p);
            case GgmlType::Q5_K:
                return pack_panel_k45<block_q5_K>(w, row_bytes, p);
            case GgmlType::Q6_K:
                return pack_panel_q6_K(w, row_bytes, p);
            default:
                break;
        }
    }
    pack_panel_with(type, w, row_bytes, n_rows, p, rows, interleave_neon);
}

void gemm_panel_neon(const GemmPanel &p, const GemmActs &a, int64_t m, float *y, int64_t ldy,
                     int n_rows) {
    const int64_t n_groups = p.k / p.form.group, kc_groups = kGemmKc / p.form.group;
    GemmMicroFn micros[kGemmMR + 1];
    for (int mr = 1; mr <= kGemmMR; ++mr)
        micros[mr] = p.form.group == 16 ? micro_for<16, false>(mr)
                     : p.form.offset    ? micro_for<32, true>(mr)
                                        : micro_for<32, false>(mr);
    for (int64_t g0 = 0; g0 < n_groups; g0 += kc_groups) {
        const int64_t g1 = g0 + kc_groups < n_groups ? g0 + kc_groups : n_groups;
        for (int64_t i0 = 0; i0 < m; i0 += kGemmMR) {
            const int mr = m - i0 < kGemmMR ? (int)(m - i0) : kGemmMR;
            micros[mr](p, a, i0, g0, g1, y, ldy, n_rows, g0 == 0);
        }
    }
}

}  // namespace
}  // namespace phirt

// Integer dot products of weight rows with one activation row, for every NEON level: Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0 (blocks of 32) and Q4_K, Q5_K, Q6_K (blocks of 256). Each kernel takes R rows
// (row w + r·row_bytes) and shares the activation side among them: loads, scale conversions,
// zero-point sums; the one-row dot is the R = 1 case, so a multi-row output is the one-row dot's
// bit for bit (dot.h).
//
// Included by one translation unit per level (arm/dot_neon*.cpp, each with its own -march): the
// unnamed namespace gives each its own copy, so code built for dotprod never reaches baseline
// callers through the linker. The level shows only in dot32/dot16: SDOT where the compiler targets
// dotprod (__ARM_FEATURE_DOTPROD), SMULL/SMLAL into 16-bit lanes widened by SADALP on Armv8.0.
// Integer sums are exact on both, so levels differ from each other only in float order.
#pragma once

#include <arm_neon.h>

#include <cstddef>
#include <cstring>

#include "../dot.h"
#include "../formats.h"

namespace phirt {
namespace {  // one copy per level's translation unit (see above)

// Σ of 32 int8 products (w0·x0 + w1·x1, 16 each) added to acc, spread over its four lanes.
// kSmall: |w| <= 31 (every weight code but Q8_0's), so four products share one 16-bit lane
// (4·31·127 < 2^15) before SADALP widens them.
template <bool kSmall>
inline int32x4_t dot32(int32x4_t acc, int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(vdotq_s32(acc, w0, x0), w1, x1);
#else
    if constexpr (kSmall) {
        int16x8_t p = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
        p = vmlal_high_s8(p, w0, x0);
        p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(x1));
        p = vmlal_high_s8(p, w1, x1);
        return vpadalq_s16(acc, p);
    } else {  // |w| <= 128: two products per 16-bit lane
        const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), w0, x0);
        const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)), w1, x1);
        return vpadalq_s16(vpadalq_s16(acc, p0), p1);
    }
#endif
}

// Σ of 16 products, |w| <= 63 (two per 16-bit lane on Armv8.0).
inline int32x4_t dot16(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, w, x);
#else
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), w, x));
#endif
}

inline int8x16_t low_nibbles(uint8x16_t q) {
    return vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
}
inline int8x16_t high_nibbles(uint8x16_t q) {
    return vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
}

// Four f16 values `stride` bytes apart as floats (FCVTL: exact). Lane 0 by LD1R, so the vector
// needs no zeroing first.
inline float32x4_t load_f16x4_strided(const void *p, int64_t stride) {
    const auto *b = static_cast<const uint8_t *>(p);
    uint16x4_t h = vld1_dup_u16(reinterpret_cast<const uint16_t *>(b));
    h = vld1_lane_u16(reinterpret_cast<const uint16_t *>(b + stride), h, 1);
    h = vld1_lane_u16(reinterpret_cast<const uint16_t *>(b + 2 * stride), h, 2);
    h = vld1_lane_u16(reinterpret_cast<const uint16_t *>(b + 3 * stride), h, 3);
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
}

// The same from a running pointer, which moves on by 4·stride: LD1 lane loads with register
// post-increment, one instruction per lane and no address arithmetic (GCC computes each lane's
// address with an ADD of its own). Other compilers take the intrinsics.
inline float32x4_t next_f16x4_strided(const uint8_t *&p, int64_t stride) {
#if defined(__GNUC__) && !defined(__clang__)
    uint16x4_t h;
    __asm__(
        "ld1 {%0.h}[0], [%1], %3\n\t"
        "ld1 {%0.h}[1], [%1], %3\n\t"
        "ld1 {%0.h}[2], [%1], %3\n\t"
        "ld1 {%0.h}[3], [%1], %3"
        : "=&w"(h), "+r"(p)
        : "m"(*(const uint8_t(*)[1])p), "r"(stride));  // read-only memory: no clobber needed
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
#else
    const float32x4_t v = load_f16x4_strided(p, stride);
    p += 4 * stride;
    return v;
#endif
}

inline float f16_to_f32(ggml_half h) {
    __fp16 v;
    std::memcpy(&v, &h, sizeof(v));
    return (float)v;
}

// Lane sums of four vectors as one: [Σa, Σb, Σc, Σd] (exact).
inline int32x4_t sum4(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    return vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d));
}

// ---------------------------------------------------------------- legacy blocks (32 elements)

// Bytes of 0xFF where the fifth bit is set, for elements 0..15 (lo) and 16..31 (hi) of a Q5 block:
// each byte of qh spread over eight lanes and tested against that lane's bit.
inline void q5_high_masks(const uint8_t qh_bytes[4], uint8x16_t *lo, uint8x16_t *hi) {
    uint32_t qh;
    std::memcpy(&qh, qh_bytes, sizeof(qh));
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    const uint8x16_t bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201ull));
    const uint8x16_t pick_lo = vcombine_u8(vdup_n_u8(0), vdup_n_u8(1));
    const uint8x16_t pick_hi = vcombine_u8(vdup_n_u8(2), vdup_n_u8(3));
    *lo = vtstq_u8(vqtbl1q_u8(bytes, pick_lo), bit);
    *hi = vtstq_u8(vqtbl1q_u8(bytes, pick_hi), bit);
}

// A legacy type as a policy: codes() gives a block's 32 weight codes (elements 0..15, 16..31)
// as int8, the value being d·(code - kZero) [+ m]; kZero·Σx is taken off once per activation block
// for all rows. kMins: the block has a min m (Q4_1, Q5_1), added as Σ m·s with the activation's s.
struct Q4_0Policy {
    using W = block_q4_0;
    using X = block_q8_0;
    static constexpr int kZero = 8;
    static constexpr bool kMins = false, kSmall = true;
    static void codes(const W &b, int8x16_t *lo, int8x16_t *hi) {
        const uint8x16_t q = vld1q_u8(b.qs);
        *lo = low_nibbles(q), *hi = high_nibbles(q);
    }
};

struct Q4_1Policy {
    using W = block_q4_1;
    using X = block_q8_1;
    static constexpr int kZero = 0;
    static constexpr bool kMins = true, kSmall = true;
    static void codes(const W &b, int8x16_t *lo, int8x16_t *hi) {
        const uint8x16_t q = vld1q_u8(b.qs);
        *lo = low_nibbles(q), *hi = high_nibbles(q);
    }
};

// Q5: nibble | 16·(fifth bit).
template <class Block>
inline void q5_codes(const Block &b, int8x16_t *lo, int8x16_t *hi) {
    const uint8x16_t q = vld1q_u8(b.qs), sixteen = vdupq_n_u8(16);
    uint8x16_t set_lo, set_hi;
    q5_high_masks(b.qh, &set_lo, &set_hi);
    *lo = vorrq_s8(low_nibbles(q), vreinterpretq_s8_u8(vandq_u8(set_lo, sixteen)));
    *hi = vorrq_s8(high_nibbles(q), vreinterpretq_s8_u8(vandq_u8(set_hi, sixteen)));
}

struct Q5_0Policy {
    using W = block_q5_0;
    using X = block_q8_0;
    static constexpr int kZero = 16;
    static constexpr bool kMins = false, kSmall = true;
    static void codes(const W &b, int8x16_t *lo, int8x16_t *hi) { q5_codes(b, lo, hi); }
};

struct Q5_1Policy {
    using W = block_q5_1;
    using X = block_q8_1;
    static constexpr int kZero = 0;
    static constexpr bool kMins = true, kSmall = true;
    static void codes(const W &b, int8x16_t *lo, int8x16_t *hi) { q5_codes(b, lo, hi); }
};

struct Q8_0Policy {
    using W = block_q8_0;
    using X = block_q8_0;
    static constexpr int kZero = 0;
    static constexpr bool kMins = false, kSmall = false;
    static void codes(const W &b, int8x16_t *lo, int8x16_t *hi) {
        *lo = vld1q_s8(b.qs), *hi = vld1q_s8(b.qs + 16);
    }
};

// Where the min terms sit: m of Q4_1/Q5_1 and s of Q8_1, each right after the block's d.
constexpr int64_t kMinOffset = 2;
static_assert(offsetof(block_q4_1, m) == kMinOffset && offsetof(block_q5_1, m) == kMinOffset &&
                  offsetof(block_q8_1, s) == kMinOffset,
              "min fields follow d");

// One activation block, loaded once for all rows, with the start of every row's integer sum.
struct ActBlock {
    int8x16_t x0, x1;
    int32x4_t start;  // -kZero·Σx in four lanes
};

template <class P>
inline ActBlock act_block(const typename P::X &x) {
    ActBlock a{vld1q_s8(x.qs), vld1q_s8(x.qs + 16), vdupq_n_s32(0)};
    if constexpr (P::kZero != 0) {
        const int8x16_t z = vdupq_n_s8(-P::kZero);
        a.start = dot32<true>(a.start, z, z, a.x0, a.x1);
    }
    return a;
}

template <class P>
inline int32x4_t block_sum(const typename P::W &w, const ActBlock &a) {
    int8x16_t lo, hi;
    P::codes(w, &lo, &hi);
    return dot32<P::kSmall>(a.start, lo, hi, a.x0, a.x1);
}

// R rows against one activation row. Blocks go four at a time: their integer sums are folded into
// one vector (lane b = block b), converted once and multiplied by the four d_w·d_x; the rest one
// by one. The min terms (Q4_1, Q5_1) gather four m_w·s_x the same way.
template <class P, int R>
void legacy_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const typename P::X *x, float *y) {
    using W = typename P::W;
    using X = typename P::X;
    const int64_t nb = n / QK8_0;
    const W *wr[R];
    float32x4_t acc[R], accm[R];
    // running pointers to the scale fields of the next four blocks (next_f16x4_strided)
    const uint8_t *wd[R], *wm[R];
    const uint8_t *xd = reinterpret_cast<const uint8_t *>(&x[0].d);
    const uint8_t *xs = reinterpret_cast<const uint8_t *>(x) + kMinOffset;
    for (int r = 0; r < R; ++r) {
        wr[r] = reinterpret_cast<const W *>(w + r * row_bytes);
        wd[r] = reinterpret_cast<const uint8_t *>(&wr[r]->d);
        wm[r] = reinterpret_cast<const uint8_t *>(wr[r]) + kMinOffset;
        acc[r] = accm[r] = vdupq_n_f32(0.0f);
    }
    int64_t ib = 0;
    for (; ib + 4 <= nb; ib += 4) {
        const float32x4_t dx = next_f16x4_strided(xd, sizeof(X));
        float32x4_t sx = vdupq_n_f32(0.0f);
        if constexpr (P::kMins) sx = next_f16x4_strided(xs, sizeof(X));
        const ActBlock a[4] = {act_block<P>(x[ib]), act_block<P>(x[ib + 1]),
                               act_block<P>(x[ib + 2]), act_block<P>(x[ib + 3])};
        for (int r = 0; r < R; ++r) {
            const W *b = wr[r] + ib;
            const int32x4_t s = sum4(block_sum<P>(b[0], a[0]), block_sum<P>(b[1], a[1]),
                                     block_sum<P>(b[2], a[2]), block_sum<P>(b[3], a[3]));
            const float32x4_t d = vmulq_f32(next_f16x4_strided(wd[r], sizeof(W)), dx);
            acc[r] = vfmaq_f32(acc[r], vcvtq_f32_s32(s), d);
            if constexpr (P::kMins)
                accm[r] = vfmaq_f32(accm[r], next_f16x4_strided(wm[r], sizeof(W)), sx);
        }
    }
    for (int r = 0; r < R; ++r) {
        float32x4_t tail = vdupq_n_f32(0.0f);
        float tail_m = 0.0f;
        for (int64_t i = ib; i < nb; ++i) {
            const W &b = wr[r][i];
            const int32x4_t s = block_sum<P>(b, act_block<P>(x[i]));
            tail = vfmaq_n_f32(tail, vcvtq_f32_s32(s), f16_to_f32(b.d) * f16_to_f32(x[i].d));
            if constexpr (P::kMins) tail_m += f16_to_f32(b.m) * f16_to_f32(x[i].s);
        }
        y[r] = vaddvq_f32(vaddq_f32(vaddq_f32(acc[r], accm[r]), tail)) + tail_m;
    }
}

template <class P>
struct LegacyRows {
    template <int R>
    static void run(int64_t n, const uint8_t *w, int64_t rb, const void *x, float *y) {
        legacy_rows<P, R>(n, w, rb, static_cast<const typename P::X *>(x), y);
    }
};

// ---------------------------------------------------------------- K-quants (blocks of 256)

// The eight 6-bit scales and mins of a Q4_K/Q5_K block (get_scale_min_k4 for j = 0..7) as bytes.
// Sub-blocks 0..3 keep the low six bits of bytes 0..7; 4..7 take nibbles of bytes 8..11 and the
// top two bits of bytes 0..7 (moved to bits 4..5 by the word shift).
inline void unpack_scales_mins(const uint8_t packed[K_SCALE_SIZE], uint8x8_t *sc, uint8x8_t *mn) {
    uint32_t a, b, c;
    std::memcpy(&a, packed, 4);
    std::memcpy(&b, packed + 4, 4);
    std::memcpy(&c, packed + 8, 4);
    const uint32_t sc_lo = a & 0x3f3f3f3fu, mn_lo = b & 0x3f3f3f3fu;
    const uint32_t sc_hi = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u);
    const uint32_t mn_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u);
    *sc = vreinterpret_u8_u64(vcreate_u64((uint64_t)sc_hi << 32 | sc_lo));
    *mn = vreinterpret_u8_u64(vcreate_u64((uint64_t)mn_hi << 32 | mn_lo));
}

// Q4_K and Q5_K (which adds a fifth bit per element from qh): per block
// x.d·(d·Σ_j sc_j·(q·x)_j - dmin·Σ_j m_j·(Σx)_j), the (Σx)_j from the activation's bsums.
// Sub-block pairs go in the outer loop so the rows share each pair's 64 activation bytes.
template <class Block, int R>
void q45_K_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const block_q8_K *x, float *y) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const Block *wr[R];
    float sum[R];
    for (int r = 0; r < R; ++r)
        wr[r] = reinterpret_cast<const Block *>(w + r * row_bytes), sum[r] = 0;
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const int16x8_t pairs = vpaddq_s16(vld1q_s16(x[ib].bsums), vld1q_s16(x[ib].bsums + 8));
        int32x4_t sc_lo[R], sc_hi[R], isum[R];
        int32_t summ[R];
        uint8x16_t h0[R], h1[R];
        for (int r = 0; r < R; ++r) {
            const Block &b = wr[r][ib];
            uint8x8_t sc, mn;
            unpack_scales_mins(b.scales, &sc, &mn);
            const int16x8_t sc16 = vreinterpretq_s16_u16(vmovl_u8(sc));
            const int16x8_t mn16 = vreinterpretq_s16_u16(vmovl_u8(mn));
            sc_lo[r] = vmovl_s16(vget_low_s16(sc16)), sc_hi[r] = vmovl_high_s16(sc16);
            summ[r] = vaddvq_s32(
                vmlal_high_s16(vmull_s16(vget_low_s16(mn16), vget_low_s16(pairs)), mn16, pairs));
            isum[r] = vdupq_n_s32(0);
            if constexpr (kQ5) h0[r] = vld1q_u8(b.qh), h1[r] = vld1q_u8(b.qh + 16);
        }
        const int8_t *a = x[ib].qs;
        for (int j = 0; j < QK_K / 64; ++j, a += 64) {
            const int8x16_t x0 = vld1q_s8(a), x1 = vld1q_s8(a + 16);
            const int8x16_t x2 = vld1q_s8(a + 32), x3 = vld1q_s8(a + 48);
            for (int r = 0; r < R; ++r) {
                const uint8_t *q = wr[r][ib].qs + 32 * j;
                const uint8x16_t q0 = vld1q_u8(q), q1 = vld1q_u8(q + 16);
                int8x16_t l0, l1, u0, u1;
                if constexpr (kQ5) {
                    // qh bit 2j (2j+1), the fifth bit of sub-block 2j (2j+1), meets its nibble in
                    // one insert: SLI puts qh's bit 0 above the low nibble, SRI the high nibble
                    // below qh's bit 1 (moved to bit 4), then & 0x1F
                    const uint8x16_t m5 = vdupq_n_u8(0x1F);
                    l0 = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(q0, h0[r], 4), m5));
                    l1 = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(q1, h1[r], 4), m5));
                    u0 = vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(vshlq_n_u8(h0[r], 3), q0, 4), m5));
                    u1 = vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(vshlq_n_u8(h1[r], 3), q1, 4), m5));
                    h0[r] = vshrq_n_u8(h0[r], 2), h1[r] = vshrq_n_u8(h1[r], 2);
                } else {
                    l0 = low_nibbles(q0), l1 = low_nibbles(q1);
                    u0 = high_nibbles(q0), u1 = high_nibbles(q1);
                }
                const int32x4_t zero = vdupq_n_s32(0);
                const int32x4_t s_lo = dot32<true>(zero, l0, l1, x0, x1);
                const int32x4_t s_hi = dot32<true>(zero, u0, u1, x2, x3);
                const int32x4_t &scales = j < 2 ? sc_lo[r] : sc_hi[r];
                switch (j % 2) {  // lane indices must be constants
                    case 0:
                        isum[r] = vmlaq_laneq_s32(isum[r], s_lo, scales, 0);
                        isum[r] = vmlaq_laneq_s32(isum[r], s_hi, scales, 1);
                        break;
                    default:
                        isum[r] = vmlaq_laneq_s32(isum[r], s_lo, scales, 2);
                        isum[r] = vmlaq_laneq_s32(isum[r], s_hi, scales, 3);
                }
            }
        }
        for (int r = 0; r < R; ++r) {
            const Block &b = wr[r][ib];
            sum[r] += x[ib].d * (f16_to_f32(b.d) * (float)vaddvq_s32(isum[r]) -
                                 f16_to_f32(b.dmin) * (float)summ[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r] = sum[r];
}

template <class Block>
struct Q45KRows {
    template <int R>
    static void run(int64_t n, const uint8_t *w, int64_t rb, const void *x, float *y) {
        q45_K_rows<Block, R>(n, w, rb, static_cast<const block_q8_K *>(x), y);
    }
};

// Q6_K: codes q in [0, 63] used as they are; the -32 is 32·Σ_g sc_g·(Σx)_g from the activation's
// sixteen bsums (groups of 16 are Q6_K's sub-blocks). Codes are built with SLI/SRI: the nibble
// and two high bits meet in one insert, then & 0x3F. Halves (128 elements) go in the outer loop so
// the rows share their activation bytes.
template <int R>
void q6_K_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const block_q8_K *x, float *y) {
    const block_q6_K *wr[R];
    float sum[R];
    for (int r = 0; r < R; ++r) {
        wr[r] = reinterpret_cast<const block_q6_K *>(w + r * row_bytes), sum[r] = 0;
    }
    const uint8x16_t m6 = vdupq_n_u8(0x3F);
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const int16x8_t bs0 = vld1q_s16(x[ib].bsums), bs1 = vld1q_s16(x[ib].bsums + 8);
        int32x4_t isum[R];
        for (int r = 0; r < R; ++r) {
            const int8x16_t sc = vld1q_s8(wr[r][ib].scales);
            const int16x8_t s0 = vmovl_s8(vget_low_s8(sc)), s1 = vmovl_high_s8(sc);
            int32x4_t off = vmull_s16(vget_low_s16(s0), vget_low_s16(bs0));
            off = vmlal_high_s16(off, s0, bs0);
            off = vmlal_s16(off, vget_low_s16(s1), vget_low_s16(bs1));
            off = vmlal_high_s16(off, s1, bs1);
            isum[r] = vnegq_s32(vshlq_n_s32(off, 5));
        }
        for (int half = 0; half < 2; ++half) {
            const int8_t *a = x[ib].qs + 128 * half;
            int8x16_t xa[8];
            for (int i = 0; i < 8; ++i) xa[i] = vld1q_s8(a + 16 * i);
            for (int r = 0; r < R; ++r) {
                const block_q6_K &b = wr[r][ib];
                const uint8_t *ql = b.ql + 64 * half, *qh = b.qh + 32 * half;
                const uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 16);
                const uint8x16_t l2 = vld1q_u8(ql + 32), l3 = vld1q_u8(ql + 48);
                const uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
                const uint8x16_t g0 = vshrq_n_u8(h0, 2), g1 = vshrq_n_u8(h1, 2);
                // elements 0..31: low nibbles of l0,l1 | qh bits 0-1; 32..63: l2,l3 | bits 2-3;
                // 64..95: high nibbles of l0,l1 | bits 4-5; 96..127: l2,l3 | bits 6-7
                const int8x16_t q[8] = {
                    vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(l0, h0, 4), m6)),
                    vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(l1, h1, 4), m6)),
                    vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(l2, g0, 4), m6)),
                    vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(l3, g1, 4), m6)),
                    vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(h0, l0, 4), m6)),
                    vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(h1, l1, 4), m6)),
                    vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(g0, l2, 4), m6)),
                    vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(g1, l3, 4), m6)),
                };
                const int32x4_t zero = vdupq_n_s32(0);
                const int16x8_t sc16 =
                    half == 0 ? vmovl_s8(vld1_s8(b.scales)) : vmovl_s8(vld1_s8(b.scales + 8));
                const int32x4_t sa = vmovl_s16(vget_low_s16(sc16)), sb = vmovl_high_s16(sc16);
                const int32x4_t ga = sum4(dot16(zero, q[0], xa[0]), dot16(zero, q[1], xa[1]),
                                          dot16(zero, q[2], xa[2]), dot16(zero, q[3], xa[3]));
                const int32x4_t gb = sum4(dot16(zero, q[4], xa[4]), dot16(zero, q[5], xa[5]),
                                          dot16(zero, q[6], xa[6]), dot16(zero, q[7], xa[7]));
                isum[r] = vmlaq_s32(vmlaq_s32(isum[r], ga, sa), gb, sb);
            }
        }
        for (int r = 0; r < R; ++r)
            sum[r] += x[ib].d * f16_to_f32(wr[r][ib].d) * (float)vaddvq_s32(isum[r]);
    }
    for (int r = 0; r < R; ++r) y[r] = sum[r];
}

struct Q6KRows {
    template <int R>
    static void run(int64_t n, const uint8_t *w, int64_t rb, const void *x, float *y) {
        q6_K_rows<R>(n, w, rb, static_cast<const block_q8_K *>(x), y);
    }
};

// ---------------------------------------------------------------- table entries

// A VecDotRowsFn from an R-row kernel: rows kMaxR at a time (fewer for the last call).
template <class K, int kMaxR>
void dot_rows(int64_t n, const void *vw, int64_t row_bytes, int nr, const void *x, float *y) {
    static_assert(kMaxR >= 1 && kMaxR <= 4, "one case per row count");
    const auto *w = static_cast<const uint8_t *>(vw);
    for (; nr > 0; nr -= kMaxR, w += kMaxR * row_bytes, y += kMaxR) {
        switch (nr < kMaxR ? nr : kMaxR) {
            case 1:
                K::template run<1>(n, w, row_bytes, x, y);
                break;
            case 2:
                K::template run<(kMaxR >= 2 ? 2 : 1)>(n, w, row_bytes, x, y);
                break;
            case 3:
                K::template run<(kMaxR >= 3 ? 3 : 1)>(n, w, row_bytes, x, y);
                break;
            default:
                K::template run<kMaxR>(n, w, row_bytes, x, y);
        }
    }
}

// The one-row dot: the kernel's R = 1 case, on a row of n / QK blocks of W.
template <class K, class W, int QK>
float one_row(int64_t n, const void *w, const void *x) {
    float y;
    K::template run<1>(n, static_cast<const uint8_t *>(w), n / QK * (int64_t)sizeof(W), x, &y);
    return y;
}

// The eight quantized weight types' kernels: one-row dot, its multi-row twin, and the packed GEMM
// pair (pack, gemm: gemm.h) of the including level.
inline void set_quant_kernels(DotKernels &t, PackPanelFn pack, GemmPanelFn gemm) {
    using Q4_0 = LegacyRows<Q4_0Policy>;
    using Q4_1 = LegacyRows<Q4_1Policy>;
    using Q5_0 = LegacyRows<Q5_0Policy>;
    using Q5_1 = LegacyRows<Q5_1Policy>;
    using Q8_0 = LegacyRows<Q8_0Policy>;
    using Q4_K = Q45KRows<block_q4_K>;
    using Q5_K = Q45KRows<block_q5_K>;
    t.q4_0 = {one_row<Q4_0, block_q4_0, QK4_0>, dot_rows<Q4_0, 4>, pack, gemm};
    t.q4_1 = {one_row<Q4_1, block_q4_1, QK4_1>, dot_rows<Q4_1, 4>, pack, gemm};
    t.q5_0 = {one_row<Q5_0, block_q5_0, QK5_0>, dot_rows<Q5_0, 4>, pack, gemm};
    t.q5_1 = {one_row<Q5_1, block_q5_1, QK5_1>, dot_rows<Q5_1, 4>, pack, gemm};
    t.q8_0 = {one_row<Q8_0, block_q8_0, QK8_0>, dot_rows<Q8_0, 4>, pack, gemm};
    t.q4_K = {one_row<Q4_K, block_q4_K, QK_K>, dot_rows<Q4_K, 2>, pack, gemm};
    t.q5_K = {one_row<Q5_K, block_q5_K, QK_K>, dot_rows<Q5_K, 2>, pack, gemm};
    t.q6_K = {one_row<Q6KRows, block_q6_K, QK_K>, dot_rows<Q6KRows, 2>, pack, gemm};
}

}  // namespace
}  // namespace phirt

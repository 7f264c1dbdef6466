// NEON (+dotprod) twin of dot_ref.cpp: the same kernels on 16-byte vectors, integer block sums by
// SDOT (vdotq_s32). Compiled with -march=armv8.2-a+dotprod (sources.cmake) and selected only
// when the CPU reports ASIMDDP. The activation converters write the scalar bytes and integer sums
// are exact, so results differ from dot_ref.cpp only in float summation order.
//
// Everything here has internal linkage and no std:: template is instantiated, so the linker can
// never hand a dotprod-compiled copy of shared code to baseline callers (see docs/design.md).
// Half conversions use FCVT/FCVTL only (base ARMv8), never FP16 arithmetic.
#include <arm_neon.h>

#include <cstring>

#include "../dot.h"
#include "../dot_loops.h"
#include "../nbits_kernels.h"
#include "../quants.h"

namespace phirt {

namespace {

constexpr float kMaxFinite = 3.40282347e+38f;

// Elements per f32 partial sum in the float dots: past this the sum moves to a double, so the
// error stays that of a 256-term f32 sum however long the row (the scalar spec sums in double).
constexpr int64_t kFloatChunk = 256;

// Exact half -> float (FCVT).
float half_to_float(ggml_half h) {
    __fp16 v;
    std::memcpy(&v, &h, sizeof(v));
    return (float)v;
}

float16x8_t load_f16x8(const ggml_half *p) {
    return vreinterpretq_f16_u16(vld1q_u16(p));
}

// ---- activation converters (byte-identical to quantize_row_*_act) ----

// Loads 32 floats into v and returns max |x|. vmaxnm skips NaN lanes, as std::max(amax, |x|) does.
float load_absmax32(const float *x, float32x4_t v[8]) {
    for (int j = 0; j < 8; ++j) v[j] = vld1q_f32(x + 4 * j);
    const float32x4_t m01 = vmaxnmq_f32(vabsq_f32(v[0]), vabsq_f32(v[1]));
    const float32x4_t m23 = vmaxnmq_f32(vabsq_f32(v[2]), vabsq_f32(v[3]));
    const float32x4_t m45 = vmaxnmq_f32(vabsq_f32(v[4]), vabsq_f32(v[5]));
    const float32x4_t m67 = vmaxnmq_f32(vabsq_f32(v[6]), vabsq_f32(v[7]));
    return vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(m01, m23), vmaxnmq_f32(m45, m67)));
}

// Four int32 vectors to 16 int8 (values are known to fit).
int8x16_t narrow_s32x4(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    const int16x8_t ab = vmovn_high_s32(vmovn_s32(a), b);
    const int16x8_t cd = vmovn_high_s32(vmovn_s32(c), d);
    return vmovn_high_s16(vmovn_s16(ab), cd);
}

// round(v * s) for 16 floats, ties to even (FCVTNS), as int8. Equal to nearest_int(v * s) while
// |v * s| < 2^22, which holds for every finite scale the converters pass (|v| <= amax).
int8x16_t scale_round16(const float32x4_t v[4], float s) {
    return narrow_s32x4(vcvtnq_s32_f32(vmulq_n_f32(v[0], s)), vcvtnq_s32_f32(vmulq_n_f32(v[1], s)),
                        vcvtnq_s32_f32(vmulq_n_f32(v[2], s)), vcvtnq_s32_f32(vmulq_n_f32(v[3], s)));
}

void to_q8_0(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<block_q8_0 *>(vy);
    for (int64_t ib = 0; ib < n / QK8_0; ++ib, x += QK8_0) {
        float32x4_t v[8];
        const float amax = load_absmax32(x, v);
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        if (!(id <= kMaxFinite)) {  // amax < 127/FLT_MAX: nearest_int's wrap-around is the spec
            quantize_row_q8_0_act(x, y + ib, QK8_0);
            continue;
        }
        y[ib].d = fp32_to_fp16(amax / 127.f);
        vst1q_s8(y[ib].qs, scale_round16(v, id));
        vst1q_s8(y[ib].qs + 16, scale_round16(v + 4, id));
    }
}

void to_q8_1(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<block_q8_1 *>(vy);
    for (int64_t ib = 0; ib < n / QK8_1; ++ib, x += QK8_1) {
        float32x4_t v[8];
        const float amax = load_absmax32(x, v);
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        if (!(id <= kMaxFinite)) {
            quantize_row_q8_1_act(x, y + ib, QK8_1);
            continue;
        }
        const float d = amax / 127.f;
        const int8x16_t q0 = scale_round16(v, id), q1 = scale_round16(v + 4, id);
        vst1q_s8(y[ib].qs, q0);
        vst1q_s8(y[ib].qs + 16, q1);
        const int sum = vaddlvq_s8(q0) + vaddlvq_s8(q1);
        y[ib].d = fp32_to_fp16(d);
        y[ib].s = fp32_to_fp16((float)sum * d);
    }
}

// First element of magnitude amax, keeping its sign (signed_absmax's tie rule); 0 when none is
// (all NaN), which then quantizes to the zero block as the scalar code does.
float first_of_magnitude(const float *x, int n, float amax) {
    for (int j = 0; j < n; ++j)
        if (x[j] == amax || x[j] == -amax) return x[j];
    return 0.0f;
}

void to_q8_K(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<block_q8_K *>(vy);
    for (int64_t ib = 0; ib < n / QK_K; ++ib, x += QK_K) {
        float32x4_t hi = vld1q_f32(x), lo = hi;
        for (int j = 4; j < QK_K; j += 4) {
            const float32x4_t v = vld1q_f32(x + j);
            hi = vmaxnmq_f32(hi, v);
            lo = vminnmq_f32(lo, v);
        }
        const float mx = vmaxnmvq_f32(hi), mn = vminnmvq_f32(lo);
        // The signed value of largest magnitude; only +a vs -a needs the scan for the first one.
        const float max = mx > -mn ? mx : -mn > mx ? mn : first_of_magnitude(x, QK_K, mx);
        if (max == 0.0f) {
            y[ib].d = 0;
            std::memset(y[ib].qs, 0, sizeof(y[ib].qs));
            std::memset(y[ib].bsums, 0, sizeof(y[ib].bsums));
            continue;
        }
        const float iscale = -127.f / max;
        if (!(iscale <= kMaxFinite && iscale >= -kMaxFinite)) {
            quantize_row_q8_K_act(x, y + ib, QK_K);
            continue;
        }
        const int32x4_t cap = vdupq_n_s32(127);
        for (int j = 0; j < QK_K; j += 16) {
            int32x4_t r[4];
            for (int l = 0; l < 4; ++l)
                r[l] =
                    vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + 4 * l), iscale)), cap);
            const int8x16_t q = narrow_s32x4(r[0], r[1], r[2], r[3]);
            vst1q_s8(y[ib].qs + j, q);
            y[ib].bsums[j / 16] = (int16_t)vaddlvq_s8(q);
        }
        y[ib].d = 1 / iscale;
    }
}

// FCVTN rounds to nearest even under the default FPCR, like fp32_to_fp16. (NaN payloads may differ
// from the scalar 0x7E00; activations are finite.)
void to_f16(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<ggml_half *>(vy);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h =
            vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(x + i)), vld1q_f32(x + i + 4));
        vst1q_u16(y + i, vreinterpretq_u16_f16(h));
    }
    for (; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

// fp32_to_bf16 on four lanes: round to nearest even, NaN kept quiet.
uint16x4_t bf16_round4(float32x4_t f) {
    const uint32x4_t u = vreinterpretq_u32_f32(f);
    const uint32x4_t is_nan =
        vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffffu)), vdupq_n_u32(0x7f800000u));
    const uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(u, vaddq_u32(odd, vdupq_n_u32(0x7fffu))), 16);
    const uint32x4_t quiet = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(64));
    return vmovn_u32(vbslq_u32(is_nan, quiet, rounded));
}

void to_bf16(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<ggml_bf16 *>(vy);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        vst1q_u16(y + i,
                  vcombine_u16(bf16_round4(vld1q_f32(x + i)), bf16_round4(vld1q_f32(x + i + 4))));
    for (; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
}

// ---- quantized dot products ----

// Σ of 32 int8 products (w0 with a[0..16), w1 with a[16..32)) in four int32 lanes.
int32x4_t dot32(int8x16_t w0, int8x16_t w1, const int8_t *a) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8(a)), w1, vld1q_s8(a + 16));
}

int8x16_t low_nibbles(uint8x16_t q) {
    return vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
}
int8x16_t high_nibbles(uint8x16_t q) {
    return vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
}

// Σ over nb blocks of block(ib, &scale) · scale, where block returns a block's integer sum in four
// lanes; two independent f32 accumulators (the order differs from the scalar loop, the value not).
template <class Block>
float sum_blocks(int64_t nb, Block block) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int64_t ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
        float d0, d1;
        const int32x4_t s0 = block(ib, &d0);
        const int32x4_t s1 = block(ib + 1, &d1);
        acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(s0), d0);
        acc1 = vfmaq_n_f32(acc1, vcvtq_f32_s32(s1), d1);
    }
    if (ib < nb) {
        float d0;
        const int32x4_t s0 = block(ib, &d0);
        acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(s0), d0);
    }
    return vaddvq_f32(vaddq_f32(acc0, acc1));
}

float dot_q4_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q4_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    const int8x16_t eight = vdupq_n_s8(8);
    return sum_blocks(n / QK8_0, [&](int64_t ib, float *d) {
        const uint8x16_t qs = vld1q_u8(w[ib].qs);
        *d = half_to_float(w[ib].d) * half_to_float(x[ib].d);
        return dot32(vsubq_s8(low_nibbles(qs), eight), vsubq_s8(high_nibbles(qs), eight), x[ib].qs);
    });
}

float dot_q4_1_q8_1(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q4_1 *>(vw);
    const auto *x = static_cast<const block_q8_1 *>(vx);
    float offsets = 0.0f;  // Σ m·s: the min times the activation block sum
    const float sum = sum_blocks(n / QK8_1, [&](int64_t ib, float *d) {
        const uint8x16_t qs = vld1q_u8(w[ib].qs);
        *d = half_to_float(w[ib].d) * half_to_float(x[ib].d);
        offsets += half_to_float(w[ib].m) * half_to_float(x[ib].s);
        return dot32(low_nibbles(qs), high_nibbles(qs), x[ib].qs);
    });
    return sum + offsets;
}

// Bytes of 0xFF where the fifth bit is set, for elements 0..15 (lo) and 16..31 (hi) of a Q5 block:
// each byte of qh is spread over eight lanes and tested against that lane's bit.
void q5_high_masks(const uint8_t qh_bytes[4], uint8x16_t *lo, uint8x16_t *hi) {
    uint32_t qh;
    std::memcpy(&qh, qh_bytes, sizeof(qh));
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    const uint8x16_t bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201ull));
    const uint8x16_t pick_lo = vcombine_u8(vdup_n_u8(0), vdup_n_u8(1));
    const uint8x16_t pick_hi = vcombine_u8(vdup_n_u8(2), vdup_n_u8(3));
    *lo = vtstq_u8(vqtbl1q_u8(bytes, pick_lo), bit);
    *hi = vtstq_u8(vqtbl1q_u8(bytes, pick_hi), bit);
}

float dot_q5_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q5_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    const uint8x16_t sixteen = vdupq_n_u8(16);
    return sum_blocks(n / QK8_0, [&](int64_t ib, float *d) {
        const uint8x16_t qs = vld1q_u8(w[ib].qs);
        uint8x16_t set_lo, set_hi;
        q5_high_masks(w[ib].qh, &set_lo, &set_hi);
        // (q | bit4) - 16 == q - (bit4 clear ? 16 : 0)
        const int8x16_t lo =
            vsubq_s8(low_nibbles(qs), vreinterpretq_s8_u8(vbicq_u8(sixteen, set_lo)));
        const int8x16_t hi =
            vsubq_s8(high_nibbles(qs), vreinterpretq_s8_u8(vbicq_u8(sixteen, set_hi)));
        *d = half_to_float(w[ib].d) * half_to_float(x[ib].d);
        return dot32(lo, hi, x[ib].qs);
    });
}

float dot_q5_1_q8_1(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q5_1 *>(vw);
    const auto *x = static_cast<const block_q8_1 *>(vx);
    const uint8x16_t sixteen = vdupq_n_u8(16);
    float offsets = 0.0f;
    const float sum = sum_blocks(n / QK8_1, [&](int64_t ib, float *d) {
        const uint8x16_t qs = vld1q_u8(w[ib].qs);
        uint8x16_t set_lo, set_hi;
        q5_high_masks(w[ib].qh, &set_lo, &set_hi);
        const int8x16_t lo =
            vorrq_s8(low_nibbles(qs), vreinterpretq_s8_u8(vandq_u8(sixteen, set_lo)));
        const int8x16_t hi =
            vorrq_s8(high_nibbles(qs), vreinterpretq_s8_u8(vandq_u8(sixteen, set_hi)));
        *d = half_to_float(w[ib].d) * half_to_float(x[ib].d);
        offsets += half_to_float(w[ib].m) * half_to_float(x[ib].s);
        return dot32(lo, hi, x[ib].qs);
    });
    return sum + offsets;
}

float dot_q8_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q8_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    return sum_blocks(n / QK8_0, [&](int64_t ib, float *d) {
        *d = half_to_float(w[ib].d) * half_to_float(x[ib].d);
        return dot32(vld1q_s8(w[ib].qs), vld1q_s8(w[ib].qs + 16), x[ib].qs);
    });
}

// The eight 6-bit scales and mins of a Q4_K/Q5_K block (get_scale_min_k4 for j = 0..7) as bytes.
// Sub-blocks 0..3 keep the low six bits of bytes 0..7; 4..7 take nibbles of bytes 8..11 and the
// top two bits of bytes 0..7 (moved to bits 4..5 by the word shift).
void unpack_scales_mins(const uint8_t packed[K_SCALE_SIZE], uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a, b, c;
    std::memcpy(&a, packed, 4);
    std::memcpy(&b, packed + 4, 4);
    std::memcpy(&c, packed + 8, 4);
    const uint32_t sc_lo = a & 0x3f3f3f3fu, mn_lo = b & 0x3f3f3f3fu;
    const uint32_t sc_hi = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u);
    const uint32_t mn_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u);
    std::memcpy(sc, &sc_lo, 4);
    std::memcpy(sc + 4, &sc_hi, 4);
    std::memcpy(mn, &mn_lo, 4);
    std::memcpy(mn + 4, &mn_hi, 4);
}

// Σ_j m_j·(Σx)_j over the eight sub-blocks of 32, from the activation's sixteen bsums.
int32_t mins_dot_bsums(const uint8_t mn[8], const int16_t bsums[QK_K / 16]) {
    const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
    return vaddvq_s32(
        vmlal_high_s16(vmull_s16(vget_low_s16(pairs), vget_low_s16(mins)), pairs, mins));
}

// Bit 4 - kShift of each byte of h as bit 4 (Q5_K's fifth bit), as signed bytes.
template <int kShift>
int8x16_t fifth_bit(uint8x16_t h) {
    return vreinterpretq_s8_u8(vandq_u8(vshlq_n_u8(h, kShift), vdupq_n_u8(0x10)));
}

// Q4_K and Q5_K (which adds a fifth bit per element from qh).
template <class Block>
float dot_q45_K(int64_t n, const void *vw, const void *vx) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const auto *w = static_cast<const Block *>(vw);
    const auto *x = static_cast<const block_q8_K *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        uint8_t sc[8], mn[8];
        unpack_scales_mins(w[ib].scales, sc, mn);
        const int32_t summ = mins_dot_bsums(mn, x[ib].bsums);
        const uint8_t *q = w[ib].qs;
        const int8_t *a = x[ib].qs;
        // qh bit 2j (2j+1) is the fifth bit of sub-block 2j (2j+1); shifted down two bits per pair.
        uint8x16_t h0 = vdupq_n_u8(0), h1 = h0;
        if constexpr (kQ5) h0 = vld1q_u8(w[ib].qh), h1 = vld1q_u8(w[ib].qh + 16);
        int32x4_t acc = vdupq_n_s32(0);
        for (int j = 0; j < QK_K / 64; ++j, q += 32, a += 64) {
            const uint8x16_t q0 = vld1q_u8(q), q1 = vld1q_u8(q + 16);
            int8x16_t l0 = low_nibbles(q0), l1 = low_nibbles(q1);
            int8x16_t u0 = high_nibbles(q0), u1 = high_nibbles(q1);
            if constexpr (kQ5) {
                l0 = vorrq_s8(l0, fifth_bit<4>(h0)), l1 = vorrq_s8(l1, fifth_bit<4>(h1));
                u0 = vorrq_s8(u0, fifth_bit<3>(h0)), u1 = vorrq_s8(u1, fifth_bit<3>(h1));
                h0 = vshrq_n_u8(h0, 2), h1 = vshrq_n_u8(h1, 2);
            }
            acc = vmlaq_n_s32(acc, dot32(l0, l1, a), sc[2 * j]);
            acc = vmlaq_n_s32(acc, dot32(u0, u1, a + 32), sc[2 * j + 1]);
        }
        const int32_t sumi = vaddvq_s32(acc);
        sum += x[ib].d * (half_to_float(w[ib].d) * sumi - half_to_float(w[ib].dmin) * summ);
    }
    return sum;
}

float dot_q4_K_q8_K(int64_t n, const void *vw, const void *vx) {
    return dot_q45_K<block_q4_K>(n, vw, vx);
}
float dot_q5_K_q8_K(int64_t n, const void *vw, const void *vx) {
    return dot_q45_K<block_q5_K>(n, vw, vx);
}

// Four groups of 16 (q with a) reduced to one int32 lane per group.
int32x4_t group_sums4(const int8x16_t q[4], const int8_t *a) {
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t p0 = vdotq_s32(zero, q[0], vld1q_s8(a));
    const int32x4_t p1 = vdotq_s32(zero, q[1], vld1q_s8(a + 16));
    const int32x4_t p2 = vdotq_s32(zero, q[2], vld1q_s8(a + 32));
    const int32x4_t p3 = vdotq_s32(zero, q[3], vld1q_s8(a + 48));
    return vpaddq_s32(vpaddq_s32(p0, p1), vpaddq_s32(p2, p3));
}

// 6-bit value minus 32 from a nibble and two high bits already placed at bits 4..5.
int8x16_t q6_value(uint8x16_t nibble, uint8x16_t high) {
    return vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(nibble, high)), vdupq_n_s8(32));
}

float dot_q6_K_q8_K(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q6_K *>(vw);
    const auto *x = static_cast<const block_q8_K *>(vx);
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m2 = vdupq_n_u8(0x30);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const int8x16_t scales = vld1q_s8(w[ib].scales);
        const int16x8_t sc_lo = vmovl_s8(vget_low_s8(scales)), sc_hi = vmovl_high_s8(scales);
        const int32x4_t sc[4] = {vmovl_s16(vget_low_s16(sc_lo)), vmovl_high_s16(sc_lo),
                                 vmovl_s16(vget_low_s16(sc_hi)), vmovl_high_s16(sc_hi)};
        const uint8_t *ql = w[ib].ql;
        const uint8_t *qh = w[ib].qh;
        const int8_t *a = x[ib].qs;
        int32x4_t acc = vdupq_n_s32(0);
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, a += 128) {
            // 128 values: groups of 16 in order, as dot_ref.cpp's unpacking lays them out.
            const uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 16);
            const uint8x16_t l2 = vld1q_u8(ql + 32), l3 = vld1q_u8(ql + 48);
            const uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
            const int8x16_t first[4] = {
                q6_value(vandq_u8(l0, m4), vandq_u8(vshlq_n_u8(h0, 4), m2)),
                q6_value(vandq_u8(l1, m4), vandq_u8(vshlq_n_u8(h1, 4), m2)),
                q6_value(vandq_u8(l2, m4), vandq_u8(vshlq_n_u8(h0, 2), m2)),
                q6_value(vandq_u8(l3, m4), vandq_u8(vshlq_n_u8(h1, 2), m2)),
            };
            const int8x16_t second[4] = {
                q6_value(vshrq_n_u8(l0, 4), vandq_u8(h0, m2)),
                q6_value(vshrq_n_u8(l1, 4), vandq_u8(h1, m2)),
                q6_value(vshrq_n_u8(l2, 4), vandq_u8(vshrq_n_u8(h0, 2), m2)),
                q6_value(vshrq_n_u8(l3, 4), vandq_u8(vshrq_n_u8(h1, 2), m2)),
            };
            acc = vmlaq_s32(acc, group_sums4(first, a), sc[2 * half]);
            acc = vmlaq_s32(acc, group_sums4(second, a + 64), sc[2 * half + 1]);
        }
        sum += x[ib].d * half_to_float(w[ib].d) * vaddvq_s32(acc);
    }
    return sum;
}

// ---- float dot products ----

// Shared shape of the float dots: f32 FMA on four accumulators of four lanes within chunks of
// kFloatChunk elements, chunk sums and the scalar tail in double. load8(i, lo, hi) yields elements
// i..i+8 of w·x's factors; tail(i) is element i's product.
template <class Load8, class Tail>
float dot_float(int64_t n, Load8 load8, Tail tail) {
    double total = 0.0;
    const int64_t n16 = n & ~(int64_t)15;
    int64_t i = 0;
    while (i < n16) {
        const int64_t end = n16 - i > kFloatChunk ? i + kFloatChunk : n16;
        float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f),
                              vdupq_n_f32(0.0f)};
        for (; i < end; i += 16) {
            float32x4_t w[4], x[4];
            load8(i, w, x);
            load8(i + 8, w + 2, x + 2);
            for (int l = 0; l < 4; ++l) acc[l] = vfmaq_f32(acc[l], w[l], x[l]);
        }
        total +=
            (double)vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    }
    for (; i < n; ++i) total += (double)tail(i);
    return (float)total;
}

float dot_f16_f16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_half *>(vw);
    const auto *x = static_cast<const ggml_half *>(vx);
    return dot_float(
        n,
        [&](int64_t i, float32x4_t *wf, float32x4_t *xf) {
            const float16x8_t wh = load_f16x8(w + i), xh = load_f16x8(x + i);
            wf[0] = vcvt_f32_f16(vget_low_f16(wh));
            wf[1] = vcvt_high_f32_f16(wh);
            xf[0] = vcvt_f32_f16(vget_low_f16(xh));
            xf[1] = vcvt_high_f32_f16(xh);
        },
        [&](int64_t i) { return half_to_float(w[i]) * half_to_float(x[i]); });
}

float dot_bf16_bf16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_bf16 *>(vw);
    const auto *x = static_cast<const ggml_bf16 *>(vx);
    return dot_float(
        n,
        [&](int64_t i, float32x4_t *wf, float32x4_t *xf) {
            const uint16x8_t wb = vld1q_u16(w + i), xb = vld1q_u16(x + i);
            wf[0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(wb), 16));
            wf[1] = vreinterpretq_f32_u32(vshll_high_n_u16(wb, 16));
            xf[0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(xb), 16));
            xf[1] = vreinterpretq_f32_u32(vshll_high_n_u16(xb, 16));
        },
        [&](int64_t i) { return bf16_to_fp32(w[i]) * bf16_to_fp32(x[i]); });
}

float dot_f32_f32(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const float *>(vw);
    const auto *x = static_cast<const float *>(vx);
    return dot_float(
        n,
        [&](int64_t i, float32x4_t *wf, float32x4_t *xf) {
            wf[0] = vld1q_f32(w + i);
            wf[1] = vld1q_f32(w + i + 4);
            xf[0] = vld1q_f32(x + i);
            xf[1] = vld1q_f32(x + i + 4);
        },
        [&](int64_t i) { return w[i] * x[i]; });
}

void axpy_f16(int64_t n, float a, const ggml_half *x, float *y) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = load_f16x8(x + i);
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vcvt_f32_f16(vget_low_f16(h)), a));
        vst1q_f32(y + i + 4, vfmaq_n_f32(vld1q_f32(y + i + 4), vcvt_high_f32_f16(h), a));
    }
    for (; i < n; ++i) y[i] += a * half_to_float(x[i]);
}

}  // namespace

// No NEON MatMulNBits dot or panel kernel yet (the scalar's run); exp_sum is the scalar's.
const DotKernels *dot_kernels_neon() {
    static const DotKernels table = [] {
        DotKernels t = dot_kernels_scalar();
        t.isa = "neon";
        t.to_q8_0 = to_q8_0;
        t.to_q8_1 = to_q8_1;
        t.to_q8_K = to_q8_K;
        t.to_f16 = to_f16;
        t.to_bf16 = to_bf16;
        t.q4_0 = {dot_q4_0_q8_0, rows_by_dot<dot_q4_0_q8_0>};
        t.q4_1 = {dot_q4_1_q8_1, rows_by_dot<dot_q4_1_q8_1>};
        t.q5_0 = {dot_q5_0_q8_0, rows_by_dot<dot_q5_0_q8_0>};
        t.q5_1 = {dot_q5_1_q8_1, rows_by_dot<dot_q5_1_q8_1>};
        t.q8_0 = {dot_q8_0_q8_0, rows_by_dot<dot_q8_0_q8_0>};
        t.q4_K = {dot_q4_K_q8_K, rows_by_dot_prefetch<dot_q4_K_q8_K>};
        t.q5_K = {dot_q5_K_q8_K, rows_by_dot_prefetch<dot_q5_K_q8_K>};
        t.q6_K = {dot_q6_K_q8_K, rows_by_dot_prefetch<dot_q6_K_q8_K>};
        t.f16 = {dot_f16_f16, rows_by_dot<dot_f16_f16>};
        t.bf16 = {dot_bf16_bf16, rows_by_dot<dot_bf16_bf16>};
        t.f32 = {dot_f32_f32, rows_by_dot<dot_f32_f32>};
        t.axpy_f16 = axpy_f16;
        t.attn_scores = attn_scores_by_dot<dot_f16_f16>;
        t.attn_values = attn_values_by_axpy<axpy_f16>;
        return t;
    }();
    return &table;
}

}  // namespace phirt

// Baseline Armv8.0 NEON twin of dot_ref.cpp (table "neon": Cortex-A53/A57/A72, i.e. Raspberry Pi
// 3/4 and Jetson Nano, and every AArch64 CPU): activation converters (the scalar bytes), float
// dots, f16 attention loops, the quantized dots of neon_dots.h (SMULL/SADALP) and the packed GEMM
// of neon_gemm.h. Compiled with -march=armv8-a (sources.cmake): nothing here may need more, and
// the dotprod/i8mm tables (dot_neon_dotprod.cpp, dot_neon_i8mm.cpp) start from this one.
//
// Everything but dot_kernels_neon() has internal linkage and no std:: template is instantiated
// (see docs/design.md). Half conversions use FCVT/FCVTL only (base ARMv8), never FP16 arithmetic.
#include <arm_neon.h>

#include <cstring>

#include "../attn_q8.h"
#include "../dot.h"
#include "../dot_loops.h"
#include "../nbits_kernels.h"
#include "../quants.h"
#include "neon_dots.h"
#include "neon_gemm.h"

namespace phirt {

namespace {

constexpr float kMaxFinite = 3.40282347e+38f;

// Elements per f32 partial sum in the float dots: past this the sum moves to a double, so the
// error stays that of a 256-term f32 sum however long the row (the scalar spec sums in double).
constexpr int64_t kFloatChunk = 256;

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
        [&](int64_t i) { return f16_to_f32(w[i]) * f16_to_f32(x[i]); });
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
    for (; i < n; ++i) y[i] += a * f16_to_f32(x[i]);
}

// ---- f16 attention rows ----

// Unscaled scores of a float query: four keys at a time, 8 elements per step in two f32 lanes each;
// the scalar tail per key.

void scores_of_float_query(int64_t hd, int64_t n, const ggml_half *k, const float *q,
                           float *scores) {
    const int64_t h8 = hd & ~(int64_t)7;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const ggml_half *kj = k + j * hd;
        float32x4_t acc[4][2];
        for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
        for (int64_t c = 0; c < h8; c += 8) {
            const float32x4_t q0 = vld1q_f32(q + c), q1 = vld1q_f32(q + c + 4);
            for (int r = 0; r < 4; ++r) {
                const float16x8_t h = load_f16x8(kj + r * hd + c);
                acc[r][0] = vfmaq_f32(acc[r][0], vcvt_f32_f16(vget_low_f16(h)), q0);
                acc[r][1] = vfmaq_f32(acc[r][1], vcvt_high_f32_f16(h), q1);
            }
        }
        for (int r = 0; r < 4; ++r) {
            float s = vaddvq_f32(vaddq_f32(acc[r][0], acc[r][1]));
            for (int64_t c = h8; c < hd; ++c) s += f16_to_f32(kj[r * hd + c]) * q[c];
            scores[j + r] = s;
        }
    }
    for (; j < n; ++j) {
        const ggml_half *kj = k + j * hd;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
        for (int64_t c = 0; c < h8; c += 8) {
            const float16x8_t h = load_f16x8(kj + c);
            a0 = vfmaq_f32(a0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(q + c));
            a1 = vfmaq_f32(a1, vcvt_high_f32_f16(h), vld1q_f32(q + c + 4));
        }
        float s = vaddvq_f32(vaddq_f32(a0, a1));
        for (int64_t c = h8; c < hd; ++c) s += f16_to_f32(kj[c]) * q[c];
        scores[j] = s;
    }
}

// The query converted once (exact) for all keys.
constexpr int64_t kMaxQueryChunk = 512;

void attn_scores(int64_t hd, int64_t n, const ggml_half *k, const ggml_half *q, float scale,
                 float *scores) {
    if (hd > kMaxQueryChunk) {  // no head is this wide; the f16 dot keeps it correct
        for (int64_t j = 0; j < n; ++j) scores[j] = dot_f16_f16(hd, k + j * hd, q) * scale;
        return;
    }
    float qf[kMaxQueryChunk];
    for (int64_t c = 0; c < hd; ++c) qf[c] = f16_to_f32(q[c]);
    scores_of_float_query(hd, n, k, qf, scores);
    for (int64_t j = 0; j < n; ++j) scores[j] *= scale;
}

// Columns [c0, c0 + 8·NC) of o stay in registers while every value row passes.
template <int NC>
void attn_values_block(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v, float *o) {
    float32x4_t acc[NC][2];
    for (int c = 0; c < NC; ++c)
        acc[c][0] = vld1q_f32(o + 8 * c), acc[c][1] = vld1q_f32(o + 8 * c + 4);
    for (int64_t j = 0; j < n; ++j) {
        const float pj = f16_to_f32(p[j]);
        for (int c = 0; c < NC; ++c) {
            const float16x8_t h = load_f16x8(v + j * hd + 8 * c);
            acc[c][0] = vfmaq_n_f32(acc[c][0], vcvt_f32_f16(vget_low_f16(h)), pj);
            acc[c][1] = vfmaq_n_f32(acc[c][1], vcvt_high_f32_f16(h), pj);
        }
    }
    for (int c = 0; c < NC; ++c)
        vst1q_f32(o + 8 * c, acc[c][0]), vst1q_f32(o + 8 * c + 4, acc[c][1]);
}

// Blocks of up to 64 columns (16 accumulators), then the columns past the last multiple of 8.
void attn_values(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v, float *o) {
    int64_t c = 0;
    for (; c + 64 <= hd; c += 64) attn_values_block<8>(hd, n, p, v + c, o + c);
    switch ((hd - c) / 8) {
        case 7:
            attn_values_block<7>(hd, n, p, v + c, o + c);
            break;
        case 6:
            attn_values_block<6>(hd, n, p, v + c, o + c);
            break;
        case 5:
            attn_values_block<5>(hd, n, p, v + c, o + c);
            break;
        case 4:
            attn_values_block<4>(hd, n, p, v + c, o + c);
            break;
        case 3:
            attn_values_block<3>(hd, n, p, v + c, o + c);
            break;
        case 2:
            attn_values_block<2>(hd, n, p, v + c, o + c);
            break;
        case 1:
            attn_values_block<1>(hd, n, p, v + c, o + c);
            break;
        default:
            break;
    }
    for (c += (hd - c) / 8 * 8; c < hd; ++c)
        for (int64_t j = 0; j < n; ++j) o[c] += f16_to_f32(p[j]) * f16_to_f32(v[j * hd + c]);
}

}  // namespace

// The baseline table: every AArch64 CPU runs it. MatMulNBits and exp_sum stay the scalar spec's.
const DotKernels *dot_kernels_neon() {
    static const DotKernels table = [] {
        DotKernels t = dot_kernels_scalar();
        t.isa = "neon";
        t.to_q8_0 = to_q8_0;
        t.to_q8_1 = to_q8_1;
        t.to_q8_K = to_q8_K;
        t.to_f16 = to_f16;
        t.to_bf16 = to_bf16;
        set_quant_kernels(t, pack_panel_neon, gemm_panel_neon);
        t.f16 = {dot_f16_f16, rows_by_dot<dot_f16_f16>};
        t.bf16 = {dot_bf16_bf16, rows_by_dot<dot_bf16_bf16>};
        t.f32 = {dot_f32_f32, rows_by_dot<dot_f32_f32>};
        t.axpy_f16 = axpy_f16;
        t.attn_scores = attn_scores;
        t.attn_values = attn_values;
        t.attn_q8_scores = attn_q8_scores_neon;
        t.attn_q8_values = attn_q8_values_neon;
        return t;
    }();
    return &table;
}

}  // namespace phirt

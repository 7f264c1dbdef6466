// AVX2 + FMA + F16C twin of dot_ref.cpp: same activation bytes, dot products that differ from the
// scalar spec only in float summation order.
//
// Compiled with -mavx2 -mfma -mf16c. Everything here is in an anonymous namespace (internal
// linkage) so no AVX2 code can be picked by the linker for a baseline caller; only
// dot_kernels_avx2() is exported. Integer techniques follow ggml-cpu/arch/x86/quants.c
// (maddubs on unsigned×signed bytes, nibble unpacking, the Q6_K bsums offset trick).
#include "../dot_loops.h"
#include "../nbits_kernels.h"
#include "x86_common.h"

namespace phirt {

namespace {

// ---------------------------------------------------------------- legacy quant dots (blocks of 32)
//
// Every legacy block starts with its fp16 d (then m or s for Q4_1/Q5_1/Q8_1). Blocks go eight at
// a time: the 8 scale products come from two gathers and one F16C conversion, and the integer
// sums of four blocks share one int->float conversion and one FMA.

// d_w·d_x (and m_w·s_x when `m` is given) of 8 consecutive blocks `sw`/`sx` bytes apart. Each
// gather reads the 4 bytes at a block's start, which stay inside the block.
inline void block_scales8(const uint8_t *w, int sw, const uint8_t *x, int sx, float *d, float *m) {
    const __m256i steps = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i gw = _mm256_i32gather_epi32(reinterpret_cast<const int *>(w),
                                              _mm256_mullo_epi32(steps, _mm256_set1_epi32(sw)), 1);
    const __m256i gx = _mm256_i32gather_epi32(reinterpret_cast<const int *>(x),
                                              _mm256_mullo_epi32(steps, _mm256_set1_epi32(sx)), 1);
    const __m256i lo16 = _mm256_set1_epi32(0xFFFF);
    // packus gives [w0-3 x0-3 | w4-7 x4-7]; the permute makes it [w0-7 | x0-7]
    const __m256i dd = _mm256_permute4x64_epi64(
        _mm256_packus_epi32(_mm256_and_si256(gw, lo16), _mm256_and_si256(gx, lo16)), 0xD8);
    _mm256_store_ps(d, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(dd)),
                                     _mm256_cvtph_ps(_mm256_extracti128_si256(dd, 1))));
    if (m != nullptr) {
        const __m256i ms = _mm256_permute4x64_epi64(
            _mm256_packus_epi32(_mm256_srli_epi32(gw, 16), _mm256_srli_epi32(gx, 16)), 0xD8);
        _mm256_store_ps(m, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(ms)),
                                         _mm256_cvtph_ps(_mm256_extracti128_si256(ms, 1))));
    }
}

// Four blocks' int16 pair sums -> int32 lanes [a b c d | a b c d]: interleave-and-add at 32 then
// 64 bits, so each int16 lane sums 4 maddubs lanes (|.| <= 4·2·31·128 < 2^15 for Q4/Q5 blocks).
inline __m256i combine4_i16(__m256i pa, __m256i pb, __m256i pc, __m256i pd) {
    const __m256i ab =
        _mm256_add_epi16(_mm256_unpacklo_epi32(pa, pb), _mm256_unpackhi_epi32(pa, pb));
    const __m256i cd =
        _mm256_add_epi16(_mm256_unpacklo_epi32(pc, pd), _mm256_unpackhi_epi32(pc, pd));
    const __m256i abcd =
        _mm256_add_epi16(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
    return _mm256_madd_epi16(abcd, _mm256_set1_epi16(1));
}

// The same for int32 partial sums (Q8_0, whose int16 pair sums may not be added).
inline __m256i combine4_i32(__m256i pa, __m256i pb, __m256i pc, __m256i pd) {
    const __m256i ab =
        _mm256_add_epi32(_mm256_unpacklo_epi32(pa, pb), _mm256_unpackhi_epi32(pa, pb));
    const __m256i cd =
        _mm256_add_epi32(_mm256_unpacklo_epi32(pc, pd), _mm256_unpackhi_epi32(pc, pd));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
}

// Σ_b d_w·d_x·(integer dot of block b) [+ Σ_b m_w·s_x when kMins].
// quad(i): int32 lanes [i i+1 i+2 i+3 | same] of blocks i..i+3; one(i): 8 int32 partial sums of
// block i.
template <bool kMins, class Quad, class One>
float sum_blocks(const void *vw, int sw, const void *vx, int sx, int64_t nb, Quad quad, One one) {
    const auto *w = static_cast<const uint8_t *>(vw);
    const auto *x = static_cast<const uint8_t *>(vx);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    int64_t ib = 0;
    for (; ib + 8 <= nb; ib += 8) {
        alignas(32) float d[8], m[8];
        block_scales8(w + ib * sw, sw, x + ib * sx, sx, d, kMins ? m : nullptr);
        acc0 = _mm256_fmadd_ps(_mm256_broadcast_ps(reinterpret_cast<const __m128 *>(d)),
                               _mm256_cvtepi32_ps(quad(ib)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_broadcast_ps(reinterpret_cast<const __m128 *>(d + 4)),
                               _mm256_cvtepi32_ps(quad(ib + 4)), acc1);
        if (kMins) accm = _mm256_add_ps(accm, _mm256_load_ps(m));
    }
    float summ = 0.0f;
    for (; ib < nb; ++ib) {
        ggml_half h[4];
        std::memcpy(h, w + ib * sw, kMins ? 4 : 2);
        std::memcpy(h + 2, x + ib * sx, kMins ? 4 : 2);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(h[0]) * h2f(h[2])), _mm256_cvtepi32_ps(one(ib)),
                               acc0);
        if (kMins) summ += h2f(h[1]) * h2f(h[3]);
    }
    return hsum(_mm256_add_ps(acc0, acc1)) + (kMins ? hsum(accm) + summ : 0.0f);
}

// Σ(q - off)·x per int16 pair as maddubs(q, x) - maddubs(off, x): q stays unsigned, and both fit.
inline __m256i pairs_off(__m256i q, __m256i xv, __m256i off) {
    return _mm256_sub_epi16(_mm256_maddubs_epi16(q, xv), _mm256_maddubs_epi16(off, xv));
}
inline __m256i i16_to_i32(__m256i p) {
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

float dot_q4_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q4_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    const __m256i eight = _mm256_set1_epi8(8);
    auto pairs = [&](int64_t i) { return pairs_off(nibbles(w[i].qs), load256(x[i].qs), eight); };
    return sum_blocks<false>(
        w, sizeof(*w), x, sizeof(*x), n / QK8_0,
        [&](int64_t i) { return combine4_i16(pairs(i), pairs(i + 1), pairs(i + 2), pairs(i + 3)); },
        [&](int64_t i) { return i16_to_i32(pairs(i)); });
}

float dot_q4_1_q8_1(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q4_1 *>(vw);
    const auto *x = static_cast<const block_q8_1 *>(vx);
    auto pairs = [&](int64_t i) {
        return _mm256_maddubs_epi16(nibbles(w[i].qs), load256(x[i].qs));
    };
    return sum_blocks<true>(
        w, sizeof(*w), x, sizeof(*x), n / QK8_1,
        [&](int64_t i) { return combine4_i16(pairs(i), pairs(i + 1), pairs(i + 2), pairs(i + 3)); },
        [&](int64_t i) { return i16_to_i32(pairs(i)); });
}

float dot_q5_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q5_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    const __m256i sixteen = _mm256_set1_epi8(16);
    auto pairs = [&](int64_t i) {
        return pairs_off(_mm256_or_si256(nibbles(w[i].qs), q5_high_bits(w[i].qh)), load256(x[i].qs),
                         sixteen);
    };
    return sum_blocks<false>(
        w, sizeof(*w), x, sizeof(*x), n / QK8_0,
        [&](int64_t i) { return combine4_i16(pairs(i), pairs(i + 1), pairs(i + 2), pairs(i + 3)); },
        [&](int64_t i) { return i16_to_i32(pairs(i)); });
}

float dot_q5_1_q8_1(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q5_1 *>(vw);
    const auto *x = static_cast<const block_q8_1 *>(vx);
    auto pairs = [&](int64_t i) {
        return _mm256_maddubs_epi16(_mm256_or_si256(nibbles(w[i].qs), q5_high_bits(w[i].qh)),
                                    load256(x[i].qs));
    };
    return sum_blocks<true>(
        w, sizeof(*w), x, sizeof(*x), n / QK8_1,
        [&](int64_t i) { return combine4_i16(pairs(i), pairs(i + 1), pairs(i + 2), pairs(i + 3)); },
        [&](int64_t i) { return i16_to_i32(pairs(i)); });
}

// Signed×signed bytes as |w|·(x·sign(w)); activations are in [-127, 127], so no pair saturates.
float dot_q8_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q8_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    auto one = [&](int64_t i) {
        const __m256i wv = load256(w[i].qs);
        return i16_to_i32(
            _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(load256(x[i].qs), wv)));
    };
    return sum_blocks<false>(
        w, sizeof(*w), x, sizeof(*x), n / QK8_0,
        [&](int64_t i) { return combine4_i32(one(i), one(i + 1), one(i + 2), one(i + 3)); }, one);
}

// ---------------------------------------------------------------- K-quant dots (blocks of 256)

// Scale vector for VPMADDWD: word a of `sc` in the low 128 bits, word b in the high 128 bits,
// where sc holds 8 int16 scales in both 128-bit lanes.
inline __m256i scale_pair(__m256i sc, int a, int b) {
    const __m256i idx = _mm256_setr_m128i(_mm_set1_epi16((short)(0x0100 + 0x0202 * a)),
                                          _mm_set1_epi16((short)(0x0100 + 0x0202 * b)));
    return _mm256_shuffle_epi8(sc, idx);
}
inline __m256i scale_bcast(__m256i sc, int a) {
    return scale_pair(sc, a, a);
}

// Q4_K and Q5_K (which adds a fifth bit per element from qh).
template <class Block>
float dot_q45_K(int64_t n, const void *vw, const void *vx) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const auto *w = static_cast<const Block *>(vw);
    const auto *x = static_cast<const block_q8_K *>(vx);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const float d = x[ib].d * h2f(w[ib].d);
        const float dmin = x[ib].d * h2f(w[ib].dmin);
        const __m256i sm = k4_scales_mins(w[ib].scales);
        acc_m =
            _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_sums(sm, x[ib].bsums)), acc_m);
        const __m256i sc =
            _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));  // 8 scales per lane
        const uint8_t *q = w[ib].qs;
        const int8_t *a = x[ib].qs;
        __m256i hb = _mm256_setzero_si256();  // bit 2j: sub-block 2j, bit 2j+1: sub-block 2j+1
        if constexpr (kQ5) hb = load256(w[ib].qh);
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; ++j, q += 32, a += 64) {
            const __m256i bits = load256(q);
            __m256i lo = _mm256_and_si256(bits, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if constexpr (kQ5) {
                lo = _mm256_or_si256(
                    lo, _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(1)), 4));
                hi = _mm256_or_si256(
                    hi, _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(2)), 3));
                hb = _mm256_srli_epi16(hb, 2);
            }
            const __m256i plo = _mm256_maddubs_epi16(lo, load256(a));
            const __m256i phi = _mm256_maddubs_epi16(hi, load256(a + 32));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(scale_bcast(sc, 2 * j), plo));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(scale_bcast(sc, 2 * j + 1), phi));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), acc);
    }
    return hsum(acc) - hsum(acc_m);
}

float dot_q4_K_q8_K(int64_t n, const void *vw, const void *vx) {
    return dot_q45_K<block_q4_K>(n, vw, vx);
}
float dot_q5_K_q8_K(int64_t n, const void *vw, const void *vx) {
    return dot_q45_K<block_q5_K>(n, vw, vx);
}

// Q6_K: q in [0, 63] is used unsigned; the -32 offset is Σ_s sc_s·32·bsums_s, from the
// activation's group sums (groups of 16 match Q6_K's sub-blocks).
float dot_q6_K_q8_K(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q6_K *>(vw);
    const auto *x = static_cast<const block_q8_K *>(vx);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const float d = x[ib].d * h2f(w[ib].d);
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i *>(w[ib].scales));
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc);
        const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(x[ib].bsums)), 5);
        const __m128i sc_lo = _mm256_castsi256_si128(sc16),
                      sc_hi = _mm256_extracti128_si256(sc16, 1);
        const uint8_t *ql = w[ib].ql, *qh = w[ib].qh;
        const int8_t *a = x[ib].qs;
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, a += 128) {
            const __m256i s8 = _mm256_broadcastsi128_si256(
                half == 0 ? sc_lo : sc_hi);  // the 8 scales of this half
            const __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(qh);
            const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                               _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
            const __m256i q1 = _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
            const __m256i q2 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
            const __m256i q3 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
            const __m256i p0 = _mm256_maddubs_epi16(q0, load256(a));
            const __m256i p1 = _mm256_maddubs_epi16(q1, load256(a + 32));
            const __m256i p2 = _mm256_maddubs_epi16(q2, load256(a + 64));
            const __m256i p3 = _mm256_maddubs_epi16(q3, load256(a + 96));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(scale_pair(s8, 0, 1), p0));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(scale_pair(s8, 2, 3), p1));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(scale_pair(s8, 4, 5), p2));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(scale_pair(s8, 6, 7), p3));
        }
        const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(s0, s1), offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum(acc);
}

// ---------------------------------------------------------------- float dots

// Float dots run in float lanes over chunks of kChunk elements and gather the chunks in double,
// so the rounding stays close to the spec's double sum however long the row is. `load(i)` gives
// the 8 weight and 8 activation values at element i; `tail(i)` the spec's product at i.
constexpr int64_t kChunk = 256;

template <class Load, class Tail>
float dot_float(int64_t n, Load load, Tail tail) {
    __m256d total = _mm256_setzero_pd();
    int64_t i = 0;
    const int64_t n32 = n & ~int64_t(31);
    while (i < n32) {
        const int64_t end = n32 < i + kChunk ? n32 : i + kChunk;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (; i < end; i += 32) {
            __m256 w, x;
            load(i, &w, &x);
            a0 = _mm256_fmadd_ps(w, x, a0);
            load(i + 8, &w, &x);
            a1 = _mm256_fmadd_ps(w, x, a1);
            load(i + 16, &w, &x);
            a2 = _mm256_fmadd_ps(w, x, a2);
            load(i + 24, &w, &x);
            a3 = _mm256_fmadd_ps(w, x, a3);
        }
        const __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        total = _mm256_add_pd(total, _mm256_cvtps_pd(_mm256_castps256_ps128(s)));
        total = _mm256_add_pd(total, _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1)));
    }
    if (i + 8 <= n) {  // short rows (attention heads): whole vectors before the scalar tail
        __m256 a = _mm256_setzero_ps();
        for (; i + 8 <= n; i += 8) {
            __m256 w, x;
            load(i, &w, &x);
            a = _mm256_fmadd_ps(w, x, a);
        }
        total = _mm256_add_pd(total, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
        total = _mm256_add_pd(total, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
    double sum = hsum(total);
    for (; i < n; ++i) sum += (double)tail(i);
    return (float)sum;
}

inline __m256 f16x8_to_f32(const ggml_half *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

inline __m256 bf16x8_to_f32(const ggml_bf16 *p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

float dot_f16_f16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_half *>(vw);
    const auto *x = static_cast<const ggml_half *>(vx);
    return dot_float(
        n,
        [&](int64_t i, __m256 *a, __m256 *b) {
            *a = f16x8_to_f32(w + i), *b = f16x8_to_f32(x + i);
        },
        [&](int64_t i) { return h2f(w[i]) * h2f(x[i]); });
}

float dot_bf16_bf16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_bf16 *>(vw);
    const auto *x = static_cast<const ggml_bf16 *>(vx);
    return dot_float(
        n,
        [&](int64_t i, __m256 *a, __m256 *b) {
            *a = bf16x8_to_f32(w + i), *b = bf16x8_to_f32(x + i);
        },
        [&](int64_t i) { return bf16_to_fp32(w[i]) * bf16_to_fp32(x[i]); });
}

float dot_f32_f32(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const float *>(vw);
    const auto *x = static_cast<const float *>(vx);
    return dot_float(
        n,
        [&](int64_t i, __m256 *a, __m256 *b) {
            *a = _mm256_loadu_ps(w + i), *b = _mm256_loadu_ps(x + i);
        },
        [&](int64_t i) { return w[i] * x[i]; });
}

}  // namespace

// No packed GEMM yet (VPMADDUBSW saturates on Q8_0 panel bytes); exp_sum is the scalar's.
const DotKernels *dot_kernels_avx2() {
    static const DotKernels table = [] {
        DotKernels t = dot_kernels_scalar();
        t.isa = "avx2";
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
        t.nbits = nbits_kernels_avx2();
        t.axpy_f16 = axpy_f16;
        t.attn_scores = attn_scores_by_dot<dot_f16_f16>;
        t.attn_values = attn_values_by_axpy<axpy_f16>;
        return t;
    }();
    return &table;
}

}  // namespace phirt

// AVX2-level helpers and activation converters shared by dot_avx2.cpp and dot_avx512.cpp.
//
// Only those two ISA files include this header, and everything here sits in an anonymous
// namespace: each of them compiles its own copy with its own flags, and nothing can be linked
// into baseline code. The converters produce the scalar spec's bytes exactly (quants.cpp *_act).
#pragma once

#include <immintrin.h>

#include <cstring>

#include "../dot.h"

namespace phirt {
namespace {

// ---------------------------------------------------------------- small helpers

inline float h2f(ggml_half h) {
    return _cvtsh_ss(h);
}  // exact, as fp16_to_fp32

// Stops the compiler from fusing a multiply into the following add (GCC contracts intrinsics
// under -ffp-contract=fast); used where the scalar spec rounds the product on its own.
inline __m256 no_fuse(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}

// float -> half exactly as fp32_to_fp16: F16C rounds to nearest even like the spec; only NaNs
// differ (F16C keeps payload bits, the spec returns sign | 0x7E00), so they are patched.
inline __m128i f32x8_to_f16(__m256 v) {
    const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i abs = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
    const __m256i nan32 = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    if (_mm256_testz_si256(nan32, nan32)) return h;
    const __m256i fix32 = _mm256_or_si256(_mm256_srli_epi32(_mm256_andnot_si256(abs, bits), 16),
                                          _mm256_set1_epi32(0x7E00));
    const __m128i nan16 =
        _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
    const __m128i fix16 =
        _mm_packus_epi32(_mm256_castsi256_si128(fix32), _mm256_extracti128_si256(fix32, 1));
    return _mm_blendv_epi8(h, fix16, nan16);
}

inline __m128 no_fuse(__m128 v) {
    __asm__("" : "+x"(v));
    return v;
}

inline ggml_half f2h(float f) {
    return (ggml_half)_mm_extract_epi16(f32x8_to_f16(_mm256_set1_ps(f)), 0);
}

inline float hsum(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float hsum(__m256 v) {
    return hsum(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

inline double hsum(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

inline int hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

inline float hmax(__m256 v) {  // no NaNs in v
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// |v| with NaN lanes replaced by 0: std::max(amax, fabs(nan)) keeps amax, so NaNs never win.
inline __m256 abs_no_nan(__m256 v) {
    const __m256 a = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    return _mm256_max_ps(a, _mm256_setzero_ps());  // maxps returns the second operand on NaN
}

// The bits of v + 1.5·2^23, the same float the spec's nearest_int() builds, so what is taken from
// them matches it for every input, NaN and infinity included. For |v| < 2^22 the low 23 bits
// hold round-half-even(v) + 2^22, and the low byte is (int8_t) of the rounded value.
inline __m256i magic_round(__m256 v) {
    return _mm256_castps_si256(_mm256_add_ps(no_fuse(v), _mm256_set1_ps(12582912.f)));
}
inline __m256i nearest_int(__m256 v) {
    const __m256i b = _mm256_and_si256(magic_round(v), _mm256_set1_epi32(0x007fffff));
    return _mm256_sub_epi32(b, _mm256_set1_epi32(0x00400000));
}

// Low bytes of 4×8 int32 (C's (int8_t) conversion), in element order.
inline __m256i trunc_to_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i m = _mm256_set1_epi32(0xFF);
    const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
    const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, m), _mm256_and_si256(d, m));
    const __m256i abcd = _mm256_packus_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Sum of 32 signed bytes.
inline int sum_i8(__m256i q) {
    const __m256i s =
        _mm256_sad_epu8(_mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)), _mm256_setzero_si256());
    return hsum(s) - 32 * 128;  // sad sums 64-bit lanes; hsum of int32 halves is fine (< 2^31)
}

// 32 nibbles as bytes in element order (low nibbles, then high), without a cross-lane shuffle:
// broadcast the 16 bytes to both halves and shift only the upper half.
inline __m256i nibbles(const uint8_t *qs) {
    const __m256i b =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qs)));
    return _mm256_and_si256(_mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                            _mm256_set1_epi8(0x0F));
}

// Bit j of the 32-bit qh as byte j: 16 where set, 0 where clear (Q5's fifth bit).
inline __m256i q5_high_bits(const uint8_t *qh) {
    uint32_t bits;
    std::memcpy(&bits, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)bits),
        _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
                            _mm256_set1_epi8(16));
}

inline __m256i load256(const void *p) {
    return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

// ---------------------------------------------------------------- decode prefetch

// Decode streams each weight byte once and the hardware prefetcher alone leaves the core waiting:
// the multi-row kernels prefetch every row this far ahead. Cold Q4_0 GEMV, AVX-512, 4 rows per
// call, 3072x8192 (benchmarks/kernels.py), GB/s at 1 / 2 threads: none 10.8 / 20.3, 512 B 13.2
// / 24.4, 1 KiB 14.6 / 23.7, 2 KiB 14.8 / 28.3, 3 KiB 14.5 / 27.5, 4 KiB 14.0 / 26.9. Rows of 3072
// (1728 bytes, 16384x3072) stay at ~11.8 / 22.3 for any distance from 1 to 8 KiB.
constexpr int64_t kPrefetchBytes = 2048;

// Prefetch of bytes [pos, pos + bytes) of a row, kPrefetchBytes ahead. Past the row's end the
// target moves on to the row R rows on (as often as it takes: rows may be shorter than the
// distance), which the next call of an R-row kernel reads; row_bytes > 0. Always inlined: a call
// here would spill the kernel's vector registers.
__attribute__((always_inline)) inline void prefetch_ahead(const uint8_t *row, int64_t pos,
                                                          int64_t bytes, int64_t row_bytes, int R) {
    int64_t o = pos + kPrefetchBytes;
    while (o >= row_bytes) o -= row_bytes, row += R * row_bytes;
    for (int64_t i = 0; i < bytes; i += 64, o += 64) {
        if (o >= row_bytes) o -= row_bytes, row += R * row_bytes;
        _mm_prefetch(reinterpret_cast<const char *>(row + o), _MM_HINT_T0);
    }
}

// ---------------------------------------------------------------- activation converters

// 32 floats as Q8_0/Q8_1 codes, d = amax / 127 (before its f16 rounding) to *d.
inline __m256i q8_block(const float *x, float *d) {
    const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    const __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const float amax = hmax(_mm256_max_ps(_mm256_max_ps(abs_no_nan(v0), abs_no_nan(v1)),
                                          _mm256_max_ps(abs_no_nan(v2), abs_no_nan(v3))));
    *d = amax / 127.f;
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
    // (int8_t)nearest_int(v) is the low byte of v + 1.5·2^23.
    return trunc_to_i8(magic_round(_mm256_mul_ps(v0, id)), magic_round(_mm256_mul_ps(v1, id)),
                       magic_round(_mm256_mul_ps(v2, id)), magic_round(_mm256_mul_ps(v3, id)));
}

void to_q8_0(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<block_q8_0 *>(vy);
    for (int64_t i = 0; i < n / QK8_0; ++i, x += QK8_0) {
        float d;
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y[i].qs), q8_block(x, &d));
        y[i].d = f2h(d);
    }
}

void to_q8_1(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<block_q8_1 *>(vy);
    for (int64_t i = 0; i < n / QK8_1; ++i, x += QK8_1) {
        float d;
        const __m256i q = q8_block(x, &d);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y[i].qs), q);
        y[i].d = f2h(d);
        y[i].s = f2h((float)sum_i8(q) * d);  // s from d before its f16 rounding, as the spec
    }
}

void to_q8_K(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<block_q8_K *>(vy);
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) m = _mm256_max_ps(m, abs_no_nan(_mm256_loadu_ps(x + j)));
        const float amax = hmax(m);
        if (amax == 0.0f) {
            std::memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        // signed_absmax keeps the first element whose |x| is the maximum.
        const __m256 vmax = _mm256_set1_ps(amax);
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        int first = 0;
        for (int j = 0; j < QK_K; j += 8) {
            const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + j), absmask);
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(a, vmax, _CMP_EQ_OQ));
            if (hit != 0) {
                first = j + __builtin_ctz(hit);
                break;
            }
        }
        const float iscale = -127.f / x[first];
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; ++k)
                q[k] = _mm256_min_epi32(
                    lim, nearest_int(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * k))));
            const __m256i b = trunc_to_i8(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(y[i].qs + j), b);
            // Sums of 16 bytes: sad over the bytes biased to unsigned, two 64-bit lanes per group.
            const __m256i sad = _mm256_sad_epu8(_mm256_xor_si256(b, _mm256_set1_epi8((char)0x80)),
                                                _mm256_setzero_si256());
            const __m256i pair = _mm256_add_epi64(sad, _mm256_srli_si256(sad, 8));
            y[i].bsums[j / 16] = (int16_t)(_mm256_extract_epi32(pair, 0) - 16 * 128);
            y[i].bsums[j / 16 + 1] = (int16_t)(_mm256_extract_epi32(pair, 4) - 16 * 128);
        }
        y[i].d = 1 / iscale;
    }
}

void to_f16(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<ggml_half *>(vy);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i *>(y + i), f32x8_to_f16(_mm256_loadu_ps(x + i)));
    for (; i < n; ++i) y[i] = f2h(x[i]);
}

// fp32_to_bf16 on 8 lanes: round to nearest even, NaN -> quiet NaN, as 16-bit values in int32
// lanes.
inline __m256i bf16x8(__m256i u) {
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
    const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(rounded, quiet, nan);
}

void to_bf16(const float *x, void *vy, int64_t n) {
    auto *y = static_cast<ggml_bf16 *>(vy);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = bf16x8(_mm256_castps_si256(_mm256_loadu_ps(x + i)));
        const __m256i b = bf16x8(_mm256_castps_si256(_mm256_loadu_ps(x + i + 8)));
        const __m256i ab = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y + i), ab);
    }
    for (; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
}

// The 8 six-bit scales and 8 mins of a Q4_K/Q5_K block, as 16-bit lanes: scales in the low
// 128 bits, mins in the high (what get_scale_min_k4 returns for j = 0..7).
inline __m256i k4_scales_mins(const uint8_t *s) {
    uint32_t u[3];
    std::memcpy(u, s, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    const uint32_t sc_lo = u[0] & m6;                                       // scales 0..3
    const uint32_t mn_lo = u[1] & m6;                                       // mins 0..3
    const uint32_t sc_hi = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);         // scales 4..7
    const uint32_t mn_hi = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);  // mins 4..7
    return _mm256_cvtepu8_epi16(_mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi));
}

// bsums[2j] + bsums[2j+1] for j = 0..7: Q8_K's sums over Q4_K/Q5_K's 32-element sub-blocks.
inline __m128i k4_bsum_pairs(const int16_t *bsums) {
    const __m256i b = load256(bsums);
    return _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
}

// Σ_j m_j·(bsums[2j] + bsums[2j+1]) for Q4_K/Q5_K, as four int32 lanes.
inline __m128i k4_min_sums(__m256i scales_mins, __m128i bsum_pairs) {
    return _mm_madd_epi16(_mm256_extracti128_si256(scales_mins, 1), bsum_pairs);
}
inline __m128i k4_min_sums(__m256i scales_mins, const int16_t *bsums) {
    return k4_min_sums(scales_mins, k4_bsum_pairs(bsums));
}

// y += a·x with the product rounded before the add, as the spec: bit-identical results.
void axpy_f16(int64_t n, float a, const ggml_half *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv =
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i)));
        _mm256_storeu_ps(y + i,
                         _mm256_add_ps(_mm256_loadu_ps(y + i), no_fuse(_mm256_mul_ps(va, xv))));
    }
    for (; i < n; ++i) {
        const __m128 p = no_fuse(_mm_mul_ss(_mm_set_ss(a), _mm_set_ss(h2f(x[i]))));
        y[i] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(y[i]), p));
    }
}

}  // namespace
}  // namespace phirt

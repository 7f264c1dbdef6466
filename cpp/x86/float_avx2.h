// Float dot products of the AVX2 family (F16, BF16, F32 weights) and the f16 attention loops:
// float lanes over chunks, gathered in double, so rounding stays close to the scalar spec's double
// sum. Only included by the AVX2-family ISA files (anonymous namespace, see x86_common.h).
#pragma once

#include "x86_common.h"

namespace phirt {
namespace {

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

// ---------------------------------------------------------------- f16 attention

// Four keys at a time so four FMA chains are in flight; q is f16 (exact as floats). Head dims
// that are not a multiple of 8 finish each key in scalar.
void attn_scores(int64_t hd, int64_t n, const ggml_half *k, const ggml_half *q, float scale,
                 float *scores) {
    const int64_t h8 = hd & ~int64_t(7);
    auto tail = [&](const ggml_half *kj) {
        float t = 0.0f;
        for (int64_t d = h8; d < hd; ++d) t += h2f(kj[d]) * h2f(q[d]);
        return t;
    };
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const ggml_half *kj = k + j * hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t c = 0; c < h8; c += 8) {
            const __m256 qv = f16x8_to_f32(q + c);
            a0 = _mm256_fmadd_ps(f16x8_to_f32(kj + c), qv, a0);
            a1 = _mm256_fmadd_ps(f16x8_to_f32(kj + hd + c), qv, a1);
            a2 = _mm256_fmadd_ps(f16x8_to_f32(kj + 2 * hd + c), qv, a2);
            a3 = _mm256_fmadd_ps(f16x8_to_f32(kj + 3 * hd + c), qv, a3);
        }
        scores[j] = (hsum(a0) + tail(kj)) * scale;
        scores[j + 1] = (hsum(a1) + tail(kj + hd)) * scale;
        scores[j + 2] = (hsum(a2) + tail(kj + 2 * hd)) * scale;
        scores[j + 3] = (hsum(a3) + tail(kj + 3 * hd)) * scale;
    }
    for (; j < n; ++j) {
        __m256 a = _mm256_setzero_ps();
        for (int64_t c = 0; c < h8; c += 8)
            a = _mm256_fmadd_ps(f16x8_to_f32(k + j * hd + c), f16x8_to_f32(q + c), a);
        scores[j] = (hsum(a) + tail(k + j * hd)) * scale;
    }
}

// NC chunks of 8 of o stay in registers while every value row passes; mul then add, as the spec.
template <int NC>
void attn_values_block(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v, float *o) {
    __m256 acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_loadu_ps(o + c * 8);
    for (int64_t j = 0; j < n; ++j) {
        const __m256 pj = _mm256_set1_ps(h2f(p[j]));
        for (int c = 0; c < NC; ++c)
            acc[c] =
                _mm256_add_ps(acc[c], no_fuse(_mm256_mul_ps(pj, f16x8_to_f32(v + j * hd + c * 8))));
    }
    for (int c = 0; c < NC; ++c) _mm256_storeu_ps(o + c * 8, acc[c]);
}

using ValuesBlockFn = void (*)(int64_t, int64_t, const ggml_half *, const ggml_half *, float *);
constexpr ValuesBlockFn kValuesBlock[9] = {
    nullptr,
    attn_values_block<1>,
    attn_values_block<2>,
    attn_values_block<3>,
    attn_values_block<4>,
    attn_values_block<5>,
    attn_values_block<6>,
    attn_values_block<7>,
    attn_values_block<8>,
};

// Blocks of up to 8 chunks (64 outputs) across all rows; elements past the last whole chunk one
// row at a time, as axpy_f16 does.
void attn_values(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v, float *o) {
    const int64_t h8 = hd & ~int64_t(7);
    for (int64_t d0 = 0; d0 < h8; d0 += 64) {
        const int nc = (int)((h8 - d0 < 64 ? h8 - d0 : 64) / 8);
        kValuesBlock[nc](hd, n, p, v + d0, o + d0);
    }
    if (h8 < hd)
        for (int64_t j = 0; j < n; ++j) {
            const float pj = h2f(p[j]);
            for (int64_t d = h8; d < hd; ++d) {
                const __m128 prod =
                    no_fuse(_mm_mul_ss(_mm_set_ss(pj), _mm_set_ss(h2f(v[j * hd + d]))));
                o[d] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(o[d]), prod));
            }
        }
}

// exp(x) for x <= 0 (softmax arguments): x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two so r
// is exact to ~1e-10), exp(r) by its degree-7 Taylor polynomial (truncation < 2e-9 relative),
// times 2^n built in the exponent field; below -87.3 the result is 0, as expf's nearest float is
// denormal or 0 (and n >= -126 above it, a normal power of two).
inline __m256 exp_nonpositive(__m256 x) {
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256 alive = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
    const __m256i n_clamped = _mm256_max_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(-126));
    const __m256 two_n = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(n_clamped, _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(_mm256_mul_ps(p, two_n), alive);
}

double exp_sum(int64_t n, float max, float *s) {
    const __m256 vmax = _mm256_set1_ps(max);
    __m256 acc = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmax));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (j < n) {  // the last few through a zero-padded vector
        alignas(32) float t[8] = {};
        for (int64_t i = j; i < n; ++i) t[i - j] = s[i] - max;
        const __m256 lanes = _mm256_cmp_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_ps((float)(n - j)), _CMP_LT_OQ);
        const __m256 e = _mm256_and_ps(exp_nonpositive(_mm256_load_ps(t)), lanes);
        _mm256_store_ps(t, e);
        for (int64_t i = j; i < n; ++i) s[i] = t[i - j];
        acc = _mm256_add_ps(acc, e);
    }
    return (double)hsum(acc);
}

}  // namespace
}  // namespace phirt

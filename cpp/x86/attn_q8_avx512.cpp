// AVX-512 VNNI twin of attn_q8_ref.cpp, bit-identical to it: block sums are exact integers and the
// float operations are the reference's, in its order (built without FMA contraction).
#include <immintrin.h>

#include "../attn_q8.h"

namespace phirt {

namespace {

// Σ_i a[i]·b[i] over one block of 32 signed bytes (VPDPBUSD takes |a| and b with a's sign).
inline int32_t block_dot(const int8_t *a, const int8_t *b) {
    const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a));
    const __m256i vb = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b));
    const __m256i s =
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(va), _mm256_sign_epi8(vb, va));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(h);
}

void scores_avx512(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q, float scale,
                   float *scores) {
    const int64_t nb = hd / QK8_0;
    float dq[8];
    for (int64_t b = 0; b < nb && b < 8; ++b) dq[b] = fp16_to_fp32(q[b].d);
    for (int64_t j = 0; j < n; ++j) {
        const block_q8_0 *row = k + j * nb;
        if (j + 8 < n) _mm_prefetch(reinterpret_cast<const char *>(row + 8 * nb), _MM_HINT_T0);
        float s = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            const float d = fp16_to_fp32(row[b].d) * (b < 8 ? dq[b] : fp16_to_fp32(q[b].d));
            s += (float)block_dot(row[b].qs, q[b].qs) * d;
        }
        scores[j] = s * scale;
    }
}

// o += (d · v_j) · p_j for one block column of 32 outputs held in two registers.
inline void add_block(const block_q8_0 &blk, float pj, __m512 &lo, __m512 &hi) {
    const __m512 d = _mm512_set1_ps(fp16_to_fp32(blk.d)), p = _mm512_set1_ps(pj);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk.qs));
    const __m512 x0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)));
    const __m512 x1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
    lo = _mm512_add_ps(lo, _mm512_mul_ps(_mm512_mul_ps(d, x0), p));
    hi = _mm512_add_ps(hi, _mm512_mul_ps(_mm512_mul_ps(d, x1), p));
}

// Head dims of NB blocks (64, 96, 128): every output stays in registers across all n rows, which
// are read once, in order.
template <int NB>
void values_rows(int64_t n, const float *p, const block_q8_0 *v, float *o) {
    __m512 acc[2 * NB];
    for (int b = 0; b < 2 * NB; ++b) acc[b] = _mm512_loadu_ps(o + 16 * b);
    for (int64_t j = 0; j < n; ++j) {
        const block_q8_0 *row = v + j * NB;
        if (j + 8 < n) _mm_prefetch(reinterpret_cast<const char *>(row + 8 * NB), _MM_HINT_T0);
        for (int b = 0; b < NB; ++b) add_block(row[b], p[j], acc[2 * b], acc[2 * b + 1]);
    }
    for (int b = 0; b < 2 * NB; ++b) _mm512_storeu_ps(o + 16 * b, acc[b]);
}

void values_avx512(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o) {
    const int64_t nb = hd / QK8_0;
    switch (nb) {
        case 2:
            return values_rows<2>(n, p, v, o);
        case 3:
            return values_rows<3>(n, p, v, o);
        case 4:
            return values_rows<4>(n, p, v, o);
        default:
            break;
    }
    for (int64_t b = 0; b < nb; ++b) {  // other head dims: one block column at a time
        __m512 lo = _mm512_loadu_ps(o + b * QK8_0), hi = _mm512_loadu_ps(o + b * QK8_0 + 16);
        for (int64_t j = 0; j < n; ++j) add_block(v[j * nb + b], p[j], lo, hi);
        _mm512_storeu_ps(o + b * QK8_0, lo);
        _mm512_storeu_ps(o + b * QK8_0 + 16, hi);
    }
}

}  // namespace

const AttnQ8Kernels *attn_q8_kernels_avx512() {
    static const AttnQ8Kernels k{scores_avx512, values_avx512};
    return &k;
}

}  // namespace phirt

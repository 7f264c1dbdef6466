// AVX2 twin of attn_q8_ref.cpp, bit-identical to it: block sums are exact integers and the float
// operations are the reference's, in its order (built without FMA contraction; F16C's conversion
// is exact, like the reference's). The AVX2 and AVX-VNNI tables share it: its integer work is a
// small part of attention.
#include <immintrin.h>

#include "../attn_q8.h"

namespace phirt {

namespace {

// VPMADDUBSW/VPMADDWD partial sums (8 int32 lanes) of one 32-byte block of a key row with the
// same block of q: |k| · q·sign(k), each pair at most 2·128·127 < 2^15.
inline __m256i block_lanes(const int8_t *k, const int8_t *q) {
    const __m256i vk = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(k));
    const __m256i vq = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(vk, vk), _mm256_sign_epi8(vq, vk));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

inline int32_t hsum_i32(__m256i s) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(h);
}

// The 8 lane sums of v[0..7] as one vector (lane j = Σ v[j]): a transposing add tree, exact.
inline __m256i sum8x8(const __m256i v[8]) {
    const __m256i g0 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i g1 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20),
                            _mm256_permute2x128_si256(g0, g1, 0x31));
}

// o = fma(v_j, d · p_j, o) over NB consecutive blocks (32·NB outputs in 4·NB registers) for every
// row j, rows `stride` blocks apart.
template <int NB>
void values_columns(int64_t n, int64_t stride, const float *p, const block_q8_0 *v, float *o) {
    __m256 acc[4 * NB];
    for (int c = 0; c < 4 * NB; ++c) acc[c] = _mm256_loadu_ps(o + 8 * c);
    for (int64_t j = 0; j < n; ++j) {
        const block_q8_0 *row = v + j * stride;
        if (j + 8 < n) _mm_prefetch(reinterpret_cast<const char *>(row + 8 * stride), _MM_HINT_T0);
        for (int b = 0; b < NB; ++b) {
            const __m256 w = _mm256_set1_ps(_cvtsh_ss(row[b].d) * p[j]);
            for (int c = 0; c < 4; ++c) {
                const __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                    _mm_loadl_epi64(reinterpret_cast<const __m128i *>(row[b].qs + 8 * c))));
                acc[4 * b + c] = _mm256_fmadd_ps(x, w, acc[4 * b + c]);
            }
        }
    }
    for (int c = 0; c < 4 * NB; ++c) _mm256_storeu_ps(o + 8 * c, acc[c]);
}

}  // namespace

void attn_q8_scores_avx2(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                         float scale, float *scores) {
    const int64_t nb = hd / QK8_0;
    const int64_t stride = nb * (int64_t)sizeof(block_q8_0);  // bytes from one key row to the next
    const __m256i d_offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                 _mm256_set1_epi32((int)stride));
    int64_t j = 0;
    // 8 keys at a time: lane j of every vector belongs to key j, and each key's float sum runs
    // over its blocks in order, as the reference's does.
    for (; j + 8 <= n && stride * 8 < (int64_t(1) << 31); j += 8) {
        const block_q8_0 *rows = k + j * nb;
        _mm_prefetch(reinterpret_cast<const char *>(rows + 16 * nb), _MM_HINT_T0);
        __m256 s = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            __m256i lanes[8];
            for (int r = 0; r < 8; ++r) lanes[r] = block_lanes(rows[r * nb + b].qs, q[b].qs);
            // the 8 keys' f16 scales: 32-bit gathers whose low halves are the d fields
            const __m256i dk32 =
                _mm256_i32gather_epi32(reinterpret_cast<const int *>(&rows[b].d), d_offsets, 1);
            const __m256i lo16 = _mm256_shuffle_epi8(
                dk32, _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                       0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1));
            const __m256 dk =
                _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(lo16, 0x08)));
            const __m256 d = _mm256_mul_ps(dk, _mm256_set1_ps(_cvtsh_ss(q[b].d)));
            s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_cvtepi32_ps(sum8x8(lanes)), d));
        }
        _mm256_storeu_ps(scores + j, _mm256_mul_ps(s, _mm256_set1_ps(scale)));
    }
    for (; j < n; ++j) {
        const block_q8_0 *row = k + j * nb;
        float s = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            const float d = _cvtsh_ss(row[b].d) * _cvtsh_ss(q[b].d);
            s += (float)hsum_i32(block_lanes(row[b].qs, q[b].qs)) * d;
        }
        scores[j] = s * scale;
    }
}

// Two blocks (64 outputs, 8 registers) per pass over the rows; an odd last block on its own.
void attn_q8_values_avx2(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o) {
    const int64_t nb = hd / QK8_0;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) values_columns<2>(n, nb, p, v + b, o + b * QK8_0);
    if (b < nb) values_columns<1>(n, nb, p, v + b, o + b * QK8_0);
}

}  // namespace phirt

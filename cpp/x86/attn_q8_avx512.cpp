// AVX-512 VNNI twin of attn_q8_ref.cpp, bit-identical to it: block sums are exact integers and the
// float operations are the reference's, in its order (built without FMA contraction; F16C's
// conversion is exact, like the reference's).
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

// VPDPBUSD partial sums (8 lanes) of one block of a key row with the same block of q.
inline __m256i block_lanes(const int8_t *k, const int8_t *q) {
    const __m256i vk = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(k));
    const __m256i vq = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q));
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(vk),
                               _mm256_sign_epi8(vq, vk));
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

}  // namespace

void attn_q8_scores_avx512(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
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
            const __m256 dk = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dk32));
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
            s += (float)block_dot(row[b].qs, q[b].qs) * d;
        }
        scores[j] = s * scale;
    }
}

namespace {

// o = fma(v_j, d · p_j, o) for one block column of 32 outputs held in two registers.
inline void add_block(const block_q8_0 &blk, float pj, __m512 &lo, __m512 &hi) {
    const __m512 w = _mm512_set1_ps(_cvtsh_ss(blk.d) * pj);
    const __m512 x0 = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk.qs))));
    const __m512 x1 = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk.qs + 16))));
    lo = _mm512_fmadd_ps(x0, w, lo);
    hi = _mm512_fmadd_ps(x1, w, hi);
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

}  // namespace

void attn_q8_values_avx512(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o) {
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

}  // namespace phirt

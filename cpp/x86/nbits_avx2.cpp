// AVX2 + FMA + F16C twin of nbits_dot_ref (nbits.cpp): the same integer sums per 16 elements,
// float32 accumulation in a different order.
//
// Compiled with -mavx2 -mfma -mf16c; everything but nbits_dot_avx2 has internal linkage, so no
// AVX2 code can be linked into a baseline caller, and nbits_dot_avx2 is reached only through the
// avx2 and avx512 kernel tables. One 32-element group is one __m256i: low nibbles (elements
// 0..15) in the low lane, high nibbles (16..31) in the high lane. Each lane has its own zero point
// and scale, so block size 16 (two ONNX blocks per group) and block sizes of 32 and more (one
// block, both lanes equal) run the same loop.
#include <immintrin.h>

#include <cstring>

#include "../nbits.h"

namespace phirt {

namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float load_f32(const uint8_t *p) {
    float f;
    std::memcpy(&f, p, sizeof(f));
    return f;
}

// Σ (q - zp)·x of one group as 8 int32 lanes (lanes 0..3: elements 0..15, 4..7: 16..31), zp
// as bytes. maddubs(q, x) - maddubs(zp, x): both unsigned 0..15, so no int16 pair saturates
// (|pair| <= 2·15·128).
inline __m256i group_sums(const uint8_t *qs, const int8_t *xq, __m256i zp) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                                       _mm256_set1_epi8(0x0F));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq));
    const __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(q, x), _mm256_maddubs_epi16(zp, x));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

}  // namespace

float nbits_dot_avx2(const NBitsShape &s, const uint8_t *row, const block_q8_0 *x) {
    const uint8_t *qs = row + s.off_qs;
    const uint8_t *zp = row + s.off_zp;
    const int64_t groups = s.kq / kNBitsGroup;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    if (s.block_size == 16) {
        // Lane halves are blocks 2g and 2g + 1.
        for (int64_t g = 0; g < groups; ++g) {
            const float dx = _cvtsh_ss(x[g].d);
            const __m256 scale = _mm256_set_m128(_mm_set1_ps(load_f32(row + 8 * g + 4) * dx),
                                                 _mm_set1_ps(load_f32(row + 8 * g) * dx));
            const __m256i z = _mm256_set_m128i(_mm_set1_epi8((char)zp[2 * g + 1]),
                                               _mm_set1_epi8((char)zp[2 * g]));
            const __m256 sums = _mm256_cvtepi32_ps(group_sums(qs + 16 * g, x[g].qs, z));
            if (g & 1)
                acc1 = _mm256_fmadd_ps(sums, scale, acc1);
            else
                acc0 = _mm256_fmadd_ps(sums, scale, acc0);
        }
        return hsum(_mm256_add_ps(acc0, acc1));
    }
    // One block spans block_size / 32 groups: its scale and zero point are loaded once.
    const int64_t per_block = s.block_size / kNBitsGroup;
    for (int64_t b = 0, g = 0; b < s.nb; ++b) {
        const float d = load_f32(row + 4 * b);
        const __m256i z = _mm256_set1_epi8((char)zp[b]);
        for (int64_t end = g + per_block; g < end; ++g) {
            const __m256 scale = _mm256_set1_ps(d * _cvtsh_ss(x[g].d));
            const __m256 sums = _mm256_cvtepi32_ps(group_sums(qs + 16 * g, x[g].qs, z));
            if (g & 1)
                acc1 = _mm256_fmadd_ps(sums, scale, acc1);
            else
                acc0 = _mm256_fmadd_ps(sums, scale, acc0);
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1));
}

}  // namespace phirt

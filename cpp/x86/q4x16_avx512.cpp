// AVX-512 VNNI twin of q4x16_ref.cpp (interleaved Q4_0, see q4x16.h).
//
// Compiled with the AVX-512 flags of dot_avx512.cpp; only q4x16_gemm_avx512 has external linkage
// and it is reached only through the avx512 kernel table.
#include <immintrin.h>

#include "../q4x16.h"

namespace phirt {

namespace {

constexpr int kMR = 4;  // activation rows per pass over a panel: 8 unpacked vectors + 4 sums each

// isum += w · broadcast(x[0..3]), the broadcast folded into the instruction (see gemm_avx512.cpp).
inline __m512i dpbusd_x4(__m512i isum, __m512i w, const int8_t *x) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0"
            : "+v"(isum)
            : "v"(w), "m"(*reinterpret_cast<const int32_t *>(x)));
    return isum;
}

template <int MR>
void tile(const uint8_t *codes, const uint16_t *scales, int64_t nb, const GemmActs &a, int64_t i0,
          float *y, int64_t ldy, __mmask16 mask) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512 acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t *cb = codes + b * kQ4x16BlockCodes;
        _mm_prefetch(reinterpret_cast<const char *>(cb + 2048), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char *>(cb + 2048 + 64), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char *>(cb + 2048 + 128), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char *>(cb + 2048 + 192), _MM_HINT_T0);
        // w[j]: columns 4j..4j+3 of the block for the 16 rows (chunk j % 4, low or high nibbles)
        __m512i w[8];
        for (int c = 0; c < 4; ++c) {
            const __m512i v = _mm512_loadu_si512(cb + 64 * c);
            w[c] = _mm512_and_si512(v, low);
            w[4 + c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        }
        const __m512 sc =
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(scales + b * 16)));
        for (int i = 0; i < MR; ++i) {
            const int64_t row = i0 + i;
            const int8_t *q = a.q + row * a.ldq + b * 32;
            // two chains of four: integer sums are exact in any order
            __m512i s0 = _mm512_set1_epi32(a.zs[row * a.ldg + b]), s1 = _mm512_setzero_si512();
            s0 = dpbusd_x4(s0, w[0], q);
            s1 = dpbusd_x4(s1, w[1], q + 4);
            s0 = dpbusd_x4(s0, w[2], q + 8);
            s1 = dpbusd_x4(s1, w[3], q + 12);
            s0 = dpbusd_x4(s0, w[4], q + 16);
            s1 = dpbusd_x4(s1, w[5], q + 20);
            s0 = dpbusd_x4(s0, w[6], q + 24);
            s1 = dpbusd_x4(s1, w[7], q + 28);
            const __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            acc[i] =
                _mm512_fmadd_ps(f, _mm512_mul_ps(sc, _mm512_set1_ps(a.d[row * a.ldg + b])), acc[i]);
        }
    }
    for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + (i0 + i) * ldy, mask, acc[i]);
}

using TileFn = void (*)(const uint8_t *, const uint16_t *, int64_t, const GemmActs &, int64_t,
                        float *, int64_t, __mmask16);
constexpr TileFn kTiles[kMR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>};

}  // namespace

void q4x16_gemm_avx512(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                       int64_t ldy, int n_rows) {
    const __mmask16 mask = (__mmask16)((1u << n_rows) - 1);
    const auto *scales = reinterpret_cast<const uint16_t *>(panel + nb * kQ4x16BlockCodes);
    for (int64_t i0 = 0; i0 < m; i0 += kMR) {
        const int mr = m - i0 < kMR ? (int)(m - i0) : kMR;
        kTiles[mr](panel, scales, nb, a, i0, y, ldy, mask);
    }
}

}  // namespace phirt

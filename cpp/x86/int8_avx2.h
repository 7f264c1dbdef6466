// The one place the AVX2 and AVX-VNNI kernels differ: how 32 unsigned × signed byte products are
// summed into int32 lanes. The kernels (gemv_avx2.h, gemm_avx2.h) take the policy as a template
// parameter, so each ISA's file compiles the same kernel source with its own instructions.
//
//   Maddubs (AVX2): VPMADDUBSW sums byte pairs into int16 (saturating at 2^15, so callers bound
//     their pairs: 4-bit codes × 127 leave room to add several; 8-bit codes do not), then
//     VPMADDWD by ones widens to int32: two multiply instructions per 32 products.
//   Vnni (AVX-VNNI, VEX VPDPBUSD; or AVX512-VL + VNNI, EVEX, the same operation on ymm registers):
//     one instruction sums groups of four products into int32 lanes, no int16 stage.
#pragma once

#include <immintrin.h>

namespace phirt {
namespace {

struct Int8Maddubs {
    static constexpr bool kVnni = false;
    // Partial sums of u·s for one 32-byte vector (int16 pairs), their int32 lane sums, and
    // acc + Σ over int16 pairs a·b (VPMADDWD then add).
    static __m256i part(__m256i u, __m256i s) { return _mm256_maddubs_epi16(u, s); }
    static __m256i to_i32(__m256i p) { return _mm256_madd_epi16(p, _mm256_set1_epi16(1)); }
    static __m256i add_parts(__m256i a, __m256i b) { return _mm256_add_epi16(a, b); }
    static __m256i madd_acc(__m256i acc, __m256i a, __m256i b) {
        return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
    }
    // acc + Σ u·s over each int32 lane's 4 bytes; |pairs| < 2^15 (bounded codes).
    static __m256i dot_acc(__m256i acc, __m256i u, __m256i s) {
        return _mm256_add_epi32(acc, to_i32(part(u, s)));
    }
};

#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
struct Int8Vnni {
    static constexpr bool kVnni = true;
    static __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVXVNNI__)
        return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
        return _mm256_dpbusd_epi32(acc, u, s);
#endif
    }
    static __m256i dpwssd(__m256i acc, __m256i a, __m256i b) {
#if defined(__AVXVNNI__)
        return _mm256_dpwssd_avx_epi32(acc, a, b);
#else
        return _mm256_dpwssd_epi32(acc, a, b);
#endif
    }
    // Parts are int32 lane sums already.
    static __m256i part(__m256i u, __m256i s) {
        return dpbusd(_mm256_setzero_si256(), u, s);
    }
    static __m256i to_i32(__m256i p) {
        return p;
    }
    static __m256i add_parts(__m256i a, __m256i b) {
        return _mm256_add_epi32(a, b);
    }
    static __m256i madd_acc(__m256i acc, __m256i a, __m256i b) {
        return dpwssd(acc, a, b);
    }
    static __m256i dot_acc(__m256i acc, __m256i u, __m256i s) {
        return dpbusd(acc, u, s);
    }
};
#endif

}  // namespace
}  // namespace phirt

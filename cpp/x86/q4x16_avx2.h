// The AVX2-family twin of q4x16_ref.cpp (interleaved Q4_0, see q4x16.h), on the int8 policy of
// int8_avx2.h. A 64-byte chunk of a panel is two 32-byte halves (rows 0-7, rows 8-15); each half
// makes its own pass over the panel's blocks (the later passes from cache), so a tile of 4
// activation rows keeps 8 unpacked weight vectors and 4 sums in the 16 ymm registers.
// Under VPMADDUBSW the 8 steps of a block sum in int16: pairs are at most 2·15·128, eight of them
// 30720 < 2^15. Only included by the AVX2-family ISA files (anonymous namespace).
#pragma once

#include "../q4x16.h"
#include "int8_avx2.h"
#include "x86_common.h"

namespace phirt {
namespace {

template <class I8, int MR>
void q4x16_tile_avx2(const uint8_t *codes, const uint16_t *scales, int64_t nb, const GemmActs &a,
                     int64_t i0, int half, float *y, int64_t ldy, int count, bool own_ahead,
                     const uint8_t *ahead, int ahead_lines) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256 acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t *cb = codes + b * kQ4x16BlockCodes + 32 * half;
        if (own_ahead)  // this panel into L1, 8 blocks ahead
            for (int line = 0; line < 4; ++line)
                _mm_prefetch(reinterpret_cast<const char *>(cb + 2048 + 64 * line), _MM_HINT_T0);
        for (int line = 0; line < ahead_lines; ++line)
            _mm_prefetch(reinterpret_cast<const char *>(ahead + (b * ahead_lines + line) * 64),
                         _MM_HINT_T1);
        __m256i w[8];  // columns 4j..4j+3 of the block for this half's 8 rows
        for (int c = 0; c < 4; ++c) {
            const __m256i v = load256(cb + 64 * c);
            w[c] = _mm256_and_si256(v, low);
            w[4 + c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        }
        const __m256 sc = _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(scales + b * 16 + 8 * half)));
        for (int i = 0; i < MR; ++i) {
            const int64_t row = i0 + i;
            const int8_t *q = a.q + row * a.ldq + b * 32;
            auto x4 = [&](int j) {
                int32_t v;
                std::memcpy(&v, q + 4 * j, 4);
                return _mm256_set1_epi32(v);
            };
            const __m256i zs = _mm256_set1_epi32(a.zs[row * a.ldg + b]);
            __m256i isum;
            if constexpr (I8::kVnni) {
                isum = zs;
                for (int j = 0; j < 8; ++j) isum = I8::dot_acc(isum, w[j], x4(j));
            } else {
                __m256i p = I8::part(w[0], x4(0));
                for (int j = 1; j < 8; ++j) p = I8::add_parts(p, I8::part(w[j], x4(j)));
                isum = _mm256_add_epi32(I8::to_i32(p), zs);
            }
            acc[i] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                _mm256_mul_ps(sc, _mm256_set1_ps(a.d[row * a.ldg + b])), acc[i]);
        }
    }
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int i = 0; i < MR; ++i) _mm256_maskstore_ps(y + (i0 + i) * ldy + 8 * half, mask, acc[i]);
}

// One activation row (decode): both halves in one pass, sharing the activation broadcasts; every
// unpacked vector is used once, so nothing needs to stay in registers across the rows of a tile.
template <class I8>
void q4x16_row_avx2(const uint8_t *codes, const uint16_t *scales, int64_t nb, const GemmActs &a,
                    float *y, int n_rows) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t *cb = codes + b * kQ4x16BlockCodes;
        for (int line = 0; line < 4; ++line)  // 8 blocks ahead: the stream outruns the prefetcher
            _mm_prefetch(reinterpret_cast<const char *>(cb + 2048 + 64 * line), _MM_HINT_T0);
        const int8_t *q = a.q + b * 32;
        __m256i x4[8];
        for (int j = 0; j < 8; ++j) {
            int32_t v;
            std::memcpy(&v, q + 4 * j, 4);
            x4[j] = _mm256_set1_epi32(v);
        }
        const __m256i zs = _mm256_set1_epi32(a.zs[b]);
        const __m256 d = _mm256_set1_ps(a.d[b]);
        for (int half = 0; half < 2; ++half) {
            __m256i isum;
            if constexpr (I8::kVnni) {
                isum = zs;
                for (int c = 0; c < 4; ++c) {
                    const __m256i v = load256(cb + 64 * c + 32 * half);
                    isum = I8::dot_acc(isum, _mm256_and_si256(v, low), x4[c]);
                    isum = I8::dot_acc(isum, _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
                                       x4[4 + c]);
                }
            } else {
                __m256i p = _mm256_setzero_si256();
                for (int c = 0; c < 4; ++c) {
                    const __m256i v = load256(cb + 64 * c + 32 * half);
                    p = I8::add_parts(p, I8::part(_mm256_and_si256(v, low), x4[c]));
                    p = I8::add_parts(
                        p, I8::part(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), x4[4 + c]));
                }
                isum = _mm256_add_epi32(I8::to_i32(p), zs);
            }
            const __m256 sc = _mm256_cvtph_ps(
                _mm_loadu_si128(reinterpret_cast<const __m128i *>(scales + b * 16 + 8 * half)));
            acc[half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(sc, d), acc[half]);
        }
    }
    for (int half = 0; half < 2; ++half) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n_rows - 8 * half),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(y + 8 * half, mask, acc[half]);
    }
}

template <class I8>
void q4x16_gemm_avx2(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                     int64_t ldy, int n_rows) {
    constexpr int kMR = 4;
    using TileFn = void (*)(const uint8_t *, const uint16_t *, int64_t, const GemmActs &, int64_t,
                            int, float *, int64_t, int, bool, const uint8_t *, int);
    static constexpr TileFn kTiles[kMR + 1] = {nullptr, q4x16_tile_avx2<I8, 1>,
                                               q4x16_tile_avx2<I8, 2>, q4x16_tile_avx2<I8, 3>,
                                               q4x16_tile_avx2<I8, 4>};
    const auto *scales = reinterpret_cast<const uint16_t *>(panel + nb * kQ4x16BlockCodes);
    if (m == 1) return q4x16_row_avx2<I8>(panel, scales, nb, a, y, n_rows);
    // Decode (a few passes over the panel: a half's rows × a tile of activation rows each): the
    // passes compute from cache, so between them they fetch the next panel (panels are
    // contiguous) into L2, and memory streams during every pass rather than only the first.
    // Prefill (many passes, compute-bound): the first half's passes fetch ahead in this panel.
    const bool decode = m < kMinManyRows;
    const int passes = (n_rows > 8 ? 2 : 1) * (int)((m + kMR - 1) / kMR);
    const int64_t panel_lines = nb * kQ4x16BlockBytes / 64;
    const int lines = decode ? (int)((panel_lines + passes * nb - 1) / (passes * nb)) : 0;
    const uint8_t *next = panel + nb * kQ4x16BlockBytes;
    int pass = 0;
    for (int half = 0; half < 2; ++half) {
        const int count = n_rows - 8 * half;
        if (count <= 0) break;
        for (int64_t i0 = 0; i0 < m; i0 += kMR, ++pass) {
            const int mr = m - i0 < kMR ? (int)(m - i0) : kMR;
            kTiles[mr](panel, scales, nb, a, i0, half, y, ldy, count, !decode && half == 0,
                       next + pass * nb * lines * 64, lines);
        }
    }
}

}  // namespace
}  // namespace phirt

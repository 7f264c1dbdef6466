// Packed GEMM of the AVX2 family (gemm.h's panels: 16 weight rows of unsigned codes, interleaved by
// 4 columns): a step of 4 columns is two 32-byte vectors (rows 0-7, rows 8-15), and a 4-byte
// activation broadcast multiplies into per-row lanes with no horizontal reduction. Templates on
// the int8 policy (int8_avx2.h) and the weight type; only included by the AVX2-family ISA files
// (anonymous namespace, see x86_common.h).
//
// Under VPMADDUBSW (AVX2) byte pairs are summed into int16, which saturates at 2^15: a step's
// pairs are at most 2·c·127 for codes up to c, so int16 sums run for kFlush steps (c = 15: 8,
// 31: 4, 63: 2) before VPMADDWD widens them. Q8_0's codes (w + 128, up to 255) cannot: its
// steps multiply |w| by x·sign(w) (ggml's sign trick, pairs <= 2·128·127) and widen every step.
// Under VNNI, VPDPBUSD sums into int32 directly for every type.
#pragma once

#include "../gemm_pack.h"
#include "int8_avx2.h"
#include "x86_common.h"

namespace phirt {
namespace {

// ---------------------------------------------------------------- panel packing

// Columns 4c..4c+3 of the 16 rows (row r at rows + r·k) to u[c][r][4]: 8x8 transposes of 32-bit
// words, eight rows by eight column quads at a time (k is a multiple of 32 for every packed type).
inline void interleave_avx2(const uint8_t *rows, int64_t k, uint8_t *u) {
    for (int64_t c8 = 0; c8 < k / 32; ++c8) {
        for (int h = 0; h < 2; ++h) {
            __m256i v[8];
            for (int r = 0; r < 8; ++r) v[r] = load256(rows + (8 * h + r) * k + c8 * 32);
            __m256i a[8], b[8];
            for (int r = 0; r < 8; r += 2) {
                a[r] = _mm256_unpacklo_epi32(v[r], v[r + 1]);      // r0c0 r1c0 r0c1 r1c1 | c4 c5
                a[r + 1] = _mm256_unpackhi_epi32(v[r], v[r + 1]);  // r0c2 r1c2 r0c3 r1c3 | c6 c7
            }
            for (int r = 0; r < 8; r += 4) {
                b[r] = _mm256_unpacklo_epi64(a[r], a[r + 2]);          // r0-3 c0 | c4
                b[r + 1] = _mm256_unpackhi_epi64(a[r], a[r + 2]);      // r0-3 c1 | c5
                b[r + 2] = _mm256_unpacklo_epi64(a[r + 1], a[r + 3]);  // c2 | c6
                b[r + 3] = _mm256_unpackhi_epi64(a[r + 1], a[r + 3]);  // c3 | c7
            }
            uint8_t *out = u + c8 * 8 * 64 + h * 32;  // column quad c8·8 + j at out + j·64
            for (int j = 0; j < 4; ++j) {
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + j * 64),
                                    _mm256_permute2x128_si256(b[j], b[j + 4], 0x20));
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + (j + 4) * 64),
                                    _mm256_permute2x128_si256(b[j], b[j + 4], 0x31));
            }
        }
    }
}

inline void pack_panel_avx2(int type, const uint8_t *w, int64_t row_bytes, int n_rows, GemmPanel *p,
                            uint8_t *rows) {
    pack_panel_with(type, w, row_bytes, n_rows, p, rows, interleave_avx2);
}

// ---------------------------------------------------------------- micro-kernel

// An accumulator the compiler may not re-associate: GCC otherwise turns the unrolled chain of
// int16 adds into a tree, computes every product first and spills them to the stack.
inline __m256i chained(__m256i v) {
    __asm__("" : "+x"(v));
    return v;
}

constexpr int kMR2 = 3;         // activation rows per micro-tile (6 int + 6 float accumulators)
constexpr int64_t kKc2 = 1024;  // columns per pass: the panel slice (16 KB) stays in L1
static_assert(kKc2 % QK_K == 0, "a pass holds whole super-blocks");

// A packed type's shape for the kernel: column group, offset form, largest code, Q8_0's signs.
template <int kGroup_, bool kOffset_, int kMaxCode_>
struct PanelType {
    static constexpr int kGroup = kGroup_;
    static constexpr bool kOffset = kOffset_;
    static constexpr bool kSigned = kMaxCode_ > 127;  // Q8_0: codes w + 128
    static constexpr int kFlush = kSigned ? 1 : 16383 / (127 * kMaxCode_);
    static_assert(kFlush >= 1, "VPMADDUBSW pairs must not saturate");
};

// Rows i0..i0+MR-1 of the activations against groups [g0, g1) of the panel, into y (first pass:
// y is written, later passes add). mask: the panel rows that exist, as 8-lane masks per half.
template <class I8, class P, int MR>
void micro_avx2(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1,
                bool first, float *y, int64_t ldy, const __m256i mask[2]) {
    constexpr int kSteps = P::kGroup / 4;
    __m256 acc[MR][2];
    for (int i = 0; i < MR; ++i)
        for (int h = 0; h < 2; ++h)
            acc[i][h] = first ? _mm256_setzero_ps()
                              : _mm256_maskload_ps(y + (i0 + i) * ldy + 8 * h, mask[h]);
    const int8_t *q0 = a.q + i0 * a.ldq;
    for (int64_t g = g0; g < g1; ++g) {
        __m256i isum[MR][2];  // int32 sums of the group
        for (int i = 0; i < MR; ++i)
            isum[i][0] = isum[i][1] = P::kOffset ? _mm256_setzero_si256()
                                      : (P::kSigned && !I8::kVnni)
                                          ? _mm256_setzero_si256()  // signed products: no zero
                                          : _mm256_set1_epi32(a.zs[(i0 + i) * a.ldg + g]);
        const uint8_t *u = p.u + g * kSteps * 64;
        const int8_t *q = q0 + g * P::kGroup;
        if constexpr (I8::kVnni) {
#pragma GCC unroll 8
            for (int s = 0; s < kSteps; ++s) {
                const __m256i w0 = load256(u + s * 64), w1 = load256(u + s * 64 + 32);
                for (int i = 0; i < MR; ++i) {
                    int32_t x4;
                    std::memcpy(&x4, q + i * a.ldq + 4 * s, 4);
                    const __m256i xb = _mm256_set1_epi32(x4);
                    isum[i][0] = chained(I8::dot_acc(isum[i][0], w0, xb));
                    isum[i][1] = chained(I8::dot_acc(isum[i][1], w1, xb));
                }
            }
        } else if constexpr (P::kSigned) {
            // |w| · x·sign(w) with w = code - 128 (the panel's Q8_0 codes XOR 0x80)
#pragma GCC unroll 8
            for (int s = 0; s < kSteps; ++s) {
                const __m256i k80 = _mm256_set1_epi8((char)0x80);
                const __m256i w0 = _mm256_xor_si256(load256(u + s * 64), k80);
                const __m256i w1 = _mm256_xor_si256(load256(u + s * 64 + 32), k80);
                const __m256i a0 = _mm256_sign_epi8(w0, w0), a1 = _mm256_sign_epi8(w1, w1);
                for (int i = 0; i < MR; ++i) {
                    int32_t x4;
                    std::memcpy(&x4, q + i * a.ldq + 4 * s, 4);
                    const __m256i xb = _mm256_set1_epi32(x4);
                    isum[i][0] =
                        chained(Int8Maddubs::dot_acc(isum[i][0], a0, _mm256_sign_epi8(xb, w0)));
                    isum[i][1] =
                        chained(Int8Maddubs::dot_acc(isum[i][1], a1, _mm256_sign_epi8(xb, w1)));
                }
            }
        } else {
            constexpr int kRun = P::kFlush < kSteps ? P::kFlush : kSteps;
            static_assert(kSteps % kRun == 0, "whole runs of steps per group");
            for (int s0 = 0; s0 < kSteps; s0 += kRun) {
                __m256i pair[MR][2];  // int16 pair sums of kFlush steps
                for (int i = 0; i < MR; ++i) pair[i][0] = pair[i][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int j = 0; j < kRun; ++j) {
                    const int s = s0 + j;
                    const __m256i w0 = load256(u + s * 64), w1 = load256(u + s * 64 + 32);
                    for (int i = 0; i < MR; ++i) {
                        int32_t x4;
                        std::memcpy(&x4, q + i * a.ldq + 4 * s, 4);
                        const __m256i xb = _mm256_set1_epi32(x4);
                        pair[i][0] =
                            chained(_mm256_add_epi16(pair[i][0], _mm256_maddubs_epi16(w0, xb)));
                        pair[i][1] =
                            chained(_mm256_add_epi16(pair[i][1], _mm256_maddubs_epi16(w1, xb)));
                    }
                }
                for (int i = 0; i < MR; ++i)
                    for (int h = 0; h < 2; ++h)
                        isum[i][h] = _mm256_add_epi32(isum[i][h], Int8Maddubs::to_i32(pair[i][h]));
            }
        }
        const __m256 sc[2] = {_mm256_loadu_ps(p.scale + g * kPanelRows),
                              _mm256_loadu_ps(p.scale + g * kPanelRows + 8)};
        for (int i = 0; i < MR; ++i) {
            const int64_t at = (i0 + i) * a.ldg + g;
            const __m256 d = _mm256_set1_ps(a.d[at]);
            for (int h = 0; h < 2; ++h) {
                acc[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][h]), _mm256_mul_ps(sc[h], d),
                                            acc[i][h]);
                if constexpr (P::kOffset)
                    acc[i][h] = _mm256_fmadd_ps(_mm256_loadu_ps(p.offset + g * kPanelRows + 8 * h),
                                                _mm256_set1_ps(a.s[at]), acc[i][h]);
            }
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int h = 0; h < 2; ++h)
            _mm256_maskstore_ps(y + (i0 + i) * ldy + 8 * h, mask[h], acc[i][h]);
}

// gemm.h's GemmPanelFn for one packed type P.
template <class I8, class P>
void gemm_panel_avx2(const GemmPanel &p, const GemmActs &a, int64_t m, float *y, int64_t ldy,
                     int n_rows) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(n_rows), lanes),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(n_rows - 8), lanes)};
    const int64_t n_groups = p.k / P::kGroup, kc_groups = kKc2 / P::kGroup;
    for (int64_t g0 = 0; g0 < n_groups; g0 += kc_groups) {
        const int64_t g1 = g0 + kc_groups < n_groups ? g0 + kc_groups : n_groups;
        int64_t i0 = 0;
        for (; i0 + kMR2 <= m; i0 += kMR2)
            micro_avx2<I8, P, kMR2>(p, a, i0, g0, g1, g0 == 0, y, ldy, mask);
        if (m - i0 == 2) micro_avx2<I8, P, 2>(p, a, i0, g0, g1, g0 == 0, y, ldy, mask);
        if (m - i0 == 1) micro_avx2<I8, P, 1>(p, a, i0, g0, g1, g0 == 0, y, ldy, mask);
    }
}

// The packed types (gemm_form's groups and offsets; codes: Q4 15, Q5 31, Q6_K 63, Q8_0 255).
using PanelQ4_0 = PanelType<32, false, 15>;
using PanelQ4_1 = PanelType<32, true, 15>;
using PanelQ5_0 = PanelType<32, false, 31>;
using PanelQ5_1 = PanelType<32, true, 31>;
using PanelQ8_0 = PanelType<32, false, 255>;
using PanelQ4_K = PanelType<32, true, 15>;
using PanelQ5_K = PanelType<32, true, 31>;
using PanelQ6_K = PanelType<16, false, 63>;

}  // namespace
}  // namespace phirt

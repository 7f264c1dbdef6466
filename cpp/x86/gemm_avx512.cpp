// AVX-512 VNNI twin of gemm_ref.cpp (packed GEMM for prefill, see gemm.h).
//
// Compiled with the AVX-512 flags of dot_avx512.cpp. The two entry points are only reached
// through the avx512 kernel table; everything else has internal linkage and no standard-library
// template is instantiated here, so no AVX-512 code can be picked by the linker for baseline code.
#include <immintrin.h>

#include "../gemm_pack.h"

namespace phirt {

namespace {

constexpr int kMR = 8;         // activation rows per micro-tile (8 accumulators + 8 sums)
constexpr int64_t kKc = 2048;  // columns per pass: the panel slice (32 KB) stays in L1

// Columns 4c..4c+3 of the 16 rows in one gather each (row r starts at rows + r·k).
void interleave_avx512(const uint8_t *rows, int64_t k, uint8_t *u) {
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)k));
    for (int64_t c4 = 0; c4 < k / 4; ++c4)
        _mm512_storeu_si512(u + c4 * 64, _mm512_i32gather_epi32(idx, rows + c4 * 4, 1));
}

// Offset forms have zero 0, so their sums start at 0 rather than at zs.
template <int MR, int kGroup, bool kOffset>
void micro(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1, bool first,
           float *y, int64_t ldy, __mmask16 mask) {
    constexpr int kSteps = kGroup / 4;
    __m512 acc[MR];
    for (int i = 0; i < MR; ++i)
        acc[i] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, y + (i0 + i) * ldy);
    const int8_t *q0 = a.q + i0 * a.ldq;
    for (int64_t g = g0; g < g1; ++g) {
        __m512i isum[MR];
        for (int i = 0; i < MR; ++i)
            isum[i] =
                kOffset ? _mm512_setzero_si512() : _mm512_set1_epi32(a.zs[(i0 + i) * a.ldg + g]);
        const uint8_t *u = p.u + g * kSteps * 64;
        const int8_t *q = q0 + g * kGroup;
#pragma GCC unroll 8
        for (int s = 0; s < kSteps; ++s) {
            const __m512i w = _mm512_loadu_si512(u + s * 64);
            for (int i = 0; i < MR; ++i) {
                int32_t x4;
                std::memcpy(&x4, q + i * a.ldq + 4 * s, 4);
                isum[i] = _mm512_dpbusd_epi32(isum[i], w, _mm512_set1_epi32(x4));
            }
        }
        const __m512 sc = _mm512_loadu_ps(p.scale + g * kPanelRows);
        for (int i = 0; i < MR; ++i) {
            const int64_t at = (i0 + i) * a.ldg + g;
            const __m512 scaled = _mm512_mul_ps(sc, _mm512_set1_ps(a.d[at]));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), scaled, acc[i]);
            if (kOffset)
                acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(p.offset + g * kPanelRows),
                                         _mm512_set1_ps(a.s[at]), acc[i]);
        }
    }
    for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + (i0 + i) * ldy, mask, acc[i]);
}

using MicroFn = void (*)(const GemmPanel &, const GemmActs &, int64_t, int64_t, int64_t, bool,
                         float *, int64_t, __mmask16);
template <int kGroup, bool kOffset>
constexpr MicroFn kMicro[kMR + 1] = {nullptr,
                                     micro<1, kGroup, kOffset>,
                                     micro<2, kGroup, kOffset>,
                                     micro<3, kGroup, kOffset>,
                                     micro<4, kGroup, kOffset>,
                                     micro<5, kGroup, kOffset>,
                                     micro<6, kGroup, kOffset>,
                                     micro<7, kGroup, kOffset>,
                                     micro<8, kGroup, kOffset>};

}  // namespace

void pack_panel_avx512(int type, const uint8_t *w, int64_t row_bytes, int n_rows, GemmPanel *p,
                       uint8_t *rows) {
    // 32-bit gather offsets reach row 15 only while 16·k fits in int32.
    if (p->k * kPanelRows < (int64_t(1) << 31))
        pack_panel_with(type, w, row_bytes, n_rows, p, rows, interleave_avx512);
    else
        pack_panel_ref(type, w, row_bytes, n_rows, p, rows);
}

void gemm_panel_avx512(const GemmPanel &p, const GemmActs &a, int64_t m, float *y, int64_t ldy,
                       int n_rows) {
    const __mmask16 mask = (__mmask16)((1u << n_rows) - 1);
    const int64_t n_groups = p.k / p.form.group, kc_groups = kKc / p.form.group;
    const MicroFn *micros = p.form.group == 16 ? kMicro<16, false>
                            : p.form.offset    ? kMicro<32, true>
                                               : kMicro<32, false>;
    for (int64_t g0 = 0; g0 < n_groups; g0 += kc_groups) {
        const int64_t g1 = g0 + kc_groups < n_groups ? g0 + kc_groups : n_groups;
        for (int64_t i0 = 0; i0 < m; i0 += kMR) {
            const int mr = m - i0 < kMR ? (int)(m - i0) : kMR;
            micros[mr](p, a, i0, g0, g1, g0 == 0, y, ldy, mask);
        }
    }
}

}  // namespace phirt

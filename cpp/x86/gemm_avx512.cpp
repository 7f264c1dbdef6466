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
static_assert(kKc % QK_K == 0, "a pass holds whole super-blocks");

// Columns 4c..4c+3 of the 16 rows in one gather each (row r starts at rows + r·k).
void interleave_avx512(const uint8_t *rows, int64_t k, uint8_t *u) {
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)k));
    for (int64_t c4 = 0; c4 < k / 4; ++c4)
        _mm512_storeu_si512(u + c4 * 64, _mm512_i32gather_epi32(idx, rows + c4 * 4, 1));
}

// isum += w · broadcast(x[0..3]). GCC keeps the broadcast a separate VPBROADCASTD; the folded
// {1to16} memory operand saves a uop per VPDPBUSD, and the front end is what limits this loop.
inline __m512i dpbusd_x4(__m512i isum, __m512i w, const int8_t *x) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0"
            : "+v"(isum)
            : "v"(w), "m"(*reinterpret_cast<const int32_t *>(x)));
    return isum;
}

// Offset forms have zero 0, so their sums start at 0 rather than at zs. kSuper > 1 (K-quants):
// the activation scale d is constant over kSuper groups, so each group adds cvt(isum) · scale
// into a run sum and d multiplies the run once, one uop per group and row less than d·scale.
template <int MR, int kGroup, bool kOffset, int kSuper>
void micro(const GemmPanel &p, const GemmActs &a, int64_t i0, int64_t g0, int64_t g1, bool first,
           float *y, int64_t ldy, __mmask16 mask) {
    constexpr int kSteps = kGroup / 4;
    __m512 acc[MR];
    for (int i = 0; i < MR; ++i)
        acc[i] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, y + (i0 + i) * ldy);
    const int8_t *q0 = a.q + i0 * a.ldq;
    for (int64_t gr = g0; gr < g1; gr += kSuper) {
        __m512 run[MR];
        for (int i = 0; i < MR; ++i) run[i] = _mm512_setzero_ps();
        for (int64_t g = gr; g < gr + kSuper; ++g) {
            __m512i isum[MR];
            for (int i = 0; i < MR; ++i)
                isum[i] = kOffset ? _mm512_setzero_si512()
                                  : _mm512_set1_epi32(a.zs[(i0 + i) * a.ldg + g]);
            const uint8_t *u = p.u + g * kSteps * 64;
            const int8_t *q = q0 + g * kGroup;
#pragma GCC unroll 8
            for (int s = 0; s < kSteps; ++s) {
                const __m512i w = _mm512_loadu_si512(u + s * 64);
                for (int i = 0; i < MR; ++i) isum[i] = dpbusd_x4(isum[i], w, q + i * a.ldq + 4 * s);
            }
            const __m512 sc = _mm512_loadu_ps(p.scale + g * kPanelRows);
            for (int i = 0; i < MR; ++i) {
                const int64_t at = (i0 + i) * a.ldg + g;
                if (kSuper == 1)
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]),
                                             _mm512_mul_ps(sc, _mm512_set1_ps(a.d[at])), acc[i]);
                else
                    run[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), sc, run[i]);
                if (kOffset)
                    acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(p.offset + g * kPanelRows),
                                             _mm512_set1_ps(a.s[at]), acc[i]);
            }
        }
        if (kSuper > 1)
            for (int i = 0; i < MR; ++i)
                acc[i] =
                    _mm512_fmadd_ps(run[i], _mm512_set1_ps(a.d[(i0 + i) * a.ldg + gr]), acc[i]);
    }
    for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + (i0 + i) * ldy, mask, acc[i]);
}

using MicroFn = void (*)(const GemmPanel &, const GemmActs &, int64_t, int64_t, int64_t, bool,
                         float *, int64_t, __mmask16);
template <int kGroup, bool kOffset, int kSuper>
constexpr MicroFn kMicro[kMR + 1] = {nullptr,
                                     micro<1, kGroup, kOffset, kSuper>,
                                     micro<2, kGroup, kOffset, kSuper>,
                                     micro<3, kGroup, kOffset, kSuper>,
                                     micro<4, kGroup, kOffset, kSuper>,
                                     micro<5, kGroup, kOffset, kSuper>,
                                     micro<6, kGroup, kOffset, kSuper>,
                                     micro<7, kGroup, kOffset, kSuper>,
                                     micro<8, kGroup, kOffset, kSuper>};

// The kernels for a form (gemm_form's combinations only).
const MicroFn *micros_for(const GemmForm &f) {
    if (f.group == 16) return kMicro<16, false, QK_K / 16>;  // Q6_K
    if (f.super > 1) return kMicro<32, true, QK_K / 32>;     // Q4_K, Q5_K
    return f.offset ? kMicro<32, true, 1> : kMicro<32, false, 1>;
}

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
    const MicroFn *micros = micros_for(p.form);
    for (int64_t g0 = 0; g0 < n_groups; g0 += kc_groups) {
        const int64_t g1 = g0 + kc_groups < n_groups ? g0 + kc_groups : n_groups;
        for (int64_t i0 = 0; i0 < m; i0 += kMR) {
            const int mr = m - i0 < kMR ? (int)(m - i0) : kMR;
            micros[mr](p, a, i0, g0, g1, g0 == 0, y, ldy, mask);
        }
    }
}

}  // namespace phirt

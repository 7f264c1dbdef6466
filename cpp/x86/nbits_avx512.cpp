// AVX-512 VNNI twin of nbits_ref.cpp's int8-activation row dots (accuracy level 4), the decode
// GEMV of ONNX folders. The activation quantizer and the float-activation dots are the AVX2 ones.
//
// Compiled with the AVX-512 flags of dot_avx512.cpp; everything but nbits_kernels_avx512 has
// internal linkage and is reached only through the avx512 kernel table.
//
// A 256-column step of a repacked row (nbits.h) is 8 groups of 32, taken as 4 pairs per 512-bit
// vector: 4-bit codes as [group a low nibbles | a high | b low | b high], the high nibbles left in
// place (16x: VPDPBUSD takes them unsigned up to 240, and the factor is divided out at the end,
// exactly: a power of two), 8-bit codes as they are. VPDPBUSD sums codes x activations per 4
// columns; the tree of GGML's legacy kernels (combine8, as dot_avx512.cpp) leaves a step's sums
// in one vector whose 128-bit lane L holds, for pairs j = 0..3, the half group (L & 1) of group
// 2j + (L >> 1): 16 columns each, so every lane lies inside one ONNX block for block sizes >= 16,
// and one VPERMPS spreads the step's block scales (dw·dx) onto the lanes. Zero points: without
// them each sum starts at -zp·Σx (one VPDPBUSD of the constant per activation pair, shared by the
// rows); with them Σ_b dw·zp_b·(dx·Σx_b) is taken off in float, per step. The 4 rows of a row
// group share the activation side and read one stream (nbits.h), prefetched 2 KiB ahead.
#include <immintrin.h>

#include <cstring>

#include "../nbits_kernels.h"

namespace phirt {

namespace {

constexpr int64_t kPrefetchBytes = 2048;

inline __m512i load512(const void *p) {
    return _mm512_loadu_si512(p);
}

// Pairs (r01, r23, r45, r67) of group sums -> one vector, lane layout as described above.
inline __m512i combine8(__m512i r01, __m512i r23, __m512i r45, __m512i r67) {
    const __m512i a =
        _mm512_add_epi32(_mm512_unpacklo_epi32(r01, r23), _mm512_unpackhi_epi32(r01, r23));
    const __m512i b =
        _mm512_add_epi32(_mm512_unpacklo_epi32(r45, r67), _mm512_unpackhi_epi32(r45, r67));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

// 4-bit groups a and b (16 bytes each, Q4_0 order) -> [a & 0x0F | a & 0xF0 | b & 0x0F | b & 0xF0].
inline __m512i nibbles2_x16(const uint8_t *qa, const uint8_t *qb) {
    __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qa)));
    q = _mm512_mask_broadcast_i32x4(q, 0xFF00,
                                    _mm_loadu_si128(reinterpret_cast<const __m128i *>(qb)));
    return _mm512_and_si512(
        q, _mm512_setr_epi64(0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0F, -0x0F0F0F0F0F0F0F10,
                             -0x0F0F0F0F0F0F0F10, 0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0F,
                             -0x0F0F0F0F0F0F0F10, -0x0F0F0F0F0F0F0F10));
}

// Index of the ONNX block (within its step) each lane of combine8's result belongs to.
inline __m512i lane_blocks(int block_size) {
    alignas(64) int idx[16];
    for (int l = 0; l < 16; ++l) {
        const int L = l / 4, j = l % 4;
        const int group = 2 * j + (L >> 1), half = L & 1;
        idx[l] = (32 * group + 16 * half) / block_size;
    }
    return _mm512_load_si512(idx);
}

// R rows against one int8 activation row. kBits 4 or 8; kZp: the rows carry zero points.
template <int kBits, bool kZp, int R>
void rows_i8(const NBitsShape &s, const uint8_t *w, const NBitsActRow &x, float *y) {
    const int spb = s.spb;
    const __mmask16 bmask = (__mmask16)((1u << spb) - 1);  // spb <= 16
    const __m512i lanes = lane_blocks(s.block_size);
    // the start of every row's VPDPBUSD without zero points: -zp·Σx (8 in the 16x lanes: 128)
    const __m512i zero_bytes =
        kBits == 8 ? _mm512_set1_epi8((char)0x80)
                   : _mm512_setr_epi64(0x0808080808080808, 0x0808080808080808, 0x8080808080808080,
                                       0x8080808080808080, 0x0808080808080808, 0x0808080808080808,
                                       0x8080808080808080, 0x8080808080808080);
    __m512 acc[R], corr[R];
    for (int r = 0; r < R; ++r) acc[r] = corr[r] = _mm512_setzero_ps();
    for (int64_t t = 0; t < s.n_steps; ++t) {
        const int8_t *xq = x.q + t * kNBitsStep;
        const __m512 dx = _mm512_maskz_loadu_ps(bmask, x.d + t * spb);
        __m512 sx = _mm512_setzero_ps();
        if (kZp) sx = _mm512_maskz_loadu_ps(bmask, x.s + t * spb);
        __m512i xv[4], start[4];
        for (int p = 0; p < 4; ++p) {
            xv[p] = load512(xq + 64 * p);
            start[p] = kZp ? _mm512_setzero_si512()
                           : _mm512_sub_epi32(
                                 _mm512_setzero_si512(),
                                 _mm512_dpbusd_epi32(_mm512_setzero_si512(), zero_bytes, xv[p]));
        }
        for (int r = 0; r < R; ++r) {
            const uint8_t *step = s.step(w, r, t);
            for (int64_t o = 0; o < s.step_bytes; o += 64)  // the group's stream, ahead
                _mm_prefetch(reinterpret_cast<const char *>(step + kPrefetchBytes + o),
                             _MM_HINT_T0);
            const uint8_t *qs = step + s.off_qs();
            __m512i sum[4];
            for (int p = 0; p < 4; ++p) {
                const __m512i codes =
                    kBits == 8 ? load512(qs + 64 * p) : nibbles2_x16(qs + 32 * p, qs + 32 * p + 16);
                sum[p] = _mm512_dpbusd_epi32(start[p], codes, xv[p]);
            }
            const __m512 dw = _mm512_maskz_loadu_ps(bmask, step);
            const __m512 scale = _mm512_permutexvar_ps(lanes, _mm512_mul_ps(dw, dx));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(combine8(sum[0], sum[1], sum[2], sum[3])),
                                     scale, acc[r]);
            if (kZp) {
                const __m128i zb = _mm_maskz_loadu_epi8(bmask, step + s.off_zp());
                const __m512 zp = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(zb));
                corr[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, zp), sx, corr[r]);
            }
        }
    }
    // lanes 4-7 and 12-15 of 4-bit rows summed 16x their codes
    const __m512 unit = kBits == 8 ? _mm512_set1_ps(1.0f)
                                   : _mm512_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f,
                                                    1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f);
    for (int r = 0; r < R; ++r)
        y[r] = _mm512_reduce_add_ps(_mm512_mul_ps(acc[r], unit)) -
               (kZp ? _mm512_reduce_add_ps(corr[r]) : 0.0f);
}

template <int kBits, bool kZp>
void rows_by_count(const NBitsShape &s, const uint8_t *w, int nr, const NBitsActRow &x, float *y) {
    static_assert(kNBitsMaxRows == 4, "one case per row count");
    switch (nr) {
        case 1:
            return rows_i8<kBits, kZp, 1>(s, w, x, y);
        case 2:
            return rows_i8<kBits, kZp, 2>(s, w, x, y);
        case 3:
            return rows_i8<kBits, kZp, 3>(s, w, x, y);
        default:
            return rows_i8<kBits, kZp, 4>(s, w, x, y);
    }
}

void rows_i8_avx512(const NBitsShape &s, const uint8_t *w, int nr, const NBitsActRow &x, float *y) {
    if (s.bits == 8)
        return s.has_zero_points ? rows_by_count<8, true>(s, w, nr, x, y)
                                 : rows_by_count<8, false>(s, w, nr, x, y);
    return s.has_zero_points ? rows_by_count<4, true>(s, w, nr, x, y)
                             : rows_by_count<4, false>(s, w, nr, x, y);
}

// The panel packer: straight from the repacked rows, one gather per 4 columns of the 16 rows
// (4-bit: the 4 bytes holding columns j..j+3 of a group in their low nibbles and j+16..j+19 in
// their high ones), per block one gather of the 16 scales (and zero points). Rows past n_rows
// are masked off, so nothing past the matrix is read.
void pack_panel_avx512(const NBitsShape &s, const uint8_t *data, int64_t r0, int n_rows,
                       GemmPanel *p, uint8_t *rows) {
    if (s.group_bytes() * (kPanelRows / kNBitsRowGroup) >= (int64_t(1) << 31)) {
        nbits_kernels_scalar().pack_panel(s, data, r0, n_rows, p, rows);  // 32-bit offsets
        return;
    }
    const __mmask16 live = (__mmask16)((1u << n_rows) - 1);
    const uint8_t *base = data + r0 / kNBitsRowGroup * s.group_bytes();
    alignas(64) int32_t offs[kPanelRows];
    for (int r = 0; r < kPanelRows; ++r)
        offs[r] =
            (int32_t)(r / kNBitsRowGroup * s.group_bytes() + r % kNBitsRowGroup * s.step_bytes);
    const __m512i row_off = _mm512_load_si512(offs);
    const __m512i low = _mm512_set1_epi32(0x0F0F0F0F);
    const int per_block = s.block_size / kNBitsGroup;  // groups per block (>= 1 here)
    for (int64_t t = 0; t < s.n_steps; ++t) {
        const __m512i idx = _mm512_add_epi32(
            row_off, _mm512_set1_epi32((int32_t)(t * kNBitsRowGroup * s.step_bytes)));
        for (int b = 0; b < s.spb; ++b) {
            const __m512 d =
                _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, idx, base + 4 * b, 1);
            __m512 off = _mm512_setzero_ps();
            if (p->form.offset) {
                const __m512i z =
                    _mm512_and_si512(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, idx,
                                                                 base + s.off_zp() + b, 1),
                                     _mm512_set1_epi32(0xFF));
                // -(d·zp) as the spec negates (-0.0 where zp = 0), +0.0 in rows past n_rows
                off = _mm512_maskz_mov_ps(
                    live,
                    _mm512_xor_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(z)), _mm512_set1_ps(-0.0f)));
            }
            for (int g = b * per_block; g < (b + 1) * per_block; ++g) {
                const int64_t at = (t * 8 + g) * kPanelRows;
                _mm512_storeu_ps(p->scale + at, d);
                if (p->form.offset) _mm512_storeu_ps(p->offset + at, off);
            }
        }
        uint8_t *u = p->u + t * kNBitsStep / 4 * 64;  // 64 bytes per 4 columns
        for (int g = 0; g < 8; ++g, u += 8 * 64) {
            for (int c = 0; c < 4; ++c) {
                if (s.bits == 8) {
                    for (int h = 0; h < 2; ++h) {
                        const __m512i v = _mm512_mask_i32gather_epi32(
                            _mm512_setzero_si512(), live, idx,
                            base + s.off_qs() + 32 * g + 4 * (c + 4 * h), 1);
                        _mm512_storeu_si512(u + (c + 4 * h) * 64, v);
                    }
                    continue;
                }
                const __m512i v = _mm512_mask_i32gather_epi32(
                    _mm512_setzero_si512(), live, idx, base + s.off_qs() + 16 * g + 4 * c, 1);
                _mm512_storeu_si512(u + c * 64, _mm512_and_si512(v, low));
                _mm512_storeu_si512(u + (c + 4) * 64,
                                    _mm512_and_si512(_mm512_srli_epi32(v, 4), low));
            }
        }
    }
}

}  // namespace

NBitsKernels nbits_kernels_avx512() {
    NBitsKernels k = nbits_kernels_avx2();
    k.rows_i8 = rows_i8_avx512;
    k.pack_panel = pack_panel_avx512;
    return k;
}

}  // namespace phirt

// AVX-512 (F/BW/VL/DQ + VNNI) twin of dot_ref.cpp: the converters' bytes are the scalar spec's,
// dot products differ from it only in float summation order.
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni (plus AVX2/FMA/F16C).
// Everything but dot_kernels_avx512() has internal linkage, so no AVX-512 code can reach a
// baseline caller through the linker. Activation converters and axpy come from x86_common.h.
//
// Legacy blocks (32 elements) go two per 512-bit vector and eight per step: VPDPBUSD sums
// unsigned weight nibbles × signed activations (Q8_0: weights biased by 128), offsets (q - 8,
// q - 16, the bias) are subtracted with a second VPDPBUSD of the constant against the activations,
// once per activation pair, the start of each row's VPDPBUSD; an interleave tree leaves the
// sums of eight blocks in one vector, so each step needs one int->float conversion and one FMA.
// Decode runs up to 4 rows per call sharing the activation side (dot_rows).
// K-quants use VPMADDUBSW for the 4-8 bit products and VPDPWSSD to apply the sub-block scales.
#include <cstdlib>
#include <cstring>

#include "../dot_loops.h"
#include "../nbits_kernels.h"
#include "x86_common.h"

namespace phirt {

namespace {

inline __m512i load512(const void *p) {
    return _mm512_loadu_si512(p);
}

// [a | b] from two 32-byte loads.
inline __m512i load2x256(const void *a, const void *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(load256(a)), load256(b), 1);
}

inline __m512i dpbusd(__m512i u, __m512i s) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
}
inline __m256i dpbusd(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

// ---------------------------------------------------------------- legacy quant dots (blocks of 32)

// Blocks go 16 per iteration (two steps of 8). The lane order combine8 leaves a step's blocks
// in is (per 128-bit lane) 0 2 4 6 | 0 2 4 6 | 1 3 5 7 | 1 3 5 7, so scales are produced in the
// order below and spread8 picks each step's half.
inline __m512i scale_order() {
    return _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
}

// Products of the fp16 values in the low 16 bits of each int32 lane of a and b.
inline __m512 halves_product(__m512i a, __m512i b) {
    return _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(a)),
                         _mm512_cvtph_ps(_mm512_cvtepi32_epi16(b)));
}

// Int32 partial sums of 8 blocks given as pairs [i ×8 | i+1 ×8] -> one vector whose 128-bit
// lanes hold blocks (0 2 4 6), (0 2 4 6), (1 3 5 7), (1 3 5 7).
inline __m512i combine8(__m512i r01, __m512i r23, __m512i r45, __m512i r67) {
    const __m512i a =
        _mm512_add_epi32(_mm512_unpacklo_epi32(r01, r23), _mm512_unpackhi_epi32(r01, r23));
    const __m512i b =
        _mm512_add_epi32(_mm512_unpacklo_epi32(r45, r67), _mm512_unpackhi_epi32(r45, r67));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

// One step's 8 scales (half h of scale_order) spread to combine8's layout.
inline __m512 spread8(__m512 s, int h) {
    return h == 0 ? _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(1, 1, 0, 0))
                  : _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(3, 3, 2, 2));
}

// Nibbles of blocks a and b as bytes, [a elements 0..31 | b elements 0..31]: each 16-byte qs is
// broadcast to two 128-bit lanes and only the second lane of each pair is shifted.
inline __m512i nibbles2(const uint8_t *qa, const uint8_t *qb) {
    __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qa)));
    q = _mm512_mask_broadcast_i32x4(q, 0xFF00,
                                    _mm_loadu_si128(reinterpret_cast<const __m128i *>(qb)));
    return _mm512_and_si512(_mm512_srlv_epi64(q, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)),
                            _mm512_set1_epi8(0x0F));
}

// Nibbles of blocks a and b without a shift: 128-bit lanes [a & 0x0F | a & 0xF0 | b & 0x0F | b &
// 0xF0], i.e. the high nibbles (elements 16..31) are kept 16× as large. VPDPBUSD takes them
// unsigned (up to 240) with no overflow, the lanes stay apart through combine8, and the factor 16
// is divided out of the matching scales (exactly: a power of two).
inline __m512i nibbles2_x16(const uint8_t *qa, const uint8_t *qb) {
    __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qa)));
    q = _mm512_mask_broadcast_i32x4(q, 0xFF00,
                                    _mm_loadu_si128(reinterpret_cast<const __m128i *>(qb)));
    return _mm512_and_si512(
        q, _mm512_setr_epi64(0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0F, -0x0F0F0F0F0F0F0F10,
                             -0x0F0F0F0F0F0F0F10, 0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0F,
                             -0x0F0F0F0F0F0F0F10, -0x0F0F0F0F0F0F0F10));
}

// Adds 16 to the bytes of nibbles2's result whose fifth bit is set (bit j of qh = element j).
inline __m512i add_high_bits2(__m512i q, const uint8_t *qha, const uint8_t *qhb) {
    uint32_t a, b;
    std::memcpy(&a, qha, 4);
    std::memcpy(&b, qhb, 4);
    const __mmask64 k = (uint64_t)a | ((uint64_t)b << 32);
    return _mm512_mask_add_epi8(q, k, q, _mm512_set1_epi8(16));
}

// The R-row kernel `rows` instantiated for nr = 1..kMaxDotRows, as a VecDotRowsFn.
template <template <int> class Rows, class Act>
void dot_rows(int64_t n, const void *vw, int64_t row_bytes, int nr, const void *vx, float *y) {
    const auto *w = static_cast<const uint8_t *>(vw);
    const auto *x = static_cast<const Act *>(vx);
    static_assert(kMaxDotRows == 4, "one case per row count");
    switch (nr) {
        case 1:
            return Rows<1>::run(n, w, row_bytes, x, y);
        case 2:
            return Rows<2>::run(n, w, row_bytes, x, y);
        case 3:
            return Rows<3>::run(n, w, row_bytes, x, y);
        default:
            return Rows<4>::run(n, w, row_bytes, x, y);
    }
}

// The one-row dot (a VecDotFn): the R = 1 case of an R-row kernel, on n elements of blocks W
// (QK elements each).
template <template <int> class Rows, class W, int QK, class Act>
float one_row(int64_t n, const void *vw, const void *vx) {
    float y;
    Rows<1>::run(n, static_cast<const uint8_t *>(vw), n / QK * (int64_t)sizeof(W),
                 static_cast<const Act *>(vx), &y);
    return y;
}

// Q4_0 rows w_r = w + r·row_bytes (r < R) against one activation row, in combine8's lanes; the
// one-row dot is R = 1, so each y[r] is the one-row dot's bit for bit. What R > 1 shares is the
// activation side: its loads, its scale gather and conversion, and the Σ 8·x term, an integer
// VPDPBUSD done once per activation pair instead of once per row.
template <int R>
void q4_0_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const block_q8_0 *x, float *y) {
    const int64_t nb = n / QK8_0;
    // Σ(q - 8)·x = Σ q·x - Σ 8·x with q unsigned for VPDPBUSD (8·16 in the 16× lanes).
    const __m512i off = _mm512_setr_epi64(
        0x0808080808080808, 0x0808080808080808, 0x8080808080808080, 0x8080808080808080,
        0x0808080808080808, 0x0808080808080808, 0x8080808080808080, 0x8080808080808080);
    const block_q4_0 *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const block_q4_0 *>(w + r * row_bytes);
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int64_t ib = 0;
    for (; ib + 16 <= nb; ib += 16) {
        const __m512i gx = _mm512_i32gather_epi32(
            _mm512_mullo_epi32(scale_order(), _mm512_set1_epi32(sizeof(block_q8_0))), x + ib, 1);
        const __m512 dx = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(gx));
        for (int r = 0; r < R; ++r)
            prefetch_ahead(w + r * row_bytes, ib * (int64_t)sizeof(block_q4_0),
                           16 * sizeof(block_q4_0), row_bytes, R);
        __m512 d[R];
        for (int r = 0; r < R; ++r) {
            // d of 16 weight blocks in scale_order(): 8 blocks of 18 bytes fit in 128, so two
            // loads and one VPERMT2W per 8 (d of block i is 16-bit word 9·i)
            const __m512i idx =
                _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                 0, 0, 0, 0, 0, 0, 0, 0, 63, 45, 27, 9, 54, 36, 18, 0);
            const uint8_t *w0 = reinterpret_cast<const uint8_t *>(wr[r] + ib);
            const uint8_t *w8 = w0 + 8 * sizeof(block_q4_0);  // 288 bytes, both windows inside
            const __m128i h0 = _mm512_castsi512_si128(
                _mm512_permutex2var_epi16(load512(w0), idx, load512(w0 + 64)));
            const __m128i h1 = _mm512_castsi512_si128(
                _mm512_permutex2var_epi16(load512(w8), idx, load512(w8 + 64)));
            d[r] = _mm512_mul_ps(
                _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(h0), h1, 1)), dx);
        }
        for (int h = 0; h < 2; ++h) {  // two independent steps of 8 blocks
            const int64_t i0 = ib + 8 * h;
            __m512i xv[4], xo[4];  // xo: -Σ 8·x, the start of every row's VPDPBUSD
            for (int p = 0; p < 4; ++p) {
                xv[p] = load2x256(x[i0 + 2 * p].qs, x[i0 + 2 * p + 1].qs);
                xo[p] = _mm512_sub_epi32(_mm512_setzero_si512(), dpbusd(off, xv[p]));
            }
            for (int r = 0; r < R; ++r) {
                __m512i s[4];
                for (int p = 0; p < 4; ++p) {
                    const block_q4_0 *b = wr[r] + i0 + 2 * p;
                    s[p] = _mm512_dpbusd_epi32(xo[p], nibbles2_x16(b[0].qs, b[1].qs), xv[p]);
                }
                acc[r][h] = _mm512_fmadd_ps(spread8(d[r], h),
                                            _mm512_cvtepi32_ps(combine8(s[0], s[1], s[2], s[3])),
                                            acc[r][h]);
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        // the 2nd and 4th 128-bit lanes accumulated 16× sums
        const __m512 a =
            _mm512_mul_ps(_mm512_add_ps(acc[r][0], acc[r][1]),
                          _mm512_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f,  //
                                         1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f));
        __m256 tail = _mm256_setzero_ps();
        for (int64_t i = ib; i < nb; ++i) {
            const __m256i xv = load256(x[i].qs);
            const __m256i s =
                _mm256_sub_epi32(dpbusd(nibbles(wr[r][i].qs), xv), dpbusd(_mm256_set1_epi8(8), xv));
            tail = _mm256_fmadd_ps(_mm256_set1_ps(h2f(wr[r][i].d) * h2f(x[i].d)),
                                   _mm256_cvtepi32_ps(s), tail);
        }
        y[r] = _mm512_reduce_add_ps(a) + hsum(tail);
    }
}

template <int R>
struct Q4_0Rows {
    static void run(int64_t n, const uint8_t *w, int64_t rb, const block_q8_0 *x, float *y) {
        q4_0_rows<R>(n, w, rb, x, y);
    }
};

// The other legacy types share one R-row kernel (combine8's lanes, the same float order), so again
// each y[r] is the one-row dot's (R = 1) bit for bit. A type is a policy K: act() loads an
// activation pair once for all rows, with the start of each row's VPDPBUSD (minus any offset
// term that depends only on the activations, exact in int32); pair() is one row's int32 sums of
// two blocks, one() one block's for the tail.
struct ActPair {
    __m512i v, start;
};

// Q4_1: Σ d_w·d_x·Σq·x + Σ m_w·s_x, nibbles kept 16× in the high lanes (nibbles2_x16).
struct Q4_1Legacy {
    using W = block_q4_1;
    using X = block_q8_1;
    static constexpr bool kMins = true, kHi16 = true;
    static ActPair act(const X *x) { return {load2x256(x[0].qs, x[1].qs), _mm512_setzero_si512()}; }
    static __m512i pair(const W *w, const ActPair &a) {
        return _mm512_dpbusd_epi32(a.start, nibbles2_x16(w[0].qs, w[1].qs), a.v);
    }
    static __m256i one(const W *w, const X *x) { return dpbusd(nibbles(w->qs), load256(x->qs)); }
};

// Q5_0: Σ(q - 16)·x, the -Σ 16·x shared by the rows.
struct Q5_0Legacy {
    using W = block_q5_0;
    using X = block_q8_0;
    static constexpr bool kMins = false, kHi16 = false;
    static ActPair act(const X *x) {
        const __m512i v = load2x256(x[0].qs, x[1].qs);
        return {v, _mm512_sub_epi32(_mm512_setzero_si512(), dpbusd(_mm512_set1_epi8(16), v))};
    }
    static __m512i pair(const W *w, const ActPair &a) {
        const __m512i q = add_high_bits2(nibbles2(w[0].qs, w[1].qs), w[0].qh, w[1].qh);
        return _mm512_dpbusd_epi32(a.start, q, a.v);
    }
    static __m256i one(const W *w, const X *x) {
        const __m256i xv = load256(x->qs);
        const __m256i q = _mm256_or_si256(nibbles(w->qs), q5_high_bits(w->qh));
        return _mm256_sub_epi32(dpbusd(q, xv), dpbusd(_mm256_set1_epi8(16), xv));
    }
};

// Q5_1: Σ d_w·d_x·Σq·x + Σ m_w·s_x.
struct Q5_1Legacy {
    using W = block_q5_1;
    using X = block_q8_1;
    static constexpr bool kMins = true, kHi16 = false;
    static ActPair act(const X *x) { return {load2x256(x[0].qs, x[1].qs), _mm512_setzero_si512()}; }
    static __m512i pair(const W *w, const ActPair &a) {
        const __m512i q = add_high_bits2(nibbles2(w[0].qs, w[1].qs), w[0].qh, w[1].qh);
        return _mm512_dpbusd_epi32(a.start, q, a.v);
    }
    static __m256i one(const W *w, const X *x) {
        return dpbusd(_mm256_or_si256(nibbles(w->qs), q5_high_bits(w->qh)), load256(x->qs));
    }
};

// Q8_0 (signed × signed): the weights are biased to unsigned, Σ(w + 128)·x - 128·Σx, exact for
// all bytes; -128·Σx is the activations' alone, so the rows share it and each row costs one
// XOR and one VPDPBUSD per pair.
struct Q8_0Legacy {
    using W = block_q8_0;
    using X = block_q8_0;
    static constexpr bool kMins = false, kHi16 = false;
    static ActPair act(const X *x) {
        const __m512i v = load2x256(x[0].qs, x[1].qs);
        return {v,
                _mm512_sub_epi32(_mm512_setzero_si512(), dpbusd(_mm512_set1_epi8((char)0x80), v))};
    }
    static __m512i pair(const W *w, const ActPair &a) {
        const __m512i wu =
            _mm512_xor_si512(load2x256(w[0].qs, w[1].qs), _mm512_set1_epi8((char)0x80));
        return _mm512_dpbusd_epi32(a.start, wu, a.v);
    }
    static __m256i one(const W *w, const X *x) {
        const __m256i xv = load256(x->qs);
        const __m256i wu = _mm256_xor_si256(load256(w->qs), _mm256_set1_epi8((char)0x80));
        return _mm256_sub_epi32(dpbusd(wu, xv), dpbusd(_mm256_set1_epi8((char)0x80), xv));
    }
};

// Rows w_r = w + r·row_bytes (r < R) of K::W blocks against one activation row. Shared by the
// rows: the activation loads and offset terms, the activation scale gather and its conversion.
// The 4 bytes gathered at each block's start are d then m (or s, or the first quants): all inside
// the block.
template <class K, int R>
void legacy_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const typename K::X *x, float *y) {
    using W = typename K::W;
    const int64_t nb = n / QK8_0;
    const W *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const W *>(w + r * row_bytes);
    __m512 acc[R][2], accm[R];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = accm[r] = _mm512_setzero_ps();
    int64_t ib = 0;
    for (; ib + 16 <= nb; ib += 16) {
        const __m512i gx = _mm512_i32gather_epi32(
            _mm512_mullo_epi32(scale_order(), _mm512_set1_epi32(sizeof(*x))), x + ib, 1);
        const __m512 dx = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(gx));
        for (int r = 0; r < R; ++r)
            prefetch_ahead(w + r * row_bytes, ib * (int64_t)sizeof(W), 16 * sizeof(W), row_bytes,
                           R);
        __m512 d[R];
        for (int r = 0; r < R; ++r) {
            const __m512i gw = _mm512_i32gather_epi32(
                _mm512_mullo_epi32(scale_order(), _mm512_set1_epi32(sizeof(W))), wr[r] + ib, 1);
            d[r] = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(gw)), dx);
            if (K::kMins)
                accm[r] = _mm512_add_ps(
                    accm[r], halves_product(_mm512_srli_epi32(gw, 16), _mm512_srli_epi32(gx, 16)));
        }
        for (int h = 0; h < 2; ++h) {  // two independent steps of 8 blocks
            const int64_t i0 = ib + 8 * h;
            ActPair a[4];
            for (int p = 0; p < 4; ++p) a[p] = K::act(x + i0 + 2 * p);
            for (int r = 0; r < R; ++r) {
                __m512i s[4];
                for (int p = 0; p < 4; ++p) s[p] = K::pair(wr[r] + i0 + 2 * p, a[p]);
                acc[r][h] = _mm512_fmadd_ps(spread8(d[r], h),
                                            _mm512_cvtepi32_ps(combine8(s[0], s[1], s[2], s[3])),
                                            acc[r][h]);
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        __m512 a = _mm512_add_ps(acc[r][0], acc[r][1]);
        float summ = 0.0f;
        // Leftover blocks two at a time in pair()'s lanes (rows of 576 = 16 + 2 blocks are
        // common: SmolLM2's every matrix but ffn_down), the last odd one on its own.
        auto scales = [&](int64_t i) {  // d_w·d_x of block i, adding m_w·s_x to summ
            ggml_half h[4];             // d, m of the weight block; d, s of the activation block
            std::memcpy(h, wr[r] + i, K::kMins ? 4 : 2);
            std::memcpy(h + 2, x + i, K::kMins ? 4 : 2);
            if (K::kMins) summ += h2f(h[1]) * h2f(h[3]);
            return h2f(h[0]) * h2f(h[2]);
        };
        int64_t i = ib;
        for (; i + 2 <= nb; i += 2) {
            const float d0 = scales(i), d1 = scales(i + 1);
            a = _mm512_fmadd_ps(_mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1),
                                _mm512_cvtepi32_ps(K::pair(wr[r] + i, K::act(x + i))), a);
        }
        if (K::kHi16)  // the 2nd and 4th 128-bit lanes accumulated 16× sums
            a = _mm512_mul_ps(a, _mm512_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f,  //
                                                1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f));
        if (K::kMins) a = _mm512_add_ps(a, accm[r]);
        if (i < nb) {
            const float d = scales(i);
            a = _mm512_add_ps(
                a, _mm512_zextps256_ps512(_mm256_mul_ps(
                       _mm256_set1_ps(d), _mm256_cvtepi32_ps(K::one(wr[r] + i, x + i)))));
        }
        y[r] = _mm512_reduce_add_ps(a) + summ;
    }
}

template <class K, int R>
struct LegacyRows {
    static void run(int64_t n, const uint8_t *w, int64_t rb, const typename K::X *x, float *y) {
        legacy_rows<K, R>(n, w, rb, x, y);
    }
};
template <int R>
using Q4_1Rows = LegacyRows<Q4_1Legacy, R>;
template <int R>
using Q5_0Rows = LegacyRows<Q5_0Legacy, R>;
template <int R>
using Q5_1Rows = LegacyRows<Q5_1Legacy, R>;
template <int R>
using Q8_0Rows = LegacyRows<Q8_0Legacy, R>;

// ---------------------------------------------------------------- K-quant dots (blocks of 256)

// 16-bit scale vector: word `a` of every 128-bit lane of `sc` in the low 256 bits, word `b` in
// the high 256 bits (sc holds 8 int16 scales, repeated in each 128-bit lane).
inline __m512i scale_halves(__m512i sc, int a, int b) {
    const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi16((short)(0x0100 + 0x0202 * a)),
                                           _mm256_set1_epi16((short)(0x0100 + 0x0202 * b)), 1);
    return _mm512_shuffle_epi8(sc, idx);
}

// 32 bytes of 4-bit pairs -> [low nibbles | high nibbles] (sub-blocks 2j and 2j+1 of Q4_K/Q5_K).
inline __m512i nibbles_k(const uint8_t *q) {
    const __m512i b = _mm512_broadcast_i64x4(load256(q));
    return _mm512_and_si512(_mm512_srlv_epi64(b, _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4)),
                            _mm512_set1_epi8(0x0F));
}

// Q4_K and Q5_K (which adds a fifth bit per element from qh): per block d·Σ_j sc_j·(q·x)_j −
// dmin·Σ_j m_j·(Σx)_j. Two kernels, as for Q6_K below: q45_K_rows, R rows against one activation
// row, unpacks in step with its dot products; q45_K_acts, one row against C activation rows,
// unpacks a block once (q45_K_unpack) for all of them. Both run the same exact integer sums and
// the same float operations per (row, activation), so every output is the one-row dot's.
struct Q45KBlock {
    __m512i q[4];   // codes that meet activation bytes 64i..64i+63
    __m512i sc[4];  // q[i]'s VPDPWSSD scale words
    __m256i sm;     // k4_scales_mins: the sub-block scales and mins as int16
};

template <class Block>
__attribute__((always_inline)) inline Q45KBlock q45_K_unpack(const Block &b) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    Q45KBlock u;
    u.sm = k4_scales_mins(b.scales);
    const __m512i sc = _mm512_broadcast_i32x4(_mm256_castsi256_si128(u.sm));
    const uint8_t *q = b.qs;
    __m512i hb = _mm512_setzero_si512();
    if constexpr (kQ5) hb = _mm512_broadcast_i64x4(load256(b.qh));
    for (int j = 0; j < QK_K / 64; j += 2, q += 64) {
        __m512i q0 = nibbles_k(q), q1 = nibbles_k(q + 32);
        if constexpr (kQ5) {  // fifth bit: qh bit 2j for sub-block 2j, 2j+1 for 2j+1
            const __m512i b0 = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * j))),
                                                  _mm256_set1_epi8((char)(2 << (2 * j))), 1);
            const __m512i b1 = _mm512_inserti64x4(_mm512_set1_epi8((char)(4 << (2 * j))),
                                                  _mm256_set1_epi8((char)(8 << (2 * j))), 1);
            q0 = _mm512_mask_add_epi8(q0, _mm512_test_epi8_mask(hb, b0), q0, _mm512_set1_epi8(16));
            q1 = _mm512_mask_add_epi8(q1, _mm512_test_epi8_mask(hb, b1), q1, _mm512_set1_epi8(16));
        }
        u.q[j] = q0, u.q[j + 1] = q1;
        u.sc[j] = scale_halves(sc, 2 * j, 2 * j + 1);
        u.sc[j + 1] = scale_halves(sc, 2 * j + 2, 2 * j + 3);
    }
    return u;
}

// The block's integer dot Σ_j sc_j·(q·x)_j with the activation codes a, in int32 lanes.
__attribute__((always_inline)) inline __m512i q45_K_block_dot(const Q45KBlock &u, const int8_t *a) {
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int i = 0; i < 4; i += 2) {
        s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(u.q[i], load512(a + 64 * i)), u.sc[i]);
        s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(u.q[i + 1], load512(a + 64 * i + 64)),
                                 u.sc[i + 1]);
    }
    return _mm512_add_epi32(s0, s1);
}

// R rows w + r·row_bytes against one activation row; the one-row dot is R = 1. The rows share the
// activation's loads and sub-block sums. (Unpacking through q45_K_unpack here made the one-row
// Q5_K dot 27 % slower: one activation gains nothing from a block kept unpacked.)
template <class Block, int R>
void q45_K_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const block_q8_K *x, float *y) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const Block *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const Block *>(w + r * row_bytes);
    __m512 acc[R];
    __m128 acc_m[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps(), acc_m[r] = _mm_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const __m128i pairs = k4_bsum_pairs(x[ib].bsums);
        const int8_t *a = x[ib].qs;
        const __m512i x0 = load512(a), x1 = load512(a + 64), x2 = load512(a + 128),
                      x3 = load512(a + 192);
        for (int r = 0; r < R; ++r) {
            const Block &b = wr[r][ib];
            prefetch_ahead(w + r * row_bytes, ib * (int64_t)sizeof(Block), sizeof(Block), row_bytes,
                           R);
            const float d = x[ib].d * h2f(b.d);
            const float dmin = x[ib].d * h2f(b.dmin);
            const __m256i sm = k4_scales_mins(b.scales);
            acc_m[r] =
                _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_sums(sm, pairs)), acc_m[r]);
            const __m512i sc = _mm512_broadcast_i32x4(_mm256_castsi256_si128(sm));
            const uint8_t *q = b.qs;
            __m512i hb = _mm512_setzero_si512();
            if constexpr (kQ5) hb = _mm512_broadcast_i64x4(load256(b.qh));
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int j = 0; j < QK_K / 64; j += 2, q += 64) {
                __m512i q0 = nibbles_k(q), q1 = nibbles_k(q + 32);
                if constexpr (kQ5) {  // fifth bit: qh bit 2j for sub-block 2j, 2j+1 for 2j+1
                    const __m512i b0 =
                        _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * j))),
                                           _mm256_set1_epi8((char)(2 << (2 * j))), 1);
                    const __m512i b1 =
                        _mm512_inserti64x4(_mm512_set1_epi8((char)(4 << (2 * j))),
                                           _mm256_set1_epi8((char)(8 << (2 * j))), 1);
                    q0 = _mm512_mask_add_epi8(q0, _mm512_test_epi8_mask(hb, b0), q0,
                                              _mm512_set1_epi8(16));
                    q1 = _mm512_mask_add_epi8(q1, _mm512_test_epi8_mask(hb, b1), q1,
                                              _mm512_set1_epi8(16));
                }
                s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(q0, j == 0 ? x0 : x2),
                                         scale_halves(sc, 2 * j, 2 * j + 1));
                s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(q1, j == 0 ? x1 : x3),
                                         scale_halves(sc, 2 * j + 2, 2 * j + 3));
            }
            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d),
                                     _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]) - hsum(acc_m[r]);
}

// One row w against C activation rows (x_row_bytes apart): y[c·ldy] is the one-row dot with
// activation c, each block unpacked once for all of them.
template <class Block, int C>
void q45_K_acts(int64_t n, const uint8_t *w, const uint8_t *x, int64_t x_row_bytes, float *y,
                int64_t ldy) {
    const auto *b = reinterpret_cast<const Block *>(w);
    const int64_t row_bytes = n / QK_K * (int64_t)sizeof(Block);
    __m512 acc[C];
    __m128 acc_m[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps(), acc_m[c] = _mm_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        prefetch_ahead(w, ib * (int64_t)sizeof(Block), sizeof(Block), row_bytes, 1);
        const Q45KBlock u = q45_K_unpack(b[ib]);
        const float wd = h2f(b[ib].d), wdmin = h2f(b[ib].dmin);  // once per block
        for (int c = 0; c < C; ++c) {
            const block_q8_K &xc = reinterpret_cast<const block_q8_K *>(x + c * x_row_bytes)[ib];
            const float d = xc.d * wd;
            const float dmin = xc.d * wdmin;
            acc_m[c] =
                _mm_fmadd_ps(_mm_set1_ps(dmin),
                             _mm_cvtepi32_ps(k4_min_sums(u.sm, k4_bsum_pairs(xc.bsums))), acc_m[c]);
            acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(d),
                                     _mm512_cvtepi32_ps(q45_K_block_dot(u, xc.qs)), acc[c]);
        }
    }
    for (int c = 0; c < C; ++c) y[c * ldy] = _mm512_reduce_add_ps(acc[c]) - hsum(acc_m[c]);
}

template <int R>
struct Q4_KRows {
    static void run(int64_t n, const uint8_t *w, int64_t rb, const block_q8_K *x, float *y) {
        q45_K_rows<block_q4_K, R>(n, w, rb, x, y);
    }
};
template <int R>
struct Q5_KRows {
    static void run(int64_t n, const uint8_t *w, int64_t rb, const block_q8_K *x, float *y) {
        q45_K_rows<block_q5_K, R>(n, w, rb, x, y);
    }
};
template <int C>
struct Q4_KActs {
    static void run(int64_t n, const uint8_t *w, const uint8_t *x, int64_t xb, float *y,
                    int64_t ldy) {
        q45_K_acts<block_q4_K, C>(n, w, x, xb, y, ldy);
    }
};
template <int C>
struct Q5_KActs {
    static void run(int64_t n, const uint8_t *w, const uint8_t *x, int64_t xb, float *y,
                    int64_t ldy) {
        q45_K_acts<block_q5_K, C>(n, w, x, xb, y, ldy);
    }
};

// Q6_K: q in [0, 63] is used unsigned; the -32 offset is 32·Σ_s sc_s·bsums_s, from the
// activation's group sums (groups of 16 match Q6_K's sub-blocks). q6_K_rows (R rows, one
// activation row) unpacks in step with its dot products; q6_K_acts (one row, C activation rows)
// unpacks a block once (q6_K_unpack) and meets each activation block with q6_K_block_dot. Both
// run the one-row dot's operations for every (row, activation) pair.
struct Q6KBlock {
    __m512i q[4];   // codes of elements 64i..64i+63
    __m512i sc[4];  // each 32-bit lane of q[i]'s VPDPWSSD: its sub-block's scale, twice
    __m256i sc16;   // the 16 sub-block scales as int16
};

__attribute__((always_inline)) inline Q6KBlock q6_K_unpack(const block_q6_K &b) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x30);
    // word k of each 128-bit lane k: sub-block k (then k + 4) of the current 128-element half
    const __m512i lane_lo = _mm512_set_epi64(
        0x0706070607060706, 0x0706070607060706, 0x0504050405040504, 0x0504050405040504,
        0x0302030203020302, 0x0302030203020302, 0x0100010001000100, 0x0100010001000100);
    const __m512i lane_hi = _mm512_add_epi8(lane_lo, _mm512_set1_epi8(8));
    Q6KBlock u;
    u.sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b.scales)));
    const uint8_t *ql = b.ql, *qh = b.qh;
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32) {
        const __m512i sc = _mm512_broadcast_i32x4(half == 0 ? _mm256_castsi256_si128(u.sc16)
                                                            : _mm256_extracti128_si256(u.sc16, 1));
        const __m512i l = load512(ql);
        const __m512i h = _mm512_broadcast_i64x4(load256(qh));
        // elements 0..63: low nibbles of ql[0..63], high bits 0-1 (then 2-3) of qh[0..31]
        const __m512i h01 =
            _mm512_and_si512(_mm512_sllv_epi64(h, _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2)), m2);
        u.q[2 * half] = _mm512_or_si512(_mm512_and_si512(l, m4), h01);
        // elements 64..127: high nibbles of ql[0..63], high bits 4-5 (then 6-7)
        const __m512i h23 =
            _mm512_and_si512(_mm512_srlv_epi64(h, _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2)), m2);
        u.q[2 * half + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), h23);
        u.sc[2 * half] = _mm512_shuffle_epi8(sc, lane_lo);
        u.sc[2 * half + 1] = _mm512_shuffle_epi8(sc, lane_hi);
    }
    return u;
}

// The block's integer dot Σ sc_s·Σ (q - 32)·x over the activation block x, in int32 lanes.
__attribute__((always_inline)) inline __m512i q6_K_block_dot(const Q6KBlock &u,
                                                             const block_q8_K &x) {
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(u.sc16, load256(x.bsums)), 5);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int half = 0; half < 2; ++half) {
        const int i = 2 * half;
        s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(u.q[i], load512(x.qs + 64 * i)), u.sc[i]);
        s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(u.q[i + 1], load512(x.qs + 64 * i + 64)),
                                 u.sc[i + 1]);
    }
    return _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_zextsi256_si512(offset));
}

// R rows w + r·row_bytes against one activation row, sharing its loads; the one-row dot is R = 1.
template <int R>
void q6_K_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const block_q8_K *x, float *y) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x30);
    // word k of each 128-bit lane k: sub-block k (then k + 4) of the current 128-element half
    const __m512i lane_lo = _mm512_set_epi64(
        0x0706070607060706, 0x0706070607060706, 0x0504050405040504, 0x0504050405040504,
        0x0302030203020302, 0x0302030203020302, 0x0100010001000100, 0x0100010001000100);
    const __m512i lane_hi = _mm512_add_epi8(lane_lo, _mm512_set1_epi8(8));
    const block_q6_K *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const block_q6_K *>(w + r * row_bytes);
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const __m256i bsums = load256(x[ib].bsums);
        const int8_t *a = x[ib].qs;
        const __m512i xa[4] = {load512(a), load512(a + 64), load512(a + 128), load512(a + 192)};
        for (int r = 0; r < R; ++r) {
            const block_q6_K &b = wr[r][ib];
            prefetch_ahead(w + r * row_bytes, ib * (int64_t)sizeof(block_q6_K), sizeof(block_q6_K),
                           row_bytes, R);
            const float d = x[ib].d * h2f(b.d);
            const __m256i sc16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b.scales)));
            const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5);
            const uint8_t *ql = b.ql, *qh = b.qh;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int half = 0; half < 2; ++half, ql += 64, qh += 32) {
                const __m512i sc = _mm512_broadcast_i32x4(
                    half == 0 ? _mm256_castsi256_si128(sc16) : _mm256_extracti128_si256(sc16, 1));
                const __m512i l = load512(ql);
                const __m512i h = _mm512_broadcast_i64x4(load256(qh));
                // elements 0..63: low nibbles of ql[0..63], high bits 0-1 (then 2-3) of qh[0..31]
                const __m512i h01 = _mm512_and_si512(
                    _mm512_sllv_epi64(h, _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2)), m2);
                const __m512i q01 = _mm512_or_si512(_mm512_and_si512(l, m4), h01);
                // elements 64..127: high nibbles of ql[0..63], high bits 4-5 (then 6-7)
                const __m512i h23 = _mm512_and_si512(
                    _mm512_srlv_epi64(h, _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2)), m2);
                const __m512i q23 =
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), h23);
                s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(q01, xa[2 * half]),
                                         _mm512_shuffle_epi8(sc, lane_lo));
                s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(q23, xa[2 * half + 1]),
                                         _mm512_shuffle_epi8(sc, lane_hi));
            }
            const __m512i sumi =
                _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_zextsi256_si512(offset));
            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

// One row w against C activation rows (x_row_bytes apart): y[c·ldy] is the one-row dot with
// activation c, each block unpacked once for all of them.
template <int C>
void q6_K_acts(int64_t n, const uint8_t *w, const uint8_t *x, int64_t x_row_bytes, float *y,
               int64_t ldy) {
    const auto *b = reinterpret_cast<const block_q6_K *>(w);
    const int64_t row_bytes = n / QK_K * (int64_t)sizeof(block_q6_K);
    __m512 acc[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        prefetch_ahead(w, ib * (int64_t)sizeof(block_q6_K), sizeof(block_q6_K), row_bytes, 1);
        const Q6KBlock u = q6_K_unpack(b[ib]);
        const float wd = h2f(b[ib].d);  // once per block
        for (int c = 0; c < C; ++c) {
            const block_q8_K &xc = reinterpret_cast<const block_q8_K *>(x + c * x_row_bytes)[ib];
            const float d = xc.d * wd;
            const __m512i sumi = q6_K_block_dot(u, xc);
            acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc[c]);
        }
    }
    for (int c = 0; c < C; ++c) y[c * ldy] = _mm512_reduce_add_ps(acc[c]);
}

template <int R>
struct Q6_KRows {
    static void run(int64_t n, const uint8_t *w, int64_t rb, const block_q8_K *x, float *y) {
        q6_K_rows<R>(n, w, rb, x, y);
    }
};
template <int C>
struct Q6_KActs {
    static void run(int64_t n, const uint8_t *w, const uint8_t *x, int64_t xb, float *y,
                    int64_t ldy) {
        q6_K_acts<C>(n, w, x, xb, y, ldy);
    }
};

// ---------------------------------------------------------------- float dots

// Float lanes over chunks of kChunk elements, chunks gathered in double: rounding stays close
// to the spec's double sum however long the row. load(i, &w, &x) gives 16 values at element i;
// tail(i) is the spec's product at i (fewer than 16 elements left).
constexpr int64_t kChunk = 512;

template <class Load, class Tail>
float dot_float(int64_t n, Load load, Tail tail) {
    __m512d total = _mm512_setzero_pd();
    int64_t i = 0;
    const int64_t n64 = n & ~int64_t(63);
    while (i < n64) {
        const int64_t end = n64 < i + kChunk ? n64 : i + kChunk;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (; i < end; i += 64) {
            __m512 w, x;
            load(i, &w, &x);
            a0 = _mm512_fmadd_ps(w, x, a0);
            load(i + 16, &w, &x);
            a1 = _mm512_fmadd_ps(w, x, a1);
            load(i + 32, &w, &x);
            a2 = _mm512_fmadd_ps(w, x, a2);
            load(i + 48, &w, &x);
            a3 = _mm512_fmadd_ps(w, x, a3);
        }
        const __m512 s = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_extractf32x8_ps(s, 1)));
    }
    if (i + 16 <= n) {  // short rows (attention heads): whole vectors before the scalar tail
        __m512 a = _mm512_setzero_ps();
        for (; i + 16 <= n; i += 16) {
            __m512 w, x;
            load(i, &w, &x);
            a = _mm512_fmadd_ps(w, x, a);
        }
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)));
    }
    double sum = _mm512_reduce_add_pd(total);
    for (; i < n; ++i) sum += (double)tail(i);
    return (float)sum;
}

inline __m512 f16x16_to_f32(const ggml_half *p) {
    return _mm512_cvtph_ps(load256(p));
}

inline __m512 bf16x16_to_f32(const ggml_bf16 *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load256(p)), 16));
}

float dot_f16_f16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_half *>(vw);
    const auto *x = static_cast<const ggml_half *>(vx);
    return dot_float(
        n,
        [&](int64_t i, __m512 *a, __m512 *b) {
            *a = f16x16_to_f32(w + i), *b = f16x16_to_f32(x + i);
        },
        [&](int64_t i) { return h2f(w[i]) * h2f(x[i]); });
}

float dot_bf16_bf16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_bf16 *>(vw);
    const auto *x = static_cast<const ggml_bf16 *>(vx);
    return dot_float(
        n,
        [&](int64_t i, __m512 *a, __m512 *b) {
            *a = bf16x16_to_f32(w + i), *b = bf16x16_to_f32(x + i);
        },
        [&](int64_t i) { return bf16_to_fp32(w[i]) * bf16_to_fp32(x[i]); });
}

float dot_f32_f32(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const float *>(vw);
    const auto *x = static_cast<const float *>(vx);
    return dot_float(
        n,
        [&](int64_t i, __m512 *a, __m512 *b) {
            *a = _mm512_loadu_ps(w + i), *b = _mm512_loadu_ps(x + i);
        },
        [&](int64_t i) { return w[i] * x[i]; });
}

// ---------------------------------------------------------------- attention rows

// Up to 16 f16 (mask-loaded) as floats.
inline __m512 load_f16(const ggml_half *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

// Four keys at a time so four FMA chains are in flight; the last chunk of a row is masked.
void attn_scores(int64_t hd, int64_t n, const ggml_half *k, const ggml_half *q, float scale,
                 float *scores) {
    const int64_t chunks = (hd + 15) / 16;
    const __mmask16 last = (__mmask16)(0xFFFFu >> ((16 - hd % 16) % 16));
    auto mask = [&](int64_t c) { return c + 1 == chunks ? last : (__mmask16)0xFFFF; };
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const ggml_half *kj = k + j * hd;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t c = 0; c < chunks; ++c) {
            const __mmask16 m = mask(c);
            const __m512 qv = load_f16(q + c * 16, m);
            a0 = _mm512_fmadd_ps(load_f16(kj + c * 16, m), qv, a0);
            a1 = _mm512_fmadd_ps(load_f16(kj + hd + c * 16, m), qv, a1);
            a2 = _mm512_fmadd_ps(load_f16(kj + 2 * hd + c * 16, m), qv, a2);
            a3 = _mm512_fmadd_ps(load_f16(kj + 3 * hd + c * 16, m), qv, a3);
        }
        scores[j] = _mm512_reduce_add_ps(a0) * scale;
        scores[j + 1] = _mm512_reduce_add_ps(a1) * scale;
        scores[j + 2] = _mm512_reduce_add_ps(a2) * scale;
        scores[j + 3] = _mm512_reduce_add_ps(a3) * scale;
    }
    for (; j < n; ++j) {
        __m512 a = _mm512_setzero_ps();
        for (int64_t c = 0; c < chunks; ++c)
            a = _mm512_fmadd_ps(load_f16(k + j * hd + c * 16, mask(c)),
                                load_f16(q + c * 16, mask(c)), a);
        scores[j] = _mm512_reduce_add_ps(a) * scale;
    }
}

// NC chunks of 16 of o stay in registers while every value row passes; mul then add, as the spec.
template <int NC>
void attn_values_block(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v, float *o,
                       __mmask16 last) {
    __m512 acc[NC];
    for (int c = 0; c < NC; ++c)
        acc[c] = _mm512_maskz_loadu_ps(c + 1 == NC ? last : (__mmask16)0xFFFF, o + c * 16);
    for (int64_t j = 0; j < n; ++j) {
        const __m512 pj = _mm512_set1_ps(h2f(p[j]));
        for (int c = 0; c < NC; ++c) {
            const __m512 x = load_f16(v + j * hd + c * 16, c + 1 == NC ? last : (__mmask16)0xFFFF);
            acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(pj, x));
        }
    }
    for (int c = 0; c < NC; ++c)
        _mm512_mask_storeu_ps(o + c * 16, c + 1 == NC ? last : (__mmask16)0xFFFF, acc[c]);
}

// attn_values_block<NC> for NC = 1..8 chunks of 16.
using ValuesBlockFn = void (*)(int64_t, int64_t, const ggml_half *, const ggml_half *, float *,
                               __mmask16);
constexpr ValuesBlockFn kValuesBlock[9] = {
    nullptr,
    attn_values_block<1>,
    attn_values_block<2>,
    attn_values_block<3>,
    attn_values_block<4>,
    attn_values_block<5>,
    attn_values_block<6>,
    attn_values_block<7>,
    attn_values_block<8>,
};

void attn_values(int64_t hd, int64_t n, const ggml_half *p, const ggml_half *v, float *o) {
    // Blocks of up to 8 chunks (128 elements); v rows stay hd apart.
    for (int64_t d0 = 0; d0 < hd; d0 += 128) {
        const int64_t width = hd - d0 < 128 ? hd - d0 : 128;
        const int nc = (int)((width + 15) / 16);
        const __mmask16 last = (__mmask16)(0xFFFFu >> ((16 - width % 16) % 16));
        kValuesBlock[nc](hd, n, p, v + d0, o + d0, last);
    }
}

// exp(x) for x <= 0 (softmax arguments): x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two so
// r is exact to ~1e-10), exp(r) by its degree-7 Taylor polynomial (truncation < 2e-9 relative),
// then scaled by 2^n; below -87.3 the result is 0, as expf's nearest float is denormal or 0.
inline __m512 exp_nonpositive(__m512 x) {
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512 e = _mm512_scalef_ps(p, n);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ), e,
                                _mm512_setzero_ps());
}

double exp_sum(int64_t n, float max, float *s) {
    const __m512 vmax = _mm512_set1_ps(max);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vmax));
        _mm512_mask_storeu_ps(s + j, m, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
    }
    return (double)_mm512_reduce_add_ps(acc);
}

}  // namespace

// MatMulNBits: the AVX-512 VNNI row dots and panel packer (x86/nbits_avx512.cpp), AVX2 otherwise.
const DotKernels *dot_kernels_avx512() {
    static const DotKernels table = [] {
        DotKernels t = dot_kernels_scalar();
        t.isa = "avx512";
        t.to_q8_0 = to_q8_0;
        t.to_q8_1 = to_q8_1;
        t.to_q8_K = to_q8_K;
        t.to_f16 = to_f16;
        t.to_bf16 = to_bf16;
        const PackPanelFn pack = pack_panel_avx512;
        const GemmPanelFn gemm = gemm_panel_avx512;
        t.q4_0 = {one_row<Q4_0Rows, block_q4_0, QK8_0, block_q8_0>, dot_rows<Q4_0Rows, block_q8_0>,
                  pack, gemm};
        t.q4_1 = {one_row<Q4_1Rows, block_q4_1, QK8_1, block_q8_1>, dot_rows<Q4_1Rows, block_q8_1>,
                  pack, gemm};
        t.q5_0 = {one_row<Q5_0Rows, block_q5_0, QK8_0, block_q8_0>, dot_rows<Q5_0Rows, block_q8_0>,
                  pack, gemm};
        t.q5_1 = {one_row<Q5_1Rows, block_q5_1, QK8_1, block_q8_1>, dot_rows<Q5_1Rows, block_q8_1>,
                  pack, gemm};
        t.q8_0 = {one_row<Q8_0Rows, block_q8_0, QK8_0, block_q8_0>, dot_rows<Q8_0Rows, block_q8_0>,
                  pack, gemm};
        t.q4_K = {one_row<Q4_KRows, block_q4_K, QK_K, block_q8_K>, dot_rows<Q4_KRows, block_q8_K>,
                  pack, gemm, dot_acts<Q4_KActs>};
        t.q5_K = {one_row<Q5_KRows, block_q5_K, QK_K, block_q8_K>, dot_rows<Q5_KRows, block_q8_K>,
                  pack, gemm, dot_acts<Q5_KActs>};
        t.q6_K = {one_row<Q6_KRows, block_q6_K, QK_K, block_q8_K>, dot_rows<Q6_KRows, block_q8_K>,
                  pack, gemm, dot_acts<Q6_KActs>};
        t.f16 = {dot_f16_f16, rows_by_dot<dot_f16_f16>};
        t.bf16 = {dot_bf16_bf16, rows_by_dot<dot_bf16_bf16>};
        t.f32 = {dot_f32_f32, rows_by_dot<dot_f32_f32>};
        t.nbits = nbits_kernels_avx512();
        t.q4_0x16 = q4x16_gemm_avx512;
#if defined(PHIRT_HAVE_AMX)
        const char *amx = std::getenv("PHIRT_AMX");  // "0": keep AVX-512 for A/B runs
        if ((amx == nullptr || std::strcmp(amx, "0") != 0) && amx_ready())
            t.q4_0x16_many = q4x16_gemm_amx;
#endif
        t.axpy_f16 = axpy_f16;
        t.attn_scores = attn_scores;
        t.attn_values = attn_values;
        t.exp_sum = exp_sum;
        t.attn_q8_scores = attn_q8_scores_avx512;
        t.attn_q8_values = attn_q8_values_avx512;
        return t;
    }();
    return &table;
}

}  // namespace phirt

// Quantized dot products of the AVX2 family (AVX2 and AVX-VNNI), R weight rows against one
// activation row: each kernel's one-row dot is its R = 1 case, so every y[r] of the multi-row
// call is the one-row dot's result bit for bit (TypeKernels::dot_rows). The rows share the
// activation side: its loads, its scales, its offset terms; each row prefetches ahead of itself.
// Templates on the int8 policy I8 (int8_avx2.h); only included by the AVX2-family ISA files, all
// in an anonymous namespace (x86_common.h explains why).
//
// Integer techniques follow ggml-cpu/arch/x86/quants.c (unsigned codes × signed activations,
// nibble unpacking, the Q6_K bsums offset); the blocking across rows and the lane layout are
// phirt's (as x86/dot_avx512.cpp).
#pragma once

#include "int8_avx2.h"
#include "x86_common.h"

namespace phirt {
namespace {

// ---------------------------------------------------------------- legacy types (blocks of 32)
//
// Blocks go eight at a time, in two quads: a quad's four blocks leave their integer sums in the
// int32 lanes [b0 b1 b2 b3 | b0 b1 b2 b3] (the two halves are partial sums of the same block),
// so a quad costs one int->float conversion and one FMA per row, against the scale products of
// its blocks. The eight blocks' scales come from one gather per row (and one for the activation).

// Four blocks' partial sums -> int32 lanes [a b c d | a b c d] by interleave-and-add trees. int16
// parts (VPMADDUBSW): each int16 lane then sums four maddubs lanes, < 2^15 for codes up to 31.
inline __m256i combine4_i16(__m256i pa, __m256i pb, __m256i pc, __m256i pd) {
    const __m256i ab =
        _mm256_add_epi16(_mm256_unpacklo_epi32(pa, pb), _mm256_unpackhi_epi32(pa, pb));
    const __m256i cd =
        _mm256_add_epi16(_mm256_unpacklo_epi32(pc, pd), _mm256_unpackhi_epi32(pc, pd));
    const __m256i abcd =
        _mm256_add_epi16(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
    return _mm256_madd_epi16(abcd, _mm256_set1_epi16(1));
}
inline __m256i combine4_i32(__m256i pa, __m256i pb, __m256i pc, __m256i pd) {
    const __m256i ab =
        _mm256_add_epi32(_mm256_unpacklo_epi32(pa, pb), _mm256_unpackhi_epi32(pa, pb));
    const __m256i cd =
        _mm256_add_epi32(_mm256_unpacklo_epi32(pc, pd), _mm256_unpackhi_epi32(pc, pd));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
}

// The fp16 values in the low (high = false) or high 16 bits of the 8 int32 lanes of g, as floats.
inline __m256 halves8(__m256i g, bool high) {
    const __m256i lo =
        _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,  //
                         0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i idx = high ? _mm256_add_epi8(lo, _mm256_set1_epi8(2)) : lo;  // -1 + 2 keeps 0x80
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(g, idx), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
}

// The 4 bytes at the start of 8 consecutive blocks `stride` bytes apart (d, then m or s or the
// first quants: all inside the block).
inline __m256i gather_heads(const void *p, int stride) {
    return _mm256_i32gather_epi32(
        reinterpret_cast<const int *>(p),
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride)),
        1);
}

// Quad h (0: blocks 0-3, 1: blocks 4-7) of 8 scales, in both 128-bit halves.
inline __m256 quad_scales(__m256 d8, int h) {
    return h == 0 ? _mm256_permute2f128_ps(d8, d8, 0x00) : _mm256_permute2f128_ps(d8, d8, 0x11);
}

// A legacy type: its blocks, its activation blocks, and how a block's codes are made. kOffset:
// the codes are q + kOffset (Q4_0 8, Q5_0 16), taken off as kOffset·Σx, once for all rows.
// kMins: the type adds m_w·s_x per block (Q4_1, Q5_1). kSigned: signed 8-bit quants (Q8_0).
struct Q4_0A {
    using W = block_q4_0;
    using X = block_q8_0;
    static constexpr int kOffset = 8;
    static constexpr bool kMins = false, kSigned = false;
    static __m256i codes(const W &b) { return nibbles(b.qs); }
};
struct Q4_1A {
    using W = block_q4_1;
    using X = block_q8_1;
    static constexpr int kOffset = 0;
    static constexpr bool kMins = true, kSigned = false;
    static __m256i codes(const W &b) { return nibbles(b.qs); }
};
struct Q5_0A {
    using W = block_q5_0;
    using X = block_q8_0;
    static constexpr int kOffset = 16;
    static constexpr bool kMins = false, kSigned = false;
    static __m256i codes(const W &b) { return _mm256_or_si256(nibbles(b.qs), q5_high_bits(b.qh)); }
};
struct Q5_1A {
    using W = block_q5_1;
    using X = block_q8_1;
    static constexpr int kOffset = 0;
    static constexpr bool kMins = true, kSigned = false;
    static __m256i codes(const W &b) { return _mm256_or_si256(nibbles(b.qs), q5_high_bits(b.qh)); }
};
struct Q8_0A {
    using W = block_q8_0;
    using X = block_q8_0;
    static constexpr int kOffset = 0;
    static constexpr bool kMins = false, kSigned = true;
};

// How a type's block parts combine: int16 parts only for unsigned codes under VPMADDUBSW.
template <class I8, class T>
constexpr bool kI16Parts = !I8::kVnni && !T::kSigned;

// One block's part (int16 pairs or int32 lanes, see kI16Parts) of Σ code·x, without the offset.
// Q8_0: VPMADDUBSW takes |w| and x·sign(w) (|x| <= 127, so no pair saturates) and widens at once;
// VNNI takes w + 128 (the XOR) and the rows share -128·Σx, as the offset of the other types.
template <class I8, class T>
inline __m256i block_part(const typename T::W &b, __m256i xv) {
    if constexpr (T::kSigned) {
        const __m256i wv = load256(b.qs);
        if constexpr (I8::kVnni)
            return I8::part(_mm256_xor_si256(wv, _mm256_set1_epi8((char)0x80)), xv);
        else
            return Int8Maddubs::to_i32(
                _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)));
    } else {
        return I8::part(T::codes(b), xv);
    }
}

// The offset's byte (0: none) for a type under a policy.
template <class I8, class T>
constexpr int kOffsetByte = T::kSigned ? (I8::kVnni ? 0x80 : 0) : T::kOffset;

template <class I8, class T>
inline __m256i combine4(const __m256i p[4]) {
    if constexpr (kI16Parts<I8, T>)
        return combine4_i16(p[0], p[1], p[2], p[3]);
    else
        return combine4_i32(p[0], p[1], p[2], p[3]);
}

// One block's integer dot Σ(q - offset)·x as int32 lanes (the tail of a row).
template <class I8, class T>
inline __m256i block_dot(const typename T::W &b, const typename T::X &x) {
    const __m256i xv = load256(x.qs);
    __m256i s = block_part<I8, T>(b, xv);
    if constexpr (kI16Parts<I8, T>) s = I8::to_i32(s);
    constexpr int off = kOffsetByte<I8, T>;
    if constexpr (off != 0)
        s = _mm256_sub_epi32(s, I8::to_i32(I8::part(_mm256_set1_epi8((char)off), xv)));
    return s;
}

// Rows w_r = w + r·row_bytes (r < R) of T::W blocks against one activation row. One float
// accumulator per row (two FMAs per eight blocks: the R rows' chains interleave), the activation
// vectors read from L1 by each row: 16 ymm registers hold no more than this at R = 4.
template <class I8, class T, int R>
void legacy_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const typename T::X *x, float *y) {
    using W = typename T::W;
    constexpr int off = kOffsetByte<I8, T>;
    const int64_t nb = n / QK8_0;
    const W *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const W *>(w + r * row_bytes);
    __m256 acc[R], accm[R];
    for (int r = 0; r < R; ++r) acc[r] = accm[r] = _mm256_setzero_ps();
    int64_t ib = 0;
    for (; ib + 8 <= nb; ib += 8) {
        const __m256i gx = gather_heads(x + ib, sizeof(*x));
        const __m256 dx = halves8(gx, false);
        __m256 sx = _mm256_setzero_ps();
        if constexpr (T::kMins) sx = halves8(gx, true);
        __m256i xo[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        if constexpr (off != 0) {
            for (int h = 0; h < 2; ++h) {
                __m256i po[4];
                for (int b = 0; b < 4; ++b)
                    po[b] = I8::part(_mm256_set1_epi8((char)off), load256(x[ib + 4 * h + b].qs));
                xo[h] = combine4<I8, Q4_0A>(po);  // offset parts are bounded like 4-bit codes
            }
        }
        for (int r = 0; r < R; ++r) {
            prefetch_ahead(w + r * row_bytes, ib * (int64_t)sizeof(W), 8 * sizeof(W), row_bytes, R);
            const __m256i gw = gather_heads(wr[r] + ib, sizeof(W));
            const __m256 d = _mm256_mul_ps(halves8(gw, false), dx);
            if constexpr (T::kMins)
                accm[r] = _mm256_add_ps(accm[r], _mm256_mul_ps(halves8(gw, true), sx));
            for (int h = 0; h < 2; ++h) {
                const int64_t i0 = ib + 4 * h;
                __m256i p[4];
                for (int b = 0; b < 4; ++b)
                    p[b] = block_part<I8, T>(wr[r][i0 + b], load256(x[i0 + b].qs));
                __m256i s = combine4<I8, T>(p);
                if constexpr (off != 0) s = _mm256_sub_epi32(s, xo[h]);
                acc[r] = _mm256_fmadd_ps(quad_scales(d, h), _mm256_cvtepi32_ps(s), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        float summ = 0.0f;
        for (int64_t i = ib; i < nb; ++i) {
            ggml_half h[4];  // d, m of the weight block; d, s of the activation block
            std::memcpy(h, wr[r] + i, T::kMins ? 4 : 2);
            std::memcpy(h + 2, x + i, T::kMins ? 4 : 2);
            if constexpr (T::kMins) summ += h2f(h[1]) * h2f(h[3]);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(h2f(h[0]) * h2f(h[2])),
                                     _mm256_cvtepi32_ps(block_dot<I8, T>(wr[r][i], x[i])), acc[r]);
        }
        float sum = hsum(acc[r]);
        if constexpr (T::kMins) sum += hsum(accm[r]) + summ;
        y[r] = sum;
    }
}

// ---------------------------------------------------------------- K-quants (blocks of 256)

// Scale vector for VPMADDWD: word a of `sc` in the low 128 bits, word b in the high 128 bits,
// where sc holds 8 int16 scales in both 128-bit lanes.
inline __m256i scale_pair(__m256i sc, int a, int b) {
    const __m256i idx = _mm256_setr_m128i(_mm_set1_epi16((short)(0x0100 + 0x0202 * a)),
                                          _mm_set1_epi16((short)(0x0100 + 0x0202 * b)));
    return _mm256_shuffle_epi8(sc, idx);
}

// Q4_K and Q5_K (a fifth bit per element from qh): per block d·Σ_j sc_j·(q·x)_j − dmin·Σ_j
// m_j·(Σx)_j. Codes <= 31, so VPMADDUBSW pairs stay far from saturation; the sub-block scales are
// applied by VPMADDWD (VPDPWSSD under VNNI). Two kernels, as for Q6_K below: q45_K_rows, R rows
// against one activation row, unpacks in step with its dot products; q45_K_acts, one row against
// C activation rows, unpacks a block once (q45_K_unpack) for all of them. Both run the same exact
// integer sums and the same float operations per (row, activation).
struct Q45KBlock {
    __m256i q[8];   // codes of elements 32i..32i+31
    __m256i sc[8];  // q[i]'s VPMADDWD scale words (sub-block i)
    __m256i sm;     // k4_scales_mins: the sub-block scales and mins as int16
};

template <class Block>
__attribute__((always_inline)) inline Q45KBlock q45_K_unpack(const Block &b) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    Q45KBlock u;
    u.sm = k4_scales_mins(b.scales);
    const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(u.sm));
    const uint8_t *q = b.qs;
    __m256i hb = _mm256_setzero_si256();  // bit 2j: sub-block 2j, bit 2j+1: sub-block 2j+1
    if constexpr (kQ5) hb = load256(b.qh);
    for (int j = 0; j < QK_K / 64; ++j, q += 32) {
        const __m256i bits = load256(q);
        __m256i lo = _mm256_and_si256(bits, m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        if constexpr (kQ5) {
            lo = _mm256_or_si256(lo,
                                 _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(1)), 4));
            hi = _mm256_or_si256(hi,
                                 _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(2)), 3));
            hb = _mm256_srli_epi16(hb, 2);
        }
        u.q[2 * j] = lo, u.q[2 * j + 1] = hi;
        u.sc[2 * j] = scale_pair(sc, 2 * j, 2 * j);
        u.sc[2 * j + 1] = scale_pair(sc, 2 * j + 1, 2 * j + 1);
    }
    return u;
}

// The block's integer dot Σ_j sc_j·(q·x)_j with the activation codes a, in int32 lanes.
template <class I8>
__attribute__((always_inline)) inline __m256i q45_K_block_dot(const Q45KBlock &u, const int8_t *a) {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int i = 0; i < 8; i += 2) {
        s0 = I8::madd_acc(s0, u.sc[i], _mm256_maddubs_epi16(u.q[i], load256(a + 32 * i)));
        s1 = I8::madd_acc(s1, u.sc[i + 1],
                          _mm256_maddubs_epi16(u.q[i + 1], load256(a + 32 * i + 32)));
    }
    return _mm256_add_epi32(s0, s1);
}

// R rows w + r·row_bytes against one activation row; the one-row dot is R = 1. The rows share the
// activation's sub-block sums.
template <class I8, class Block, int R>
void q45_K_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const block_q8_K *x, float *y) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const Block *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const Block *>(w + r * row_bytes);
    __m256 acc[R];
    __m128 acc_m[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), acc_m[r] = _mm_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const __m128i pairs = k4_bsum_pairs(x[ib].bsums);
        for (int r = 0; r < R; ++r) {
            const Block &b = wr[r][ib];
            prefetch_ahead(w + r * row_bytes, ib * (int64_t)sizeof(Block), sizeof(Block), row_bytes,
                           R);
            const float d = x[ib].d * h2f(b.d);
            const float dmin = x[ib].d * h2f(b.dmin);
            const __m256i sm = k4_scales_mins(b.scales);
            acc_m[r] =
                _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_sums(sm, pairs)), acc_m[r]);
            const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
            const uint8_t *q = b.qs;
            const int8_t *a = x[ib].qs;
            __m256i hb = _mm256_setzero_si256();  // bit 2j: sub-block 2j, bit 2j+1: sub-block 2j+1
            if constexpr (kQ5) hb = load256(b.qh);
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
            for (int j = 0; j < QK_K / 64; ++j, q += 32, a += 64) {
                const __m256i bits = load256(q);
                __m256i lo = _mm256_and_si256(bits, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                if constexpr (kQ5) {
                    lo = _mm256_or_si256(
                        lo, _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(1)), 4));
                    hi = _mm256_or_si256(
                        hi, _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(2)), 3));
                    hb = _mm256_srli_epi16(hb, 2);
                }
                s0 = I8::madd_acc(s0, scale_pair(sc, 2 * j, 2 * j),
                                  _mm256_maddubs_epi16(lo, load256(a)));
                s1 = I8::madd_acc(s1, scale_pair(sc, 2 * j + 1, 2 * j + 1),
                                  _mm256_maddubs_epi16(hi, load256(a + 32)));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d),
                                     _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]) - hsum(acc_m[r]);
}

// One row w against C activation rows (x_row_bytes apart): y[c·ldy] is the one-row dot with
// activation c, each block unpacked once for all of them.
template <class I8, class Block, int C>
void q45_K_acts(int64_t n, const uint8_t *w, const uint8_t *x, int64_t x_row_bytes, float *y,
                int64_t ldy) {
    const auto *b = reinterpret_cast<const Block *>(w);
    const int64_t row_bytes = n / QK_K * (int64_t)sizeof(Block);
    __m256 acc[C];
    __m128 acc_m[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps(), acc_m[c] = _mm_setzero_ps();
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
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d),
                                     _mm256_cvtepi32_ps(q45_K_block_dot<I8>(u, xc.qs)), acc[c]);
        }
    }
    for (int c = 0; c < C; ++c) y[c * ldy] = hsum(acc[c]) - hsum(acc_m[c]);
}

// Q6_K: q in [0, 63] is used unsigned; the -32 offset is 32·Σ_s sc_s·bsums_s from the
// activation's group sums (groups of 16 match Q6_K's sub-blocks). q6_K_rows (R rows, one
// activation row) unpacks in step with its dot products: a whole unpacked block (17 vectors) would
// not fit the 16 registers. q6_K_acts (one row, C activation rows) unpacks a block once
// (q6_K_unpack) and meets each activation block with q6_K_block_dot. Both run the one-row dot's
// operations for every (row, activation) pair.
struct Q6KBlock {
    __m256i q[8];   // codes of elements 32i..32i+31
    __m256i sc[8];  // q[i]'s VPMADDWD scale words: sub-block 2i in the low lane, 2i+1 in the high
    __m256i sc16;   // the 16 sub-block scales as int16
};

__attribute__((always_inline)) inline Q6KBlock q6_K_unpack(const block_q6_K &b) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    Q6KBlock u;
    u.sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b.scales)));
    const uint8_t *ql = b.ql, *qh = b.qh;
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32) {
        const __m256i s8 = _mm256_broadcastsi128_si256(
            half == 0 ? _mm256_castsi256_si128(u.sc16) : _mm256_extracti128_si256(u.sc16, 1));
        const __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(qh);
        __m256i *q = u.q + 4 * half, *sc = u.sc + 4 * half;
        q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                               _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
        q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
        for (int j = 0; j < 4; ++j) sc[j] = scale_pair(s8, 2 * j, 2 * j + 1);
    }
    return u;
}

// The block's integer dot Σ sc_s·Σ (q - 32)·x over the activation block x, in int32 lanes.
template <class I8>
__attribute__((always_inline)) inline __m256i q6_K_block_dot(const Q6KBlock &u,
                                                             const block_q8_K &x) {
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(u.sc16, load256(x.bsums)), 5);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int i = 0; i < 8; i += 2) {
        s0 = I8::madd_acc(s0, u.sc[i], _mm256_maddubs_epi16(u.q[i], load256(x.qs + 32 * i)));
        s1 = I8::madd_acc(s1, u.sc[i + 1],
                          _mm256_maddubs_epi16(u.q[i + 1], load256(x.qs + 32 * i + 32)));
    }
    return _mm256_sub_epi32(_mm256_add_epi32(s0, s1), offset);
}

// R rows w + r·row_bytes against one activation row; the one-row dot is R = 1.
template <class I8, int R>
void q6_K_rows(int64_t n, const uint8_t *w, int64_t row_bytes, const block_q8_K *x, float *y) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const block_q6_K *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const block_q6_K *>(w + r * row_bytes);
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const __m256i bsums = load256(x[ib].bsums);
        for (int r = 0; r < R; ++r) {
            const block_q6_K &b = wr[r][ib];
            prefetch_ahead(w + r * row_bytes, ib * (int64_t)sizeof(block_q6_K), sizeof(block_q6_K),
                           row_bytes, R);
            const float d = x[ib].d * h2f(b.d);
            const __m256i sc16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b.scales)));
            const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5);
            const uint8_t *ql = b.ql, *qh = b.qh;
            const int8_t *a = x[ib].qs;
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
            for (int half = 0; half < 2; ++half, ql += 64, qh += 32, a += 128) {
                const __m256i s8 = _mm256_broadcastsi128_si256(
                    half == 0 ? _mm256_castsi256_si128(sc16) : _mm256_extracti128_si256(sc16, 1));
                const __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(qh);
                const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                                   _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
                const __m256i q1 = _mm256_or_si256(
                    _mm256_and_si256(l1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
                const __m256i q2 = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
                const __m256i q3 = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
                s0 = I8::madd_acc(s0, scale_pair(s8, 0, 1), _mm256_maddubs_epi16(q0, load256(a)));
                s1 = I8::madd_acc(s1, scale_pair(s8, 2, 3),
                                  _mm256_maddubs_epi16(q1, load256(a + 32)));
                s0 = I8::madd_acc(s0, scale_pair(s8, 4, 5),
                                  _mm256_maddubs_epi16(q2, load256(a + 64)));
                s1 = I8::madd_acc(s1, scale_pair(s8, 6, 7),
                                  _mm256_maddubs_epi16(q3, load256(a + 96)));
            }
            const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(s0, s1), offset);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]);
}

// One row w against C activation rows (x_row_bytes apart): y[c·ldy] is the one-row dot with
// activation c, each block unpacked once for all of them.
template <class I8, int C>
void q6_K_acts(int64_t n, const uint8_t *w, const uint8_t *x, int64_t x_row_bytes, float *y,
               int64_t ldy) {
    const auto *b = reinterpret_cast<const block_q6_K *>(w);
    const int64_t row_bytes = n / QK_K * (int64_t)sizeof(block_q6_K);
    __m256 acc[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        prefetch_ahead(w, ib * (int64_t)sizeof(block_q6_K), sizeof(block_q6_K), row_bytes, 1);
        const Q6KBlock u = q6_K_unpack(b[ib]);
        const float wd = h2f(b[ib].d);  // once per block
        for (int c = 0; c < C; ++c) {
            const block_q8_K &xc = reinterpret_cast<const block_q8_K *>(x + c * x_row_bytes)[ib];
            const float d = xc.d * wd;
            const __m256i sumi = q6_K_block_dot<I8>(u, xc);
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[c]);
        }
    }
    for (int c = 0; c < C; ++c) y[c * ldy] = hsum(acc[c]);
}

// ---------------------------------------------------------------- as table entries

// The R-row kernel `Rows<R>` as a VecDotRowsFn (nr = 1..kMaxDotRows) and as the one-row VecDotFn
// (its R = 1 case, on n elements of blocks W of QK elements).
template <template <int> class Rows>
void dot_rows(int64_t n, const void *vw, int64_t row_bytes, int nr, const void *x, float *y) {
    const auto *w = static_cast<const uint8_t *>(vw);
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
template <template <int> class Rows, class W, int QK>
float one_row(int64_t n, const void *w, const void *x) {
    float y;
    Rows<1>::run(n, static_cast<const uint8_t *>(w), n / QK * (int64_t)sizeof(W), x, &y);
    return y;
}

template <class I8, class T>
struct LegacyRows {
    template <int R>
    struct Of {
        static void run(int64_t n, const uint8_t *w, int64_t rb, const void *x, float *y) {
            legacy_rows<I8, T, R>(n, w, rb, static_cast<const typename T::X *>(x), y);
        }
    };
};
template <class I8, class Block>
struct Q45KRows {
    template <int R>
    struct Of {
        static void run(int64_t n, const uint8_t *w, int64_t rb, const void *x, float *y) {
            q45_K_rows<I8, Block, R>(n, w, rb, static_cast<const block_q8_K *>(x), y);
        }
    };
};
template <class I8, class Block>
struct Q45KActs {
    template <int C>
    struct Of {
        static void run(int64_t n, const uint8_t *w, const uint8_t *x, int64_t xb, float *y,
                        int64_t ldy) {
            q45_K_acts<I8, Block, C>(n, w, x, xb, y, ldy);
        }
    };
};
template <class I8>
struct Q6KRows {
    template <int R>
    struct Of {
        static void run(int64_t n, const uint8_t *w, int64_t rb, const void *x, float *y) {
            q6_K_rows<I8, R>(n, w, rb, static_cast<const block_q8_K *>(x), y);
        }
    };
};
template <class I8>
struct Q6KActs {
    template <int C>
    struct Of {
        static void run(int64_t n, const uint8_t *w, const uint8_t *x, int64_t xb, float *y,
                        int64_t ldy) {
            q6_K_acts<I8, C>(n, w, x, xb, y, ldy);
        }
    };
};

// {one-row dot, multi-row dot} of a type, for its TypeKernels entry.
template <class Rows, class W, int QK>
constexpr TypeKernels quant_kernels() {
    return {one_row<Rows::template Of, W, QK>, dot_rows<Rows::template Of>};
}

}  // namespace
}  // namespace phirt

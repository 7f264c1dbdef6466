// AVX2 + FMA + F16C twins of nbits_ref.cpp: the activation quantizer gives the spec's bytes, the
// row dots the spec's integer block sums, summed in a different float order.
//
// Compiled with -mavx2 -mfma -mf16c; everything but nbits_kernels_avx2 has internal linkage, so no
// AVX2 code can be linked into a baseline caller. The avx2 and avx512 tables both use these.
//
// One 32-element group is one __m256i of activations. Its 32 codes are put in element order
// (4 bits: low nibbles in the low 128-bit lane, high nibbles in the high lane) and multiplied with
// VPMADDUBSW: 4-bit codes are unsigned as they are; 8-bit codes are taken as c - 128 (signed, so
// no int16 pair saturates) and the 128 is folded into the zero point. The zero point is then
// subtracted per block in integers: Σ (q - zp)·x = Σ q·x - zp·Σ x, with Σ x per block computed
// once for all rows. A group's 8 int32 lanes hold elements 0..15 in lanes 0..3 and 16..31 in
// lanes 4..7, so block size 16 (two blocks per group) gets a scale per half.
#include <immintrin.h>

#include <cstring>

#include "../nbits_kernels.h"

namespace phirt {

namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline int hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

inline float load_f32(const uint8_t *p) {
    float f;
    std::memcpy(&f, p, sizeof(f));
    return f;
}

inline __m256i load256(const void *p) {
    return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

// The 32 codes of group g of a step in element order, as bytes (8-bit codes minus 128, signed).
template <int kBits>
inline __m256i group_codes(const uint8_t *qs, int g) {
    if (kBits == 8) return _mm256_xor_si256(load256(qs + 32 * g), _mm256_set1_epi8((char)0x80));
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs + 16 * g));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                            _mm256_set1_epi8(0x0F));
}

// Σ c·x per 4 elements (8 int32 lanes) of one group: c unsigned nibbles, or signed c - 128.
template <int kBits>
inline __m256i group_dot(__m256i c, __m256i x) {
    const __m256i pairs = kBits == 8
                              ? _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(x, c))
                              : _mm256_maddubs_epi16(c, x);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Σ x per 4 elements of one group (8 int32 lanes).
inline __m256i group_xsum(__m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), x), _mm256_set1_epi16(1));
}

// Zero point of block b of a step as the kernel subtracts it (8 bits: minus the code bias 128).
template <int kBits>
inline int kernel_zero(const NBitsShape &s, const uint8_t *step, int b) {
    const int z = s.has_zero_points ? step[s.off_zp() + b] : s.default_zero_point();
    return kBits == 8 ? z - 128 : z;
}

// MLAS's QuantizeARow_CompInt8 per block, the spec's bytes: max is exact in any order, the
// products x · (127 / amax) are single roundings, VROUNDPS rounds half to even as nearest_int.
void quantize_avx2(const NBitsShape &s, const float *x, int8_t *q, float *d, float *sum) {
    const int bs = s.block_size;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < s.nb; ++b, x += bs, q += bs) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < bs; j += 8)
            m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m);
        const float amax = hmax(m);
        const __m256 inv = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        __m256i isum = _mm256_setzero_si256();
        for (int j = 0; j < bs; j += 16) {
            const __m256i a =
                _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), inv),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            const __m256i c =
                _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8), inv),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(a, c));
            const __m128i w =
                _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
            const __m128i v =
                _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(q + j), _mm_packs_epi16(w, v));
        }
        d[b] = amax / 127.0f;
        sum[b] = d[b] * (float)hsum(isum);
    }
}

// R weight rows against int8 activations. Blocks of 32 and more: int32 sums over the block's
// groups, then one conversion and FMA per block; block size 16: per group, a scale per half.
template <int kBits, int R>
void rows_i8(const NBitsShape &s, const uint8_t *w, const NBitsActRow &x, float *y) {
    const int bs = s.block_size, groups_per_block = bs < 32 ? 1 : bs / 32;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t t = 0; t < s.n_steps; ++t) {
        const uint8_t *step[R];
        for (int r = 0; r < R; ++r) step[r] = s.step(w, r, t);
        const int8_t *xq = x.q + t * kNBitsStep;
        const float *dx = x.d + t * s.spb;
        if (bs == 16) {
            for (int g = 0; g < kNBitsStep / 32; ++g) {
                const __m256i xv = load256(xq + 32 * g);
                const __m256i xs = group_xsum(xv);
                for (int r = 0; r < R; ++r) {
                    const uint8_t *qs = step[r] + s.off_qs();
                    const __m256i z =
                        _mm256_set_m128i(_mm_set1_epi32(kernel_zero<kBits>(s, step[r], 2 * g + 1)),
                                         _mm_set1_epi32(kernel_zero<kBits>(s, step[r], 2 * g)));
                    const __m256i isum = _mm256_sub_epi32(
                        group_dot<kBits>(group_codes<kBits>(qs, g), xv), _mm256_mullo_epi32(z, xs));
                    const __m256 sc =
                        _mm256_set_m128(_mm_set1_ps(load_f32(step[r] + 8 * g + 4) * dx[2 * g + 1]),
                                        _mm_set1_ps(load_f32(step[r] + 8 * g) * dx[2 * g]));
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), sc, acc[r]);
                }
            }
            continue;
        }
        for (int b = 0; b < s.spb; ++b) {
            __m256i dot[R], xs = _mm256_setzero_si256();
            for (int r = 0; r < R; ++r) dot[r] = _mm256_setzero_si256();
            for (int g = b * groups_per_block; g < (b + 1) * groups_per_block; ++g) {
                const __m256i xv = load256(xq + 32 * g);
                xs = _mm256_add_epi32(xs, group_xsum(xv));
                for (int r = 0; r < R; ++r)
                    dot[r] = _mm256_add_epi32(
                        dot[r], group_dot<kBits>(group_codes<kBits>(step[r] + s.off_qs(), g), xv));
            }
            for (int r = 0; r < R; ++r) {
                const __m256i isum = _mm256_sub_epi32(
                    dot[r],
                    _mm256_mullo_epi32(_mm256_set1_epi32(kernel_zero<kBits>(s, step[r], b)), xs));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                         _mm256_set1_ps(load_f32(step[r] + 4 * b) * dx[b]), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]);
}

// 8 codes minus the zero point as floats: elements 8i..8i+7 of a group's element-order bytes.
template <int kBits>
inline __m256 codes8(__m256i c, int i, __m256i z) {
    const __m128i half = i < 2 ? _mm256_castsi256_si128(c) : _mm256_extracti128_si256(c, 1);
    const __m128i part = (i & 1) ? _mm_srli_si128(half, 8) : half;
    const __m256i v = kBits == 8 ? _mm256_cvtepi8_epi32(part) : _mm256_cvtepu8_epi32(part);
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(v, z));
}

// R weight rows against float activations: per block Σ (q - zp)·x in 8 lanes, times the scale.
template <int kBits, int R>
void rows_f32(const NBitsShape &s, const uint8_t *w, const float *x, float *y) {
    const int bs = s.block_size;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t t = 0; t < s.n_steps; ++t) {
        const uint8_t *step[R];
        for (int r = 0; r < R; ++r) step[r] = s.step(w, r, t);
        const float *xs = x + t * kNBitsStep;
        for (int b = 0; b < s.spb; ++b) {
            __m256 bsum[R];
            __m256i z[R];
            for (int r = 0; r < R; ++r) {
                bsum[r] = _mm256_setzero_ps();
                z[r] = _mm256_set1_epi32(kernel_zero<kBits>(s, step[r], b));
            }
            // elements [b·bs, (b+1)·bs) of the step, 8 at a time, in groups of 32
            for (int e = b * bs; e < (b + 1) * bs; e += 8) {
                const __m256 xv = _mm256_loadu_ps(xs + e);
                for (int r = 0; r < R; ++r) {
                    const __m256i c = group_codes<kBits>(step[r] + s.off_qs(), e / 32);
                    bsum[r] = _mm256_fmadd_ps(codes8<kBits>(c, (e % 32) / 8, z[r]), xv, bsum[r]);
                }
            }
            for (int r = 0; r < R; ++r)
                acc[r] =
                    _mm256_fmadd_ps(_mm256_set1_ps(load_f32(step[r] + 4 * b)), bsum[r], acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]);
}

template <template <int, int> class F, int kBits, class... A>
void by_rows(int nr, A... a) {
    switch (nr) {
        case 1:
            return F<kBits, 1>::run(a...);
        case 2:
            return F<kBits, 2>::run(a...);
        case 3:
            return F<kBits, 3>::run(a...);
        default:
            return F<kBits, 4>::run(a...);
    }
}

template <int kBits, int R>
struct RowsI8 {
    static void run(const NBitsShape &s, const uint8_t *w, const NBitsActRow &x, float *y) {
        rows_i8<kBits, R>(s, w, x, y);
    }
};
template <int kBits, int R>
struct RowsF32 {
    static void run(const NBitsShape &s, const uint8_t *w, const float *x, float *y) {
        rows_f32<kBits, R>(s, w, x, y);
    }
};

void rows_i8_avx2(const NBitsShape &s, const uint8_t *w, int nr, const NBitsActRow &x, float *y) {
    static_assert(kNBitsMaxRows == 4, "one case per row count");
    if (s.bits == 8)
        by_rows<RowsI8, 8>(nr, s, w, x, y);
    else
        by_rows<RowsI8, 4>(nr, s, w, x, y);
}

void rows_f32_avx2(const NBitsShape &s, const uint8_t *w, int nr, const float *x, float *y) {
    if (s.bits == 8)
        by_rows<RowsF32, 8>(nr, s, w, x, y);
    else
        by_rows<RowsF32, 4>(nr, s, w, x, y);
}

}  // namespace

NBitsKernels nbits_kernels_avx2() {
    NBitsKernels k = nbits_kernels_scalar();  // the panel packer stays the spec's
    k.quantize = quantize_avx2;
    k.rows_i8 = rows_i8_avx2;
    k.rows_f32 = rows_f32_avx2;
    return k;
}

}  // namespace phirt

// Row unpackers for packed GEMM panels (see gemm.h): one weight row into unsigned bytes plus a
// scale and offset per column group. Shared by the scalar and SIMD translation units, so every
// function is `static inline` (each object file keeps its own copy, compiled with its flags; the
// loops are simple enough for the compiler to vectorize).
#pragma once

#include <cstdint>

#include "formats.h"
#include "gemm.h"
#include "quants.h"

namespace phirt {

// scale (and offset, for offset forms) of group g go to [g * kPanelRows] (the caller offsets them
// by the row). Zero points are the GemmForm's.
static inline void unpack_q4_0(const uint8_t *src, int64_t k, uint8_t *u, float *sc, float *of) {
    const auto *b = reinterpret_cast<const block_q4_0 *>(src);
    for (int64_t i = 0; i < k / QK4_0; ++i, u += QK4_0) {
        const float d = fp16_to_fp32(b[i].d);
        sc[i * kPanelRows] = d;
        for (int j = 0; j < QK4_0 / 2; ++j) {
            u[j] = b[i].qs[j] & 0xF;
            u[j + QK4_0 / 2] = b[i].qs[j] >> 4;
        }
    }
}

static inline void unpack_q4_1(const uint8_t *src, int64_t k, uint8_t *u, float *sc, float *of) {
    const auto *b = reinterpret_cast<const block_q4_1 *>(src);
    for (int64_t i = 0; i < k / QK4_1; ++i, u += QK4_1) {
        sc[i * kPanelRows] = fp16_to_fp32(b[i].d);
        of[i * kPanelRows] = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            u[j] = b[i].qs[j] & 0xF;
            u[j + QK4_1 / 2] = b[i].qs[j] >> 4;
        }
    }
}

// Low nibbles as Q4_0, bit 4 of element j is bit j of qh.
template <class Block>
static inline void unpack_q5_bits(const Block &b, uint8_t *u) {
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < 16; ++j) {
        u[j] = (b.qs[j] & 0xF) | (((qh >> j) & 1) << 4);
        u[j + 16] = (b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    }
}

static inline void unpack_q5_0(const uint8_t *src, int64_t k, uint8_t *u, float *sc, float *of) {
    const auto *b = reinterpret_cast<const block_q5_0 *>(src);
    for (int64_t i = 0; i < k / QK5_0; ++i, u += QK5_0) {
        const float d = fp16_to_fp32(b[i].d);
        sc[i * kPanelRows] = d;
        unpack_q5_bits(b[i], u);
    }
}

static inline void unpack_q5_1(const uint8_t *src, int64_t k, uint8_t *u, float *sc, float *of) {
    const auto *b = reinterpret_cast<const block_q5_1 *>(src);
    for (int64_t i = 0; i < k / QK5_1; ++i, u += QK5_1) {
        sc[i * kPanelRows] = fp16_to_fp32(b[i].d);
        of[i * kPanelRows] = fp16_to_fp32(b[i].m);
        unpack_q5_bits(b[i], u);
    }
}

static inline void unpack_q8_0(const uint8_t *src, int64_t k, uint8_t *u, float *sc, float *of) {
    const auto *b = reinterpret_cast<const block_q8_0 *>(src);
    for (int64_t i = 0; i < k / QK8_0; ++i, u += QK8_0) {
        sc[i * kPanelRows] = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK8_0; ++j) u[j] = (uint8_t)(b[i].qs[j] + 128);
    }
}

// Q4_K/Q5_K: 8 groups of 32 per super-block, scale d·sc and offset -dmin·m as in dequantize.
template <bool kFifthBit, class Block>
static inline void unpack_k45(const Block *b, int64_t k, uint8_t *u, float *sc, float *of) {
    for (int64_t i = 0; i < k / QK_K; ++i) {
        const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int pair = 0; pair < 4; ++pair, q += 32, u += 64) {
            for (int h = 0; h < 2; ++h) {
                const int g = 2 * pair + h;
                uint8_t s, m;
                get_scale_min_k4(g, b[i].scales, &s, &m);
                sc[(i * 8 + g) * kPanelRows] = d * s;
                of[(i * 8 + g) * kPanelRows] = -(dmin * m);
            }
            for (int l = 0; l < 32; ++l) {
                uint8_t lo = q[l] & 0xF, hi = q[l] >> 4;
                if constexpr (kFifthBit) {
                    const uint8_t qh = b[i].qh[l];
                    lo |= ((qh >> (2 * pair)) & 1) << 4;
                    hi |= ((qh >> (2 * pair + 1)) & 1) << 4;
                }
                u[l] = lo;
                u[l + 32] = hi;
            }
        }
    }
}

// Q6_K: 16 groups of 16 per super-block, u = q (0..63), zero 32.
static inline void unpack_q6_K(const uint8_t *src, int64_t k, uint8_t *u, float *sc, float *of) {
    const auto *b = reinterpret_cast<const block_q6_K *>(src);
    for (int64_t i = 0; i < k / QK_K; ++i) {
        const float d = fp16_to_fp32(b[i].d);
        for (int g = 0; g < QK_K / 16; ++g) sc[(i * 16 + g) * kPanelRows] = d * b[i].scales[g];
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, u += 128) {
            for (int l = 0; l < 32; ++l) {
                u[l + 0] = (ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4);
                u[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                u[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                u[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
    }
}

// One row of any packed-form type; false when the type has none.
static inline bool unpack_row(int type, const uint8_t *src, int64_t k, uint8_t *u, float *sc,
                              float *of) {
    switch ((GgmlType)type) {
        case GgmlType::Q4_0:
            unpack_q4_0(src, k, u, sc, of);
            return true;
        case GgmlType::Q4_1:
            unpack_q4_1(src, k, u, sc, of);
            return true;
        case GgmlType::Q5_0:
            unpack_q5_0(src, k, u, sc, of);
            return true;
        case GgmlType::Q5_1:
            unpack_q5_1(src, k, u, sc, of);
            return true;
        case GgmlType::Q8_0:
            unpack_q8_0(src, k, u, sc, of);
            return true;
        case GgmlType::Q4_K:
            unpack_k45<false>(reinterpret_cast<const block_q4_K *>(src), k, u, sc, of);
            return true;
        case GgmlType::Q5_K:
            unpack_k45<true>(reinterpret_cast<const block_q5_K *>(src), k, u, sc, of);
            return true;
        case GgmlType::Q6_K:
            unpack_q6_K(src, k, u, sc, of);
            return true;
        default:
            return false;
    }
}

// Rows unpacked one by one into `rows` ([kPanelRows][k] scratch), then interleaved by 4 columns;
// missing rows are zero. `interleave` lets a SIMD unit supply a faster transpose.
template <class Interleave>
static inline void pack_panel_with(int type, const uint8_t *w, int64_t row_bytes, int n_rows,
                                   GemmPanel *p, uint8_t *rows, Interleave interleave) {
    const int64_t k = p->k, n_groups = k / p->form.group;
    for (int r = 0; r < kPanelRows; ++r) {
        if (r < n_rows) {
            unpack_row(type, w + r * row_bytes, k, rows + r * k, p->scale + r, p->offset + r);
        } else {
            std::memset(rows + r * k, 0, k);
            for (int64_t g = 0; g < n_groups; ++g) {
                p->scale[g * kPanelRows + r] = 0.0f;
                if (p->form.offset) p->offset[g * kPanelRows + r] = 0.0f;
            }
        }
    }
    interleave(rows, k, p->u);
}

}  // namespace phirt

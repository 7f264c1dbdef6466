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

// The codes below are built in 64-bit words (little-endian: byte j of a word is element j):
// written byte by byte through `u`, which as a uint8_t pointer may alias the block, GCC kept the
// nibble loops scalar and legacy panels took 4-15x as long to unpack as Q8_0's.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "panel unpacking assumes little-endian");

// Bits 0..7 of b spread to the 8 bytes of a word, bit i to byte i, as 16 (set) or 0.
static inline uint64_t bits_to_sixteens(uint32_t b) {
    const uint64_t picked = ((b & 0xFF) * 0x0101010101010101ull) & 0x8040201008040201ull;
    return ((picked + 0x7F7F7F7F7F7F7F7Full) & 0x8080808080808080ull) >> 3;
}

// A legacy block's 32 codes in element order: nibble j of qs (low nibbles, then high), plus bit j
// of qh as bit 4 for the Q5 types (qh null for Q4).
static inline void unpack_codes32(const uint8_t *qs, const uint8_t *qh, uint8_t *u) {
    constexpr uint64_t kLow = 0x0F0F0F0F0F0F0F0Full;
    uint64_t q[2];
    std::memcpy(q, qs, 16);
    uint64_t lo[2] = {q[0] & kLow, q[1] & kLow}, hi[2] = {(q[0] >> 4) & kLow, (q[1] >> 4) & kLow};
    if (qh != nullptr) {
        uint32_t h;
        std::memcpy(&h, qh, 4);
        lo[0] |= bits_to_sixteens(h), lo[1] |= bits_to_sixteens(h >> 8);
        hi[0] |= bits_to_sixteens(h >> 16), hi[1] |= bits_to_sixteens(h >> 24);
    }
    // Two 16-byte copies: one 32-byte copy of two halves built apart defeats store forwarding.
    std::memcpy(u, lo, 16);
    std::memcpy(u + 16, hi, 16);
}

// Q4_0, Q4_1, Q5_0, Q5_1: per block of 32 a scale d, an offset m for Q4_1/Q5_1 (kMin).
template <class Block, bool kMin, bool kFifthBit>
static inline void unpack_legacy(const uint8_t *src, int64_t k, uint8_t *u, float *sc, float *of) {
    const auto *b = reinterpret_cast<const Block *>(src);
    for (int64_t i = 0; i < k / 32; ++i, u += 32) {
        sc[i * kPanelRows] = fp16_to_fp32(b[i].d);
        if constexpr (kMin) of[i * kPanelRows] = fp16_to_fp32(b[i].m);
        const uint8_t *qh = nullptr;
        if constexpr (kFifthBit) qh = b[i].qh;
        unpack_codes32(b[i].qs, qh, u);
    }
}

static inline void unpack_q8_0(const uint8_t *src, int64_t k, uint8_t *u, float *sc,
                               float * /*of: Q8_0 has none*/) {
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
static inline void unpack_q6_K(const uint8_t *src, int64_t k, uint8_t *u, float *sc,
                               float * /*of: Q6_K has none*/) {
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
            unpack_legacy<block_q4_0, false, false>(src, k, u, sc, of);
            return true;
        case GgmlType::Q4_1:
            unpack_legacy<block_q4_1, true, false>(src, k, u, sc, of);
            return true;
        case GgmlType::Q5_0:
            unpack_legacy<block_q5_0, false, true>(src, k, u, sc, of);
            return true;
        case GgmlType::Q5_1:
            unpack_legacy<block_q5_1, true, true>(src, k, u, sc, of);
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

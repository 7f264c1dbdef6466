// GGML block formats, byte for byte as GGUF files store them.
//
// Layouts follow ggml/src/ggml-common.h (llama.cpp). Every struct mirrors the file exactly and is
// checked with static_assert, so weights are used straight from the memory map. This header is
// shared by baseline and SIMD translation units, so every helper here is `static inline`: each
// object file keeps its own copy and the linker can never pick an AVX-compiled one for baseline
// code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace phirt {

// Type ids are GGML's (gguf.GGMLQuantizationType), so Python passes them through unchanged.
enum class GgmlType : int32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
};

constexpr int QK4_0 = 32;
constexpr int QK4_1 = 32;
constexpr int QK5_0 = 32;
constexpr int QK5_1 = 32;
constexpr int QK8_0 = 32;
constexpr int QK8_1 = 32;
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

using ggml_half = uint16_t;
using ggml_bf16 = uint16_t;

// Q4_0: x = d * (q - 8); element j in the low nibble of qs[j], element j+16 in the high nibble.
struct block_q4_0 {
    ggml_half d;
    uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");

// Q4_1: x = d * q + m.
struct block_q4_1 {
    ggml_half d;
    ggml_half m;
    uint8_t qs[QK4_1 / 2];
};
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");

// Q5_0: x = d * (q - 16); low 4 bits as Q4_0, bit 4 of element j is bit j of qh (little endian).
struct block_q5_0 {
    ggml_half d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");

// Q5_1: x = d * q + m, bits as Q5_0.
struct block_q5_1 {
    ggml_half d;
    ggml_half m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");

// Q8_0: x = d * q.
struct block_q8_0 {
    ggml_half d;
    int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");

// Q8_1: activation format for Q4_1/Q5_1 dots; s = d * sum(qs).
struct block_q8_1 {
    ggml_half d;
    ggml_half s;
    int8_t qs[QK8_1];
};
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");

// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in `scales`;
// x = d * sc * q - dmin * m. qs holds pairs of sub-blocks: low nibbles first, then high.
struct block_q4_K {
    ggml_half d;
    ggml_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");

// Q5_K: Q4_K plus a fifth bit per element in qh (bit 2i / 2i+1 for sub-block pair i).
struct block_q5_K {
    ggml_half d;
    ggml_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");

// Q6_K: 16 sub-blocks of 16 with int8 scales; x = d * sc * (q - 32), q = 4 low bits | 2 high bits.
struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    ggml_half d;
};
static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");

// Q8_K: activation format for K-quant dots; bsums are sums of groups of 16 quants.
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};
static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");

// One row of the type table: elements per block and bytes per block.
struct TypeTraits {
    GgmlType type;
    const char *name;
    int block_size;
    int type_size;
};

// Returns nullptr for a type id phirt does not handle.
const TypeTraits *type_traits(int type_id);

// Largest row length accepted anywhere: keeps every size computation far from int64 overflow.
constexpr int64_t kMaxRowElements = int64_t(1) << 40;

// Bytes of one row of `k` elements; -1 when k is not a positive multiple of the block size or
// absurdly large.
static inline int64_t row_bytes(const TypeTraits &t, int64_t k) {
    if (k <= 0 || k > kMaxRowElements || k % t.block_size != 0) return -1;
    return k / t.block_size * t.type_size;
}

// ---- scalar number conversions (IEEE half, bfloat16) ----

static inline float fp32_from_bits(uint32_t w) {
    float f;
    std::memcpy(&f, &w, 4);
    return f;
}

static inline uint32_t fp32_to_bits(float f) {
    uint32_t w;
    std::memcpy(&w, &f, 4);
    return w;
}

// Exact half -> float (same bit-trick as ggml's portable path).
static inline float fp16_to_fp32(ggml_half h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = 0xE0u << 23;
    const float exp_scale = fp32_from_bits(0x7800000u);
    const float normalized = fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = 126u << 23;
    const float magic_bias = 0.5f;
    const float denormalized = fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denormalized_cutoff = 1u << 27;
    const uint32_t result = sign | (two_w < denormalized_cutoff ? fp32_to_bits(denormalized)
                                                                : fp32_to_bits(normalized));
    return fp32_from_bits(result);
}

// float -> half, round to nearest even (matches F16C / numpy).
static inline ggml_half fp32_to_fp16(float f) {
    const float scale_to_inf = fp32_from_bits(0x77800000u);
    const float scale_to_zero = fp32_from_bits(0x08800000u);
    const float af = f < 0 ? -f : f;
    float base = (af * scale_to_inf) * scale_to_zero;
    const uint32_t w = fp32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = fp32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = fp32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (ggml_half)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float bf16_to_fp32(ggml_bf16 h) {
    return fp32_from_bits((uint32_t)h << 16);
}

// float -> bfloat16, round to nearest even; NaN stays a quiet NaN (as ggml).
static inline ggml_bf16 fp32_to_bf16(float f) {
    const uint32_t u = fp32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ggml_bf16)((u >> 16) | 64);
    return (ggml_bf16)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

// Round to nearest, ties to even, for |x| < 2^22 (ggml's nearest_int trick).
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    std::memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

}  // namespace phirt

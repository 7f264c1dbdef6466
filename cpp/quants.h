// Reference (scalar) quantize/dequantize for every block format: the spec the SIMD paths follow.
//
// Weight quantizers are bit-identical to gguf-py's quants.py (and so to ggml's *_ref functions):
// this file is compiled with -ffp-contract=off so `x * id + 8.5f` is never fused into an FMA.
#pragma once

#include <cstdint>

#include "formats.h"

namespace phirt {

// Weight quantizers: k must be a multiple of the block size (checked by the caller).
void quantize_row_q4_0_ref(const float *x, block_q4_0 *y, int64_t k);
void quantize_row_q4_1_ref(const float *x, block_q4_1 *y, int64_t k);
void quantize_row_q5_0_ref(const float *x, block_q5_0 *y, int64_t k);
void quantize_row_q5_1_ref(const float *x, block_q5_1 *y, int64_t k);
void quantize_row_q8_0_ref(const float *x, block_q8_0 *y, int64_t k);
void quantize_row_f16_ref(const float *x, ggml_half *y, int64_t k);
void quantize_row_bf16_ref(const float *x, ggml_bf16 *y, int64_t k);

// Activation quantizers for the dot products. These round ties to even (as ggml's SIMD paths do)
// so every ISA produces the same bytes; they are not used to write files.
void quantize_row_q8_0_act(const float *x, block_q8_0 *y, int64_t k);
void quantize_row_q8_1_act(const float *x, block_q8_1 *y, int64_t k);
void quantize_row_q8_K_act(const float *x, block_q8_K *y, int64_t k);

void dequantize_row_q4_0(const block_q4_0 *x, float *y, int64_t k);
void dequantize_row_q4_1(const block_q4_1 *x, float *y, int64_t k);
void dequantize_row_q5_0(const block_q5_0 *x, float *y, int64_t k);
void dequantize_row_q5_1(const block_q5_1 *x, float *y, int64_t k);
void dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t k);
void dequantize_row_q4_K(const block_q4_K *x, float *y, int64_t k);
void dequantize_row_q5_K(const block_q5_K *x, float *y, int64_t k);
void dequantize_row_q6_K(const block_q6_K *x, float *y, int64_t k);
void dequantize_row_f16(const ggml_half *x, float *y, int64_t k);
void dequantize_row_bf16(const ggml_bf16 *x, float *y, int64_t k);

// Generic entry points keyed by GGML type id; false when the type has no such routine.
bool quantize_row(int type_id, const float *x, void *y, int64_t k);
bool dequantize_row(int type_id, const void *x, float *y, int64_t k);

// Unpack the 6-bit scale and min of sub-block j from a Q4_K/Q5_K `scales` array.
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

}  // namespace phirt

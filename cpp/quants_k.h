// K-quant weight quantizers (Q4_K, Q5_K, Q6_K): the reference that writes files.
//
// Same algorithm and the same float operation order as ggml's quantize_row_q{4,5,6}_K_ref
// (ggml-quants.c), which is what llama.cpp's llama_model_quantize uses without an importance
// matrix, so the bytes are identical. Compiled with -ffp-contract=off: an FMA would change the
// rounding of the scale search and so the chosen quants.
#pragma once

#include <cstdint>

#include "formats.h"

namespace phirt {

// k must be a multiple of QK_K (checked by the caller). Rows are independent blocks of 256, so
// callers may split a tensor anywhere on a block boundary and run the pieces in parallel.
void quantize_row_q4_K_ref(const float *x, block_q4_K *y, int64_t k);
void quantize_row_q5_K_ref(const float *x, block_q5_K *y, int64_t k);
void quantize_row_q6_K_ref(const float *x, block_q6_K *y, int64_t k);

}  // namespace phirt

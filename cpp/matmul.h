// Quantized matrix multiplication Y = X · Wᵀ with W (n × k) in a GGML block format and X (m × k)
// float32. Activations are converted on the fly to the weight type's activation format (Q8_0,
// Q8_1, Q8_K, F16, BF16 or F32) and each output is an integer-exact block dot product
// accumulated in float32, as ggml does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "dot.h"

namespace phirt {

// A weight matrix borrowed from a buffer the caller keeps alive (e.g. a memory-mapped file).
struct WeightView {
    const uint8_t *data;
    int type;
    int64_t n;          // rows (output features)
    int64_t k;          // columns (input features)
    int64_t row_bytes;  // bytes of one row in `type`
};

// Returns an empty string when (type, n, k, nbytes) describe a valid matrix, else the problem.
std::string validate_weight(int type, int64_t n, int64_t k, int64_t nbytes);

// True when matmul supports this weight type.
bool matmul_supported(int type);

// True when matmul runs m activation rows of a `type` matrix through kern's packed GEMM (gemm.h)
// rather than one-row dots.
bool uses_packed_gemm(const DotKernels &kern, int type, int64_t m);

// y (m × n) = x (m × k) · wᵀ. Runs on the global thread pool; allocation-free once warmed up.
void matmul(const WeightView &w, const float *x, int64_t m, float *y);

// out (t × k) = dequantized rows ids[0..t) of w; ids must be in [0, n) (checked by the caller).
void get_rows(const WeightView &w, const int32_t *ids, int64_t t, float *out);

}  // namespace phirt

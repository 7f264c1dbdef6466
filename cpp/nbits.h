// ONNX Runtime's com.microsoft MatMulNBits (bits = 4 or 8), converted losslessly at load time into
// a phirt-internal layout and multiplied as ONNX Runtime's CPU provider does for the node's
// accuracy_level.
//
// The ONNX format (onnxruntime docs/ContribOperators.md, MatMulNBits): W is N × K, quantized along
// K in blocks of `block_size` (a power of two, 16..256); n_blocks = ceil(K / block_size), the last
// block padded.
//   B            uint8 [N, n_blocks, block_size · bits / 8]  4 bits: element 2i in the low nibble
//                                                             of byte i, 2i+1 in the high nibble
//   scales       float32 or float16 [N · n_blocks]
//   zero_points  uint8 [N · ceil(n_blocks · bits / 8)], optional: 4 bits: two per byte, low nibble
//                first, each row starting on a new byte; 8 bits: one per byte. When absent the
//                zero point is 8 (4 bits) or 128 (8 bits).
//   W[n, k] = (q - zp) · scale
//
// Numerics, as ONNX Runtime's CPU provider (MLAS) computes them (tests/test_nbits.py checks each
// against onnxruntime itself):
//   accuracy_level 4: activations quantized to int8 per block of `block_size` elements (the
//     weight's block): amax = max |x|, scale dx = amax / 127 kept in float32, codes
//     round-half-even(x · (127 / amax)); y = Σ_blocks (dw · dx) · Σ (q - zp) · x_q, integer exact
//     per block.
//   accuracy_level 0..3: float32 activations times the dequantized weights (levels 2 and 3 ask
//     for fp16 / bf16 compute, which the CPU provider runs in float32 too).
//
// Why a repack, and this one. The ONNX bytes could be used as they are, but the nibble order (2i /
// 2i+1 interleaved) costs a shuffle per 32 elements in SIMD, the packed zero points a nibble
// extract per block, and scales, codes and zero points live in three separate tensors (three
// streams per row). The repacked layout keeps every number of the file exactly (f32 scale — f16
// scales widen exactly — and the integer zero point per ONNX block), so dequantization gives ORT's
// values bit for bit, and groups the row into steps of 256 columns that hold everything a kernel
// needs for them, one stream per row:
//
//   step (step_bytes):  float   d[spb]       scale of each of the step's spb = 256 / block_size
//                                            ONNX blocks
//                       uint8_t zp[zpb]      zero points, only when the node has them
//                                            (zpb = spb rounded up to 4 bytes)
//                       uint8_t qs[...]      codes. 4 bits: 8 groups of 32 elements, 16 bytes each,
//                                            GGML's Q4_0 order (byte j: element j in the low
//                                            nibble, element j + 16 in the high nibble); 8 bits:
//                                            one byte per element, in order.
//   row: n_steps steps, kq = 256 · n_steps >= n_blocks · block_size columns.
//   matrix: row groups of 4 rows (the last padded with zero rows), each holding step 0 of its
//   rows 0..3, then step 1 of rows 0..3, ...: the 4-row GEMV kernels read one stream.
// Block size 16 fits the 4-bit groups as they are: a group of 32 holds block 2g in its low
// nibbles and block 2g + 1 in its high nibbles. Blocks past n_blocks (the padding up to kq) get
// d = 0 and codes equal to the default zero point; codes of the ONNX padding inside the last block
// (columns K..n_blocks·block_size) are kept as the file has them: they meet zero activations.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats.h"
#include "nbits_kernels.h"
#include "weight_buffer.h"

namespace phirt {

// Empty when the attributes describe a matrix phirt can hold, else what is wrong.
std::string nbits_validate(int64_t n, int64_t k, int64_t block_size, int64_t bits,
                           int64_t accuracy_level);

// The shape of valid attributes (checked with nbits_validate first).
NBitsShape nbits_shape(int64_t n, int64_t k, int block_size, int bits, int accuracy_level,
                       bool has_zero_points);

// Repacked weights: owns its bytes (n_groups row groups of shape.group_bytes(), 64-byte aligned).
class NBitsMatrix {
   public:
    explicit NBitsMatrix(const NBitsShape &shape);
    const NBitsShape &shape() const { return shape_; }
    const uint8_t *data() const { return data_.data(); }
    uint8_t *data() { return data_.data(); }
    int64_t nbytes() const { return shape_.group_bytes() * shape_.n_groups; }

   private:
    NBitsShape shape_;
    WeightBuffer data_;
};

// Sources of repack_matmulnbits, sized as the ONNX shapes above for out->shape() (checked by the
// caller): scales are float32 or (scales_f16) IEEE half bits; zero_points may be null.
struct MatMulNBitsSource {
    const uint8_t *b;            // (n, onnx_blocks, block_size · bits / 8)
    const void *scales;          // (n · onnx_blocks)
    bool scales_f16;             //
    const uint8_t *zero_points;  // (n · ceil(onnx_blocks · bits / 8)) or nullptr
};

// The load-time conversion: ONNX MatMulNBits bytes -> the repacked layout. Runs on the pool.
void repack_matmulnbits(const MatMulNBitsSource &src, NBitsMatrix *out);

// out (n × k) = the weights, (q - zp)·scale in float32 exactly as ONNX Runtime computes them.
void nbits_dequantize(const NBitsMatrix &w, float *out);

// y (m × n) = x (m × k) · wᵀ with the numerics of w's accuracy level (above). Allocation-free
// once warmed up; runs on the global pool. batch_invariant: every output row is bit for bit what
// an m = 1 call gives for it (no packed GEMM), as matmul's.
void nbits_matmul(const NBitsMatrix &w, const float *x, int64_t m, float *y,
                  bool batch_invariant = false);

// The exporter's quantizer (nbits_quant.cpp): rows × k floats -> ONNX MatMulNBits B
// (rows, ceil(k / block_size), block_size · bits / 8) and scales (rows, ceil(k / block_size)),
// symmetric (zero point 8 or 128). `search` (4 bits): per block the scale of least squared error
// among candidates that include ONNX Runtime's own RTN scale.
void nbits_quantize_rows(const float *x, int64_t rows, int64_t k, int block_size, int bits,
                         bool search, uint8_t *b, float *scales);

}  // namespace phirt

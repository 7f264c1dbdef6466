// ONNX Runtime's com.microsoft MatMulNBits (bits = 4), converted losslessly at load time into a
// phirt-internal layout and multiplied with 8-bit activations.
//
// The ONNX format (onnxruntime docs/ContribOperators.md, MatMulNBits): W is N × K, quantized along
// K in blocks of `block_size` (a power of two, 16..256); n_blocks = ceil(K / block_size), the last
// block padded.
//   B            uint8 [N, n_blocks, block_size / 2]  element 2i in the low nibble of byte i,
//                                                      element 2i+1 in the high nibble
//   scales       float32 or float16 [N * n_blocks]
//   zero_points  uint8 [N * ceil(n_blocks / 2)], optional: two 4-bit zero points per byte, low
//                nibble first, each row starting on a new byte; 8 when absent
//   W[n, k] = (q - zp) * scale   (q, zp in 0..15)
//
// Why a repack, and this one. The ONNX bytes could be used as they are, but two things make a
// load-time copy worth its memory: the nibble order (2i / 2i+1 interleaved) costs a shuffle per
// 32 elements in SIMD, and the packed zero points cost a nibble extract per block. The repacked
// layout keeps every number of the file exactly (f32 scale — f16 scales widen exactly — and the
// integer zero point per ONNX block), so dequantization gives ORT's values bit for bit, and the
// codes are reordered in 32-element groups the way GGML's Q4_0 orders them (byte j: element j low,
// j + 16 high), so the dot products are Q4_0's with the zero point subtracted from the codes.
// Block size 16 needs no special activation format: a 32-element group then holds two ONNX blocks,
// one in the low nibbles and one in the high nibbles, so each half gets its own scale and zero
// point while the Q8_0 activation block (one scale per 32) is shared; the integer dot is
// Σ (q - zp)·x_q per half, exact, with no per-16 activation sums. Scales are not repeated per
// sub-block (that would cost 1 bit per weight on a bandwidth-bound GEMV).
//
// Repacked row (row_bytes apart, 64-byte aligned matrix, all offsets multiples of 4):
//   float   d[nb]           scale of each ONNX block, nb = kq / block_size
//   uint8_t qs[kq / 2]      codes, kq = n_blocks·block_size rounded up to 32, Q4_0 order per 32
//   uint8_t zp[nb]          zero point of each block (8 when the model has none)
//   padding to a multiple of 16 bytes
// nb exceeds n_blocks only for block_size 16 with n_blocks odd: the extra half-group gets d = 0,
// zp = 8 and codes 8. Codes of the ONNX padding (columns k..n_blocks·block_size) are kept as the
// file has them: they meet zero activations (the activation row is zero-padded to kq).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "dot.h"
#include "formats.h"

namespace phirt {

constexpr int kNBitsGroup = 32;  // elements per code group (and per Q8_0 activation block)

// Sizes of one repacked matrix; every field is derived from (n, k, block_size).
struct NBitsShape {
    int64_t n = 0;            // rows (output features)
    int64_t k = 0;            // columns (input features)
    int block_size = 0;       // ONNX block size
    int64_t onnx_blocks = 0;  // ceil(k / block_size), per row
    int64_t kq = 0;           // padded row length: onnx_blocks·block_size rounded up to 32
    int64_t nb = 0;           // scales (and zero points) per repacked row: kq / block_size
    int64_t off_qs = 0;       // byte offsets inside a row
    int64_t off_zp = 0;
    int64_t row_bytes = 0;
    bool has_zero_points = false;
};

// Empty when (n, k, block_size) describe a matrix phirt can hold, else what is wrong.
std::string nbits_validate(int64_t n, int64_t k, int64_t block_size);

// The shape of a valid (n, k, block_size) (checked with nbits_validate first).
NBitsShape nbits_shape(int64_t n, int64_t k, int block_size, bool has_zero_points);

// Repacked weights: owns its bytes (row-major rows of shape.row_bytes).
class NBitsMatrix {
   public:
    explicit NBitsMatrix(const NBitsShape &shape);
    const NBitsShape &shape() const { return shape_; }
    const uint8_t *data() const { return data_.get(); }
    uint8_t *data() { return data_.get(); }
    int64_t nbytes() const { return shape_.row_bytes * shape_.n; }

   private:
    struct Free {
        void operator()(uint8_t *p) const;
    };
    NBitsShape shape_;
    std::unique_ptr<uint8_t, Free> data_;
};

// Sources of repack_matmulnbits, sized as the ONNX shapes above for out->shape() (checked by the
// caller): scales are float32 or (scales_f16) IEEE half bits; zero_points may be null.
struct MatMulNBitsSource {
    const uint8_t *b;            // (n, onnx_blocks, block_size / 2)
    const void *scales;          // (n * onnx_blocks)
    bool scales_f16;             //
    const uint8_t *zero_points;  // (n * ceil(onnx_blocks / 2)) or nullptr
};

// The load-time conversion: ONNX MatMulNBits bytes -> the repacked layout. Runs on the pool.
void repack_matmulnbits(const MatMulNBitsSource &src, NBitsMatrix *out);

// out (n × k) = the weights, (q - zp)·scale in float32 exactly as ONNX Runtime computes them.
void nbits_dequantize(const NBitsMatrix &w, float *out);

// y (m × n) = x (m × k) · wᵀ: x quantized on the fly to Q8_0 (the active ISA's to_q8_0, rows
// zero-padded to kq), integer dot products per 16/32 elements, float32 accumulation.
void nbits_matmul(const NBitsMatrix &w, const float *x, int64_t m, float *y);

// Dot of one repacked row with kq/32 Q8_0 activation blocks (NBitsDotFn, dot.h), reached through
// the kernel table's nbits4_q8_0. The scalar version is the spec; the AVX2 twin
// (x86/nbits_avx2.cpp) serves the avx2 and avx512 tables.
float nbits_dot_ref(const NBitsShape &s, const uint8_t *row, const block_q8_0 *x);
float nbits_dot_avx2(const NBitsShape &s, const uint8_t *row, const block_q8_0 *x);

}  // namespace phirt

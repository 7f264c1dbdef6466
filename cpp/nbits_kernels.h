// The MatMulNBits kernel interface: the repacked matrix's shape and the kernel entries each ISA
// table holds (DotKernels::nbits). The layout and numerics are described in nbits.h.
#pragma once

#include <cstdint>

#include "gemm.h"

namespace phirt {

constexpr int kNBitsStep = 256;    // columns per step of a repacked row
constexpr int kNBitsGroup = 32;    // columns per 4-bit code group (16 bytes)
constexpr int kNBitsRowGroup = 4;  // rows whose steps are interleaved (one stream per 4 rows)

// Everything about one repacked matrix that follows from the node's attributes.
struct NBitsShape {
    int64_t n = 0;           // rows (output features, N)
    int64_t k = 0;           // columns (input features, K)
    int block_size = 0;      // ONNX block size
    int bits = 4;            // 4 or 8
    int accuracy_level = 0;  // 0..4; 4: int8 activations
    bool has_zero_points = false;
    int64_t onnx_blocks = 0;  // ceil(k / block_size), per row
    int64_t n_steps = 0;      // steps per row
    int64_t kq = 0;           // padded row length, 256 · n_steps
    int64_t nb = 0;           // blocks per repacked row, kq / block_size
    int spb = 0;              // blocks per step
    int zpb = 0;              // zero-point bytes per step (0 without zero points)
    int64_t code_bytes = 0;   // code bytes per step: 128 (4 bits) or 256 (8 bits)
    int64_t step_bytes = 0;   // 4·spb + zpb + code_bytes
    int64_t row_bytes = 0;    // n_steps · step_bytes
    int64_t n_groups = 0;     // row groups: ceil(n / 4), the last one padded with zero rows

    int default_zero_point() const { return bits == 4 ? 8 : 128; }
    bool int8_activations() const { return accuracy_level == 4; }
    int64_t off_zp() const { return 4 * (int64_t)spb; }  // offsets inside a step
    int64_t off_qs() const { return 4 * (int64_t)spb + zpb; }
    int64_t group_bytes() const { return kNBitsRowGroup * row_bytes; }
    // Step t of row j (< 4) of a row group: steps go t-major, rows within a step
    const uint8_t *step(const uint8_t *group, int j, int64_t t) const {
        return group + (t * kNBitsRowGroup + j) * step_bytes;
    }
    const uint8_t *step_of_row(const uint8_t *data, int64_t row, int64_t t) const {
        return step(data + row / kNBitsRowGroup * group_bytes(), (int)(row % kNBitsRowGroup), t);
    }
};

// Activations at accuracy level 4, one row: q[kq] int8 codes, and per block (nb) the scale
// d = amax / 127 and s = d · Σ q (the block's scaled code sum, for zero-point terms).
struct NBitsActRow {
    const int8_t *q;
    const float *d;
    const float *s;
};

// x: one activation row zero-padded to kq -> q, d, s as above (exactly, on every ISA).
using NBitsQuantizeFn = void (*)(const NBitsShape &s, const float *x, int8_t *q, float *d,
                                 float *sum);
// y[j] = row j (< nr <= 4) of the row group at `w` · the activation row, with int8 activations
// (level 4) or float ones (x zero-padded to kq, levels 0..3).
constexpr int kNBitsMaxRows = kNBitsRowGroup;
using NBitsRowsI8Fn = void (*)(const NBitsShape &s, const uint8_t *w, int nr, const NBitsActRow &x,
                               float *y);
using NBitsRowsF32Fn = void (*)(const NBitsShape &s, const uint8_t *w, int nr, const float *x,
                                float *y);

// Rows [r0, r0 + n_rows) of a repacked matrix (data) as a packed-GEMM panel (gemm.h): codes as
// unsigned bytes, per 32-column group its block's scale and, for zero-point matrices (offset
// form), -scale·zp; rows past n_rows zero. p->k = kq and p->form are set by the caller; `rows` is
// kPanelRows · kq bytes of scratch.
using NBitsPackFn = void (*)(const NBitsShape &s, const uint8_t *data, int64_t r0, int n_rows,
                             GemmPanel *p, uint8_t *rows);

struct NBitsKernels {
    NBitsQuantizeFn quantize;
    NBitsRowsI8Fn rows_i8;
    NBitsRowsF32Fn rows_f32;
    NBitsPackFn pack_panel;
};

// The scalar spec (nbits_ref.cpp) and its twins, each in its ISA's kernel table only: AVX2
// (x86/nbits_avx2.cpp) and AVX-512 VNNI (x86/nbits_avx512.cpp, the AVX2 ones but for its int8
// row dots). The twins' integer block sums equal the spec's; only float summation differs.
NBitsKernels nbits_kernels_scalar();
NBitsKernels nbits_kernels_avx2();
NBitsKernels nbits_kernels_avx512();

}  // namespace phirt

// Quantized matrix multiplication Y = X · Wᵀ with W (n × k) in a GGML block format and X (m × k)
// float32. Activations are converted on the fly to the weight type's activation format (Q8_0,
// Q8_1, Q8_K, F16, BF16 or F32) and each output is an integer-exact block dot product
// accumulated in float32, as ggml does.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "dot.h"
#include "threadpool.h"

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
// batch_invariant: every output row is bit for bit what an m = 1 call (the GEMV) gives for that
// row, whatever the other rows are: the one-row dots run for any m, never the packed GEMM, whose
// float summation order differs. The server's batched decode needs this (docs/design.md).
void matmul(const WeightView &w, const float *x, int64_t m, float *y, bool batch_invariant = false);

// y (m × n) = x (m × k) · wᵀ for interleaved Q4_0 (q4x16.h): activations quantized to Q8_0 as the
// GEMV does; every output row is the same whatever m and the other rows are (batch-invariant by
// construction). Runs on the global pool; allocation-free once warmed up.
void matmul_q4x16(const Q4x16Matrix &w, const float *x, int64_t m, float *y);

// out (t × k) = dequantized rows ids[0..t) of w; ids must be in [0, n) (checked by the caller).
void get_rows(const WeightView &w, const int32_t *ids, int64_t t, float *out);

// The schedule matmul and nbits_matmul share for one-row dot products y[c·n + r] (weight rows
// r < n, activation rows c < m): block(r0, r1, c0, c1) is called on the global pool for blocks
// that cover every (r, c) once. Decode (m = 1) is bandwidth-bound: contiguous_chunks of rows
// (matrix_bytes in all). Prefill takes tiles of 32 weight
// rows × 32 activation rows: a tile's activations stay in L2 while each weight row (L1) meets them.
// Bandwidth-bound work over n items (weight rows, interleaved panels) of `bytes` in all:
// chunk(i0, i1) on the global pool over contiguous ranges, a few per thread so a slow thread does
// not hold up the rest, all on the caller when too small to be worth waking the workers.
template <class Chunk>
void contiguous_chunks(int64_t n, int64_t bytes, Chunk chunk) {
    constexpr int64_t kMinParallelBytes = 64 * 1024;
    ThreadPool &pool = global_pool();
    const int64_t n_chunks =
        bytes < kMinParallelBytes ? 1 : std::min<int64_t>(n, (int64_t)pool.size() * 4);
    const int64_t size = (n + n_chunks - 1) / n_chunks;
    pool.run(n_chunks, [&](int64_t i, int) { chunk(i * size, std::min(n, (i + 1) * size)); });
}

template <class Block>
void one_row_dot_blocks(int64_t n, int64_t m, int64_t matrix_bytes, Block block) {
    constexpr int64_t kTileRows = 32, kTileCols = 32;
    if (m == 1) {
        contiguous_chunks(n, matrix_bytes,
                          [&](int64_t r0, int64_t r1) { block(r0, r1, int64_t(0), int64_t(1)); });
        return;
    }
    ThreadPool &pool = global_pool();
    const int64_t row_tiles = (n + kTileRows - 1) / kTileRows;
    const int64_t col_tiles = (m + kTileCols - 1) / kTileCols;
    pool.run(row_tiles * col_tiles, [&](int64_t t, int) {
        const int64_t r0 = t % row_tiles * kTileRows, c0 = t / row_tiles * kTileCols;
        block(r0, std::min(n, r0 + kTileRows), c0, std::min(m, c0 + kTileCols));
    });
}

}  // namespace phirt

// Q4_0 weights interleaved 16 rows at a time, for decode with several sequences at once.
//
// Why. The GEMV reads a Q4_0 row block by block and unpacks its nibbles once per activation row;
// with M sequences in a decode step the unpacking and the per-row reductions cost M times over,
// so batching streams bought little (the weights stay in cache, the arithmetic does not). The
// packed GEMM (gemm.h) unpacks a panel of 16 rows once per call, which pays from about 4 rows on
// and costs more than it saves below. Here the panel layout is built once, at load, and keeps the
// 4-bit codes: one 64-byte load holds 4 columns of all 16 rows in its low nibbles and 4 more in
// its high nibbles, so a 4-byte activation broadcast sums into 16 per-row int32 lanes (VPDPBUSD)
// with no horizontal reduction, for any number of activation rows, at the bandwidth of the file.
//
// Layout (n rows padded to a multiple of 16 with zero rows; nb = k / 32 blocks). Panel p holds
// rows 16p..16p+15:
//   codes  nb × 256 bytes: block b, chunk c (0..3), byte 4r + j = qs[4c + j] of row r's block b,
//          i.e. element 4c + j in the low nibble and element 16 + 4c + j in the high nibble
//          (GGML's own pairing inside a Q4_0 block, so the repack moves 4-byte words)
//   scales nb × 16 f16: block b, row r: the block's d, bit for bit
// then the next panel (panel_bytes = nb · 288 apart).
//
// Numerics: per output, with the activations in Q8_0 blocks (d_x, q) as the GEMV quantizes them,
// isum_b = Σ_j (u_j - 8) · q_j (exact, as Σ u·q - 8 Σ q) and acc = fma((float)isum_b, d_w · d_x,
// acc) over b in order: the packed GEMM's arithmetic for Q4_0, bit for bit. Each output's
// operations do not depend on how many activation rows share the call, so a decode step's rows
// are batch-invariant by construction.
#pragma once

#include <cstdint>

#include "gemm.h"
#include "weight_buffer.h"

namespace phirt {

constexpr int64_t kQ4x16BlockCodes = 256;  // bytes of codes per block of a panel
constexpr int64_t kQ4x16BlockBytes = kQ4x16BlockCodes + kPanelRows * 2;

class Q4x16Matrix {
   public:
    // Repacks n rows of Q4_0 (row_bytes apart, k a positive multiple of 32; checked by the
    // caller) on the pool.
    Q4x16Matrix(const uint8_t *q4_0, int64_t row_bytes, int64_t n, int64_t k);
    int64_t n() const { return n_; }
    int64_t k() const { return k_; }
    int64_t n_blocks() const { return k_ / 32; }
    int64_t n_panels() const { return (n_ + kPanelRows - 1) / kPanelRows; }
    int64_t panel_bytes() const { return n_blocks() * kQ4x16BlockBytes; }
    int64_t nbytes() const { return n_panels() * panel_bytes(); }
    const uint8_t *panel(int64_t p) const { return data_.data() + p * panel_bytes(); }

   private:
    int64_t n_, k_;
    WeightBuffer data_;
};

// y[i · ldy + r] = Σ_c w[r][c] · x[i][c] for i < m, r < n_rows of one panel (codes, then scales
// nb · 256 bytes on); a: the activations in the packed GEMM's form for Q4_0 (group 32, zero 8).
using Q4x16GemmFn = void (*)(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m,
                             float *y, int64_t ldy, int n_rows);

// The scalar spec (q4x16_ref.cpp), in no kernel table: matmul uses it where the active table has
// no twin.
void q4x16_gemm_ref(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                    int64_t ldy, int n_rows);
// The AVX-512 VNNI twin (x86/q4x16_avx512.cpp), reached only through the avx512 kernel table.
void q4x16_gemm_avx512(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                       int64_t ldy, int n_rows);
// The AMX twin (x86/q4x16_amx.cpp) for many activation rows, the avx512 table's q4_0x16_many
// where amx_ready(): the CPU has AMX-INT8 and the OS granted this process the tile state.
void q4x16_gemm_amx(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                    int64_t ldy, int n_rows);
bool amx_ready();
// Activation rows from which a call takes q4_0x16_many where the table has one.
constexpr int64_t kMinManyRows = 16;

}  // namespace phirt

// Packed GEMM for prefill: Y = X · Wᵀ for many activation rows at once.
//
// The one-row dot interface unpacks every weight block once per activation row. Here a panel of
// kPanelRows weight rows is unpacked once into unsigned bytes, interleaved so that one 64-byte
// load holds 4 columns of all 16 rows; a 4-byte activation broadcast then sums into 16 per-row
// int32 lanes (VPDPBUSD) with no horizontal reduction, and the panel serves every activation row.
//
// Panel values: w[r][c] = scale[g][r] · (u[r][c] - zero) [+ offset[g][r]] with g = c / group, the
// block formats' own decomposition: Q4_0 u = q, zero 8; Q8_0 u = q + 128, zero 128; Q6_K group
// 16, zero 32; Q4_1/Q5_1/Q4_K/Q5_K zero 0 and a float offset (m, or -dmin·m). The zero is taken
// off in integers (the sums start at -zero · Σ x_q), so symmetric types have no cancellation.
// Activations keep the GEMV's 8-bit quantization (same blocks, same rounding), so a row's result
// differs from the GEMV's only in float summation order. For K-quants the activation scale d is
// one per 256 columns (Q8_K), so the kernels sum scale · isum over a super-block and multiply by
// d once (GemmForm::super), instead of once per group.
#pragma once

#include <cstdint>

namespace phirt {

constexpr int kPanelRows = 16;

// How a weight type maps to panels: column group, integer zero point, float offset or not.
struct GemmForm {
    int group;  // 0: the type has no packed form
    int zero;
    bool offset;
    int super = 1;  // groups per activation scale: GemmActs::d is constant over each run of super
};
GemmForm gemm_form(int type);

struct GemmPanel {
    uint8_t *u;     // [k / 4][kPanelRows][4]
    float *scale;   // [k / group][kPanelRows]
    float *offset;  // [k / group][kPanelRows], written only when form.offset
    int64_t k;
    GemmForm form;
};

// Quantized activations: q[i * ldq + c] int8; per group g (at i * ldg + g): the block scale d
// (the same for the form's `super` groups in a row), zs = -zero · Σ q (the integer sums' start)
// and, for offset forms, s = d · Σ q.
struct GemmActs {
    const int8_t *q;
    const float *d;
    const int32_t *zs;
    const float *s;
    int64_t ldq;
    int64_t ldg;
};

// Unpack rows [0, n_rows) of a `type` matrix (rows row_bytes apart) into panel p; rows past
// n_rows are zero. p->k and p->form are set by the caller; p->u holds kPanelRows · k bytes,
// scale/offset k / group · kPanelRows floats each; `rows` is kPanelRows · k bytes of scratch (the
// caller's: SIMD units allocate nothing).
using PackPanelFn = void (*)(int type, const uint8_t *w, int64_t row_bytes, int n_rows,
                             GemmPanel *p, uint8_t *rows);
// y[i · ldy + r] = Σ_c w[r][c] · x[i][c] for i < m, r < n_rows.
using GemmPanelFn = void (*)(const GemmPanel &p, const GemmActs &a, int64_t m, float *y,
                             int64_t ldy, int n_rows);

// The scalar reference (gemm_ref.cpp): the spec for the twins (cpp/tests), in no kernel table.
void pack_panel_ref(int type, const uint8_t *w, int64_t row_bytes, int n_rows, GemmPanel *p,
                    uint8_t *rows);
void gemm_panel_ref(const GemmPanel &p, const GemmActs &a, int64_t m, float *y, int64_t ldy,
                    int n_rows);

// The AVX-512 VNNI twin (x86/gemm_avx512.cpp), reached only through the avx512 kernel table.
void pack_panel_avx512(int type, const uint8_t *w, int64_t row_bytes, int n_rows, GemmPanel *p,
                       uint8_t *rows);
void gemm_panel_avx512(const GemmPanel &p, const GemmActs &a, int64_t m, float *y, int64_t ldy,
                       int n_rows);

}  // namespace phirt

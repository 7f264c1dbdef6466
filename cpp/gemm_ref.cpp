// Scalar reference of the packed GEMM (gemm.h): the spec the SIMD twins are held to.
#include "dot.h"
#include "gemm_pack.h"

namespace phirt {

GemmForm gemm_form(int type) {
    switch ((GgmlType)type) {
        case GgmlType::Q4_0:
            return {32, 8, false};
        case GgmlType::Q5_0:
            return {32, 16, false};
        case GgmlType::Q8_0:
            return {32, 128, false};
        case GgmlType::Q6_K:
            return {16, 32, false, QK_K / 16};
        case GgmlType::Q4_1:
        case GgmlType::Q5_1:
            return {32, 0, true};
        case GgmlType::Q4_K:
        case GgmlType::Q5_K:
            return {32, 0, true, QK_K / 32};
        default:
            return {0, 0, false};
    }
}

namespace {

void interleave_ref(const uint8_t *rows, int64_t k, uint8_t *u) {
    for (int64_t c4 = 0; c4 < k / 4; ++c4)
        for (int r = 0; r < kPanelRows; ++r)
            std::memcpy(u + (c4 * kPanelRows + r) * 4, rows + r * k + c4 * 4, 4);
}

}  // namespace

void pack_panel_ref(int type, const uint8_t *w, int64_t row_bytes, int n_rows, GemmPanel *p,
                    uint8_t *rows) {
    pack_panel_with(type, w, row_bytes, n_rows, p, rows, interleave_ref);
}

void gemm_panel_ref(const GemmPanel &p, const GemmActs &a, int64_t m, float *y, int64_t ldy,
                    int n_rows) {
    const int group = p.form.group, super = p.form.super;
    const int64_t n_groups = p.k / group;
    for (int64_t i = 0; i < m; ++i) {
        const int8_t *q = a.q + i * a.ldq;
        for (int r = 0; r < n_rows; ++r) {
            float acc = 0.0f;
            for (int64_t g0 = 0; g0 < n_groups; g0 += super) {
                // Σ isum · scale over the run, times its one activation scale (super > 1).
                float run = 0.0f;
                for (int64_t g = g0; g < g0 + super; ++g) {
                    const int64_t at = g * kPanelRows + r, ag = i * a.ldg + g;
                    int32_t isum = a.zs[ag];
                    for (int64_t c = g * group; c < (g + 1) * group; ++c)
                        isum += p.u[(c / 4 * kPanelRows + r) * 4 + c % 4] * q[c];
                    if (super == 1)
                        acc += (float)isum * (p.scale[at] * a.d[ag]);
                    else
                        run += (float)isum * p.scale[at];
                    if (p.form.offset) acc += p.offset[at] * a.s[ag];
                }
                if (super > 1) acc += run * a.d[i * a.ldg + g0];
            }
            y[i * ldy + r] = acc;
        }
    }
}

}  // namespace phirt

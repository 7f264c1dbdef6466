// Scalar MatMulNBits kernels: the spec the SIMD twins (x86/nbits_*.cpp) are held to. Compiled
// without FMA contraction, so its rounding is the same on every machine. Layout in nbits.h.
#include <cmath>
#include <cstring>

#include "nbits.h"

namespace phirt {

namespace {

float load_f32(const uint8_t *p) {
    float f;
    std::memcpy(&f, p, sizeof(f));
    return f;
}

// The 256 codes of one step as integers, in element order.
void step_codes(const NBitsShape &s, const uint8_t *step, int *out) {
    const uint8_t *qs = step + s.off_qs();
    if (s.bits == 8) {
        for (int c = 0; c < kNBitsStep; ++c) out[c] = qs[c];
        return;
    }
    for (int g = 0; g < kNBitsStep / kNBitsGroup; ++g, qs += 16, out += kNBitsGroup)
        for (int j = 0; j < 16; ++j) {
            out[j] = qs[j] & 0x0F;
            out[j + 16] = qs[j] >> 4;
        }
}

int zero_point(const NBitsShape &s, const uint8_t *step, int b) {
    return s.has_zero_points ? step[s.off_zp() + b] : s.default_zero_point();
}

// MLAS's QuantizeARow_CompInt8 per block: d = amax / 127 in float32, codes RNE(x · (127 / amax)).
void quantize_ref(const NBitsShape &s, const float *x, int8_t *q, float *d, float *sum) {
    const int bs = s.block_size;
    for (int64_t b = 0; b < s.nb; ++b, x += bs, q += bs) {
        float amax = 0.0f;
        for (int j = 0; j < bs; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float inv = amax != 0.0f ? 127.0f / amax : 0.0f;
        int isum = 0;
        for (int j = 0; j < bs; ++j) {
            q[j] = (int8_t)nearest_int(x[j] * inv);
            isum += q[j];
        }
        d[b] = amax / 127.0f;
        sum[b] = d[b] * (float)isum;
    }
}

// y = Σ_blocks (dw · dx) · Σ (q - zp) · x_q, blocks in order.
void rows_i8_ref(const NBitsShape &s, const uint8_t *w, int nr, const NBitsActRow &x, float *y) {
    int codes[kNBitsStep];
    const int bs = s.block_size;
    for (int r = 0; r < nr; ++r) {
        float acc = 0.0f;
        for (int64_t t = 0; t < s.n_steps; ++t) {
            const uint8_t *step = s.step(w, r, t);
            step_codes(s, step, codes);
            for (int b = 0; b < s.spb; ++b) {
                const int64_t blk = t * s.spb + b;
                const int8_t *xq = x.q + blk * bs;
                const int z = zero_point(s, step, b);
                int isum = 0;
                for (int j = 0; j < bs; ++j) isum += (codes[b * bs + j] - z) * xq[j];
                acc += (float)isum * (load_f32(step + 4 * b) * x.d[blk]);
            }
        }
        y[r] = acc;
    }
}

// y = Σ_blocks dw · Σ (q - zp) · x, each block's sum in element order.
void rows_f32_ref(const NBitsShape &s, const uint8_t *w, int nr, const float *x, float *y) {
    int codes[kNBitsStep];
    const int bs = s.block_size;
    for (int r = 0; r < nr; ++r) {
        float acc = 0.0f;
        for (int64_t t = 0; t < s.n_steps; ++t) {
            const uint8_t *step = s.step(w, r, t);
            step_codes(s, step, codes);
            for (int b = 0; b < s.spb; ++b) {
                const float *xb = x + (t * s.spb + b) * bs;
                const int z = zero_point(s, step, b);
                float bsum = 0.0f;
                for (int j = 0; j < bs; ++j) bsum += (float)(codes[b * bs + j] - z) * xb[j];
                acc += load_f32(step + 4 * b) * bsum;
            }
        }
        y[r] = acc;
    }
}

// The panel packer (NBitsPackFn): rows unpacked one by one into `rows`, then interleaved by 4
// columns.
void pack_panel_ref(const NBitsShape &s, const uint8_t *w, int64_t r0, int n_rows, GemmPanel *p,
                    uint8_t *rows) {
    const int64_t kq = s.kq, groups = kq / kNBitsGroup;
    for (int r = 0; r < kPanelRows; ++r) {
        uint8_t *u = rows + r * kq;
        if (r >= n_rows) {
            std::memset(u, 0, kq);
            for (int64_t g = 0; g < groups; ++g) {
                p->scale[g * kPanelRows + r] = 0.0f;
                if (p->form.offset) p->offset[g * kPanelRows + r] = 0.0f;
            }
            continue;
        }
        for (int64_t g = 0; g < groups; ++g) {
            const uint8_t *step = s.step_of_row(w, r0 + r, g / 8);
            const int64_t b = g * kNBitsGroup / s.block_size % s.spb;
            const float d = load_f32(step + 4 * b);
            p->scale[g * kPanelRows + r] = d;
            if (p->form.offset) p->offset[g * kPanelRows + r] = -(d * step[s.off_zp() + b]);
            const uint8_t *qs = step + s.off_qs();
            if (s.bits == 8) {
                std::memcpy(u + g * kNBitsGroup, qs + g % 8 * kNBitsGroup, kNBitsGroup);
                continue;
            }
            const uint8_t *packed = qs + g % 8 * 16;
            for (int j = 0; j < 16; ++j) {
                u[g * kNBitsGroup + j] = packed[j] & 0x0F;
                u[g * kNBitsGroup + j + 16] = packed[j] >> 4;
            }
        }
    }
    for (int64_t c4 = 0; c4 < kq / 4; ++c4)  // interleave by 4 columns
        for (int r = 0; r < kPanelRows; ++r)
            std::memcpy(p->u + (c4 * kPanelRows + r) * 4, rows + r * kq + c4 * 4, 4);
}

}  // namespace

NBitsKernels nbits_kernels_scalar() {
    return {quantize_ref, rows_i8_ref, rows_f32_ref, pack_panel_ref};
}

}  // namespace phirt

// K-quant reference quantizers; see quants_k.h. Compiled with -ffp-contract=off.
//
// A K-quant super-block holds 256 weights in sub-blocks (8 x 32 for Q4_K/Q5_K, 16 x 16 for Q6_K).
// Each sub-block gets its own scale (and min), found by a small grid search that minimises a
// weighted squared error; the sub-block scales are then themselves quantized to 6 or 8 bits against
// one f16 super-scale, and the weights are re-rounded against those final, quantized scales.
//
// Bit-identity with ggml depends on doing every float operation in the same order: sums are
// accumulated left to right and products are grouped as written in the comments (w*l*l is
// (w*l)*l). Do not "simplify" these expressions.
#include "quants_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quants.h"

namespace phirt {

namespace {

// Below this magnitude a group is treated as all zero (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

int clamp_int(int v, int lo, int hi) {
    return std::max(lo, std::min(hi, v));
}

// The grid searches below do exactly ggml's float operations, one strictly sequential sum per
// group and candidate. They are laid out so independent sums run side by side (vector lanes, or at
// least instruction-level parallelism) without reordering any single sum: the asymmetric fit runs
// the 8 sub-blocks of a super-block in lockstep (a candidate's result feeds the next candidate of
// the same sub-block, so candidates cannot run side by side there); the symmetric fit, whose
// candidates are independent, evaluates them all and picks the winner in ggml's order.
constexpr int kSub = QK_K / 32;  // sub-blocks per Q4_K/Q5_K super-block: the lanes

// Asymmetric fit of each 32-value sub-block j of x[256] to x ~ scale[j] * L - m[j], L in
// [0, nmax], m[j] >= 0, weighted by w (both transposed: xt[i][j] is value i of sub-block j).
// Starts from the min/max mapping, then walks iscale = (rmin + rdelta*is + nmax) / (max - min)
// for is = 0..nstep, solving the 2x2 weighted least-squares problem for (scale, min) and keeping
// it when its weighted squared error is the smallest so far. The min the walk has reached feeds
// the next candidate (as in ggml's make_qkx2_quants).
// Outputs scale[j], neg_min[j] = m[j] (the min negated, >= 0), and the quants in Lt[i][j].
void fit_scale_and_min_x8(int nmax, const float xt[32][kSub], const float wt[32][kSub],
                          uint8_t Lt[32][kSub], float scale[kSub], float neg_min[kSub], float rmin,
                          float rdelta, int nstep) {
    float min[kSub], max[kSub], sum_w[kSub], sum_x[kSub];
    for (int j = 0; j < kSub; ++j) {
        min[j] = xt[0][j];
        max[j] = xt[0][j];
        sum_w[j] = wt[0][j];
        sum_x[j] = sum_w[j] * xt[0][j];
    }
    for (int i = 1; i < 32; ++i) {
        for (int j = 0; j < kSub; ++j) {
            if (xt[i][j] < min[j]) min[j] = xt[i][j];
            if (xt[i][j] > max[j]) max[j] = xt[i][j];
            sum_w[j] += wt[i][j];
            sum_x[j] += wt[i][j] * xt[i][j];
        }
    }
    // The offset only ever moves values up, so 0 must stay representable. A constant sub-block
    // (max == min) is finished here; its lane still runs below, on garbage, and is ignored.
    bool flat[kSub];
    for (int j = 0; j < kSub; ++j) {
        if (min[j] > 0) min[j] = 0;
        flat[j] = max[j] == min[j];
    }

    float best_error[kSub] = {};
    {
        float iscale[kSub];
        for (int j = 0; j < kSub; ++j) {
            iscale[j] = nmax / (max[j] - min[j]);
            scale[j] = 1 / iscale[j];
        }
        for (int i = 0; i < 32; ++i) {
            for (int j = 0; j < kSub; ++j) {
                const int l = clamp_int(nearest_int(iscale[j] * (xt[i][j] - min[j])), 0, nmax);
                Lt[i][j] = (uint8_t)l;
                const float diff = scale[j] * Lt[i][j] + min[j] - xt[i][j];
                best_error[j] += wt[i][j] * (diff * diff);
            }
        }
    }

    for (int is = 0; is <= nstep; ++is) {
        float iscale[kSub];
        for (int j = 0; j < kSub; ++j) iscale[j] = (rmin + rdelta * is + nmax) / (max[j] - min[j]);
        uint8_t trial[32][kSub];
        float sum_l[kSub] = {}, sum_l2[kSub] = {}, sum_xl[kSub] = {};
        for (int i = 0; i < 32; ++i) {
            for (int j = 0; j < kSub; ++j) {
                const int l = clamp_int(nearest_int(iscale[j] * (xt[i][j] - min[j])), 0, nmax);
                trial[i][j] = (uint8_t)l;
                const float wl = wt[i][j] * l;
                sum_l[j] += wl;
                sum_l2[j] += wl * l;         // (w*l)*l
                sum_xl[j] += wl * xt[i][j];  // (w*l)*x
            }
        }
        float this_scale[kSub], this_min[kSub];
        bool solvable[kSub];
        for (int j = 0; j < kSub; ++j) {
            const float det = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j];
            solvable[j] = det > 0;
            this_scale[j] = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / det;
            this_min[j] = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / det;
            if (this_min[j] > 0) {  // not representable: refit the scale alone with min = 0
                this_min[j] = 0;
                this_scale[j] = sum_xl[j] / sum_l2[j];
            }
        }
        float error[kSub] = {};
        for (int i = 0; i < 32; ++i) {
            for (int j = 0; j < kSub; ++j) {
                const float diff = this_scale[j] * trial[i][j] + this_min[j] - xt[i][j];
                error[j] += wt[i][j] * (diff * diff);
            }
        }
        bool take[kSub];
        bool any = false;
        for (int j = 0; j < kSub; ++j) {
            take[j] = solvable[j] && error[j] < best_error[j];
            if (take[j]) {
                best_error[j] = error[j];
                scale[j] = this_scale[j];
                min[j] = this_min[j];
                any = true;
            }
        }
        if (!any) continue;
        for (int i = 0; i < 32; ++i) {
            for (int j = 0; j < kSub; ++j) Lt[i][j] = take[j] ? trial[i][j] : Lt[i][j];
        }
    }

    for (int j = 0; j < kSub; ++j) {
        if (flat[j]) {
            scale[j] = 0.f;
            for (int i = 0; i < 32; ++i) Lt[i][j] = 0;
        }
        neg_min[j] = -min[j];
    }
}

// Symmetric fit of n (<= 16) values to x ~ scale * (L - nmax), L in [0, 2*nmax), weighted by x^2.
// The scale is anchored on the value of largest magnitude (keeping its sign, so that value maps
// to -nmax exactly) and refined over iscale = -(nmax + 0.1*is) / max, is = -9..9.
float fit_scale_symmetric(int n, int nmax, const float *x, int8_t *L) {
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        std::memset(L, 0, n);
        return 0.f;
    }

    // Candidate 0 is the anchor -nmax/max; candidates 1..18 are is = -9..-1, 1..9.
    constexpr int nc = 19;
    float iscale[nc];
    iscale[0] = -nmax / max;
    for (int c = 1, is = -9; is <= 9; ++is) {
        if (is != 0) iscale[c++] = -(nmax + 0.1f * is) / max;
    }
    float sumlx[nc] = {}, suml2[nc] = {};
    for (int i = 0; i < n; ++i) {
        const float w = x[i] * x[i];
        const float wx = w * x[i];
        for (int c = 0; c < nc; ++c) {
            const int l = clamp_int(nearest_int(iscale[c] * x[i]), -nmax, nmax - 1);
            sumlx[c] += wx * l;     // (w*x)*l
            suml2[c] += w * l * l;  // (w*l)*l
        }
    }

    // sumlx^2 / suml2 is the error reduction of the least-squares scale: keep the largest,
    // first come first kept, as ggml walks the candidates.
    int best_c = 0;
    float scale = suml2[0] ? sumlx[0] / suml2[0] : 0.0f;
    float best = scale * sumlx[0];
    for (int c = 1; c < nc; ++c) {
        if (suml2[c] > 0 && sumlx[c] * sumlx[c] > best * suml2[c]) {
            best_c = c;
            scale = sumlx[c] / suml2[c];
            best = scale * sumlx[c];
        }
    }
    for (int i = 0; i < n; ++i) {
        L[i] = (int8_t)(clamp_int(nearest_int(iscale[best_c] * x[i]), -nmax, nmax - 1) + nmax);
    }
    return scale;
}

// Shared by Q4_K and Q5_K: fit the 8 sub-blocks of one super-block, quantize their scales and mins
// to 6 bits (packed into `scales` as get_scale_min_k4 reads them), and re-round the weights into
// L[256] against the quantized values. nmax is 15 (Q4_K) or 31 (Q5_K).
void quantize_superblock_scale_min(const float *x, int nmax, float rmin, int nstep,
                                   uint8_t scales[K_SCALE_SIZE], ggml_half *d_out,
                                   ggml_half *dmin_out, uint8_t L[QK_K]) {
    // Transpose so that sub-blocks are the inner (lane) index.
    float xt[32][kSub], wt[32][kSub];
    uint8_t Lt[32][kSub];
    for (int j = 0; j < kSub; ++j) {
        for (int i = 0; i < 32; ++i) xt[i][j] = x[32 * j + i];
    }
    // Weight each value by its sub-block's RMS plus its own magnitude: large values matter more.
    float sum_x2[kSub] = {};
    for (int i = 0; i < 32; ++i) {
        for (int j = 0; j < kSub; ++j) sum_x2[j] += xt[i][j] * xt[i][j];
    }
    for (int j = 0; j < kSub; ++j) {
        const float av_x = std::sqrt(sum_x2[j] / 32);
        for (int i = 0; i < 32; ++i) wt[i][j] = av_x + std::fabs(xt[i][j]);
    }
    float sub_scale[kSub], sub_min[kSub];
    fit_scale_and_min_x8(nmax, xt, wt, Lt, sub_scale, sub_min, rmin, 0.1f, nstep);
    for (int j = 0; j < kSub; ++j) {
        for (int i = 0; i < 32; ++i) L[32 * j + i] = Lt[i][j];
    }
    float max_scale = 0;  // scales are positive once the min is taken out
    float max_min = 0;
    for (int j = 0; j < kSub; ++j) {
        if (sub_scale[j] > max_scale) max_scale = sub_scale[j];
        if (sub_min[j] > max_min) max_min = sub_min[j];
    }

    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    std::memset(scales, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; ++j) {
        const uint8_t ls = std::min<uint8_t>(63, (uint8_t)nearest_int(inv_scale * sub_scale[j]));
        const uint8_t lm = std::min<uint8_t>(63, (uint8_t)nearest_int(inv_min * sub_min[j]));
        // Sub-blocks 0-3 keep 6 bits in bytes 0-7; sub-blocks 4-7 keep their low 4 bits in bytes
        // 8-11 and their top 2 bits in the spare high bits of bytes 0-7.
        if (j < 4) {
            scales[j] |= ls;
            scales[j + 4] |= lm;
        } else {
            scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            scales[j - 4] |= (ls >> 4) << 6;
            scales[j] |= (lm >> 4) << 6;
        }
    }
    *d_out = fp32_to_fp16(max_scale / 63.f);
    *dmin_out = fp32_to_fp16(max_min / 63.f);

    // Re-round against the scales the file will actually hold. A sub-block whose quantized scale
    // is zero keeps the quants of its fit (they decode to -min whatever they are).
    const float d_all = fp16_to_fp32(*d_out);
    const float dmin_all = fp16_to_fp32(*dmin_out);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales, &sc, &m);
        const float d = d_all * sc;
        if (!d) continue;
        const float dm = dmin_all * m;
        for (int ii = 0; ii < 32; ++ii) {
            L[32 * j + ii] = (uint8_t)clamp_int(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
        }
    }
}

}  // namespace

void quantize_row_q4_K_ref(const float *x, block_q4_K *y, int64_t k) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        quantize_superblock_scale_min(x, 15, -1.f, 20, y[i].scales, &y[i].d, &y[i].dmin, L);
        // Each 32-byte run of qs holds two sub-blocks: the first in low nibbles, the next in high.
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32) {
            for (int l = 0; l < 32; ++l) q[l] = L[j + l] | (L[j + l + 32] << 4);
        }
    }
}

void quantize_row_q5_K_ref(const float *x, block_q5_K *y, int64_t k) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        quantize_superblock_scale_min(x, 31, -0.5f, 15, y[i].scales, &y[i].d, &y[i].dmin, L);
        // Low 4 bits as Q4_K; bit 4 of sub-block 2p goes to bit 2p of qh, of 2p+1 to bit 2p+1.
        uint8_t *ql = y[i].qs;
        uint8_t *qh = y[i].qh;
        std::memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < QK_K; n += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
            for (int j = 0; j < 32; ++j) {
                const int l1 = L[n + j];
                const int l2 = L[n + j + 32];
                if (l1 > 15) qh[j] |= m1;
                if (l2 > 15) qh[j] |= m2;
                ql[j] = (uint8_t)((l1 & 0xF) | ((l2 & 0xF) << 4));
            }
        }
    }
}

void quantize_row_q6_K_ref(const float *x, block_q6_K *y, int64_t k) {
    int8_t L[QK_K];
    float sub_scale[QK_K / 16];
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        float max_scale = 0;  // signed: the sub-block scale of largest magnitude
        float max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            sub_scale[ib] = fit_scale_symmetric(16, 32, x + 16 * ib, L + 16 * ib);
            const float abs_scale = std::fabs(sub_scale[ib]);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = sub_scale[ib];
            }
        }
        if (max_abs_scale < kGroupMaxEps) {
            std::memset(&y[i], 0, sizeof(block_q6_K));
            continue;
        }

        // 8-bit sub-block scales against one f16 super-scale; the largest maps to -128.
        const float iscale = -128.f / max_scale;
        y[i].d = fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            y[i].scales[ib] = (int8_t)std::min(127, nearest_int(iscale * sub_scale[ib]));
        }

        const float d_all = fp16_to_fp32(y[i].d);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = d_all * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                const int l = clamp_int(nearest_int(x[16 * j + ii] / d), -32, 31);
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }

        // ql: low 4 bits, elements l and l+64 share a byte (l+32 and l+96 in the next 32 bytes);
        // qh: the top 2 bits of elements l, l+32, l+64, l+96 in one byte.
        uint8_t *ql = y[i].ql;
        uint8_t *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t *q = reinterpret_cast<const uint8_t *>(L) + j + l;
                ql[l] = (uint8_t)((q[0] & 0xF) | ((q[64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((q[32] & 0xF) | ((q[96] & 0xF) << 4));
                qh[l] = (uint8_t)((q[0] >> 4) | ((q[32] >> 4) << 2) | ((q[64] >> 4) << 4) |
                                  ((q[96] >> 4) << 6));
            }
        }
    }
}

}  // namespace phirt

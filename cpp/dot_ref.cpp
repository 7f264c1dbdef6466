// Scalar reference dot products and activation converters: the spec for every SIMD twin.
#include <cmath>
#include <cstring>

#include "dot.h"
#include "dot_loops.h"
#include "nbits_kernels.h"
#include "quants.h"

namespace phirt {

namespace {

float dot_q4_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q4_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK8_0; ++ib) {
        int sumi = 0;
        for (int j = 0; j < QK8_0 / 2; ++j) {
            sumi += ((w[ib].qs[j] & 0x0F) - 8) * x[ib].qs[j];
            sumi += ((w[ib].qs[j] >> 4) - 8) * x[ib].qs[j + QK8_0 / 2];
        }
        sum += sumi * (fp16_to_fp32(w[ib].d) * fp16_to_fp32(x[ib].d));
    }
    return sum;
}

float dot_q4_1_q8_1(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q4_1 *>(vw);
    const auto *x = static_cast<const block_q8_1 *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK8_1; ++ib) {
        int sumi = 0;
        for (int j = 0; j < QK8_1 / 2; ++j) {
            sumi += (w[ib].qs[j] & 0x0F) * x[ib].qs[j];
            sumi += (w[ib].qs[j] >> 4) * x[ib].qs[j + QK8_1 / 2];
        }
        sum += sumi * (fp16_to_fp32(w[ib].d) * fp16_to_fp32(x[ib].d)) +
               fp16_to_fp32(w[ib].m) * fp16_to_fp32(x[ib].s);
    }
    return sum;
}

// The fifth bits of a Q5 block as 32 values of 0 or 16.
void q5_high_bits(const uint8_t qh_bytes[4], int hi[32]) {
    uint32_t qh;
    std::memcpy(&qh, qh_bytes, sizeof(qh));
    for (int j = 0; j < 32; ++j) hi[j] = ((qh >> j) & 1) << 4;
}

float dot_q5_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q5_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK8_0; ++ib) {
        int hi[32];
        q5_high_bits(w[ib].qh, hi);
        int sumi = 0;
        for (int j = 0; j < QK8_0 / 2; ++j) {
            sumi += (((w[ib].qs[j] & 0x0F) | hi[j]) - 16) * x[ib].qs[j];
            sumi += (((w[ib].qs[j] >> 4) | hi[j + 16]) - 16) * x[ib].qs[j + 16];
        }
        sum += sumi * (fp16_to_fp32(w[ib].d) * fp16_to_fp32(x[ib].d));
    }
    return sum;
}

float dot_q5_1_q8_1(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q5_1 *>(vw);
    const auto *x = static_cast<const block_q8_1 *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK8_1; ++ib) {
        int hi[32];
        q5_high_bits(w[ib].qh, hi);
        int sumi = 0;
        for (int j = 0; j < QK8_1 / 2; ++j) {
            sumi += ((w[ib].qs[j] & 0x0F) | hi[j]) * x[ib].qs[j];
            sumi += ((w[ib].qs[j] >> 4) | hi[j + 16]) * x[ib].qs[j + 16];
        }
        sum += sumi * (fp16_to_fp32(w[ib].d) * fp16_to_fp32(x[ib].d)) +
               fp16_to_fp32(w[ib].m) * fp16_to_fp32(x[ib].s);
    }
    return sum;
}

float dot_q8_0_q8_0(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q8_0 *>(vw);
    const auto *x = static_cast<const block_q8_0 *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK8_0; ++ib) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; ++j) sumi += w[ib].qs[j] * x[ib].qs[j];
        sum += sumi * (fp16_to_fp32(w[ib].d) * fp16_to_fp32(x[ib].d));
    }
    return sum;
}

// Q4_K/Q5_K share the scale layout: per block, d·Σ sc_j·(q·x)_j − dmin·Σ m_j·(Σx)_j, where
// (Σx)_j comes from the activation's bsums.
float dot_q4_K_q8_K(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q4_K *>(vw);
    const auto *x = static_cast<const block_q8_K *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const uint8_t *q = w[ib].qs;
        const int8_t *a = x[ib].qs;
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K / 64; ++j) {
            uint8_t sc0, m0, sc1, m1;
            get_scale_min_k4(2 * j, w[ib].scales, &sc0, &m0);
            get_scale_min_k4(2 * j + 1, w[ib].scales, &sc1, &m1);
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; ++l) {
                s0 += (q[l] & 0xF) * a[l];
                s1 += (q[l] >> 4) * a[l + 32];
            }
            sumi += sc0 * s0 + sc1 * s1;
            summ += m0 * (x[ib].bsums[4 * j] + x[ib].bsums[4 * j + 1]) +
                    m1 * (x[ib].bsums[4 * j + 2] + x[ib].bsums[4 * j + 3]);
            q += 32;
            a += 64;
        }
        sum += x[ib].d * (fp16_to_fp32(w[ib].d) * sumi - fp16_to_fp32(w[ib].dmin) * summ);
    }
    return sum;
}

float dot_q5_K_q8_K(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q5_K *>(vw);
    const auto *x = static_cast<const block_q8_K *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        const uint8_t *q = w[ib].qs;
        const uint8_t *qh = w[ib].qh;
        const int8_t *a = x[ib].qs;
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K / 64; ++j) {
            uint8_t sc0, m0, sc1, m1;
            get_scale_min_k4(2 * j, w[ib].scales, &sc0, &m0);
            get_scale_min_k4(2 * j + 1, w[ib].scales, &sc1, &m1);
            const uint8_t u0 = (uint8_t)(1u << (2 * j)), u1 = (uint8_t)(2u << (2 * j));
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; ++l) {
                s0 += ((q[l] & 0xF) + (qh[l] & u0 ? 16 : 0)) * a[l];
                s1 += ((q[l] >> 4) + (qh[l] & u1 ? 16 : 0)) * a[l + 32];
            }
            sumi += sc0 * s0 + sc1 * s1;
            summ += m0 * (x[ib].bsums[4 * j] + x[ib].bsums[4 * j + 1]) +
                    m1 * (x[ib].bsums[4 * j + 2] + x[ib].bsums[4 * j + 3]);
            q += 32;
            a += 64;
        }
        sum += x[ib].d * (fp16_to_fp32(w[ib].d) * sumi - fp16_to_fp32(w[ib].dmin) * summ);
    }
    return sum;
}

float dot_q6_K_q8_K(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const block_q6_K *>(vw);
    const auto *x = static_cast<const block_q8_K *>(vx);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        int8_t q[QK_K];  // unpacked 6-bit values minus 32
        const uint8_t *ql = w[ib].ql;
        const uint8_t *qh = w[ib].qh;
        for (int half = 0; half < 2; ++half) {
            int8_t *o = q + 128 * half;
            for (int l = 0; l < 32; ++l) {
                o[l + 0] = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                o[l + 32] = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                o[l + 64] = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                o[l + 96] = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            }
            ql += 64;
            qh += 32;
        }
        int sumi = 0;
        for (int s = 0; s < QK_K / 16; ++s) {
            int si = 0;
            for (int l = 0; l < 16; ++l) si += q[16 * s + l] * x[ib].qs[16 * s + l];
            sumi += w[ib].scales[s] * si;
        }
        sum += x[ib].d * fp16_to_fp32(w[ib].d) * sumi;
    }
    return sum;
}

float dot_f16_f16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_half *>(vw);
    const auto *x = static_cast<const ggml_half *>(vx);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += (double)(fp16_to_fp32(w[i]) * fp16_to_fp32(x[i]));
    return (float)sum;
}

float dot_bf16_bf16(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const ggml_bf16 *>(vw);
    const auto *x = static_cast<const ggml_bf16 *>(vx);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += (double)(bf16_to_fp32(w[i]) * bf16_to_fp32(x[i]));
    return (float)sum;
}

float dot_f32_f32(int64_t n, const void *vw, const void *vx) {
    const auto *w = static_cast<const float *>(vw);
    const auto *x = static_cast<const float *>(vx);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += (double)(w[i] * x[i]);
    return (float)sum;
}

void axpy_f16(int64_t n, float a, const ggml_half *x, float *y) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

double exp_sum(int64_t n, float max, float *s) {
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) {
        s[j] = std::exp(s[j] - max);
        sum += (double)s[j];
    }
    return sum;
}

void to_q8_0(const float *x, void *y, int64_t n) {
    quantize_row_q8_0_act(x, static_cast<block_q8_0 *>(y), n);
}
void to_q8_1(const float *x, void *y, int64_t n) {
    quantize_row_q8_1_act(x, static_cast<block_q8_1 *>(y), n);
}
void to_q8_K(const float *x, void *y, int64_t n) {
    quantize_row_q8_K_act(x, static_cast<block_q8_K *>(y), n);
}
void to_f16(const float *x, void *y, int64_t n) {
    quantize_row_f16_ref(x, static_cast<ggml_half *>(y), n);
}
void to_bf16(const float *x, void *y, int64_t n) {
    quantize_row_bf16_ref(x, static_cast<ggml_bf16 *>(y), n);
}

}  // namespace

// Every entry set: multi-row dots run the one-row dot per row, attention loops the f16 dot and
// axpy per key. No packed GEMM: gemm_ref.cpp is the spec its twins are tested against, not a fast
// path (its strided panel reads run 3.6x (Q4_0) to 9x (Q4_K) slower than these one-row dots at
// m = 4..32).
const DotKernels &dot_kernels_scalar() {
    static const DotKernels table = [] {
        DotKernels t{};
        t.isa = "scalar";
        t.to_q8_0 = to_q8_0;
        t.to_q8_1 = to_q8_1;
        t.to_q8_K = to_q8_K;
        t.to_f16 = to_f16;
        t.to_bf16 = to_bf16;
        t.q4_0 = {dot_q4_0_q8_0, rows_by_dot<dot_q4_0_q8_0>};
        t.q4_1 = {dot_q4_1_q8_1, rows_by_dot<dot_q4_1_q8_1>};
        t.q5_0 = {dot_q5_0_q8_0, rows_by_dot<dot_q5_0_q8_0>};
        t.q5_1 = {dot_q5_1_q8_1, rows_by_dot<dot_q5_1_q8_1>};
        t.q8_0 = {dot_q8_0_q8_0, rows_by_dot<dot_q8_0_q8_0>};
        t.q4_K = {dot_q4_K_q8_K, rows_by_dot_prefetch<dot_q4_K_q8_K>};
        t.q5_K = {dot_q5_K_q8_K, rows_by_dot_prefetch<dot_q5_K_q8_K>};
        t.q6_K = {dot_q6_K_q8_K, rows_by_dot_prefetch<dot_q6_K_q8_K>};
        t.f16 = {dot_f16_f16, rows_by_dot<dot_f16_f16>};
        t.bf16 = {dot_bf16_bf16, rows_by_dot<dot_bf16_bf16>};
        t.f32 = {dot_f32_f32, rows_by_dot<dot_f32_f32>};
        t.nbits = nbits_kernels_scalar();
        t.axpy_f16 = axpy_f16;
        t.attn_scores = attn_scores_by_dot<dot_f16_f16>;
        t.attn_values = attn_values_by_axpy<axpy_f16>;
        t.exp_sum = exp_sum;
        t.attn_q8_scores = attn_q8_scores_ref;
        t.attn_q8_values = attn_q8_values_ref;
        return t;
    }();
    return table;
}

}  // namespace phirt

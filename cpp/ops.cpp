#include "ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "dispatch.h"
#include "threadpool.h"

namespace phirt {

namespace {

// Row-wise ops run a row per task in prefill; one row (decode) stays on the caller, where a
// handful of microseconds of work would not pay for waking the pool.
template <class Fn>
void each_row(int64_t m, const Fn &fn) {
    if (m == 1) {
        fn(0);
        return;
    }
    global_pool().run(m, [&](int64_t r, int) { fn(r); });
}

// The cached keys query i (at position pos0 + i) sees: [first, first + count).
struct KeySpan {
    int64_t first, count;
};
KeySpan visible_keys(int64_t pos0, int64_t i, int64_t window) {
    const int64_t p = pos0 + i;
    const int64_t first = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
    return {first, p - first + 1};
}

// s[j] = exp(s[j] - max s) in place; returns their sum (softmax numerators and denominator).
double softmax_numerators(const DotKernels &kern, int64_t n, float *s) {
    float max = -INFINITY;
    for (int64_t j = 0; j < n; ++j) max = std::max(max, s[j]);
    return kern.exp_sum(n, max, s);
}

}  // namespace

void rms_norm(const float *x, const float *w, float eps, int64_t m, int64_t k, float *y) {
    each_row(m, [&](int64_t r) {
        const float *xr = x + r * k;
        float *yr = y + r * k;
        double sum = 0.0;
        for (int64_t i = 0; i < k; ++i) sum += (double)(xr[i] * xr[i]);
        const float mean = (float)(sum / k);
        const float scale = 1.0f / std::sqrt(mean + eps);
        for (int64_t i = 0; i < k; ++i) yr[i] = (xr[i] * scale) * w[i];
    });
}

void layer_norm(const float *x, const float *w, const float *b, float eps, int64_t m, int64_t k,
                float *y) {
    each_row(m, [&](int64_t r) {
        const float *xr = x + r * k;
        float *yr = y + r * k;
        double sum = 0.0;
        for (int64_t i = 0; i < k; ++i) sum += (double)xr[i];
        const float mean = (float)(sum / k);
        double sum2 = 0.0;
        for (int64_t i = 0; i < k; ++i) {
            const float v = xr[i] - mean;
            yr[i] = v;
            sum2 += (double)(v * v);
        }
        const float variance = (float)(sum2 / k);
        const float scale = 1.0f / std::sqrt(variance + eps);
        for (int64_t i = 0; i < k; ++i) {
            float v = yr[i] * scale;
            if (w != nullptr) v = v * w[i];
            if (b != nullptr) v = v + b[i];
            yr[i] = v;
        }
    });
}

void rope(float *x, const int32_t *pos, int64_t m, int64_t n_head, int64_t head_dim, int64_t n_rot,
          float freq_base, float freq_scale, const float *freq_factors, float attn_factor,
          bool neox) {
    // Angles advance by repeated multiplication, exactly as ggml_rope_cache_init does.
    const float theta_scale = std::pow(freq_base, -2.0f / (float)n_rot);
    thread_local std::vector<float> cos_sin;  // decode calls this per layer: no allocation
    if ((int64_t)cos_sin.size() < n_rot) cos_sin.resize(n_rot);
    for (int64_t r = 0; r < m; ++r) {
        float theta = (float)pos[r];
        for (int64_t i0 = 0; i0 < n_rot; i0 += 2) {
            const float ff = freq_factors ? freq_factors[i0 / 2] : 1.0f;
            const float t = freq_scale * (theta / ff);
            cos_sin[i0] = std::cos(t) * attn_factor;
            cos_sin[i0 + 1] = std::sin(t) * attn_factor;
            theta *= theta_scale;
        }
        for (int64_t h = 0; h < n_head; ++h) {
            float *v = x + (r * n_head + h) * head_dim;
            for (int64_t i0 = 0; i0 < n_rot; i0 += 2) {
                const float c = cos_sin[i0], s = cos_sin[i0 + 1];
                const int64_t a = neox ? i0 / 2 : i0;
                const int64_t b = neox ? i0 / 2 + n_rot / 2 : i0 + 1;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
    }
}

void rope_cache(float *x, const int32_t *pos, int64_t m, int64_t n_head, int64_t head_dim,
                int64_t n_rot, const float *cos_table, const float *sin_table, bool neox) {
    const int64_t half = n_rot / 2;
    for (int64_t r = 0; r < m; ++r) {
        const float *c = cos_table + (int64_t)pos[r] * half;
        const float *s = sin_table + (int64_t)pos[r] * half;
        for (int64_t h = 0; h < n_head; ++h) {
            float *v = x + (r * n_head + h) * head_dim;
            for (int64_t i = 0; i < half; ++i) {
                const int64_t a = neox ? i : 2 * i;
                const int64_t b = neox ? i + half : 2 * i + 1;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * c[i] - x1 * s[i];
                v[b] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}

void softmax(float *x, int64_t m, int64_t n) {
    for (int64_t r = 0; r < m; ++r) {
        float *row = x + r * n;
        float max = -INFINITY;
        for (int64_t i = 0; i < n; ++i) max = std::max(max, row[i]);
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) {
            const float e = std::exp(row[i] - max);
            row[i] = e;
            sum += (double)e;
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < n; ++i) row[i] *= inv;
    }
}

void silu_mul(const float *gate, const float *up, int64_t m, int64_t f, int64_t in_stride,
              float *y) {
    // Elementwise, so any split gives the same result: chunks of a row in decode (8192 exps of
    // Phi-3's FFN are ~40 us), whole rows in prefill.
    constexpr int64_t kChunk = 2048;
    const int64_t per_row = m == 1 ? (f + kChunk - 1) / kChunk : 1;
    const int64_t chunk = m == 1 ? kChunk : f;
    global_pool().run(m * per_row, [&](int64_t task, int) {
        const int64_t r = task / per_row, i0 = task % per_row * chunk;
        const int64_t i1 = std::min(f, i0 + chunk);
        const float *g = gate + r * in_stride;
        const float *u = up + r * in_stride;
        float *yr = y + r * f;
        for (int64_t i = i0; i < i1; ++i) yr[i] = (g[i] / (1.0f + std::exp(-g[i]))) * u[i];
    });
}

namespace {

// Rows of x (m, n_head, hd) converted into a cache of n_head × n_ctx rows of row_bytes each.
void store_rows(const float *x, int64_t m, int64_t n_head, int64_t hd, uint8_t *cache,
                int64_t row_bytes, int64_t n_ctx, int64_t pos0, ConvertFn convert) {
    each_row(m, [&](int64_t r) {
        for (int64_t h = 0; h < n_head; ++h)
            convert(x + (r * n_head + h) * hd, cache + (h * n_ctx + pos0 + r) * row_bytes, hd);
    });
}

}  // namespace

void kv_store(const float *x, int64_t m, int64_t n_head, int64_t hd, ggml_half *cache,
              int64_t n_ctx, int64_t pos0) {
    store_rows(x, m, n_head, hd, reinterpret_cast<uint8_t *>(cache), hd * sizeof(ggml_half), n_ctx,
               pos0, active_kernels().to_f16);
}

void kv_store_q8(const float *x, int64_t m, int64_t n_head, int64_t hd, block_q8_0 *cache,
                 int64_t n_ctx, int64_t pos0) {
    store_rows(x, m, n_head, hd, reinterpret_cast<uint8_t *>(cache),
               hd / QK8_0 * sizeof(block_q8_0), n_ctx, pos0, active_kernels().to_q8_0);
}

namespace {
const std::vector<ggml_half> &gelu_table() {
    static const std::vector<ggml_half> table = [] {
        std::vector<ggml_half> t(1 << 16);
        constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
        constexpr float kCoef = 0.044715f;
        for (uint32_t i = 0; i < t.size(); ++i) {
            const float v = fp16_to_fp32((ggml_half)i);
            t[i] = fp32_to_fp16(0.5f * v *
                                (1.0f + std::tanh(kSqrt2OverPi * v * (1.0f + kCoef * v * v))));
        }
        return t;
    }();
    return table;
}
}  // namespace

void gelu(const float *x, int64_t n, float *y) {
    const auto &table = gelu_table();
    for (int64_t i = 0; i < n; ++i) {
        if (x[i] <= -10.0f)
            y[i] = 0.0f;
        else if (x[i] >= 10.0f)
            y[i] = x[i];
        else
            y[i] = fp16_to_fp32(table[fp32_to_fp16(x[i])]);
    }
}

void gelu_tanh(const float *x, int64_t n, float *y) {
    const float alpha = 0.7978845608028654f;  // sqrt(2 / pi)
    const float gamma = 0.044715f;
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.0f + std::tanh(alpha * (v + gamma * v * v * v)));
    }
}

namespace {

// One query head against its KV head's visible keys [lo, lo + n_keys) of an f16 cache: the
// whole of attention() for one (row, head) task, shared with attention_spans() so a row's result
// is the same bits whichever call computes it.
void attend_f16(const DotKernels &kern, const float *q, const ggml_half *kh, const ggml_half *vh,
                int64_t hd, int64_t lo, int64_t n_keys, float scale, float *o) {
    thread_local std::vector<float> scores;
    thread_local std::vector<ggml_half> q16;
    thread_local std::vector<ggml_half> p16;
    if ((int64_t)scores.size() < n_keys) scores.resize(n_keys);
    if ((int64_t)q16.size() < hd) q16.resize(hd);
    kern.to_f16(q, q16.data(), hd);
    kern.attn_scores(hd, n_keys, kh + lo * hd, q16.data(), scale, scores.data());
    const double sum = softmax_numerators(kern, n_keys, scores.data());
    // Softmax weights rounded to f16 for ·V (ggml's f16 V product) by the ISA's converter.
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n_keys; ++j) scores[j] *= inv;
    if ((int64_t)p16.size() < n_keys) p16.resize(n_keys);
    kern.to_f16(scores.data(), p16.data(), n_keys);
    std::fill(o, o + hd, 0.0f);
    kern.attn_values(hd, n_keys, p16.data(), vh + lo * hd, o);
}

// attend_f16() over a Q8_0 cache (kh, vh: the KV head's rows of hd / 32 blocks).
void attend_q8(const DotKernels &kern, const float *q, const block_q8_0 *kh, const block_q8_0 *vh,
               int64_t hd, int64_t lo, int64_t n_keys, float scale, float *o) {
    thread_local std::vector<float> scores;
    thread_local std::vector<block_q8_0> q8;
    const int64_t nb = hd / QK8_0;
    if ((int64_t)scores.size() < n_keys) scores.resize(n_keys);
    if ((int64_t)q8.size() < nb) q8.resize(nb);
    kern.to_q8_0(q, q8.data(), hd);
    kern.attn_q8_scores(hd, n_keys, kh + lo * nb, q8.data(), scale, scores.data());
    const double sum = softmax_numerators(kern, n_keys, scores.data());
    std::fill(o, o + hd, 0.0f);
    kern.attn_q8_values(hd, n_keys, scores.data(), vh + lo * nb, o);
    const float inv = (float)(1.0 / sum);  // flash attention's division at the end
    for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
}

// Query `row` of a sequence whose queries start at pos0, head h, against one cache.
void attend_row_head(const DotKernels &kern, bool q8, const float *q, const void *k_cache,
                     const void *v_cache, int64_t n_head, int64_t n_kv_head, int64_t hd,
                     int64_t n_ctx, int64_t pos0, int64_t row, int64_t h, float scale,
                     int64_t window, float *o) {
    const int64_t kvh = h / (n_head / n_kv_head);
    const auto [lo, n_keys] = visible_keys(pos0, row, window);
    if (q8) {
        const int64_t nb = hd / QK8_0;
        attend_q8(kern, q, static_cast<const block_q8_0 *>(k_cache) + kvh * n_ctx * nb,
                  static_cast<const block_q8_0 *>(v_cache) + kvh * n_ctx * nb, hd, lo, n_keys,
                  scale, o);
    } else {
        attend_f16(kern, q, static_cast<const ggml_half *>(k_cache) + kvh * n_ctx * hd,
                   static_cast<const ggml_half *>(v_cache) + kvh * n_ctx * hd, hd, lo, n_keys,
                   scale, o);
    }
}

}  // namespace

void attention(const float *q, const ggml_half *k_cache, const ggml_half *v_cache, int64_t m,
               int64_t n_head, int64_t n_kv_head, int64_t hd, int64_t n_ctx, int64_t pos0,
               float scale, int64_t window, float *out) {
    const DotKernels &kern = active_kernels();
    global_pool().run(m * n_head, [&](int64_t task, int) {
        attend_row_head(kern, false, q + task * hd, k_cache, v_cache, n_head, n_kv_head, hd, n_ctx,
                        pos0, task / n_head, task % n_head, scale, window, out + task * hd);
    });
}

void attention_q8(const float *q, const block_q8_0 *k_cache, const block_q8_0 *v_cache, int64_t m,
                  int64_t n_head, int64_t n_kv_head, int64_t hd, int64_t n_ctx, int64_t pos0,
                  float scale, int64_t window, float *out) {
    const DotKernels &kern = active_kernels();
    global_pool().run(m * n_head, [&](int64_t task, int) {
        attend_row_head(kern, true, q + task * hd, k_cache, v_cache, n_head, n_kv_head, hd, n_ctx,
                        pos0, task / n_head, task % n_head, scale, window, out + task * hd);
    });
}

void attention_spans(const float *q, const float *k, const float *v, const AttnSpan *spans,
                     int64_t n_spans, bool q8, int64_t n_head, int64_t n_kv_head, int64_t hd,
                     float scale, int64_t window, float *out) {
    const DotKernels &kern = active_kernels();
    const int64_t m = spans[n_spans - 1].row0 + spans[n_spans - 1].rows;
    std::vector<int64_t> span_of(m);
    for (int64_t s = 0; s < n_spans; ++s) {
        const AttnSpan &sp = spans[s];
        std::fill(span_of.begin() + sp.row0, span_of.begin() + sp.row0 + sp.rows, s);
        const int64_t kv_off = sp.row0 * n_kv_head * hd;
        if (q8) {
            kv_store_q8(k + kv_off, sp.rows, n_kv_head, hd, static_cast<block_q8_0 *>(sp.k_cache),
                        sp.n_ctx, sp.pos0);
            kv_store_q8(v + kv_off, sp.rows, n_kv_head, hd, static_cast<block_q8_0 *>(sp.v_cache),
                        sp.n_ctx, sp.pos0);
        } else {
            kv_store(k + kv_off, sp.rows, n_kv_head, hd, static_cast<ggml_half *>(sp.k_cache),
                     sp.n_ctx, sp.pos0);
            kv_store(v + kv_off, sp.rows, n_kv_head, hd, static_cast<ggml_half *>(sp.v_cache),
                     sp.n_ctx, sp.pos0);
        }
    }
    global_pool().run(m * n_head, [&](int64_t task, int) {
        const int64_t r = task / n_head;
        const AttnSpan &sp = spans[span_of[r]];
        attend_row_head(kern, q8, q + task * hd, sp.k_cache, sp.v_cache, n_head, n_kv_head, hd,
                        sp.n_ctx, sp.pos0, r - sp.row0, task % n_head, scale, window,
                        out + task * hd);
    });
}

void attention_f32(const float *q, const float *k_cache_t, const float *v_cache, int64_t m,
                   int64_t n_head, int64_t n_kv_head, int64_t hd, int64_t n_ctx, int64_t pos0,
                   float scale, int64_t window, float *out) {
    const int64_t group = n_head / n_kv_head;
    global_pool().run(m * n_head, [&](int64_t task, int) {
        thread_local std::vector<float> scores;
        const int64_t h = task % n_head, kvh = h / group;
        const auto [lo, n_keys] = visible_keys(pos0, task / n_head, window);
        if ((int64_t)scores.size() < n_keys) scores.resize(n_keys);
        float *s = scores.data();
        const float *qh = q + task * hd;
        const float *kt = k_cache_t + kvh * hd * n_ctx + lo;  // row d: dimension d of each key
        std::fill(s, s + n_keys, 0.0f);
        for (int64_t d = 0; d < hd; ++d) {
            const float qd = qh[d];
            const float *kd = kt + d * n_ctx;
            for (int64_t j = 0; j < n_keys; ++j) s[j] += qd * kd[j];
        }
        float max = -INFINITY;
        for (int64_t j = 0; j < n_keys; ++j) {
            s[j] *= scale;
            max = std::max(max, s[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < n_keys; ++j) {
            s[j] = std::exp(s[j] - max);
            sum += s[j];
        }
        const float inv = 1.0f / sum;
        float *o = out + task * hd;
        std::fill(o, o + hd, 0.0f);
        const float *vh = v_cache + (kvh * n_ctx + lo) * hd;
        for (int64_t j = 0; j < n_keys; ++j) {
            const float p = s[j] * inv;
            const float *vj = vh + j * hd;
            for (int64_t d = 0; d < hd; ++d) o[d] += p * vj[d];
        }
    });
}

}  // namespace phirt

// Float weights -> MatMulNBits codes and scales (the exporter's quantizer), symmetric, per block.
//
// 4 bits. ONNX Runtime's quantizer (MlasQuantizeBlockwise, what the ORT GenAI builder runs) and
// GGML's Q4_0 share one rule: d = vmax / -8 for the block's value of largest magnitude vmax, codes
// q = min(15, trunc(x / d + 8.5)) (they differ only in which of -a and +a is vmax on a tie). With
// `search` the scale is then improved: candidate scales
// -(8 + t/10)·... around it (as llama.cpp's make_qx_quants tries), each with round-to-nearest
// codes in -8..7 and its least-squares scale Σ x·q / Σ q², and the candidate with the smallest
// squared error Σ (x - d·q)² wins, the ORT/GGML one included, so a block's error is never larger
// than ORT's. 8 bits: d = amax / 127, q = round(x / d) + 128 (GGML's Q8_0 rule, scale in f32).
// Codes are written in ONNX order (4 bits: element 2i low nibble, 2i + 1 high), 128 / 8 as the
// implied zero point, so no zero-point tensor is needed.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "nbits.h"
#include "threadpool.h"

namespace phirt {

namespace {

// Σ (x - d·q)² over a block for codes q = clamp(nearest(x / d), -8, 7); q out.
double sq_error(const float *x, int n, float d, int8_t *q) {
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    double err = 0.0;
    for (int j = 0; j < n; ++j) {
        q[j] = (int8_t)std::min(7, std::max(-8, nearest_int(x[j] * id)));
        const double e = (double)x[j] - (double)d * q[j];
        err += e * e;
    }
    return err;
}

// One 4-bit block: codes (0..15, zero point 8) and scale.
float quantize_block4(const float *x, int n, bool search, uint8_t *codes) {
    // The value of largest magnitude; on a tie between -a and +a, -a, as ONNX Runtime picks it
    // (GGML takes the first in order).
    float lo = 0.0f, hi = 0.0f;
    for (int j = 0; j < n; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
    const float vmax = -lo >= hi ? lo : hi, amax = std::fabs(vmax);
    const float d = vmax / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < n; ++j) codes[j] = (uint8_t)std::min(15, (int)(int8_t)(x[j] * id + 8.5f));
    if (!search || amax == 0.0f) return d;

    double best = 0.0;
    for (int j = 0; j < n; ++j) {
        const double e = (double)x[j] - (double)d * (codes[j] - 8);
        best += e * e;
    }
    float best_d = d;
    int8_t q[256], best_q[256];
    bool improved = false;
    for (int t = -9; t <= 9; ++t) {
        // codes at the candidate scale, then that code set's least-squares scale
        const float cand = vmax / -(8.0f + 0.1f * (float)t);
        sq_error(x, n, cand, q);
        double sxq = 0.0, sqq = 0.0;
        for (int j = 0; j < n; ++j) sxq += (double)x[j] * q[j], sqq += (double)q[j] * q[j];
        if (sqq == 0.0) continue;
        const float ls = (float)(sxq / sqq);
        for (const float s : {cand, ls}) {
            const double err = sq_error(x, n, s, q);
            if (err < best) {
                best = err, best_d = s, improved = true;
                std::memcpy(best_q, q, n);
            }
        }
    }
    if (improved)
        for (int j = 0; j < n; ++j) codes[j] = (uint8_t)(best_q[j] + 8);
    return best_d;
}

// One 8-bit block: codes q + 128 and scale.
float quantize_block8(const float *x, int n, uint8_t *codes) {
    float amax = 0.0f;
    for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < n; ++j) codes[j] = (uint8_t)(nearest_int(x[j] * id) + 128);
    return d;
}

}  // namespace

void nbits_quantize_rows(const float *x, int64_t rows, int64_t k, int block_size, int bits,
                         bool search, uint8_t *b, float *scales) {
    const int64_t nb = (k + block_size - 1) / block_size;
    const int64_t blob = (int64_t)block_size * bits / 8;
    global_pool().run(rows, [&](int64_t r, int) {
        float pad[256];
        uint8_t codes[256];
        for (int64_t i = 0; i < nb; ++i) {
            const int64_t c0 = i * block_size, n = std::min<int64_t>(block_size, k - c0);
            std::memcpy(pad, x + r * k + c0, n * sizeof(float));
            std::fill(pad + n, pad + block_size, 0.0f);  // ONNX pads the last block with zeros
            float d;
            if (bits == 4)
                d = quantize_block4(pad, block_size, search, codes);
            else
                d = quantize_block8(pad, block_size, codes);
            scales[r * nb + i] = d;
            uint8_t *out = b + (r * nb + i) * blob;
            if (bits == 8) {
                std::memcpy(out, codes, block_size);
                continue;
            }
            for (int j = 0; j < block_size / 2; ++j)
                out[j] = (uint8_t)(codes[2 * j] | (codes[2 * j + 1] << 4));
        }
    });
}

}  // namespace phirt

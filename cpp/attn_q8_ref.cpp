// Scalar spec of the Q8_0 KV cache attention loops (attn_q8.h); compiled without FMA contraction.
#include <cmath>

#include "attn_q8.h"

namespace phirt {

void attn_q8_scores_ref(int64_t hd, int64_t n, const block_q8_0 *k, const block_q8_0 *q,
                        float scale, float *scores) {
    const int64_t nb = hd / QK8_0;
    for (int64_t j = 0; j < n; ++j) {
        const block_q8_0 *row = k + j * nb;
        float s = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            int32_t sum = 0;
            for (int i = 0; i < QK8_0; ++i) sum += (int32_t)row[b].qs[i] * q[b].qs[i];
            s += (float)sum * (fp16_to_fp32(row[b].d) * fp16_to_fp32(q[b].d));
        }
        scores[j] = s * scale;
    }
}

void attn_q8_values_ref(int64_t hd, int64_t n, const float *p, const block_q8_0 *v, float *o) {
    const int64_t nb = hd / QK8_0;
    for (int64_t j = 0; j < n; ++j) {
        const block_q8_0 *row = v + j * nb;
        for (int64_t b = 0; b < nb; ++b) {
            const float w = fp16_to_fp32(row[b].d) * p[j];
            for (int i = 0; i < QK8_0; ++i)
                o[b * QK8_0 + i] = std::fma((float)row[b].qs[i], w, o[b * QK8_0 + i]);
        }
    }
}

}  // namespace phirt

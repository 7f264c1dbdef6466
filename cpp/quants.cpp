// Reference quantize/dequantize; see quants.h. Compiled with -ffp-contract=off.
#include "quants.h"

#include <algorithm>
#include <cmath>

#include "quants_k.h"

namespace phirt {

namespace {

// Value of largest magnitude (keeping its sign) and that magnitude.
void signed_absmax(const float *x, int n, float *amax, float *max) {
    *amax = 0.0f;
    *max = 0.0f;
    for (int j = 0; j < n; j++) {
        const float v = x[j];
        if (*amax < std::fabs(v)) {
            *amax = std::fabs(v);
            *max = v;
        }
    }
}

void min_max(const float *x, int n, float *min, float *max) {
    *min = INFINITY;
    *max = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (x[j] < *min) *min = x[j];
        if (x[j] > *max) *max = x[j];
    }
}

// Round half away from zero (C roundf), as the reference Q8_0 quantizer does.
int8_t round_away(float v) {
    return (int8_t)std::roundf(v);
}

}  // namespace

void quantize_row_q4_0_ref(const float *x, block_q4_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK4_0; i++, x += QK4_0) {
        float amax, max;
        signed_absmax(x, QK4_0, &amax, &max);
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const float x0 = x[j] * id;
            const float x1 = x[QK4_0 / 2 + j] * id;
            const uint8_t xi0 = (uint8_t)std::min(15, (int)(int8_t)(x0 + 8.5f));
            const uint8_t xi1 = (uint8_t)std::min(15, (int)(int8_t)(x1 + 8.5f));
            y[i].qs[j] = xi0 | (xi1 << 4);
        }
    }
}

void quantize_row_q4_1_ref(const float *x, block_q4_1 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK4_1; i++, x += QK4_1) {
        float min, max;
        min_max(x, QK4_1, &min, &max);
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[QK4_1 / 2 + j] - min) * id;
            const uint8_t xi0 = (uint8_t)std::min(15, (int)(int8_t)(x0 + 0.5f));
            const uint8_t xi1 = (uint8_t)std::min(15, (int)(int8_t)(x1 + 0.5f));
            y[i].qs[j] = xi0 | (xi1 << 4);
        }
    }
}

void quantize_row_q5_0_ref(const float *x, block_q5_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK5_0; i++, x += QK5_0) {
        float amax, max;
        signed_absmax(x, QK5_0, &amax, &max);
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; ++j) {
            const float x0 = x[j] * id;
            const float x1 = x[QK5_0 / 2 + j] * id;
            const uint8_t xi0 = (uint8_t)std::min(31, (int)(int8_t)(x0 + 16.5f));
            const uint8_t xi1 = (uint8_t)std::min(31, (int)(int8_t)(x1 + 16.5f));
            y[i].qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK5_0 / 2);
        }
        std::memcpy(y[i].qh, &qh, sizeof(qh));
    }
}

void quantize_row_q5_1_ref(const float *x, block_q5_1 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK5_1; i++, x += QK5_1) {
        float min, max;
        min_max(x, QK5_1, &min, &max);
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; ++j) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[QK5_1 / 2 + j] - min) * id;
            const uint8_t xi0 = (uint8_t)std::min(31, (int)(x0 + 0.5f));
            const uint8_t xi1 = (uint8_t)std::min(31, (int)(x1 + 0.5f));
            y[i].qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK5_1 / 2);
        }
        std::memcpy(y[i].qh, &qh, sizeof(qh));
    }
}

void quantize_row_q8_0_ref(const float *x, block_q8_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = round_away(x[j] * id);
    }
}

void quantize_row_f16_ref(const float *x, ggml_half *y, int64_t k) {
    for (int64_t i = 0; i < k; i++) y[i] = fp32_to_fp16(x[i]);
}

void quantize_row_bf16_ref(const float *x, ggml_bf16 *y, int64_t k) {
    for (int64_t i = 0; i < k; i++) y[i] = fp32_to_bf16(x[i]);
}

void quantize_row_q8_0_act(const float *x, block_q8_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = (int8_t)nearest_int(x[j] * id);
    }
}

void quantize_row_q8_1_act(const float *x, block_q8_1 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK8_1; i++, x += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; ++j) {
            y[i].qs[j] = (int8_t)nearest_int(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16((float)sum * d);
    }
}

void quantize_row_q8_K_act(const float *x, block_q8_K *y, int64_t k) {
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        float amax, max;
        signed_absmax(x, QK_K, &amax, &max);
        if (amax == 0.0f) {
            y[i].d = 0;
            std::memset(y[i].qs, 0, QK_K);
            std::memset(y[i].bsums, 0, sizeof(y[i].bsums));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) {
            const int v = nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)std::min(127, v);
        }
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void dequantize_row_q4_0(const block_q4_0 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK4_0; i++, y += QK4_0) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + QK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void dequantize_row_q4_1(const block_q4_1 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK4_1; i++, y += QK4_1) {
        const float d = fp16_to_fp32(x[i].d);
        const float m = fp16_to_fp32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            y[j] = (x[i].qs[j] & 0x0F) * d + m;
            y[j + QK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

void dequantize_row_q5_0(const block_q5_0 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK5_0; i++, y += QK5_0) {
        const float d = fp16_to_fp32(x[i].d);
        uint32_t qh;
        std::memcpy(&qh, x[i].qh, sizeof(qh));
        for (int j = 0; j < QK5_0 / 2; ++j) {
            const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
            const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
            y[j] = (((x[i].qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + QK5_0 / 2] = (((x[i].qs[j] >> 4) | xh1) - 16) * d;
        }
    }
}

void dequantize_row_q5_1(const block_q5_1 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK5_1; i++, y += QK5_1) {
        const float d = fp16_to_fp32(x[i].d);
        const float m = fp16_to_fp32(x[i].m);
        uint32_t qh;
        std::memcpy(&qh, x[i].qh, sizeof(qh));
        for (int j = 0; j < QK5_1 / 2; ++j) {
            const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
            const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
            y[j] = ((x[i].qs[j] & 0x0F) | xh0) * d + m;
            y[j + QK5_1 / 2] = ((x[i].qs[j] >> 4) | xh1) * d + m;
        }
    }
}

void dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK8_0; i++, y += QK8_0) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = x[i].qs[j] * d;
    }
}

void dequantize_row_q4_K(const block_q4_K *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const float d = fp16_to_fp32(x[i].d);
        const float min = fp16_to_fp32(x[i].dmin);
        int is = 0;
        for (int j = 0; j < QK_K; j += 64) {
            uint8_t sc, m;
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

void dequantize_row_q5_K(const block_q5_K *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *ql = x[i].qs;
        const uint8_t *qh = x[i].qh;
        const float d = fp16_to_fp32(x[i].d);
        const float min = fp16_to_fp32(x[i].dmin);
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            uint8_t sc, m;
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

void dequantize_row_q6_K(const block_q6_K *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

void dequantize_row_f16(const ggml_half *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k; i++) y[i] = fp16_to_fp32(x[i]);
}

void dequantize_row_bf16(const ggml_bf16 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k; i++) y[i] = bf16_to_fp32(x[i]);
}

bool quantize_row(int type_id, const float *x, void *y, int64_t k) {
    switch ((GgmlType)type_id) {
        case GgmlType::F32:
            std::memcpy(y, x, k * sizeof(float));
            return true;
        case GgmlType::F16:
            quantize_row_f16_ref(x, (ggml_half *)y, k);
            return true;
        case GgmlType::BF16:
            quantize_row_bf16_ref(x, (ggml_bf16 *)y, k);
            return true;
        case GgmlType::Q4_0:
            quantize_row_q4_0_ref(x, (block_q4_0 *)y, k);
            return true;
        case GgmlType::Q4_1:
            quantize_row_q4_1_ref(x, (block_q4_1 *)y, k);
            return true;
        case GgmlType::Q5_0:
            quantize_row_q5_0_ref(x, (block_q5_0 *)y, k);
            return true;
        case GgmlType::Q5_1:
            quantize_row_q5_1_ref(x, (block_q5_1 *)y, k);
            return true;
        case GgmlType::Q8_0:
            quantize_row_q8_0_ref(x, (block_q8_0 *)y, k);
            return true;
        case GgmlType::Q4_K:
            quantize_row_q4_K_ref(x, (block_q4_K *)y, k);
            return true;
        case GgmlType::Q5_K:
            quantize_row_q5_K_ref(x, (block_q5_K *)y, k);
            return true;
        case GgmlType::Q6_K:
            quantize_row_q6_K_ref(x, (block_q6_K *)y, k);
            return true;
        default:
            return false;
    }
}

bool dequantize_row(int type_id, const void *x, float *y, int64_t k) {
    switch ((GgmlType)type_id) {
        case GgmlType::F32:
            std::memcpy(y, x, k * sizeof(float));
            return true;
        case GgmlType::F16:
            dequantize_row_f16((const ggml_half *)x, y, k);
            return true;
        case GgmlType::BF16:
            dequantize_row_bf16((const ggml_bf16 *)x, y, k);
            return true;
        case GgmlType::Q4_0:
            dequantize_row_q4_0((const block_q4_0 *)x, y, k);
            return true;
        case GgmlType::Q4_1:
            dequantize_row_q4_1((const block_q4_1 *)x, y, k);
            return true;
        case GgmlType::Q5_0:
            dequantize_row_q5_0((const block_q5_0 *)x, y, k);
            return true;
        case GgmlType::Q5_1:
            dequantize_row_q5_1((const block_q5_1 *)x, y, k);
            return true;
        case GgmlType::Q8_0:
            dequantize_row_q8_0((const block_q8_0 *)x, y, k);
            return true;
        case GgmlType::Q4_K:
            dequantize_row_q4_K((const block_q4_K *)x, y, k);
            return true;
        case GgmlType::Q5_K:
            dequantize_row_q5_K((const block_q5_K *)x, y, k);
            return true;
        case GgmlType::Q6_K:
            dequantize_row_q6_K((const block_q6_K *)x, y, k);
            return true;
        default:
            return false;
    }
}

const TypeTraits *type_traits(int type_id) {
    static const TypeTraits table[] = {
        {GgmlType::F32, "F32", 1, 4},
        {GgmlType::F16, "F16", 1, 2},
        {GgmlType::BF16, "BF16", 1, 2},
        {GgmlType::Q4_0, "Q4_0", QK4_0, sizeof(block_q4_0)},
        {GgmlType::Q4_1, "Q4_1", QK4_1, sizeof(block_q4_1)},
        {GgmlType::Q5_0, "Q5_0", QK5_0, sizeof(block_q5_0)},
        {GgmlType::Q5_1, "Q5_1", QK5_1, sizeof(block_q5_1)},
        {GgmlType::Q8_0, "Q8_0", QK8_0, sizeof(block_q8_0)},
        {GgmlType::Q8_1, "Q8_1", QK8_1, sizeof(block_q8_1)},
        {GgmlType::Q4_K, "Q4_K", QK_K, sizeof(block_q4_K)},
        {GgmlType::Q5_K, "Q5_K", QK_K, sizeof(block_q5_K)},
        {GgmlType::Q6_K, "Q6_K", QK_K, sizeof(block_q6_K)},
        {GgmlType::Q8_K, "Q8_K", QK_K, sizeof(block_q8_K)},
    };
    for (const auto &t : table)
        if ((int)t.type == type_id) return &t;
    return nullptr;
}

}  // namespace phirt

// Scalar spec of the interleaved Q4_0 kernel (q4x16.h) and the load-time repack.
#include <cmath>
#include <cstring>

#include "formats.h"
#include "q4x16.h"
#include "quants.h"
#include "threadpool.h"

namespace phirt {

// No huge pages: one stream per panel keeps the TLB cost small (Phi-3-mini Q4_0 decode 3 %
// faster with them, Xeon), while faulting them in made the repack 0.5 -> 3.3 s.
Q4x16Matrix::Q4x16Matrix(const uint8_t *q4_0, int64_t row_bytes, int64_t n, int64_t k)
    : n_(n),
      k_(k),
      data_((size_t)((n + kPanelRows - 1) / kPanelRows * (k / 32) * kQ4x16BlockBytes), false) {
    const int64_t nb = n_blocks();
    global_pool().run(n_panels(), [&](int64_t p, int) {
        uint8_t *codes = data_.data() + p * panel_bytes();
        uint8_t *scales = codes + nb * kQ4x16BlockCodes;
        std::memset(codes, 0, (size_t)panel_bytes());  // rows past n: zero codes and scales
        for (int r = 0; r < kPanelRows && p * kPanelRows + r < n; ++r) {
            const auto *row =
                reinterpret_cast<const block_q4_0 *>(q4_0 + (p * kPanelRows + r) * row_bytes);
            for (int64_t b = 0; b < nb; ++b) {
                std::memcpy(scales + (b * kPanelRows + r) * 2, &row[b].d, 2);
                for (int c = 0; c < 4; ++c)
                    std::memcpy(codes + b * kQ4x16BlockCodes + c * 64 + r * 4, row[b].qs + 4 * c,
                                4);
            }
        }
    });
}

void q4x16_gemm_ref(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                    int64_t ldy, int n_rows) {
    const uint8_t *codes = panel;
    const uint8_t *scales = panel + nb * kQ4x16BlockCodes;
    for (int64_t i = 0; i < m; ++i) {
        for (int r = 0; r < n_rows; ++r) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const int8_t *q = a.q + i * a.ldq + b * 32;
                int32_t isum = a.zs[i * a.ldg + b];  // -8 · Σ q
                for (int c = 0; c < 4; ++c)
                    for (int j = 0; j < 4; ++j) {
                        const uint8_t byte = codes[b * kQ4x16BlockCodes + c * 64 + r * 4 + j];
                        isum += (byte & 0x0F) * q[4 * c + j] + (byte >> 4) * q[16 + 4 * c + j];
                    }
                ggml_half h;
                std::memcpy(&h, scales + (b * kPanelRows + r) * 2, 2);
                acc = std::fma((float)isum, fp16_to_fp32(h) * a.d[i * a.ldg + b], acc);
            }
            y[i * ldy + r] = acc;
        }
    }
}

}  // namespace phirt

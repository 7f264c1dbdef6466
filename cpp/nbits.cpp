// ONNX MatMulNBits: the load-time repack, dequantization and the matmul driver. The layout and
// numerics are described in nbits.h; the kernels are in nbits_ref.cpp (the spec) and x86/.
#include "nbits.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dispatch.h"
#include "gemm.h"
#include "matmul.h"
#include "threadpool.h"

namespace phirt {

namespace {

constexpr int64_t kMaxK = (int64_t)1 << 31;  // far beyond any model, keeps every size in int64

float load_f32(const uint8_t *p) {
    float f;
    std::memcpy(&f, p, sizeof(f));
    return f;
}

// Code of element e (0 <= e < kq) of repacked row r.
int code_at(const NBitsShape &s, const uint8_t *data, int64_t r, int64_t e) {
    const uint8_t *qs = s.step_of_row(data, r, e / kNBitsStep) + s.off_qs();
    const int64_t c = e % kNBitsStep;
    if (s.bits == 8) return qs[c];
    const int64_t p = c % kNBitsGroup;
    const uint8_t byte = qs[c / kNBitsGroup * 16 + (p & 15)];
    return p >= 16 ? byte >> 4 : byte & 0x0F;
}

// Per-thread scratch of the driver: padded / quantized activations and the packed GEMM's
// per-group activation terms (calling thread only).
struct Scratch {
    std::vector<float> x;     // m × kq, zero-padded rows
    std::vector<int8_t> q;    // m × kq
    std::vector<float> d, s;  // m × nb
    std::vector<float> gd, gs;
    std::vector<int32_t> gzs;
};
thread_local Scratch t_scratch;

// Per-worker panel scratch of the packed GEMM (workers are persistent, so this is reused).
struct PanelScratch {
    std::vector<uint8_t> u, rows;
    std::vector<float> scale, offset;
};
thread_local PanelScratch t_panel;

template <class T>
T *grown(std::vector<T> &v, int64_t n) {
    if ((int64_t)v.size() < n) v.resize(n);
    return v.data();
}

// Below this many activation rows the one-row dots beat unpacking panels (as matmul.cpp).
constexpr int64_t kMinPackedRows = 4;

// The GGML weight type whose packed-GEMM panel form (gemm.h) an int8-activation NBits matrix
// shares, or nullptr: 4-bit codes with zero point 8 are Q4_0's form, 8-bit codes with zero point
// 128 Q8_0's. Block size 16 has no such form (its groups would need a scale per 16 columns).
// Matrices with their own zero points stay on the row dots: through Q4_1's form (a float offset
// -scale·zp per group times the activations' block sums) the prefill logits of the Phi-4-mini-
// shaped fixture moved ~0.15 on average from onnxruntime's integer (q - zp)·x, against ~1e-5 on
// the row dots (tests/test_onnx_load.py); the cause is not pinned down yet.
const TypeKernels *packed_kernels(const DotKernels &kern, const NBitsShape &s, int *type) {
    if (!s.int8_activations() || s.block_size < kNBitsGroup || s.has_zero_points) return nullptr;
    const TypeKernels *tk = nullptr;
    if (s.bits == 4)
        tk = s.has_zero_points ? &kern.q4_1 : &kern.q4_0,
        *type = (int)(s.has_zero_points ? GgmlType::Q4_1 : GgmlType::Q4_0);
    else if (!s.has_zero_points)
        tk = &kern.q8_0, *type = (int)GgmlType::Q8_0;
    return tk != nullptr && tk->gemm_panel != nullptr ? tk : nullptr;
}

// Prefill: y (m × n) through the table's packed GEMM on activations already quantized (q, d).
void nbits_matmul_packed(const NBitsMatrix &w, NBitsPackFn pack, const TypeKernels &tk, int type,
                         const int8_t *q, const float *d, int64_t m, float *y) {
    const NBitsShape &s = w.shape();
    const GemmForm form = gemm_form(type);
    const int64_t kq = s.kq, groups = kq / kNBitsGroup, per_block = s.block_size / kNBitsGroup;
    Scratch &sc = t_scratch;
    float *gd = grown(sc.gd, m * groups);
    float *gs = grown(sc.gs, m * groups);
    int32_t *gzs = grown(sc.gzs, m * groups);
    ThreadPool &pool = global_pool();
    pool.run(m, [&](int64_t i, int) {
        for (int64_t g = 0; g < groups; ++g) {
            const int8_t *qg = q + i * kq + g * kNBitsGroup;
            int32_t sum = 0;
            for (int j = 0; j < kNBitsGroup; ++j) sum += qg[j];
            const float dg = d[i * s.nb + g / per_block];
            gd[i * groups + g] = dg;
            gzs[i * groups + g] = -form.zero * sum;
            gs[i * groups + g] = dg * (float)sum;
        }
    });
    const GemmActs acts{q, gd, gzs, gs, kq, groups};
    const int64_t n_panels = (s.n + kPanelRows - 1) / kPanelRows;
    pool.run(n_panels, [&](int64_t p, int) {
        PanelScratch &ps = t_panel;
        GemmPanel panel{grown(ps.u, kPanelRows * kq), grown(ps.scale, groups * kPanelRows),
                        grown(ps.offset, groups * kPanelRows), kq, form};
        const int64_t r0 = p * kPanelRows;
        const int n_rows = (int)std::min<int64_t>(kPanelRows, s.n - r0);
        pack(s, w.data(), r0, n_rows, &panel, grown(ps.rows, kPanelRows * kq));
        tk.gemm_panel(panel, acts, m, y + r0, s.n, n_rows);
    });
}

}  // namespace

std::string nbits_validate(int64_t n, int64_t k, int64_t block_size, int64_t bits,
                           int64_t accuracy_level) {
    if (bits != 4 && bits != 8) return "bits must be 4 or 8, got " + std::to_string(bits);
    if (block_size < 16 || block_size > 256 || (block_size & (block_size - 1)) != 0)
        return "block_size must be a power of two in 16..256, got " + std::to_string(block_size);
    if (accuracy_level < 0 || accuracy_level > 4)
        return "accuracy_level must be in 0..4, got " + std::to_string(accuracy_level);
    if (n <= 0) return "N must be positive, got " + std::to_string(n);
    if (k <= 0) return "K must be positive, got " + std::to_string(k);
    if (k > kMaxK || n > kMaxK)
        return "matrix " + std::to_string(n) + "x" + std::to_string(k) + " is too large";
    return {};
}

NBitsShape nbits_shape(int64_t n, int64_t k, int block_size, int bits, int accuracy_level,
                       bool has_zero_points) {
    NBitsShape s;
    s.n = n;
    s.k = k;
    s.block_size = block_size;
    s.bits = bits;
    s.accuracy_level = accuracy_level;
    s.has_zero_points = has_zero_points;
    s.onnx_blocks = (k + block_size - 1) / block_size;
    s.n_steps = (s.onnx_blocks * block_size + kNBitsStep - 1) / kNBitsStep;
    s.kq = s.n_steps * kNBitsStep;
    s.nb = s.kq / block_size;
    s.spb = kNBitsStep / block_size;
    s.zpb = has_zero_points ? (s.spb + 3) / 4 * 4 : 0;
    s.code_bytes = kNBitsStep * bits / 8;
    s.step_bytes = 4 * s.spb + s.zpb + s.code_bytes;
    s.row_bytes = s.n_steps * s.step_bytes;
    s.n_groups = (n + kNBitsRowGroup - 1) / kNBitsRowGroup;
    return s;
}

// Huge pages: Phi-3-mini int4 decode 7.5 -> 10.0 tok/s (Xeon, 2 threads), for the 4-row groups'
// four streams per pass.
NBitsMatrix::NBitsMatrix(const NBitsShape &shape)
    : shape_(shape), data_((size_t)(shape.group_bytes() * shape.n_groups), true) {}

void repack_matmulnbits(const MatMulNBitsSource &src, NBitsMatrix *out) {
    const NBitsShape &s = out->shape();
    const int64_t blob = s.block_size * s.bits / 8;  // B bytes per block
    const int64_t zp_row = (s.onnx_blocks * s.bits + 7) / 8;
    const int64_t onnx_elems = s.onnx_blocks * s.block_size;
    const int zp_default = s.default_zero_point();
    uint8_t *data = out->data();
    // rows past n pad the last row group: all zero (scale 0)
    global_pool().run(s.n_groups * kNBitsRowGroup, [&](int64_t r, int) {
        auto step_at = [&](int64_t t) { return const_cast<uint8_t *>(s.step_of_row(data, r, t)); };
        for (int64_t t = 0; t < s.n_steps; ++t) std::memset(step_at(t), 0, s.step_bytes);
        if (r >= s.n) return;
        for (int64_t b = 0; b < s.nb; ++b) {
            float d = 0.0f;  // padding blocks
            int z = zp_default;
            if (b < s.onnx_blocks) {
                const int64_t i = r * s.onnx_blocks + b;
                if (src.scales_f16) {
                    ggml_half h;
                    std::memcpy(&h, static_cast<const uint8_t *>(src.scales) + 2 * i, 2);
                    d = fp16_to_fp32(h);
                } else {
                    std::memcpy(&d, static_cast<const uint8_t *>(src.scales) + 4 * i, 4);
                }
                if (src.zero_points != nullptr) {
                    const uint8_t *zr = src.zero_points + r * zp_row;
                    z = s.bits == 8 ? zr[b] : (b & 1) ? zr[b / 2] >> 4 : zr[b / 2] & 0x0F;
                }
            }
            uint8_t *step = step_at(b / s.spb);
            std::memcpy(step + 4 * (b % s.spb), &d, 4);
            if (s.has_zero_points) step[s.off_zp() + b % s.spb] = (uint8_t)z;
        }
        const uint8_t *brow = src.b + r * s.onnx_blocks * blob;
        // Codes inside the ONNX row go a step (8 bits) or a 32-code group (4 bits) at a time; the
        // element loop below is the spec and does the padding past the row.
        const int64_t whole = std::min(onnx_elems, s.kq);
        int64_t e = 0;
        if (s.bits == 8) {
            for (; e < whole; e += kNBitsStep) {
                const int64_t len = std::min<int64_t>(kNBitsStep, whole - e);
                std::memcpy(step_at(e / kNBitsStep) + s.off_qs(), brow + e, len);
            }
        } else {
            // ONNX byte i holds codes 2i (low nibble) and 2i + 1; a group here holds code j low
            // and code j + 16 high in byte j
            for (; e + kNBitsGroup <= whole; e += kNBitsGroup) {
                uint8_t *qs =
                    step_at(e / kNBitsStep) + s.off_qs() + (e % kNBitsStep) / kNBitsGroup * 16;
                const uint8_t *in = brow + e / 2;
                for (int j = 0; j < 16; ++j) {
                    const int shift = 4 * (j & 1);
                    const int lo = (in[j / 2] >> shift) & 0x0F,
                              hi = (in[8 + j / 2] >> shift) & 0x0F;
                    qs[j] = (uint8_t)(lo | hi << 4);
                }
            }
        }
        for (; e < s.kq; ++e) {
            uint8_t *qs = step_at(e / kNBitsStep) + s.off_qs();
            const int64_t c = e % kNBitsStep;
            if (s.bits == 8) {
                qs[c] = e < onnx_elems ? brow[e] : (uint8_t)zp_default;
                continue;
            }
            // ONNX: element e is nibble (e & 1) of byte e / 2 (blocks are contiguous). Here:
            // element c of a step is in group c / 32, byte c % 16 of it, high when c % 32 >= 16.
            const int code = e < onnx_elems ? (brow[e / 2] >> (4 * (e & 1))) & 0x0F : zp_default;
            const int64_t p = c % kNBitsGroup;
            qs[c / kNBitsGroup * 16 + (p & 15)] |= (uint8_t)(code << (p >= 16 ? 4 : 0));
        }
    });
}

void nbits_dequantize(const NBitsMatrix &w, float *out) {
    const NBitsShape &s = w.shape();
    global_pool().run(s.n, [&](int64_t r, int) {
        float *y = out + r * s.k;
        for (int64_t e = 0; e < s.k; ++e) {
            const int64_t b = e / s.block_size;
            const uint8_t *step = s.step_of_row(w.data(), r, b / s.spb);
            const int z = s.has_zero_points ? step[s.off_zp() + b % s.spb] : s.default_zero_point();
            // One rounding, as ORT: (float)(q - zp) * scale.
            y[e] = (float)(code_at(s, w.data(), r, e) - z) * load_f32(step + 4 * (b % s.spb));
        }
    });
}

void nbits_matmul(const NBitsMatrix &w, const float *x, int64_t m, float *y, bool batch_invariant) {
    const NBitsShape &s = w.shape();
    const DotKernels &table = active_kernels();
    const NBitsKernels &kern = table.nbits;
    ThreadPool &pool = global_pool();
    Scratch &sc = t_scratch;

    // 1. Activation rows zero-padded to kq (zeros change neither a block's amax nor a sum), then
    //    quantized per block at level 4.
    const int64_t k = s.k, kq = s.kq, nb = s.nb;
    float *xp = grown(sc.x, m * kq);
    int8_t *q = s.int8_activations() ? grown(sc.q, m * kq) : nullptr;
    float *d = s.int8_activations() ? grown(sc.d, m * nb) : nullptr;
    float *sum = s.int8_activations() ? grown(sc.s, m * nb) : nullptr;
    pool.run(m, [&](int64_t r, int) {
        float *row = xp + r * kq;
        std::memcpy(row, x + r * k, k * sizeof(float));
        std::fill(row + k, row + kq, 0.0f);
        if (q != nullptr) kern.quantize(s, row, q + r * kq, d + r * nb, sum + r * nb);
    });

    // 2. Prefill through the packed GEMM where the table has one for the matrix's form, else row
    //    dots, kNBitsMaxRows weight rows per call, scheduled as matmul's.
    int type = 0;
    // The packed GEMM sums in another order than the row dots: a batch-invariant call (the
    // server's decode) keeps every row on the row dots, as it would be alone.
    const TypeKernels *packed =
        !batch_invariant && m >= kMinPackedRows ? packed_kernels(table, s, &type) : nullptr;
    if (packed != nullptr) {
        nbits_matmul_packed(w, kern.pack_panel, *packed, type, q, d, m, y);
        return;
    }
    // Scheduled in row groups: a block's groups [g0, g1) are rows [4·g0, min(n, 4·g1)).
    one_row_dot_blocks(
        s.n_groups, m, w.nbytes(), [&](int64_t g0, int64_t g1, int64_t c0, int64_t c1) {
            for (int64_t g = g0; g < g1; ++g) {
                const int64_t r = g * kNBitsRowGroup;
                const int nr = (int)std::min<int64_t>(kNBitsRowGroup, s.n - r);
                const uint8_t *wr = w.data() + g * s.group_bytes();
                for (int64_t c = c0; c < c1; ++c) {
                    if (q != nullptr)
                        kern.rows_i8(s, wr, nr, {q + c * kq, d + c * nb, sum + c * nb},
                                     y + c * s.n + r);
                    else
                        kern.rows_f32(s, wr, nr, xp + c * kq, y + c * s.n + r);
                }
            }
        });
}

}  // namespace phirt

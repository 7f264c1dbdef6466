// ONNX MatMulNBits (4-bit): the load-time repack, dequantization, the scalar dot product (the spec
// for x86/nbits_avx2.cpp) and the matmul driver. The layout is described in nbits.h.
#include "nbits.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "dispatch.h"
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

// Converted activations of the calling thread; zero-padded row copies of each worker.
thread_local std::vector<block_q8_0> t_act;
thread_local std::vector<float> t_pad;

}  // namespace

std::string nbits_validate(int64_t n, int64_t k, int64_t block_size) {
    if (block_size < 16 || block_size > 256 || (block_size & (block_size - 1)) != 0)
        return "block_size must be a power of two in 16..256, got " + std::to_string(block_size);
    if (n <= 0) return "N must be positive, got " + std::to_string(n);
    if (k <= 0) return "K must be positive, got " + std::to_string(k);
    if (k > kMaxK || n > kMaxK)
        return "matrix " + std::to_string(n) + "x" + std::to_string(k) + " is too large";
    return {};
}

NBitsShape nbits_shape(int64_t n, int64_t k, int block_size, bool has_zero_points) {
    NBitsShape s;
    s.n = n;
    s.k = k;
    s.block_size = block_size;
    s.has_zero_points = has_zero_points;
    s.onnx_blocks = (k + block_size - 1) / block_size;
    s.kq = (s.onnx_blocks * block_size + kNBitsGroup - 1) / kNBitsGroup * kNBitsGroup;
    s.nb = s.kq / block_size;
    s.off_qs = s.nb * (int64_t)sizeof(float);
    s.off_zp = s.off_qs + s.kq / 2;
    s.row_bytes = (s.off_zp + s.nb + 15) / 16 * 16;
    return s;
}

void NBitsMatrix::Free::operator()(uint8_t *p) const {
    std::free(p);
}

NBitsMatrix::NBitsMatrix(const NBitsShape &shape) : shape_(shape) {
    const size_t bytes = (size_t)((shape.row_bytes * shape.n + 63) / 64 * 64);
    auto *p = static_cast<uint8_t *>(std::aligned_alloc(64, bytes));
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(p);
}

void repack_matmulnbits(const MatMulNBitsSource &src, NBitsMatrix *out) {
    const NBitsShape &s = out->shape();
    const int64_t half = s.block_size / 2;
    const int64_t zp_row = (s.onnx_blocks + 1) / 2;
    const int64_t onnx_elems = s.onnx_blocks * s.block_size;
    uint8_t *data = out->data();
    global_pool().run(s.n, [&](int64_t r, int) {
        uint8_t *row = data + r * s.row_bytes;
        std::memset(row, 0, s.row_bytes);
        for (int64_t b = 0; b < s.nb; ++b) {
            float d = 0.0f;  // the padding half-group of block size 16
            uint8_t z = 8;
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
                    const uint8_t byte = src.zero_points[r * zp_row + b / 2];
                    z = (b & 1) ? byte >> 4 : byte & 0x0F;
                }
            }
            std::memcpy(row + 4 * b, &d, 4);
            row[s.off_zp + b] = z;
        }
        // ONNX: element e of the row is nibble (e & 1) of byte e / 2 (blocks are contiguous).
        // Here: element e is in group e / 32, byte e % 16 of it, high nibble when e % 32 >= 16.
        const uint8_t *brow = src.b + r * s.onnx_blocks * half;
        uint8_t *qs = row + s.off_qs;
        for (int64_t e = 0; e < s.kq; ++e) {
            const uint8_t code = e < onnx_elems ? (brow[e / 2] >> (4 * (e & 1))) & 0x0F : 8;
            const int64_t p = e % kNBitsGroup;
            qs[e / kNBitsGroup * 16 + (p & 15)] |= (uint8_t)(code << (p >= 16 ? 4 : 0));
        }
    });
}

void nbits_dequantize(const NBitsMatrix &w, float *out) {
    const NBitsShape &s = w.shape();
    global_pool().run(s.n, [&](int64_t r, int) {
        const uint8_t *row = w.data() + r * s.row_bytes;
        const uint8_t *qs = row + s.off_qs;
        float *y = out + r * s.k;
        for (int64_t e = 0; e < s.k; ++e) {
            const int64_t b = e / s.block_size, p = e % kNBitsGroup;
            const uint8_t byte = qs[e / kNBitsGroup * 16 + (p & 15)];
            const int code = p >= 16 ? byte >> 4 : byte & 0x0F;
            // One rounding, as ORT: (float)(q - zp) * scale.
            y[e] = (float)(code - (int)row[s.off_zp + b]) * load_f32(row + 4 * b);
        }
    });
}

float nbits_dot_ref(const NBitsShape &s, const uint8_t *row, const block_q8_0 *x) {
    const uint8_t *qs = row + s.off_qs;
    const uint8_t *zp = row + s.off_zp;
    const int64_t groups = s.kq / kNBitsGroup;
    float sum = 0.0f;
    if (s.block_size == 16) {
        // Low nibbles are block 2g, high nibbles block 2g + 1: two scales per activation block.
        for (int64_t g = 0; g < groups; ++g, qs += 16) {
            const int z0 = zp[2 * g], z1 = zp[2 * g + 1];
            int lo = 0, hi = 0;
            for (int j = 0; j < 16; ++j) {
                lo += ((qs[j] & 0x0F) - z0) * x[g].qs[j];
                hi += ((qs[j] >> 4) - z1) * x[g].qs[j + 16];
            }
            const float dx = fp16_to_fp32(x[g].d);
            sum += lo * (load_f32(row + 8 * g) * dx) + hi * (load_f32(row + 8 * g + 4) * dx);
        }
        return sum;
    }
    const int64_t groups_per_block = s.block_size / kNBitsGroup;
    for (int64_t g = 0; g < groups; ++g, qs += 16) {
        const int64_t b = g / groups_per_block;
        const int z = zp[b];
        int isum = 0;
        for (int j = 0; j < 16; ++j) {
            isum += ((qs[j] & 0x0F) - z) * x[g].qs[j];
            isum += ((qs[j] >> 4) - z) * x[g].qs[j + 16];
        }
        sum += isum * (load_f32(row + 4 * b) * fp16_to_fp32(x[g].d));
    }
    return sum;
}

void nbits_matmul(const NBitsMatrix &w, const float *x, int64_t m, float *y) {
    const NBitsShape &s = w.shape();
    const DotKernels &kern = active_kernels();
    const NBitsDotFn dot = kern.nbits4_q8_0;
    ThreadPool &pool = global_pool();

    // 1. Activations to Q8_0, each row zero-padded to kq (zeros do not change a block's amax).
    const int64_t act_blocks = s.kq / QK8_0;
    auto &act = t_act;
    if ((int64_t)act.size() < act_blocks * m) act.resize(act_blocks * m);
    block_q8_0 *xq = act.data();
    const int64_t k = s.k, kq = s.kq;
    pool.run(m, [&](int64_t r, int) {
        if (k == kq) {
            kern.to_q8_0(x + r * k, xq + r * act_blocks, kq);
            return;
        }
        auto &pad = t_pad;
        if ((int64_t)pad.size() < kq) pad.resize(kq);
        std::memcpy(pad.data(), x + r * k, k * sizeof(float));
        std::fill(pad.begin() + k, pad.begin() + kq, 0.0f);
        kern.to_q8_0(pad.data(), xq + r * act_blocks, kq);
    });

    // 2. Dot products, scheduled as matmul's.
    one_row_dot_blocks(s.n, m, w.nbytes(), [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        for (int64_t r = r0; r < r1; ++r) {
            const uint8_t *wr = w.data() + r * s.row_bytes;
            for (int64_t c = c0; c < c1; ++c) y[c * s.n + r] = dot(s, wr, xq + c * act_blocks);
        }
    });
}

}  // namespace phirt

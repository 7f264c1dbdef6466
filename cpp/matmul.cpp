// GEMV (m = 1, decode) and GEMM (m > 1, prefill) over the thread pool.
//
// Decode is bandwidth-bound: rows of W are split into contiguous chunks so each thread streams its
// own part once. Prefill is compute-bound: where the ISA has a packed GEMM (gemm.h) each task
// unpacks a panel of 16 weight rows once and runs every activation row over it; elsewhere work is
// tiled as (block of W rows) × (block of X rows) of multi-row dots (one_row_dot_blocks).
#include "matmul.h"

#include <algorithm>
#include <vector>

#include "dispatch.h"
#include "gemm.h"
#include "quants.h"
#include "threadpool.h"

namespace phirt {

namespace {

// Per-calling-thread scratch for converted activations: grows, never shrinks.
thread_local std::vector<uint8_t> t_act_scratch;
thread_local std::vector<uint8_t> t_gemm_act_scratch;

// Per-worker panel scratch for the packed GEMM (workers are persistent, so this is reused).
struct PanelScratch {
    std::vector<uint8_t> u, rows;
    std::vector<float> scale, offset;
};
thread_local PanelScratch t_panel;

// Below this many activation rows unpacking a panel costs more than it saves. Packed / one-row-dot
// time, AVX-512, 3072x3072 and 8192x3072 Q4_0 and Q4_K, warm and cold weights, 1-2 threads:
// m=3 1.04-1.51, m=4 0.89-1.06, m=5 0.75-1.00, m=8 0.54-0.76.
constexpr int64_t kMinPackedRows = 4;

// One row of activation blocks (Q8_0, Q8_1 or Q8_K, as the GEMV uses them) split into the packed
// GEMM's form (gemm.h): contiguous int8 and, per column group, d, zs = -zero · Σ q and s = d · Σ q.
void split_act_row(const uint8_t *src, int block_bytes, int64_t k, const GemmForm &form, int8_t *q,
                   float *d, int32_t *zs, float *s) {
    const int group = form.group;
    auto put = [&](int64_t g, float dg, int32_t sum) {
        d[g] = dg;
        zs[g] = -form.zero * sum;
        s[g] = dg * (float)sum;
    };
    if (block_bytes == (int)sizeof(block_q8_K)) {
        const int per_block = QK_K / group, sums_per_group = group / 16;
        for (int64_t b = 0; b < k / QK_K; ++b) {
            const auto &blk = reinterpret_cast<const block_q8_K *>(src)[b];
            std::memcpy(q + b * QK_K, blk.qs, QK_K);
            for (int g = 0; g < per_block; ++g) {
                int32_t sum = 0;
                for (int j = 0; j < sums_per_group; ++j) sum += blk.bsums[g * sums_per_group + j];
                put(b * per_block + g, blk.d, sum);
            }
        }
        return;
    }
    const bool q8_1 = block_bytes == (int)sizeof(block_q8_1);
    for (int64_t b = 0; b < k / QK8_0; ++b) {
        const uint8_t *blk = src + b * block_bytes;
        const int8_t *qs = reinterpret_cast<const int8_t *>(blk + (q8_1 ? 4 : 2));
        std::memcpy(q + b * QK8_0, qs, QK8_0);
        int32_t sum = 0;
        for (int j = 0; j < QK8_0; ++j) sum += qs[j];
        ggml_half h[2];
        std::memcpy(h, blk, q8_1 ? 4 : 2);
        put(b, fp16_to_fp32(h[0]), sum);
        if (q8_1) s[b] = fp16_to_fp32(h[1]);  // Q4_1/Q5_1 use ggml's f16 s, as the GEMV does
    }
}

template <class T>
T *grown(std::vector<T> &v, int64_t n) {
    if ((int64_t)v.size() < n) v.resize(n);
    return v.data();
}

// The m rows of x converted by `convert` (row_bytes each), in per-thread scratch.
const uint8_t *converted_acts(ConvertFn convert, const float *x, int64_t m, int64_t k,
                              int64_t row_bytes) {
    uint8_t *dst = grown(t_act_scratch, row_bytes * m);
    global_pool().run(m, [&](int64_t row, int) { convert(x + row * k, dst + row * row_bytes, k); });
    return dst;
}

// The m activation rows of `act` (in the GEMV's block format) split into the packed kernels'
// form (gemm.h), in per-thread scratch.
GemmActs split_acts(const uint8_t *act, int64_t act_row_bytes, int act_block_bytes, int64_t m,
                    int64_t k, const GemmForm &form) {
    const int64_t n_groups = k / form.group;
    // q, then d, zs and s (4-byte values, m · n_groups each) from a 64-byte boundary.
    const int64_t q_bytes = (m * k + 63) / 64 * 64, per_group = m * n_groups;
    uint8_t *base = grown(t_gemm_act_scratch, q_bytes + 3 * per_group * 4);
    auto *q = reinterpret_cast<int8_t *>(base);
    auto *d = reinterpret_cast<float *>(base + q_bytes);
    auto *zs = reinterpret_cast<int32_t *>(d + per_group);
    auto *s = reinterpret_cast<float *>(zs + per_group);
    global_pool().run(m, [&](int64_t i, int) {
        const int64_t at = i * n_groups;
        split_act_row(act + i * act_row_bytes, act_block_bytes, k, form, q + i * k, d + at, zs + at,
                      s + at);
    });
    return GemmActs{q, d, zs, s, k, n_groups};
}

// y = x · wᵀ through packed panels; `act` holds the m rows already in the GEMV's block format.
void matmul_packed(const TypeKernels &tk, const WeightView &w, const uint8_t *act,
                   int64_t act_row_bytes, int act_block_bytes, int64_t m, float *y) {
    ThreadPool &pool = global_pool();
    const GemmForm form = gemm_form(w.type);
    const int64_t k = w.k, n_groups = k / form.group;
    const GemmActs acts = split_acts(act, act_row_bytes, act_block_bytes, m, k, form);

    const int64_t n_panels = (w.n + kPanelRows - 1) / kPanelRows;
    pool.run(n_panels, [&](int64_t p, int) {
        PanelScratch &ps = t_panel;
        GemmPanel panel{grown(ps.u, kPanelRows * k), grown(ps.scale, n_groups * kPanelRows),
                        grown(ps.offset, n_groups * kPanelRows), k, form};
        const int64_t r0 = p * kPanelRows;
        const int n_rows = (int)std::min<int64_t>(kPanelRows, w.n - r0);
        tk.pack_panel(w.type, w.data + r0 * w.row_bytes, w.row_bytes, n_rows, &panel,
                      grown(ps.rows, kPanelRows * k));
        tk.gemm_panel(panel, acts, m, y + r0, w.n, n_rows);
    });
}

}  // namespace

bool uses_packed_gemm(const DotKernels &kern, int type, int64_t m) {
    const WeightFormat *f = weight_format(type);
    return m >= kMinPackedRows && f != nullptr && (kern.*f->kernels).gemm_panel != nullptr;
}

bool matmul_supported(int type) {
    return weight_format(type) != nullptr;
}

std::string validate_weight(int type, int64_t n, int64_t k, int64_t nbytes) {
    const TypeTraits *t = type_traits(type);
    if (t == nullptr) return "unsupported GGML type id " + std::to_string(type);
    if (!matmul_supported(type)) return std::string(t->name) + " is not a weight format";
    if (n <= 0 || k <= 0) return "matrix shape must be positive";
    const int64_t rb = row_bytes(*t, k);
    if (rb < 0)
        return std::string(t->name) + " needs k to be a positive multiple of " +
               std::to_string(t->block_size) + ", got k=" + std::to_string(k);
    if (n > nbytes / rb)
        return "buffer holds " + std::to_string(nbytes) + " bytes, too few for " + t->name + " " +
               std::to_string(n) + "x" + std::to_string(k) + " (" + std::to_string(rb) +
               " bytes per row)";
    return {};
}

void matmul(const WeightView &w, const float *x, int64_t m, float *y, bool batch_invariant) {
    const DotKernels &kern = active_kernels();
    const WeightFormat &f = *weight_format(w.type);  // validated by the caller
    const TypeKernels &tk = kern.*f.kernels;
    ThreadPool &pool = global_pool();

    // 1. Activations into the dot format (F32 weights use x as it is).
    const uint8_t *act = reinterpret_cast<const uint8_t *>(x);
    int64_t act_row_bytes = w.k * (int64_t)sizeof(float);
    if (f.act.convert != nullptr) {
        act_row_bytes = w.k / f.act.block * f.act.bytes;
        act = converted_acts(kern.*f.act.convert, x, m, w.k, act_row_bytes);
    }

    // 2. Dot products, the one-row dot's for every output. A type with dot_acts takes one weight
    // row at a time against up to kMaxDotActs activation rows, each block decoded once for all;
    // that also streams a single row in decode, which on the Zen 4 read memory faster than the
    // 4-row kernels (Phi-3-mini Q4_K_M decode, 2 threads: 9.1-10.0 -> 12.9-15.1 tok/s, AVX2
    // 9.5-10.4 -> 11.7-12.0). Other types take kMaxDotRows weight rows at a time against each
    // activation row (rows r..r+nr-1 of output row c are adjacent in y). The packed GEMM sums in
    // another order, so a batch-invariant call keeps to the one-row dots.
    if (!batch_invariant && uses_packed_gemm(kern, w.type, m)) {
        matmul_packed(tk, w, act, act_row_bytes, f.act.bytes, m, y);
        return;
    }
    auto dots = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        if (tk.dot_acts != nullptr) {
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = c0; c < c1; c += kMaxDotActs)
                    tk.dot_acts(w.k, w.data + r * w.row_bytes, act + c * act_row_bytes,
                                act_row_bytes, (int)std::min<int64_t>(kMaxDotActs, c1 - c),
                                y + c * w.n + r, w.n);
            return;
        }
        for (int64_t r = r0; r < r1; r += kMaxDotRows) {
            const int nr = (int)std::min<int64_t>(kMaxDotRows, r1 - r);
            for (int64_t c = c0; c < c1; ++c)
                tk.dot_rows(w.k, w.data + r * w.row_bytes, w.row_bytes, nr, act + c * act_row_bytes,
                            y + c * w.n + r);
        }
    };
    one_row_dot_blocks(w.n, m, w.n * w.row_bytes, dots);
}

void matmul_q4x16(const Q4x16Matrix &w, const float *x, int64_t m, float *y) {
    const DotKernels &kern = active_kernels();
    Q4x16GemmFn gemm = kern.q4_0x16 != nullptr ? kern.q4_0x16 : q4x16_gemm_ref;
    if (m >= kMinManyRows && kern.q4_0x16_many != nullptr) gemm = kern.q4_0x16_many;
    const int64_t k = w.k(), act_row_bytes = k / QK8_0 * (int64_t)sizeof(block_q8_0);
    const uint8_t *act = converted_acts(kern.to_q8_0, x, m, k, act_row_bytes);
    const GemmActs acts =
        split_acts(act, act_row_bytes, sizeof(block_q8_0), m, k, gemm_form((int)GgmlType::Q4_0));
    // decode streams each byte once: contiguous runs of panels
    contiguous_chunks(w.n_panels(), w.nbytes(), [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const int n_rows = (int)std::min<int64_t>(kPanelRows, w.n() - p * kPanelRows);
            gemm(w.panel(p), w.n_blocks(), acts, m, y + p * kPanelRows, w.n(), n_rows);
        }
    });
}

void get_rows(const WeightView &w, const int32_t *ids, int64_t t, float *out) {
    for (int64_t i = 0; i < t; ++i)
        dequantize_row(w.type, w.data + (int64_t)ids[i] * w.row_bytes, out + i * w.k, w.k);
}

}  // namespace phirt

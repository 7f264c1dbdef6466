// Odd shapes through every kernel entry point, on every ISA this build has and this CPU runs, with
// each buffer allocated at exactly its size: row lengths of one block, three, five and other
// counts that are no multiple of a SIMD width or of a kernel's unroll (and, for float weights,
// lengths of 1, 3, 17, ...), a single output row (N = 1), a single activation row (M = 1) and
// M just past a GEMM tile, heads of odd width and contexts of one. Results are held to the scalar
// path within a float-order bound, and multi-threaded pools to the caller's own thread. The point
// of the file is the sanitizer build (.ci/sanitize.sh, ASan + UBSan): a read one byte past a
// buffer ends the run there. No pybind11.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../dispatch.h"
#include "../formats.h"
#include "../matmul.h"
#include "../nbits.h"
#include "../ops.h"
#include "../quants.h"
#include "../threadpool.h"

using namespace phirt;

namespace {

int g_passed = 0, g_failed = 0;
std::mt19937 g_rng(1234);

std::string fmt(const char *f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof(buf), f, ap);
    va_end(ap);
    return buf;
}

void check(bool ok, const std::string &what) {
    if (ok) {
        ++g_passed;
        return;
    }
    if (++g_failed <= 40) std::printf("  FAIL %s\n", what.c_str());
}

std::vector<float> randoms(int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (float &x : v) x = dist(g_rng);
    return v;
}

// |a - b| <= rel * magnitude + abs, elementwise; magnitude[i] bounds the sum of |terms| of a[i].
bool close(const std::vector<float> &a, const std::vector<float> &b, const std::vector<double> &mag,
           double rel, double abs) {
    for (size_t i = 0; i < a.size(); ++i)
        if (!std::isfinite(a[i]) || !(std::fabs((double)a[i] - b[i]) <= rel * mag[i] + abs))
            return false;
    return true;
}

// Weight rows of type `type` quantized from random floats (valid scales, so no NaN), exactly
// n * row_bytes long; `deq` gets the dequantized values.
std::vector<uint8_t> weights(int type, int64_t n, int64_t k, std::vector<float> *deq) {
    const TypeTraits &t = *type_traits(type);
    const int64_t rb = row_bytes(t, k);
    const std::vector<float> x = randoms(n * k);
    std::vector<uint8_t> w(n * rb);
    deq->assign(n * k, 0.0f);
    for (int64_t r = 0; r < n; ++r) {
        quantize_row(type, x.data() + r * k, w.data() + r * rb, k);
        dequantize_row(type, w.data() + r * rb, deq->data() + r * k, k);
    }
    return w;
}

const int kTypes[] = {(int)GgmlType::F32,  (int)GgmlType::F16,  (int)GgmlType::BF16,
                      (int)GgmlType::Q4_0, (int)GgmlType::Q4_1, (int)GgmlType::Q5_0,
                      (int)GgmlType::Q5_1, (int)GgmlType::Q8_0, (int)GgmlType::Q4_K,
                      (int)GgmlType::Q5_K, (int)GgmlType::Q6_K};

// Row lengths: for float types any length; for block types counts of blocks that leave every
// unroll a tail (1, 3, 5, 7, 9, 17 blocks).
std::vector<int64_t> row_lengths(int type) {
    const int64_t b = type_traits(type)->block_size;
    if (b == 1) return {1, 3, 7, 15, 17, 31, 33, 63, 65, 100};
    if (b == QK_K) return {b, 3 * b, 5 * b};
    return {b, 3 * b, 5 * b, 7 * b, 9 * b, 17 * b};
}

// matmul and get_rows: y (m × n) under each ISA against scalar, and the scalar path against the
// dequantized weights times x (bounded by what quantizing the activations costs).
void test_matmul(const std::vector<std::string> &isas) {
    int cases = 0;
    for (int type : kTypes) {
        if (!matmul_supported(type)) continue;
        for (int64_t k : row_lengths(type)) {
            for (int64_t n : {1, 2, 5, 17, 33}) {
                std::vector<float> deq;
                const std::vector<uint8_t> w = weights(type, n, k, &deq);
                const WeightView view{w.data(), type, n, k, row_bytes(*type_traits(type), k)};
                for (int64_t m : {1, 2, 3, 4, 5, 15, 16, 17, 33}) {
                    const std::vector<float> x = randoms(m * k);
                    std::vector<double> mag(m * n, 0.0);
                    std::vector<float> exact(m * n);
                    for (int64_t r = 0; r < m; ++r)
                        for (int64_t j = 0; j < n; ++j) {
                            double s = 0, a = 0;
                            for (int64_t i = 0; i < k; ++i) {
                                s += (double)x[r * k + i] * deq[j * k + i];
                                a += std::fabs((double)x[r * k + i] * deq[j * k + i]);
                            }
                            exact[r * n + j] = (float)s;
                            mag[r * n + j] = a;
                        }
                    std::vector<float> ref;
                    for (const std::string &isa : isas) {
                        set_isa(isa);
                        std::vector<float> y(m * n);
                        matmul(view, x.data(), m, y.data());
                        if (isa == "scalar") {
                            ref = y;
                            // 8-bit activations: at most ~1/127 of each term's size, F16/BF16
                            // activations 2^-8 (bf16)
                            check(close(y, exact, mag, 1.0 / 64, 1e-5),
                                  fmt("matmul %s n=%lld k=%lld m=%lld: scalar vs exact",
                                      type_traits(type)->name, (long long)n, (long long)k,
                                      (long long)m));
                        } else {
                            check(close(y, ref, mag, 2e-5, 1e-6),
                                  fmt("matmul %s n=%lld k=%lld m=%lld: %s vs scalar",
                                      type_traits(type)->name, (long long)n, (long long)k,
                                      (long long)m, isa.c_str()));
                        }
                        ++cases;
                    }
                }
                // get_rows: each id's dequantized row, first and last row included
                const std::vector<int32_t> ids = {0, (int32_t)(n - 1), (int32_t)(n / 2)};
                std::vector<float> rows(ids.size() * k);
                get_rows(view, ids.data(), (int64_t)ids.size(), rows.data());
                bool same = true;
                for (size_t i = 0; i < ids.size(); ++i)
                    same &= std::memcmp(rows.data() + i * k, deq.data() + ids[i] * k,
                                        k * sizeof(float)) == 0;
                check(same, fmt("get_rows %s n=%lld k=%lld", type_traits(type)->name, (long long)n,
                                (long long)k));
            }
        }
    }
    std::printf("%-44s %6d cases\n", "matmul / get_rows, odd shapes, every ISA", cases);
}

// Threaded pools (3 threads, and a PoolScope-installed pool) give the caller-only bits.
void test_pools() {
    const int type = (int)GgmlType::Q4_0;
    const int64_t n = 67, k = 5 * 32, m = 33;
    std::vector<float> deq;
    const std::vector<uint8_t> w = weights(type, n, k, &deq);
    const WeightView view{w.data(), type, n, k, row_bytes(*type_traits(type), k)};
    const std::vector<float> x = randoms(m * k);
    std::vector<float> one(m * n), three(m * n), scoped(m * n);
    set_num_threads(1);
    matmul(view, x.data(), m, one.data());
    set_num_threads(3);
    matmul(view, x.data(), m, three.data());
    {
        ThreadPool own(2);
        PoolScope scope(&own);
        check(get_num_threads() == 2, "PoolScope: kernels see the installed pool");
        matmul(view, x.data(), m, scoped.data());
    }
    check(get_num_threads() == 3, "PoolScope: the default pool is back after the scope");
    check(one == three && one == scoped, "matmul: 1 thread == 3 threads == a scoped pool");
    std::printf("%-44s %6s\n", "thread pools and PoolScope", "done");
}

// Norms, rope, softmax, activations and the KV cache on widths of 1 to 100 and odd head sizes.
void test_ops() {
    int cases = 0;
    for (int64_t k : {1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 100}) {
        for (int64_t m : {1, 3}) {
            const std::vector<float> x = randoms(m * k), w = randoms(k), b = randoms(k);
            std::vector<float> y(m * k);
            rms_norm(x.data(), w.data(), 1e-5f, m, k, y.data());
            layer_norm(x.data(), w.data(), b.data(), 1e-5f, m, k, y.data());
            layer_norm(x.data(), nullptr, nullptr, 1e-5f, m, k, y.data());
            std::vector<float> s = x;
            softmax(s.data(), m, k);
            bool sums = true;
            for (int64_t r = 0; r < m; ++r) {
                double t = 0;
                for (int64_t i = 0; i < k; ++i) t += s[r * k + i];
                sums &= std::fabs(t - 1.0) < 1e-5;
            }
            check(sums, fmt("softmax m=%lld n=%lld sums to 1", (long long)m, (long long)k));
            const std::vector<float> gu = randoms(m * 2 * k);
            silu_mul(gu.data(), gu.data() + k, m, k, 2 * k, y.data());
            gelu(x.data(), m * k, y.data());
            cases += 5;
        }
    }
    for (int64_t hd : {2, 6, 8, 10, 34, 80}) {
        for (int64_t n_rot : {(int64_t)2, hd}) {
            const int64_t m = 3, n_head = 2;
            std::vector<float> x = randoms(m * n_head * hd);
            const std::vector<int32_t> pos = {0, 1, 7};
            const std::vector<float> ff = randoms(n_rot / 2, 0.1f);
            std::vector<float> ff_pos(ff.size());
            for (size_t i = 0; i < ff.size(); ++i) ff_pos[i] = 1.0f + std::fabs(ff[i]);
            rope(x.data(), pos.data(), m, n_head, hd, n_rot, 10000.0f, 1.0f, ff_pos.data(), 1.0f,
                 true);
            rope(x.data(), pos.data(), m, n_head, hd, n_rot, 10000.0f, 0.5f, nullptr, 1.1f, false);
            cases += 2;
        }
    }
    std::printf("%-44s %6d cases\n", "ops, odd widths", cases);
}

// Attention (f16 and Q8_0 caches) on odd head sizes, a context of one, windows; every ISA
// against scalar.
void test_attention(const std::vector<std::string> &isas) {
    int cases = 0;
    struct Shape {
        int64_t n_head, n_kv_head, hd, n_ctx, m, pos0, window;
    };
    const Shape shapes[] = {
        {1, 1, 8, 1, 1, 0, 0},    {2, 1, 40, 3, 1, 2, 0},  {3, 3, 72, 5, 5, 0, 2},
        {4, 2, 96, 9, 2, 7, 0},   {1, 1, 32, 1, 1, 0, 1},  {2, 2, 80, 17, 17, 0, 0},
        {6, 3, 64, 33, 1, 32, 5}, {1, 1, 160, 4, 3, 1, 0},
    };
    for (const Shape &s : shapes) {
        for (bool q8 : {false, true}) {
            if (q8 && s.hd % QK8_0 != 0) continue;
            const int64_t rows = s.n_kv_head * s.n_ctx;
            const int64_t row_elems = q8 ? s.hd / QK8_0 : s.hd;  // blocks or halfs per row
            std::vector<ggml_half> kh, vh;
            std::vector<block_q8_0> kq, vq;
            const std::vector<float> kf = randoms(rows * s.hd), vf = randoms(rows * s.hd);
            if (q8) {
                kq.resize(rows * row_elems);
                vq.resize(rows * row_elems);
                for (int64_t r = 0; r < rows; ++r) {
                    quantize_row_q8_0_act(kf.data() + r * s.hd, kq.data() + r * row_elems, s.hd);
                    quantize_row_q8_0_act(vf.data() + r * s.hd, vq.data() + r * row_elems, s.hd);
                }
            } else {
                kh.resize(rows * s.hd);
                vh.resize(rows * s.hd);
                quantize_row_f16_ref(kf.data(), kh.data(), rows * s.hd);
                quantize_row_f16_ref(vf.data(), vh.data(), rows * s.hd);
            }
            const std::vector<float> q = randoms(s.m * s.n_head * s.hd);
            std::vector<double> mag(s.m * s.n_head * s.hd, 0.0);
            for (size_t i = 0; i < mag.size(); ++i) mag[i] = 8.0;  // |v| sums under softmax
            std::vector<float> ref;
            for (const std::string &isa : isas) {
                set_isa(isa);
                std::vector<float> out(s.m * s.n_head * s.hd);
                const float scale = 1.0f / std::sqrt((float)s.hd);
                if (q8)
                    attention_q8(q.data(), kq.data(), vq.data(), s.m, s.n_head, s.n_kv_head, s.hd,
                                 s.n_ctx, s.pos0, scale, s.window, out.data());
                else
                    attention(q.data(), kh.data(), vh.data(), s.m, s.n_head, s.n_kv_head, s.hd,
                              s.n_ctx, s.pos0, scale, s.window, out.data());
                if (isa == "scalar")
                    ref = out;
                else
                    check(close(out, ref, mag, 1e-5, 1e-5),
                          fmt("attention%s hd=%lld n_ctx=%lld m=%lld pos0=%lld window=%lld: %s",
                              q8 ? "_q8" : "", (long long)s.hd, (long long)s.n_ctx, (long long)s.m,
                              (long long)s.pos0, (long long)s.window, isa.c_str()));
                ++cases;
            }
            // the cache writers at the last position of the context
            const std::vector<float> x = randoms(s.n_kv_head * s.hd);
            if (q8)
                kv_store_q8(x.data(), 1, s.n_kv_head, s.hd, kq.data(), s.n_ctx, s.n_ctx - 1);
            else
                kv_store(x.data(), 1, s.n_kv_head, s.hd, kh.data(), s.n_ctx, s.n_ctx - 1);
        }
    }
    std::printf("%-44s %6d cases\n", "attention, odd heads and contexts", cases);
}

// ONNX MatMulNBits: K not a multiple of the block size (a padded last block), N = 1, odd blocks.
void test_nbits(const std::vector<std::string> &isas) {
    int cases = 0;
    for (int bs : {16, 32, 64, 128}) {
        for (int64_t k : {(int64_t)1, (int64_t)bs - 1, (int64_t)bs + 3, 3 * (int64_t)bs + 5}) {
            for (int64_t n : {1, 3, 17}) {
                for (int level : {0, 4}) {  // float activations; int8 ones (packed GEMM at m >= 4)
                    if (!nbits_validate(n, k, bs, 4, level).empty()) continue;
                    for (bool zp : {false, true}) {
                        const NBitsShape s = nbits_shape(n, k, bs, 4, level, zp);
                        std::uniform_int_distribution<int> byte(0, 255);
                        std::vector<uint8_t> b(n * s.onnx_blocks * bs / 2);
                        for (uint8_t &v : b) v = (uint8_t)byte(g_rng);
                        std::vector<float> scales = randoms(n * s.onnx_blocks, 0.05f);
                        std::vector<uint8_t> zps(n * ((s.onnx_blocks + 1) / 2));
                        for (uint8_t &v : zps) v = (uint8_t)byte(g_rng);
                        NBitsMatrix mat(s);
                        repack_matmulnbits(
                            {b.data(), scales.data(), false, zp ? zps.data() : nullptr}, &mat);
                        std::vector<float> deq(n * k);
                        nbits_dequantize(mat, deq.data());
                        for (int64_t m : {1, 4, 5}) {
                            const std::vector<float> x = randoms(m * k);
                            std::vector<double> mag(m * n, 0.0);
                            for (int64_t r = 0; r < m; ++r)
                                for (int64_t j = 0; j < n; ++j)
                                    for (int64_t i = 0; i < k; ++i)
                                        mag[r * n + j] +=
                                            std::fabs((double)x[r * k + i] * deq[j * k + i]);
                            std::vector<float> ref;
                            for (const std::string &isa : isas) {
                                set_isa(isa);
                                std::vector<float> y(m * n);
                                nbits_matmul(mat, x.data(), m, y.data());
                                if (isa == "scalar")
                                    ref = y;
                                else
                                    check(close(y, ref, mag, 2e-5, 1e-6),
                                          fmt("nbits bs=%d k=%lld n=%lld m=%lld zp=%d level=%d: %s",
                                              bs, (long long)k, (long long)n, (long long)m, (int)zp,
                                              level, isa.c_str()));
                                ++cases;
                            }
                        }
                    }
                }
            }
        }
    }
    std::printf("%-44s %6d cases\n", "MatMulNBits, padded last blocks", cases);
}

}  // namespace

int main() {
    const std::vector<std::string> isas = available_isas();
    std::string names;
    for (const std::string &s : isas) names += " " + s;
    std::printf("ISAs:%s\n", names.c_str());
    set_num_threads(3);  // several workers even on a small machine: the split code runs too
    test_matmul(isas);
    test_ops();
    test_attention(isas);
    test_nbits(isas);
    test_pools();
    set_isa(isas.back());
    std::printf("odd shapes: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

// One quantized matmul, y = x · Wᵀ (W: n × k in a GGML block type, x: m × k float), run by phirt
// (cpp/matmul.h, one NEON level pinned with set_isa; Q4_0 in the interleaved layout where the
// level has its kernel, as phirt's loader does, the copy made at setup) or by ggml (the CPU
// backend's mul_mat, with the weight in its repacking buffer type whenever ggml would put it there,
// as llama.cpp does), on one thread. Built by benchmarks/neon_vs_ggml.py against ggml's sources
// from the llama-cpp-python sdist; never a test.
//
//   bench_matmul IMPL TYPE N K M REPS [MODE]
//     IMPL  phirt:<level> (neon, neon_dotprod, neon_i8mm, ...) or ggml
//     MODE  count (default): setup, then REPS calls and nothing else (instruction counts are taken
//           by the caller as the difference between two REPS)
//           time: REPS timed calls after one warm-up; prints seconds per call
//           check: phirt (every level this CPU runs) and ggml on the same data; prints the largest
//           difference relative to the largest |y|
//
// Weights are random bytes with sane f16 scale fields (every code pattern, no quantizer run), so
// setup costs little next to the calls.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dispatch.h"
#include "formats.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "matmul.h"
#include "q4x16.h"
#include "threadpool.h"

namespace {

// What phirt's runtime multiplies with at the active level (formats/source.py GGMLMatrix),
// PHIRT_Q4_0_INTERLEAVE=0 keeping the file's layout as there.
class PhirtMatmul {
   public:
    explicit PhirtMatmul(const phirt::WeightView &v) : view_(v) {
        const char *flag = std::getenv("PHIRT_Q4_0_INTERLEAVE");
        const bool allowed = flag == nullptr || std::strcmp(flag, "0") != 0;
        if (allowed && v.type == (int)phirt::GgmlType::Q4_0 &&
            phirt::active_kernels().q4_0x16 != nullptr)
            w16_ = std::make_unique<phirt::Q4x16Matrix>(v.data, v.row_bytes, v.n, v.k);
    }
    void run(const float *x, int64_t m, float *y) const {
        if (w16_)
            phirt::matmul_q4x16(*w16_, x, m, y);
        else
            phirt::matmul(view_, x, m, y);
    }

   private:
    phirt::WeightView view_;
    std::unique_ptr<phirt::Q4x16Matrix> w16_;
};

uint64_t g_state = 0x9E3779B97F4A7C15ull;
uint64_t next_random() {  // xorshift64*
    g_state ^= g_state >> 12, g_state ^= g_state << 25, g_state ^= g_state >> 27;
    return g_state * 0x2545F4914F6CDD1Dull;
}

struct TypeInfo {
    const char *name;
    phirt::GgmlType type;
    std::vector<int> half_fields;  // byte offsets of the f16 scale fields of a block
};

const TypeInfo kTypes[] = {
    {"q4_0", phirt::GgmlType::Q4_0, {0}},    {"q4_1", phirt::GgmlType::Q4_1, {0, 2}},
    {"q5_0", phirt::GgmlType::Q5_0, {0}},    {"q5_1", phirt::GgmlType::Q5_1, {0, 2}},
    {"q8_0", phirt::GgmlType::Q8_0, {0}},    {"q4_k", phirt::GgmlType::Q4_K, {0, 2}},
    {"q5_k", phirt::GgmlType::Q5_K, {0, 2}}, {"q6_k", phirt::GgmlType::Q6_K, {208}},
};

std::vector<uint8_t> random_weights(const TypeInfo &t, int64_t n, int64_t k) {
    const phirt::TypeTraits &tt = *phirt::type_traits((int)t.type);
    const int64_t blocks = n * (k / tt.block_size);
    std::vector<uint8_t> w(blocks * tt.type_size);
    for (size_t i = 0; i + 8 <= w.size(); i += 8) {
        const uint64_t r = next_random();
        std::memcpy(w.data() + i, &r, 8);
    }
    for (int64_t b = 0; b < blocks; ++b)
        for (int off : t.half_fields) {
            const phirt::ggml_half h =
                phirt::fp32_to_fp16(0.001f + (float)(next_random() % 1000) * 1e-5f);
            std::memcpy(w.data() + b * tt.type_size + off, &h, 2);
        }
    return w;
}

std::vector<float> random_acts(int64_t count) {
    std::vector<float> x(count);
    for (auto &v : x) v = (float)((int64_t)(next_random() % 2001) - 1000) * 1e-3f;
    return x;
}

// ggml's mul_mat with the weight where llama.cpp would put it: the CPU backend's extra (repacking)
// buffer type when it takes this op, the plain CPU buffer otherwise.
struct GgmlMatmul {
    ggml_backend_t backend = nullptr;
    ggml_context *ctx_w = nullptr, *ctx = nullptr;
    ggml_backend_buffer_t wbuf = nullptr;
    ggml_gallocr_t galloc = nullptr;
    ggml_cgraph *graph = nullptr;
    ggml_tensor *x = nullptr, *y = nullptr;
    std::string buffer_name;

    GgmlMatmul(ggml_type type, int64_t n, int64_t k, int64_t m, const uint8_t *wdata) {
        backend = ggml_backend_cpu_init();
        ggml_backend_cpu_set_n_threads(backend, 1);
        ggml_backend_dev_t dev = ggml_backend_get_device(backend);
        ggml_init_params pw = {ggml_tensor_overhead() * 2, nullptr, true};
        ctx_w = ggml_init(pw);
        ggml_tensor *w = ggml_new_tensor_2d(ctx_w, type, k, n);
        ggml_init_params pc = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
        ctx = ggml_init(pc);
        x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
        y = ggml_mul_mat(ctx, w, x);

        auto get_extra = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
            ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
        if (get_extra != nullptr)
            for (ggml_backend_buffer_type_t *b = get_extra(dev); b && *b; ++b) {
                wbuf = ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, *b);
                if (wbuf != nullptr && ggml_backend_dev_supports_op(dev, y)) break;
                if (wbuf != nullptr) ggml_backend_buffer_free(wbuf);
                wbuf = nullptr;
                w->buffer = nullptr, w->data = nullptr, w->extra = nullptr;
            }
        if (wbuf == nullptr)
            wbuf = ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, ggml_backend_cpu_buffer_type());
        buffer_name = ggml_backend_buffer_name(wbuf);
        ggml_backend_tensor_set(w, wdata, 0, ggml_nbytes(w));

        graph = ggml_new_graph(ctx);
        ggml_build_forward_expand(graph, y);
        galloc = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
        ggml_gallocr_alloc_graph(galloc, graph);
    }
    void run(const float *xs, float *ys) {
        ggml_backend_tensor_set(x, xs, 0, ggml_nbytes(x));
        ggml_backend_graph_compute(backend, graph);
        ggml_backend_tensor_get(y, ys, 0, ggml_nbytes(y));
    }
    ~GgmlMatmul() {
        ggml_gallocr_free(galloc);
        ggml_backend_buffer_free(wbuf);
        ggml_free(ctx);
        ggml_free(ctx_w);
        ggml_backend_free(backend);
    }
};

double seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 7) {
        std::fprintf(stderr, "usage: %s IMPL TYPE N K M REPS [count|time|check]\n", argv[0]);
        return 2;
    }
    const std::string impl = argv[1], tname = argv[2], mode = argc > 7 ? argv[7] : "count";
    const int64_t n = std::atoll(argv[3]), k = std::atoll(argv[4]), m = std::atoll(argv[5]);
    const int reps = std::atoi(argv[6]);
    const TypeInfo *t = nullptr;
    for (const TypeInfo &ti : kTypes)
        if (tname == ti.name) t = &ti;
    if (t == nullptr) {
        std::fprintf(stderr, "unknown type %s\n", tname.c_str());
        return 2;
    }
    const std::vector<uint8_t> w = random_weights(*t, n, k);
    const std::vector<float> x = random_acts(m * k);
    std::vector<float> y(m * n);
    phirt::set_num_threads(1);
    const phirt::WeightView view{w.data(), (int)t->type, n, k, (int64_t)(w.size() / (size_t)n)};

    if (mode == "check") {
        GgmlMatmul g((ggml_type)t->type, n, k, m, w.data());
        std::vector<float> yg(m * n);
        g.run(x.data(), yg.data());
        float ymax = 0.0f;
        for (float v : yg) ymax = std::fmax(ymax, std::fabs(v));
        for (const std::string &isa : phirt::available_isas()) {
            phirt::set_isa(isa);
            PhirtMatmul(view).run(x.data(), m, y.data());
            double worst = 0.0;
            for (size_t i = 0; i < y.size(); ++i)
                worst = std::fmax(worst, std::fabs((double)y[i] - yg[i]));
            std::printf(
                "check %s %lldx%lld m=%lld: phirt %s vs ggml (%s): max |diff| / max |y| = "
                "%.2e\n",
                t->name, (long long)n, (long long)k, (long long)m, isa.c_str(),
                g.buffer_name.c_str(), worst / ymax);
        }
        return 0;
    }

    if (impl.rfind("phirt:", 0) == 0) {
        phirt::set_isa(impl.substr(6));
        const PhirtMatmul mm(view);
        if (mode == "time") mm.run(x.data(), m, y.data());
        const double t0 = seconds();
        for (int r = 0; r < reps; ++r) mm.run(x.data(), m, y.data());
        if (mode == "time") std::printf("%.9f\n", (seconds() - t0) / reps);
    } else if (impl == "ggml") {
        GgmlMatmul g((ggml_type)t->type, n, k, m, w.data());
        if (mode == "time") g.run(x.data(), y.data());
        const double t0 = seconds();
        for (int r = 0; r < reps; ++r) g.run(x.data(), y.data());
        if (mode == "time") std::printf("%.9f\n", (seconds() - t0) / reps);
        std::fprintf(stderr, "ggml weight buffer: %s\n", g.buffer_name.c_str());
    } else {
        std::fprintf(stderr, "unknown impl %s\n", impl.c_str());
        return 2;
    }
    return 0;
}

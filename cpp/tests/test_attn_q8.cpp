// The Q8_0 KV cache attention loops (attn_q8.h): each SIMD twin bit-identical to the scalar spec,
// and the spec against a double-precision evaluation of its formula. A binary of its own so the
// kernel-table tests (test_kernels.cpp) stay one file per subject. No pybind11 here.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../attn_q8.h"
#include "../dispatch.h"
#include "../dot.h"
#include "../formats.h"

using namespace phirt;

namespace {

int g_passed = 0, g_failed = 0;

void check(bool ok, const char *what, long hd, long n) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    std::printf("FAIL %s (hd=%ld n=%ld)\n", what, hd, n);
}

std::vector<block_q8_0> random_blocks(std::mt19937 &rng, size_t count) {
    std::uniform_int_distribution<int> q(-127, 127);
    std::uniform_real_distribution<float> d(1e-4f, 0.05f);
    std::vector<block_q8_0> out(count);
    for (auto &b : out) {
        b.d = fp32_to_fp16(d(rng));
        for (auto &v : b.qs) v = (int8_t)q(rng);
    }
    return out;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void test_reference_formula(std::mt19937 &rng) {
    const long hd = 96, n = 7, nb = hd / QK8_0;
    const auto k = random_blocks(rng, n * nb), q = random_blocks(rng, nb),
               v = random_blocks(rng, n * nb);
    std::vector<float> s(n), p(n), o(hd, 0.5f);
    for (long j = 0; j < n; ++j) p[j] = 0.1f * (float)(j + 1);
    attn_q8_scores_ref(hd, n, k.data(), q.data(), 0.25f, s.data());
    attn_q8_values_ref(hd, n, p.data(), v.data(), o.data());
    for (long j = 0; j < n; ++j) {
        double want = 0.0;
        for (long i = 0; i < hd; ++i)
            want += (double)fp16_to_fp32(k[j * nb + i / 32].d) * k[j * nb + i / 32].qs[i % 32] *
                    fp16_to_fp32(q[i / 32].d) * q[i / 32].qs[i % 32];
        check(std::fabs(s[j] - 0.25 * want) <= 1e-5 * (std::fabs(0.25 * want) + 1e-3),
              "scores: reference vs double", hd, n);
    }
    for (long i = 0; i < hd; ++i) {
        double want = 0.5;
        for (long j = 0; j < n; ++j)
            want +=
                (double)fp16_to_fp32(v[j * nb + i / 32].d) * v[j * nb + i / 32].qs[i % 32] * p[j];
        check(std::fabs(o[i] - want) <= 1e-5 * (std::fabs(want) + 1e-3),
              "values: reference vs double", hd, n);
    }
}

void test_twin(const DotKernels &simd, std::mt19937 &rng) {
    const DotKernels &ref = dot_kernels_scalar();
    for (long hd : {32L, 64L, 96L, 128L, 160L}) {
        for (long n : {1L, 2L, 7L, 9L, 16L, 33L, 200L}) {
            const long nb = hd / QK8_0;
            const auto k = random_blocks(rng, n * nb), q = random_blocks(rng, nb);
            const auto v = random_blocks(rng, n * nb);
            std::vector<float> s_ref(n), s_simd(n), p(n);
            ref.attn_q8_scores(hd, n, k.data(), q.data(), 0.1f, s_ref.data());
            simd.attn_q8_scores(hd, n, k.data(), q.data(), 0.1f, s_simd.data());
            check(same_bits(s_ref, s_simd), "scores: twin vs reference", hd, n);
            std::uniform_real_distribution<float> pd(0.0f, 1.0f);
            for (auto &x : p) x = pd(rng);
            std::vector<float> o_ref(hd), o_simd;
            for (long i = 0; i < hd; ++i) o_ref[i] = pd(rng) - 0.5f;
            o_simd = o_ref;
            ref.attn_q8_values(hd, n, p.data(), v.data(), o_ref.data());
            simd.attn_q8_values(hd, n, p.data(), v.data(), o_simd.data());
            check(same_bits(o_ref, o_simd), "values: twin vs reference", hd, n);
        }
    }
}

}  // namespace

int main() {
    std::mt19937 rng(1234);
    test_reference_formula(rng);
    for (const std::string &isa : available_isas()) {  // what this build has and this CPU runs
        if (isa == "scalar") continue;
        set_isa(isa);
        std::printf("[%s] Q8_0 attention loops == scalar bits\n", isa.c_str());
        test_twin(active_kernels(), rng);
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

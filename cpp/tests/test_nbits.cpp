// MatMulNBits kernel twins against the scalar spec (nbits_ref.cpp), for every ISA table this
// machine runs: the activation quantizer and the panel packer byte for byte, the row dots within
// the float-order bound. (tests/test_nbits.py holds the spec itself to onnxruntime.)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../dispatch.h"
#include "../nbits.h"

using namespace phirt;

namespace {

int g_passed = 0, g_failed = 0;

void check(bool ok, const std::string &what) {
    if (ok) {
        ++g_passed;
        return;
    }
    if (++g_failed <= 40) std::printf("  FAIL %s\n", what.c_str());
}

struct Case {
    int bits, block_size;
    bool zero_points;
    int64_t n, k;
};

// A repacked matrix of random codes, scales (both signs) and zero points.
NBitsMatrix make_matrix(const Case &c, std::mt19937 &rng) {
    const NBitsShape s = nbits_shape(c.n, c.k, c.block_size, c.bits, 4, c.zero_points);
    std::uniform_int_distribution<int> byte(0, 255);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    std::vector<uint8_t> b(s.n * s.onnx_blocks * c.block_size * c.bits / 8);
    for (auto &v : b) v = (uint8_t)byte(rng);
    std::vector<float> scales(s.n * s.onnx_blocks);
    for (auto &v : scales) v = normal(rng);
    std::vector<uint8_t> zp(s.n * ((s.onnx_blocks * c.bits + 7) / 8));
    for (auto &v : zp) v = (uint8_t)byte(rng);
    NBitsMatrix m(s);
    repack_matmulnbits({b.data(), scales.data(), false, c.zero_points ? zp.data() : nullptr}, &m);
    return m;
}

std::string name(const std::string &isa, const Case &c) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "[%s] bits=%d bs=%d zp=%d n=%lld k=%lld", isa.c_str(), c.bits,
                  c.block_size, (int)c.zero_points, (long long)c.n, (long long)c.k);
    return buf;
}

void test_isa(const std::string &isa, const NBitsKernels &K, const NBitsKernels &S) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const Case cases[] = {
        {4, 32, false, 37, 700},  {4, 32, true, 21, 512},  {4, 16, true, 9, 333},
        {4, 64, false, 18, 1024}, {4, 128, true, 16, 300}, {4, 256, false, 5, 600},
        {8, 32, false, 19, 512},  {8, 16, true, 7, 260},   {8, 128, true, 23, 900}};
    for (const Case &c : cases) {
        const NBitsMatrix w = make_matrix(c, rng);
        const NBitsShape &s = w.shape();
        // activations: quantizer bytes equal the spec's
        std::vector<float> x(s.kq, 0.0f);
        for (int64_t j = 0; j < c.k; ++j) x[j] = normal(rng) * (j % 97 == 0 ? 40.0f : 1.0f);
        std::vector<int8_t> q(s.kq), q_ref(s.kq);
        std::vector<float> d(s.nb), d_ref(s.nb), sum(s.nb), sum_ref(s.nb);
        K.quantize(s, x.data(), q.data(), d.data(), sum.data());
        S.quantize(s, x.data(), q_ref.data(), d_ref.data(), sum_ref.data());
        check(q == q_ref && std::memcmp(d.data(), d_ref.data(), 4 * s.nb) == 0 &&
                  std::memcmp(sum.data(), sum_ref.data(), 4 * s.nb) == 0,
              name(isa, c) + ": quantize != spec");
        // row dots (int8 and float activations) within the float-order bound of the spec's
        std::vector<float> wd(s.n * s.k);
        nbits_dequantize(w, wd.data());
        for (int64_t g = 0; g < s.n_groups; ++g) {
            const int nr = (int)std::min<int64_t>(kNBitsRowGroup, s.n - 4 * g);
            const uint8_t *grp = w.data() + g * s.group_bytes();
            float y[4], y_ref[4], yf[4], yf_ref[4];
            K.rows_i8(s, grp, nr, {q_ref.data(), d_ref.data(), sum_ref.data()}, y);
            S.rows_i8(s, grp, nr, {q_ref.data(), d_ref.data(), sum_ref.data()}, y_ref);
            K.rows_f32(s, grp, nr, x.data(), yf);
            S.rows_f32(s, grp, nr, x.data(), yf_ref);
            for (int j = 0; j < nr; ++j) {
                // magnitude: Σ (|w| + 2·|zp·scale|)·|x| over the row, a generous 1e-5 relative
                double mag = 0.0;
                for (int64_t e = 0; e < s.k; ++e)
                    mag += (std::fabs(wd[(4 * g + j) * s.k + e]) + 30.0 * 0.05) * std::fabs(x[e]);
                const double tol = 1e-5 * mag + 1e-6;
                check(std::fabs((double)y[j] - y_ref[j]) <= tol, name(isa, c) + ": rows_i8");
                check(std::fabs((double)yf[j] - yf_ref[j]) <= tol, name(isa, c) + ": rows_f32");
            }
        }
        // panel packer, byte for byte, full and partial panels (rows past n zero)
        if (c.block_size < kNBitsGroup) continue;
        const int64_t groups = s.kq / kNBitsGroup;
        GemmForm form{kNBitsGroup, c.bits == 4 ? 8 : 128, c.zero_points, 1};
        if (c.zero_points) form.zero = 0;
        for (int64_t r0 = 0; r0 < s.n; r0 += kPanelRows) {
            const int n_rows = (int)std::min<int64_t>(kPanelRows, s.n - r0);
            std::vector<uint8_t> u(kPanelRows * s.kq, 1), u_ref(kPanelRows * s.kq, 2),
                rows(kPanelRows * s.kq);
            std::vector<float> sc(groups * kPanelRows, 1), sc_ref(groups * kPanelRows, 2),
                of(groups * kPanelRows, 1), of_ref(groups * kPanelRows, 2);
            GemmPanel p{u.data(), sc.data(), of.data(), s.kq, form};
            GemmPanel p_ref{u_ref.data(), sc_ref.data(), of_ref.data(), s.kq, form};
            K.pack_panel(s, w.data(), r0, n_rows, &p, rows.data());
            S.pack_panel(s, w.data(), r0, n_rows, &p_ref, rows.data());
            const bool offsets =
                !form.offset || std::memcmp(of.data(), of_ref.data(), 4 * of.size()) == 0;
            check(
                u == u_ref && std::memcmp(sc.data(), sc_ref.data(), 4 * sc.size()) == 0 && offsets,
                name(isa, c) + ": pack_panel != spec");
        }
    }
}

}  // namespace

int main() {
    const NBitsKernels &S = dot_kernels_scalar().nbits;
    for (const std::string &isa : available_isas()) {
        if (isa == "scalar") continue;
        set_isa(isa);
        const int before = g_failed;
        test_isa(isa, active_kernels().nbits, S);
        std::printf("[%s] MatMulNBits kernels ~ scalar spec: %s\n", isa.c_str(),
                    g_failed == before ? "ok" : "FAILED");
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

// Every ISA twin of the kernel table held to the scalar spec (dot_ref.cpp, quants.cpp), for each
// ISA this build has and this CPU runs: activation converters byte for byte, dot products within a
// float-summation-order bound, and the matmul and attention paths built on them. Plus reference
// round trips and rope/attention against double-precision formulas. Runs natively (x86: avx2,
// avx512) and under qemu-aarch64 (neon, neon_dotprod, neon_i8mm, one CPU model per level); see
// .ci/neon_tests.sh. No pybind11 here.
//
// Bound for a dot product: |isa - scalar| <= 1e-5 * Σ|terms|, Σ|terms| summed in double from the
// unpacked blocks (scale part and offset part of each weight separately), so cancellation in the
// true value never makes the bound meaningless.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../dispatch.h"
#include "../dot.h"
#include "../formats.h"
#include "../gemm.h"
#include "../matmul.h"
#include "../ops.h"
#include "../quants.h"
#include "../threadpool.h"

using namespace phirt;

// The AVX-VNNI kernels built for AVX512-VL + VNNI (avxvnni_evex.cpp, x86 builds only).
namespace phirt {
#if defined(PHIRT_TEST_AVXVNNI_EVEX)
const DotKernels *dot_kernels_avxvnni_evex();
#else
const DotKernels *dot_kernels_avxvnni_evex() {
    return nullptr;
}
#endif
}  // namespace phirt

namespace {

// ---- reporting ----

int g_passed = 0;
int g_failed = 0;
double g_worst = -1.0;  // largest error / bound seen in the current section (< 1 when all pass)

std::string fmt(const char *f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof(buf), f, ap);
    va_end(ap);
    return buf;
}

bool check(bool ok, const std::string &what) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        if (g_failed <= 60) std::printf("  FAIL %s\n", what.c_str());
        if (g_failed == 60) std::printf("  (further failures not printed)\n");
    }
    return ok;
}

// Prints the checks a section added.
struct Section {
    std::string name;
    int passed0 = g_passed, failed0 = g_failed;
    explicit Section(std::string n) : name(std::move(n)) { g_worst = -1.0; }
    ~Section() {
        std::printf("%-44s %6d passed, %d failed", name.c_str(), g_passed - passed0,
                    g_failed - failed0);
        if (g_worst >= 0.0) std::printf("   (worst error/bound %.2g)", g_worst);
        std::printf("\n");
    }
};

// An error within a bound; records err/bound for the section summary.
bool within(double err, double bound) {
    if (bound > 0.0 && err / bound > g_worst) g_worst = err / bound;
    return err <= bound;
}

// ---- test data ----

enum Pattern {
    kRandom,
    kWide,
    kConstant,
    kZero,
    kTies,
    kLarge,
    kMixed,
    kSignTie,
    kExtreme,
    kTiny,
    kNonFinite
};
const char *const kPatternNames[] = {"random", "wide",     "constant", "zero", "ties",      "large",
                                     "mixed",  "sign-tie", "extreme",  "tiny", "non-finite"};
// Finite, |x| <= 2000: every activation format (Q8_1's f16 block sum included) stays finite.
const Pattern kDotPatterns[] = {kRandom, kWide, kConstant, kZero, kTies, kLarge, kMixed, kSignTie};
const Pattern kAllPatterns[] = {kRandom, kWide,    kConstant, kZero, kTies,     kLarge,
                                kMixed,  kSignTie, kExtreme,  kTiny, kNonFinite};

std::mt19937 g_rng(1234567);

float uniform(float lo, float hi) {
    return std::uniform_real_distribution<float>(lo, hi)(g_rng);
}
int uniform_int(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(g_rng);
}

std::vector<float> make_data(Pattern p, int64_t n) {
    std::vector<float> x(n);
    switch (p) {
        case kRandom:
            for (auto &v : x) v = uniform(-1.0f, 1.0f);
            break;
        case kWide:  // per-32 block scale over six decades
            for (int64_t b = 0; b < n; b += 32) {
                const float s = std::pow(10.0f, uniform(-3.0f, 3.0f));
                for (int64_t i = b; i < n && i < b + 32; ++i) x[i] = s * uniform(-1.0f, 1.0f);
            }
            break;
        case kConstant:
            for (auto &v : x) v = 0.37f;
            break;
        case kZero:
            break;
        case kTies:  // amax 127 makes the q8 scale exactly 1, so halves are rounding ties;
                     // 1 + 2^-11 and 1 + 2^-8 are f16 / bf16 ties
            for (int64_t i = 0; i < n; ++i) {
                if (i % 32 == 0)
                    x[i] = (i / 32) % 2 ? -127.0f : 127.0f;
                else if (i % 8 == 3)
                    x[i] = 1.0f + std::ldexp(1.0f, -11) * (float)(2 * uniform_int(0, 3) + 1);
                else if (i % 8 == 5)
                    x[i] = 1.0f + std::ldexp(1.0f, -8) * (float)(2 * uniform_int(0, 3) + 1);
                else
                    x[i] = (float)uniform_int(-254, 254) * 0.5f;
            }
            break;
        case kLarge:  // a Q8_1 block's s = d·Σq must stay below the f16 maximum: 32 · 2000 < 65504
            for (auto &v : x) v = uniform(-2.0e3f, 2.0e3f);
            break;
        case kMixed:  // blocks of huge, tiny and ordinary values side by side
            for (int64_t b = 0; b < n; b += 32) {
                const float s = (b / 32) % 3 == 0 ? 2.0e3f : (b / 32) % 3 == 1 ? 1.0e-4f : 1.0f;
                for (int64_t i = b; i < n && i < b + 32; ++i) x[i] = s * uniform(-1.0f, 1.0f);
            }
            break;
        case kSignTie:  // +a and -a both of largest magnitude: Q8_K keeps the first one's sign
            for (auto &v : x) v = uniform(-1.0f, 1.0f);
            for (int64_t b = 0; b < n; b += 256) {
                const float s = (b / 256) % 2 ? 3.0f : -3.0f;
                if (b + 5 < n) x[b + 5] = s;
                if (b + 100 < n) x[b + 100] = -s;
                if (b + 17 < n) x[b + 17] = -s;
            }
            break;
        case kExtreme: {  // float and half range edges (converters only)
            const float edge[] = {1e30f,    -1e30f,    1e-30f,   -1e-30f,  65504.0f, 65519.99f,
                                  65520.0f, -65536.0f, 6.1e-5f,  5.96e-8f, 2.98e-8f, 1e-45f,
                                  3.4e38f,  -3.4e38f,  1.2e-38f, -0.0f,    1.0f,     -1.0f};
            for (int64_t i = 0; i < n; ++i) {
                const int64_t blk = i / 32;
                if (blk % 2 == 0)
                    x[i] = edge[uniform_int(0, (int)(sizeof(edge) / sizeof(edge[0])) - 1)];
                else
                    x[i] = uniform(-1.0f, 1.0f) * (blk % 4 == 1 ? 1e30f : 1e-30f);
            }
            break;
        }
        case kTiny:  // amax below 127/FLT_MAX: 127/amax overflows (converters only)
            for (auto &v : x) v = uniform(-1.0f, 1.0f) * 1e-38f;
            break;
        case kNonFinite: {  // ±inf and the default quiet NaNs among ordinary values
                            // (to_f16/to_bf16)
            const float odd[] = {INFINITY, -INFINITY, fp32_from_bits(0x7fc00000u),
                                 fp32_from_bits(0xffc00000u)};
            for (int64_t i = 0; i < n; ++i)
                x[i] = i % 3 == 1 ? odd[uniform_int(0, 3)] : uniform(-1.0f, 1.0f);
            break;
        }
    }
    return x;
}

// ---- formats under test ----

// One case per matmul weight type (dot.h's kWeightFormats): its kernels and activation format.
using DotCase = WeightFormat;
constexpr const auto &kDotCases = kWeightFormats;

const char *case_name(const DotCase &c);
VecDotFn dot_of(const DotKernels &k, const DotCase &c) {
    return (k.*c.kernels).dot;
}
VecDotRowsFn rows_of(const DotKernels &k, const DotCase &c) {
    return (k.*c.kernels).dot_rows;
}

bool is_float_type(GgmlType t) {
    return t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::F32;
}

const TypeTraits &traits(GgmlType t) {
    const TypeTraits *tt = type_traits((int)t);
    if (tt == nullptr) throw std::runtime_error("no type traits");
    return *tt;
}

const char *case_name(const DotCase &c) {
    return traits(c.type).name;
}

int64_t act_row_bytes(const DotCase &c, int64_t k) {
    return k / c.act.block * c.act.bytes;
}

std::vector<uint8_t> convert_act(const DotKernels &kern, const DotCase &c,
                                 const std::vector<float> &x) {
    const int64_t k = (int64_t)x.size();
    std::vector<uint8_t> out(act_row_bytes(c, k));
    if (c.act.convert == nullptr)
        std::memcpy(out.data(), x.data(), out.size());
    else
        (kern.*c.act.convert)(x.data(), out.data(), k);
    return out;
}

// Where a block's half-precision scale fields sit: (offset, count).
void scale_fields(GgmlType t, int *offset, int *count) {
    switch (t) {
        case GgmlType::Q4_1:
        case GgmlType::Q5_1:
        case GgmlType::Q4_K:
        case GgmlType::Q5_K:
            *offset = 0;
            *count = 2;
            return;
        case GgmlType::Q6_K:
            *offset = (int)offsetof(block_q6_K, d);
            *count = 1;
            return;
        default:
            *offset = 0;
            *count = 1;
            return;
    }
}

enum Source { kQuantized, kRandomBytes, kOnes, kZeroBytes, kExtremeScales };
const char *const kSourceNames[] = {"quantized", "random-bytes", "0xff-bytes", "zero-bytes",
                                    "extreme-scales"};

// A weight matrix of `rows` × k in type t. Byte sources fill every bit of the blocks and then set
// the half scale fields to sane values, which reaches bit patterns a quantizer never writes.
// Returns false when the source does not apply (bytes for float types), or, recording a failure,
// when t has no reference quantizer.
bool make_weights(GgmlType t, int64_t rows, int64_t k, Source src, Pattern pat,
                  std::vector<uint8_t> *out) {
    const TypeTraits &tt = traits(t);
    const int64_t rb = row_bytes(tt, k);
    out->assign(rb * rows, 0);
    if (src == kQuantized) {
        for (int64_t r = 0; r < rows; ++r) {
            const std::vector<float> x = make_data(pat, k);
            if (!quantize_row((int)t, x.data(), out->data() + r * rb, k))
                return check(false, fmt("no reference quantizer for %s", tt.name));
        }
        return true;
    }
    if (is_float_type(t)) return false;
    for (auto &b : *out)
        b = src == kOnes ? 0xFF : src == kZeroBytes ? 0x00 : (uint8_t)uniform_int(0, 255);
    int off, count;
    scale_fields(t, &off, &count);
    const float extremes[] = {6.0e4f, -6.0e4f, 1.0e-4f, -1.0e-4f, 6.0e-8f, 1.0f};
    for (int64_t b = 0; b < rows * (k / tt.block_size); ++b) {
        for (int f = 0; f < count; ++f) {
            const float v =
                src == kExtremeScales ? extremes[uniform_int(0, 5)] : uniform(-0.1f, 0.1f);
            const ggml_half h = fp32_to_fp16(v);
            std::memcpy(out->data() + b * tt.type_size + off + 2 * f, &h, 2);
        }
    }
    return true;
}

// A weight row as scale part p and offset part o per element (w = p + o), from the block structs.
void unpack_weights(GgmlType t, const uint8_t *row, int64_t k, std::vector<double> *p,
                    std::vector<double> *o) {
    p->assign(k, 0.0);
    o->assign(k, 0.0);
    auto h = [](ggml_half v) { return (double)fp16_to_fp32(v); };
    switch (t) {
        case GgmlType::F32:
            for (int64_t i = 0; i < k; ++i) (*p)[i] = reinterpret_cast<const float *>(row)[i];
            return;
        case GgmlType::F16:
            for (int64_t i = 0; i < k; ++i)
                (*p)[i] = h(reinterpret_cast<const ggml_half *>(row)[i]);
            return;
        case GgmlType::BF16:
            for (int64_t i = 0; i < k; ++i)
                (*p)[i] = bf16_to_fp32(reinterpret_cast<const ggml_bf16 *>(row)[i]);
            return;
        default:
            break;
    }
    for (int64_t b = 0; b < k / traits(t).block_size; ++b) {
        const uint8_t *blk = row + b * traits(t).type_size;
        double *pb = p->data() + b * traits(t).block_size;
        double *ob = o->data() + b * traits(t).block_size;
        switch (t) {
            case GgmlType::Q4_0:
            case GgmlType::Q4_1:
            case GgmlType::Q5_0:
            case GgmlType::Q5_1: {
                const bool q5 = t == GgmlType::Q5_0 || t == GgmlType::Q5_1;
                const bool has_min = t == GgmlType::Q4_1 || t == GgmlType::Q5_1;
                ggml_half d, m = 0;
                std::memcpy(&d, blk, 2);
                if (has_min) std::memcpy(&m, blk + 2, 2);
                const int qs_off = (has_min ? 4 : 2) + (q5 ? 4 : 0);
                uint32_t qh = 0;
                if (q5) std::memcpy(&qh, blk + (has_min ? 4 : 2), 4);
                const int bias = has_min ? 0 : q5 ? 16 : 8;
                for (int j = 0; j < 32; ++j) {
                    const uint8_t byte = blk[qs_off + j % 16];
                    int q = j < 16 ? byte & 0xF : byte >> 4;
                    if (q5) q |= ((qh >> j) & 1) << 4;
                    pb[j] = h(d) * (q - bias);
                    ob[j] = h(m);
                }
                break;
            }
            case GgmlType::Q8_0: {
                const auto *q = reinterpret_cast<const block_q8_0 *>(blk);
                for (int j = 0; j < 32; ++j) pb[j] = h(q->d) * q->qs[j];
                break;
            }
            case GgmlType::Q4_K:
            case GgmlType::Q5_K: {
                const bool q5 = t == GgmlType::Q5_K;
                const uint8_t *scales = blk + 4;
                const uint8_t *qh = blk + 4 + K_SCALE_SIZE;
                const uint8_t *qs = blk + 4 + K_SCALE_SIZE + (q5 ? QK_K / 8 : 0);
                ggml_half d, dmin;
                std::memcpy(&d, blk, 2);
                std::memcpy(&dmin, blk + 2, 2);
                for (int i = 0; i < QK_K; ++i) {
                    const int sub = i / 32, pair = i / 64, l = i % 32;
                    uint8_t sc, mn;
                    get_scale_min_k4(sub, scales, &sc, &mn);
                    const uint8_t byte = qs[32 * pair + l];
                    int q = sub % 2 == 0 ? byte & 0xF : byte >> 4;
                    if (q5) q += ((qh[l] >> sub) & 1) << 4;
                    pb[i] = h(d) * sc * q;
                    ob[i] = -h(dmin) * mn;
                }
                break;
            }
            case GgmlType::Q6_K: {
                const auto *q = reinterpret_cast<const block_q6_K *>(blk);
                for (int i = 0; i < QK_K; ++i) {
                    const int half = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
                    const uint8_t lbyte = q->ql[64 * half + l + (quarter % 2) * 32];
                    const int lo = quarter < 2 ? lbyte & 0xF : lbyte >> 4;
                    const int hi = (q->qh[32 * half + l] >> (2 * quarter)) & 3;
                    pb[i] = h(q->d) * q->scales[i / 16] * ((lo | (hi << 4)) - 32);
                }
                break;
            }
            default:
                throw std::runtime_error("unpack_weights: type");
        }
    }
}

// Activation row (already converted) back to doubles.
std::vector<double> unpack_act(const DotCase &c, const uint8_t *act, int64_t k) {
    std::vector<double> a(k);
    for (int64_t i = 0; i < k; ++i) {
        switch (c.act.bytes) {
            case sizeof(block_q8_0): {
                const auto *b = reinterpret_cast<const block_q8_0 *>(act) + i / 32;
                a[i] = (double)fp16_to_fp32(b->d) * b->qs[i % 32];
                break;
            }
            case sizeof(block_q8_1): {
                const auto *b = reinterpret_cast<const block_q8_1 *>(act) + i / 32;
                a[i] = (double)fp16_to_fp32(b->d) * b->qs[i % 32];
                break;
            }
            case sizeof(block_q8_K): {
                const auto *b = reinterpret_cast<const block_q8_K *>(act) + i / QK_K;
                a[i] = (double)b->d * b->qs[i % QK_K];
                break;
            }
            case 2:
                a[i] = c.type == GgmlType::F16
                           ? fp16_to_fp32(reinterpret_cast<const ggml_half *>(act)[i])
                           : bf16_to_fp32(reinterpret_cast<const ggml_bf16 *>(act)[i]);
                break;
            default:
                a[i] = reinterpret_cast<const float *>(act)[i];
        }
    }
    return a;
}

// Σ|terms| of a dot product: scale and offset parts kept apart.
double dot_magnitude(const std::vector<double> &p, const std::vector<double> &o,
                     const std::vector<double> &a) {
    double m = 0.0;
    for (size_t i = 0; i < a.size(); ++i)
        m += (std::fabs(p[i]) + std::fabs(o[i])) * std::fabs(a[i]);
    return m;
}

constexpr double kDotRel = 1e-5;
constexpr double kDotAbs = 1e-35;

// ---- reference checks (ISA independent) ----

void test_unpack_matches_dequantize() {
    Section s("reference: unpacked blocks == dequantize_row");
    for (const DotCase &c : kDotCases) {
        const int64_t k = 512;
        for (Source src : {kQuantized, kRandomBytes, kOnes, kZeroBytes, kExtremeScales}) {
            std::vector<uint8_t> w;
            if (!make_weights(c.type, 1, k, src, kWide, &w)) continue;
            std::vector<double> p, o;
            unpack_weights(c.type, w.data(), k, &p, &o);
            std::vector<float> deq(k);
            dequantize_row((int)c.type, w.data(), deq.data(), k);
            bool ok = true;
            for (int64_t i = 0; i < k && ok; ++i) {
                const double want = p[i] + o[i];
                ok = std::fabs(deq[i] - want) <= 1e-6 * (std::fabs(p[i]) + std::fabs(o[i])) + 1e-30;
            }
            check(ok, fmt("unpack %s %s", case_name(c), kSourceNames[src]));
        }
    }
}

// Largest |x| in the block of `block` elements around each element.
std::vector<float> block_absmax(const std::vector<float> &x, int64_t block) {
    std::vector<float> m(x.size());
    for (size_t b = 0; b < x.size(); b += block) {
        float a = 0.0f;
        for (size_t i = b; i < b + block && i < x.size(); ++i) a = std::fmax(a, std::fabs(x[i]));
        for (size_t i = b; i < b + block && i < x.size(); ++i) m[i] = a;
    }
    return m;
}

void test_round_trip() {
    Section s("reference: quantize -> dequantize round trip");
    const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0,
                              GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                              GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
    for (GgmlType t : types) {
        const TypeTraits &tt = traits(t);
        const int64_t k = 1024;
        std::vector<uint8_t> q(row_bytes(tt, k));
        for (Pattern pat : kDotPatterns) {
            const std::vector<float> x = make_data(pat, k);
            if (!check(quantize_row((int)t, x.data(), q.data(), k),
                       fmt("quantize %s: no reference quantizer", tt.name)))
                break;
            std::vector<float> y(k);
            check(dequantize_row((int)t, q.data(), y.data(), k), fmt("dequantize %s", tt.name));
            const int64_t blk = tt.block_size;
            bool ok = true;
            double err2 = 0.0, x2 = 0.0;
            int64_t bad = -1;
            for (int64_t b = 0; b < k; b += blk) {
                float mn = x[b], mx = x[b], amax = 0.0f;
                for (int64_t i = b; i < b + blk; ++i) {
                    mn = std::fmin(mn, x[i]);
                    mx = std::fmax(mx, x[i]);
                    amax = std::fmax(amax, std::fabs(x[i]));
                }
                const double range = (double)mx - mn;
                for (int64_t i = b; i < b + blk; ++i) {
                    const double err = std::fabs((double)y[i] - x[i]);
                    err2 += err * err;
                    x2 += (double)x[i] * x[i];
                    // The format's step / 2 (Q4_0/Q5_0: a full step at the clamped end), plus the
                    // f16 rounding of d and m: relative 2^-11, or 2^-25 absolute once subnormal.
                    const double sub = std::ldexp(1.0, -25);
                    double bound;
                    switch (t) {
                        case GgmlType::F32:
                            bound = 0.0;
                            break;
                        case GgmlType::F16:
                            bound = std::fabs(x[i]) * std::ldexp(1.0, -11) + sub;
                            break;
                        case GgmlType::BF16:
                            bound = std::fabs(x[i]) * std::ldexp(1.0, -8);
                            break;
                        case GgmlType::Q4_0:
                            bound = amax / 8.0 + amax * 1e-3 + 8 * sub;
                            break;
                        case GgmlType::Q5_0:
                            bound = amax / 16.0 + amax * 1e-3 + 16 * sub;
                            break;
                        case GgmlType::Q8_0:
                            bound = amax / 254.0 + amax * 1e-3 + 127 * sub;
                            break;
                        case GgmlType::Q4_1:
                            bound = range / 30.0 * 1.01 + (range + std::fabs(mn)) * 1e-3 + 16 * sub;
                            break;
                        case GgmlType::Q5_1:
                            bound = range / 62.0 * 1.01 + (range + std::fabs(mn)) * 1e-3 + 32 * sub;
                            break;
                        default:
                            bound = INFINITY;  // K-quants: judged by RMS below
                    }
                    if (!(err <= bound + 1e-30) && ok) {
                        ok = false;
                        bad = i;
                    }
                }
            }
            check(ok, fmt("%s %s: element %lld: x=%g y=%g", tt.name, kPatternNames[pat],
                          (long long)bad, bad >= 0 ? x[bad] : 0.0, bad >= 0 ? y[bad] : 0.0));
            // K-quants (and a sanity check for the rest): RMS error against RMS of the data.
            const double rel = x2 > 0 ? std::sqrt(err2 / x2) : std::sqrt(err2);
            double limit;
            switch (t) {
                case GgmlType::Q4_0:
                case GgmlType::Q4_1:
                case GgmlType::Q4_K:
                    limit = 0.15;
                    break;
                case GgmlType::Q5_0:
                case GgmlType::Q5_1:
                case GgmlType::Q5_K:
                    limit = 0.08;
                    break;
                case GgmlType::Q6_K:
                    limit = 0.04;
                    break;
                case GgmlType::Q8_0:
                    limit = 0.01;
                    break;
                default:
                    limit = 0.005;  // F32, F16, BF16
            }
            check(rel <= limit, fmt("%s %s: relative RMS error %g > %g", tt.name,
                                    kPatternNames[pat], rel, limit));
        }
    }
}

// Activation formats round trip through the scalar converters (the spec the twins copy).
void test_activation_round_trip() {
    Section s("reference: activation formats round trip");
    const DotKernels &S = dot_kernels_scalar();
    for (const DotCase &c : kDotCases) {
        if (c.act.convert == nullptr || c.type == GgmlType::Q4_1 || c.type == GgmlType::Q5_1 ||
            c.type == GgmlType::Q5_0 || c.type == GgmlType::Q5_K || c.type == GgmlType::Q6_K)
            continue;  // one case per activation format
        for (Pattern pat : kDotPatterns) {
            const int64_t k = 1024;
            const std::vector<float> x = make_data(pat, k);
            const std::vector<uint8_t> act = convert_act(S, c, x);
            const std::vector<double> a = unpack_act(c, act.data(), k);
            const std::vector<float> amax = block_absmax(x, c.act.block);
            bool ok = true;
            for (int64_t i = 0; i < k && ok; ++i) {
                const double step =
                    c.act.block == 1
                        ? std::fabs(x[i]) * (c.type == GgmlType::BF16 ? 1.0 / 256 : 1.0 / 2048) +
                              1e-7
                        : amax[i] / 254.0 + amax[i] * 1e-3 + 127 * std::ldexp(1.0, -25);
                ok = std::fabs(a[i] - x[i]) <= step + 1e-30;
            }
            check(ok, fmt("activation %s %s", case_name(c), kPatternNames[pat]));
        }
    }
    // Q8_1's s is the block sum d·Σq (d before its f16 rounding); Q8_K's bsums are sums of 16 qs.
    for (Pattern pat : kDotPatterns) {
        const std::vector<float> x = make_data(pat, 512);
        std::vector<block_q8_1> b1(512 / QK8_1);
        S.to_q8_1(x.data(), b1.data(), 512);
        bool ok = true;
        for (const auto &b : b1) {
            int sum = 0, sum_abs = 0;
            for (int8_t q : b.qs) sum += q, sum_abs += std::abs(q);
            const double d = fp16_to_fp32(b.d);
            ok &= std::fabs(fp16_to_fp32(b.s) - sum * d) <=
                  2e-3 * sum_abs * d + 4200 * std::ldexp(1.0, -25);
        }
        std::vector<block_q8_K> bk(512 / QK_K);
        S.to_q8_K(x.data(), bk.data(), 512);
        for (const auto &b : bk)
            for (int g = 0; g < QK_K / 16; ++g) {
                int sum = 0;
                for (int l = 0; l < 16; ++l) sum += b.qs[16 * g + l];
                ok &= b.bsums[g] == sum;
            }
        check(ok, fmt("q8_1 sums / q8_K bsums %s", kPatternNames[pat]));
    }
}

// ---- ISA twins vs scalar ----

// The table's shape: every entry set but the optional packed GEMM, which comes in pairs and only
// for types with a packed form; a one-row dot overridden together with its multi-row twin (the
// scalar's rows would run the scalar's dot, not this table's).
void test_table(const DotKernels &K, const DotKernels &S) {
    Section s(std::string("[") + K.isa + "] kernel table complete and consistent");
    const ConvertFn convs[] = {K.to_q8_0, K.to_q8_1, K.to_q8_K, K.to_f16, K.to_bf16};
    for (ConvertFn f : convs) check(f != nullptr, "converter set");
    check(K.nbits.quantize && K.nbits.rows_i8 && K.nbits.rows_f32 && K.axpy_f16 && K.attn_scores &&
              K.attn_values && K.exp_sum && K.attn_q8_scores && K.attn_q8_values,
          "attention and MatMulNBits entries set");
    for (const DotCase &c : kDotCases) {
        const TypeKernels &t = K.*c.kernels, &ref = S.*c.kernels;
        check(t.dot != nullptr && t.dot_rows != nullptr,
              fmt("%s: dot and dot_rows set", case_name(c)));
        check((t.pack_panel == nullptr) == (t.gemm_panel == nullptr),
              fmt("%s: pack_panel and gemm_panel both or neither", case_name(c)));
        check(t.gemm_panel == nullptr || gemm_form((int)c.type).group > 0,
              fmt("%s: packed GEMM only for a type with a packed form", case_name(c)));
        check(&K == &S || t.dot == ref.dot || t.dot_rows != ref.dot_rows,
              fmt("%s: dot overridden without dot_rows", case_name(c)));
        check(t.dot_acts == nullptr || t.dot != ref.dot,
              fmt("%s: dot_acts beside the scalar's dot", case_name(c)));
    }
}

void test_converters(const std::string &isa, const DotKernels &K, const DotKernels &S) {
    Section s("[" + isa + "] activation converters == scalar bytes");
    struct Conv {
        const char *name;
        ConvertFn DotKernels::*fn;
        int block, bytes;
    };
    const Conv convs[] = {
        {"to_q8_0", &DotKernels::to_q8_0, QK8_0, sizeof(block_q8_0)},
        {"to_q8_1", &DotKernels::to_q8_1, QK8_1, sizeof(block_q8_1)},
        {"to_q8_K", &DotKernels::to_q8_K, QK_K, sizeof(block_q8_K)},
        {"to_f16", &DotKernels::to_f16, 1, 2},
        {"to_bf16", &DotKernels::to_bf16, 1, 2},
    };
    for (const Conv &c : convs) {
        const std::vector<int64_t> sizes =
            c.block == 1 ? std::vector<int64_t>{1, 3, 7, 8, 15, 16, 33, 96, 1000}
                         : std::vector<int64_t>{c.block, 3 * c.block, 4096};
        for (Pattern pat : kAllPatterns) {
            if (pat == kNonFinite && c.block != 1)
                continue;  // q8 formats assume finite activations
            for (int64_t n : sizes) {
                const std::vector<float> x = make_data(pat, n);
                const size_t nbytes = n / c.block * c.bytes;
                std::vector<uint8_t> a(nbytes, 0xAB), b(nbytes, 0xAB);
                (S.*c.fn)(x.data(), a.data(), n);
                (K.*c.fn)(x.data(), b.data(), n);
                size_t first = 0;
                while (first < nbytes && a[first] == b[first]) ++first;
                check(first == nbytes,
                      fmt("%s %s n=%lld: first differing byte %zu (block %zu)", c.name,
                          kPatternNames[pat], (long long)n, first, first / c.bytes));
            }
        }
    }
}

void test_dots(const std::string &isa, const DotKernels &K, const DotKernels &S) {
    for (const DotCase &c : kDotCases) {
        Section s("[" + isa + "] dot " + case_name(c) + " ~ scalar");
        const TypeTraits &tt = traits(c.type);
        std::vector<int64_t> sizes;
        if (tt.block_size == QK_K)
            sizes = {256, 768, 4096};
        else if (tt.block_size == 32)
            sizes = {32, 96, 256, 4096};
        else
            sizes = {1, 7, 16, 33, 100, 256, 1000, 4099};
        for (int64_t n : sizes) {
            struct W {
                Source src;
                Pattern pat;
            };
            std::vector<W> weights;
            for (Pattern p : kDotPatterns) weights.push_back({kQuantized, p});
            for (Source src : {kRandomBytes, kOnes, kZeroBytes, kExtremeScales})
                weights.push_back({src, kRandom});
            for (const W &wd : weights) {
                std::vector<uint8_t> w;
                if (!make_weights(c.type, 1, n, wd.src, wd.pat, &w)) continue;
                std::vector<double> p, o;
                unpack_weights(c.type, w.data(), n, &p, &o);
                for (Pattern apat : kDotPatterns) {
                    const std::vector<float> x = make_data(apat, n);
                    const std::vector<uint8_t> act = convert_act(S, c, x);
                    const double mag = dot_magnitude(p, o, unpack_act(c, act.data(), n));
                    const float ref = dot_of(S, c)(n, w.data(), act.data());
                    const float got = dot_of(K, c)(n, w.data(), act.data());
                    const double err = std::fabs((double)got - ref);
                    check(std::isfinite(ref) && within(err, kDotRel * mag + kDotAbs),
                          fmt("%s n=%lld w=%s/%s x=%s: %s %.9g scalar %.9g (err %.3g, bound %.3g)",
                              case_name(c), (long long)n, kSourceNames[wd.src],
                              kPatternNames[wd.pat], kPatternNames[apat], isa.c_str(), got, ref,
                              err, kDotRel * mag + kDotAbs));
                }
            }
        }
    }
}

// Each output of a multi-row dot is the ISA's one-row dot of that row, bit for bit (so everything
// test_dots holds for the one-row dot holds for it), for every row count, with rows further apart
// than their bytes and row lengths that leave the kernels' tails in use.
void test_dot_rows(const std::string &isa, const DotKernels &K, const DotKernels &S) {
    for (const DotCase &c : kDotCases) {
        Section s("[" + isa + "] dot rows " + case_name(c) + " == one-row dot");
        const int64_t blk = traits(c.type).block_size;
        for (int64_t n : {blk, 3 * blk, 16 * blk, 17 * blk, 32 * blk + 15 * blk}) {
            const int64_t rb = row_bytes(traits(c.type), n), stride = rb + 40;
            for (Source src : {kQuantized, kRandomBytes, kExtremeScales}) {
                std::vector<uint8_t> w;
                if (!make_weights(c.type, kMaxDotRows, n, src, kWide, &w)) continue;
                std::vector<uint8_t> spaced(stride * kMaxDotRows, 0xA5);
                for (int r = 0; r < kMaxDotRows; ++r)
                    std::memcpy(spaced.data() + r * stride, w.data() + r * rb, rb);
                for (Pattern apat : {kRandom, kWide, kLarge}) {
                    const std::vector<uint8_t> act = convert_act(S, c, make_data(apat, n));
                    for (int nr = 1; nr <= kMaxDotRows; ++nr) {
                        float y[kMaxDotRows];
                        rows_of(K, c)(n, spaced.data(), stride, nr, act.data(), y);
                        for (int r = 0; r < nr; ++r) {
                            const float one = dot_of(K, c)(n, w.data() + r * rb, act.data());
                            check(std::memcmp(&one, &y[r], sizeof(float)) == 0,
                                  fmt("%s n=%lld w=%s x=%s nr=%d row %d: %.9g, one-row dot %.9g",
                                      case_name(c), (long long)n, kSourceNames[src],
                                      kPatternNames[apat], nr, r, y[r], one));
                        }
                    }
                }
            }
        }
    }
}

// The same for the activation-side twin: each output of dot_acts is the one-row dot with that
// activation, for every activation count, activations further apart than their bytes and outputs
// ldy apart (the slots between them untouched).
void test_dot_acts(const std::string &isa, const DotKernels &K, const DotKernels &S) {
    for (const DotCase &c : kDotCases) {
        const VecDotActsFn acts = (K.*c.kernels).dot_acts;
        if (acts == nullptr) continue;
        Section s("[" + isa + "] dot acts " + case_name(c) + " == one-row dot");
        const int64_t blk = traits(c.type).block_size;
        for (int64_t n : {blk, 3 * blk, 12 * blk, 17 * blk}) {
            const int64_t xb = n / c.act.block * c.act.bytes, stride = xb + 24, ldy = 3;
            for (Source src : {kQuantized, kRandomBytes, kExtremeScales}) {
                std::vector<uint8_t> w;
                if (!make_weights(c.type, 1, n, src, kWide, &w)) continue;
                std::vector<uint8_t> x(stride * kMaxDotActs, 0x5A);
                const Pattern pats[kMaxDotActs] = {kRandom, kWide, kLarge, kRandom};
                for (int a = 0; a < kMaxDotActs; ++a) {
                    const std::vector<uint8_t> act = convert_act(S, c, make_data(pats[a], n));
                    std::memcpy(x.data() + a * stride, act.data(), xb);
                }
                for (int nc = 1; nc <= kMaxDotActs; ++nc) {
                    std::vector<float> y(ldy * kMaxDotActs, -7.0f);
                    acts(n, w.data(), x.data(), stride, nc, y.data(), ldy);
                    for (int a = 0; a < kMaxDotActs; ++a) {
                        const float one =
                            a < nc ? dot_of(K, c)(n, w.data(), x.data() + a * stride) : -7.0f;
                        check(std::memcmp(&one, &y[a * ldy], sizeof(float)) == 0 &&
                                  y[a * ldy + 1] == -7.0f && y[a * ldy + 2] == -7.0f,
                              fmt("%s n=%lld w=%s nc=%d activation %d: %.9g, one-row dot %.9g",
                                  case_name(c), (long long)n, kSourceNames[src], nc, a, y[a * ldy],
                                  one));
                    }
                }
            }
        }
    }
}

void test_axpy(const std::string &isa, const DotKernels &K, const DotKernels &S) {
    Section s("[" + isa + "] axpy_f16 ~ scalar");
    for (int64_t n : {1, 7, 8, 9, 64, 100, 1000}) {
        for (Pattern pat : kDotPatterns) {
            const std::vector<float> xf = make_data(pat, n);
            std::vector<ggml_half> x(n);
            S.to_f16(xf.data(), x.data(), n);
            const std::vector<float> y0 = make_data(kRandom, n);
            const float a = uniform(-2.0f, 2.0f);
            std::vector<float> ya = y0, yb = y0;
            S.axpy_f16(n, a, x.data(), ya.data());
            K.axpy_f16(n, a, x.data(), yb.data());
            bool ok = true;
            for (int64_t i = 0; i < n && ok; ++i) {
                const double mag = std::fabs(y0[i]) + std::fabs(a * fp16_to_fp32(x[i]));
                ok = within(std::fabs((double)ya[i] - yb[i]), 1e-6 * mag);
            }
            check(ok, fmt("axpy_f16 n=%lld %s", (long long)n, kPatternNames[pat]));
        }
    }
}

// matmul under `isa` against matmul under scalar, and against the isa's own dot per output: exact
// where matmul runs the one-row dots (the same function on the same bytes, so threading and tiling
// must not change a bit), within the float-order bound where it runs the packed GEMM.
void test_matmul(const std::string &isa, const DotKernels &K) {
    Section s("[" + isa + "] matmul m=1,3,5,9 ~ scalar, ~ own dot");
    for (const DotCase &c : kDotCases) {
        const int64_t n = 37, k = 512;
        std::vector<uint8_t> w;
        if (!make_weights(c.type, n, k, kQuantized, kWide, &w)) continue;
        const WeightView view{w.data(), (int)c.type, n, k, row_bytes(traits(c.type), k)};
        for (int64_t m : {1, 3, 5, 9}) {
            const bool packed = uses_packed_gemm(K, (int)c.type, m);
            const std::vector<float> x = make_data(kWide, m * k);
            std::vector<float> ys(m * n), yk(m * n);
            set_isa("scalar");
            matmul(view, x.data(), m, ys.data());
            set_kernels(K);
            matmul(view, x.data(), m, yk.data());
            bool close = true, own = true;
            for (int64_t r = 0; r < m; ++r) {
                const std::vector<float> xr(x.begin() + r * k, x.begin() + (r + 1) * k);
                const std::vector<uint8_t> act = convert_act(K, c, xr);
                const std::vector<double> a = unpack_act(c, act.data(), k);
                for (int64_t j = 0; j < n; ++j) {
                    std::vector<double> p, o;
                    unpack_weights(c.type, w.data() + j * view.row_bytes, k, &p, &o);
                    const double bound = kDotRel * dot_magnitude(p, o, a) + kDotAbs;
                    const float y_s = ys[r * n + j], y_k = yk[r * n + j];
                    close &= within(std::fabs((double)y_k - y_s), bound);
                    const float direct = dot_of(K, c)(k, w.data() + j * view.row_bytes, act.data());
                    own &= packed ? within(std::fabs((double)y_k - direct), bound)
                                  : std::memcmp(&direct, &y_k, sizeof(float)) == 0;
                }
            }
            check(close, fmt("matmul %s m=%lld: %s vs scalar", traits(c.type).name, (long long)m,
                             isa.c_str()));
            check(own, fmt("matmul %s m=%lld: %s output %s its own dot", traits(c.type).name,
                           (long long)m, isa.c_str(), packed ? "not within bound of" : "!="));
        }
    }
}

// Quantized activations for a packed GEMM test: m rows of random int8 and, per column group, a
// random scale d with zs and s derived as matmul derives them (gemm.h).
struct GemmActData {
    std::vector<int8_t> q;
    std::vector<float> d, s;
    std::vector<int32_t> zs;
    GemmActs acts(int64_t k, int64_t n_groups) const {
        return {q.data(), d.data(), zs.data(), s.data(), k, n_groups};
    }
};

GemmActData make_gemm_acts(const GemmForm &form, int64_t m, int64_t k) {
    const int64_t ng = k / form.group;
    GemmActData a;
    a.q.resize(m * k);
    for (auto &v : a.q) v = (int8_t)uniform_int(-127, 127);
    a.d.resize(m * ng);
    a.s.resize(m * ng);
    a.zs.resize(m * ng);
    for (int64_t g = 0; g < m * ng; ++g) {
        int32_t sum = 0;
        for (int c = 0; c < form.group; ++c) sum += a.q[g * form.group + c];
        // one d per form.super groups, as Q8_K activations have for K-quants (one per 256)
        a.d[g] = g % form.super == 0 ? std::pow(10.0f, uniform(-3.0f, 0.0f)) : a.d[g - 1];
        a.zs[g] = -form.zero * sum;
        a.s[g] = a.d[g] * (float)sum;
    }
    return a;
}

// Σ|terms| of output (i, r) of a panel product: |integer group sum · scale · d| + |offset · s|.
double gemm_magnitude(const GemmPanel &p, const GemmActs &a, int64_t i, int r) {
    const int group = p.form.group;
    double m = 0.0;
    for (int64_t g = 0; g < p.k / group; ++g) {
        const int64_t at = g * kPanelRows + r, ag = i * a.ldg + g;
        int64_t isum = a.zs[ag];
        for (int64_t c = g * group; c < (g + 1) * group; ++c)
            isum += p.u[(c / 4 * kPanelRows + r) * 4 + c % 4] * a.q[i * a.ldq + c];
        m += std::fabs((double)isum * p.scale[at] * a.d[ag]);
        if (p.form.offset) m += std::fabs((double)p.offset[at] * a.s[ag]);
    }
    return m;
}

// The largest code of a type's panel (the integer sums' worst case).
int max_code(GgmlType t) {
    switch (t) {
        case GgmlType::Q5_0:
        case GgmlType::Q5_1:
        case GgmlType::Q5_K:
            return 31;
        case GgmlType::Q6_K:
            return 63;
        case GgmlType::Q8_0:
            return 255;
        default:
            return 15;
    }
}

// Integer sums at their extremes, where a kernel that keeps 16-bit partial sums would saturate:
// every code at the type's maximum (and, for Q8_0, at 0: w = -128) against activations all +127
// or all -127, with unit scales, so each exact result is an integer the float sum holds exactly.
void test_gemm_extremes(const std::string &isa, GgmlType type, const TypeKernels &tk,
                        const GemmForm &form) {
    const int64_t k = 512, ng = k / form.group;
    for (int code : {max_code(type), 0}) {
        for (int sign : {1, -1}) {
            std::vector<uint8_t> u(kPanelRows * k, (uint8_t)code);
            std::vector<float> sc(ng * kPanelRows, 1.0f), of(ng * kPanelRows, 0.5f);
            const GemmPanel p{u.data(), sc.data(), of.data(), k, form};
            const int64_t m = 5;
            GemmActData ad = make_gemm_acts(form, m, k);
            for (auto &q : ad.q) q = (int8_t)(127 * sign);
            for (int64_t g = 0; g < m * ng; ++g) {
                ad.d[g] = 1.0f;
                ad.zs[g] = -form.zero * 127 * sign * form.group;
                ad.s[g] = (float)(127 * sign * form.group);
            }
            const GemmActs a = ad.acts(k, ng);
            std::vector<float> y_ref(m * kPanelRows), y(m * kPanelRows);
            gemm_panel_ref(p, a, m, y_ref.data(), kPanelRows, kPanelRows);
            tk.gemm_panel(p, a, m, y.data(), kPanelRows, kPanelRows);
            check(y == y_ref,
                  fmt("gemm_panel %s codes all %d, activations all %d: %s (%g) != "
                      "scalar (%g)",
                      traits(type).name, code, 127 * sign, isa.c_str(), y[0], y_ref[0]));
        }
    }
}

// The ISA's packed GEMM against the scalar spec (gemm_ref.cpp): panels byte for byte, full and
// partial (rows past the matrix must be zero), from quantized and from random weight bytes; the
// panel product within the float-order bound, for every micro-tile height and for k past one
// cache pass of the AVX-512 kernel (2048 columns).
void test_packed_gemm(const std::string &isa, const DotKernels &K) {
    for (const DotCase &c : kDotCases) {
        const TypeKernels &tk = K.*c.kernels;
        if (tk.gemm_panel == nullptr) continue;
        Section s("[" + isa + "] packed GEMM " + case_name(c) + " ~ scalar spec");
        const GemmForm form = gemm_form((int)c.type);
        for (int64_t k : {512, 2560}) {
            const int64_t rb = row_bytes(traits(c.type), k), ng = k / form.group * kPanelRows;
            for (Source src : {kQuantized, kRandomBytes}) {
                std::vector<uint8_t> w;
                if (!make_weights(c.type, kPanelRows, k, src, kWide, &w)) continue;
                for (int n_rows : {kPanelRows, 5}) {
                    std::vector<uint8_t> u_ref(kPanelRows * k, 1), u(kPanelRows * k, 2),
                        rows(kPanelRows * k);
                    std::vector<float> sc_ref(ng, 1), sc(ng, 2), of_ref(ng, 1), of(ng, 2);
                    GemmPanel p_ref{u_ref.data(), sc_ref.data(), of_ref.data(), k, form};
                    GemmPanel p{u.data(), sc.data(), of.data(), k, form};
                    pack_panel_ref((int)c.type, w.data(), rb, n_rows, &p_ref, rows.data());
                    tk.pack_panel((int)c.type, w.data(), rb, n_rows, &p, rows.data());
                    const bool same_offsets =
                        !form.offset || std::memcmp(of.data(), of_ref.data(), ng * 4) == 0;
                    check(u == u_ref && std::memcmp(sc.data(), sc_ref.data(), ng * 4) == 0 &&
                              same_offsets,
                          fmt("pack %s k=%lld %s n_rows=%d: %s != scalar", traits(c.type).name,
                              (long long)k, kSourceNames[src], n_rows, isa.c_str()));
                    for (int64_t m : {1, 3, 8, 13}) {
                        const GemmActData ad = make_gemm_acts(form, m, k);
                        const GemmActs a = ad.acts(k, k / form.group);
                        std::vector<float> y_ref(m * kPanelRows), y(m * kPanelRows);
                        gemm_panel_ref(p_ref, a, m, y_ref.data(), kPanelRows, n_rows);
                        tk.gemm_panel(p_ref, a, m, y.data(), kPanelRows, n_rows);
                        bool ok = true;
                        for (int64_t i = 0; i < m; ++i)
                            for (int r = 0; r < n_rows; ++r) {
                                const double err = std::fabs((double)y[i * kPanelRows + r] -
                                                             y_ref[i * kPanelRows + r]);
                                ok &=
                                    within(err, kDotRel * gemm_magnitude(p_ref, a, i, r) + kDotAbs);
                            }
                        check(ok, fmt("gemm_panel %s k=%lld %s n_rows=%d m=%lld: %s vs scalar",
                                      traits(c.type).name, (long long)k, kSourceNames[src], n_rows,
                                      (long long)m, isa.c_str()));
                    }
                }
            }
        }
        test_gemm_extremes(isa, c.type, tk, form);
    }
}

// The interleaved Q4_0 kernel (q4x16.h). The scalar spec against a restatement over the GGUF rows
// themselves (which checks the repack: every code and scale lands where the spec reads it), then
// the ISA's twin against the spec bit for bit, for 1..9 and 13 activation rows (every tile height
// and remainder), partial panels and rows past n, and each row's result against an m = 1 call.
float q4_0_row_by_definition(const uint8_t *row, const GemmActs &a, int64_t i, int64_t k) {
    const auto *blocks = reinterpret_cast<const block_q4_0 *>(row);
    float acc = 0.0f;
    for (int64_t b = 0; b < k / QK4_0; ++b) {
        const int8_t *q = a.q + i * a.ldq + b * QK4_0;
        int32_t isum = 0;
        for (int j = 0; j < QK4_0 / 2; ++j)
            isum +=
                ((blocks[b].qs[j] & 0x0F) - 8) * q[j] + ((blocks[b].qs[j] >> 4) - 8) * q[j + 16];
        acc = std::fma((float)isum, fp16_to_fp32(blocks[b].d) * a.d[i * a.ldg + b], acc);
    }
    return acc;
}

bool same_bits(const std::vector<float> &x, const std::vector<float> &y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
}

void test_q4x16(const std::string &isa, const DotKernels &K) {
    Section s("[" + isa + "] interleaved Q4_0 == scalar spec");
    const GemmForm form = gemm_form((int)GgmlType::Q4_0);
    for (int64_t n : {16, 21, 40}) {
        for (int64_t k : {32, 512, 2560}) {
            const int64_t rb = row_bytes(traits(GgmlType::Q4_0), k);
            for (Source src : {kQuantized, kRandomBytes, kExtremeScales}) {
                std::vector<uint8_t> w;
                make_weights(GgmlType::Q4_0, n, k, src, kWide, &w);
                const Q4x16Matrix w16(w.data(), rb, n, k);
                for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 35}) {
                    const GemmActData ad = make_gemm_acts(form, m, k);
                    const GemmActs a = ad.acts(k, k / form.group);
                    std::vector<float> y_def(m * n), y_ref(m * n), y(m * n);
                    for (int64_t i = 0; i < m; ++i)
                        for (int64_t r = 0; r < n; ++r)
                            y_def[i * n + r] = q4_0_row_by_definition(w.data() + r * rb, a, i, k);
                    for (int64_t p = 0; p < w16.n_panels(); ++p) {
                        const int n_rows = (int)std::min<int64_t>(kPanelRows, n - p * kPanelRows);
                        q4x16_gemm_ref(w16.panel(p), w16.n_blocks(), a, m,
                                       y_ref.data() + p * kPanelRows, n, n_rows);
                        if (K.q4_0x16 != nullptr)
                            K.q4_0x16(w16.panel(p), w16.n_blocks(), a, m, y.data() + p * kPanelRows,
                                      n, n_rows);
                    }
                    const std::string what = fmt("n=%lld k=%lld %s m=%lld", (long long)n,
                                                 (long long)k, kSourceNames[src], (long long)m);
                    check(same_bits(y_ref, y_def), "spec == definition over GGUF rows, " + what);
                    if (K.q4_0x16 == nullptr) continue;
                    check(same_bits(y, y_ref), isa + " == spec, " + what);
                    if (K.q4_0x16_many != nullptr) {  // AMX: its tiles of 16 rows and tails
                        std::vector<float> y_many(m * n);
                        for (int64_t p = 0; p < w16.n_panels(); ++p)
                            K.q4_0x16_many(w16.panel(p), w16.n_blocks(), a, m,
                                           y_many.data() + p * kPanelRows, n,
                                           (int)std::min<int64_t>(kPanelRows, n - p * kPanelRows));
                        check(same_bits(y_many, y_ref), isa + " many-row kernel == spec, " + what);
                    }
                    // row i alone (the kernel with m = 1 on row i's activations)
                    const int64_t i = m - 1;
                    const GemmActs one{a.q + i * a.ldq, a.d + i * a.ldg, a.zs + i * a.ldg,
                                       a.s + i * a.ldg, a.ldq,           a.ldg};
                    std::vector<float> y1(n);
                    for (int64_t p = 0; p < w16.n_panels(); ++p)
                        K.q4_0x16(w16.panel(p), w16.n_blocks(), one, 1, y1.data() + p * kPanelRows,
                                  n, (int)std::min<int64_t>(kPanelRows, n - p * kPanelRows));
                    check(std::memcmp(y1.data(), y.data() + i * n, n * 4) == 0,
                          isa + " last row alone == in the batch, " + what);
                }
            }
        }
    }
}

struct AttnCase {
    int64_t m, n_head, n_kv_head, hd, n_ctx, pos0, window;
};
const AttnCase kAttnCases[] = {
    {5, 4, 2, 72, 24, 7, 0},      // GQA, head_dim with an 8-element tail
    {3, 2, 1, 36, 16, 0, 4},      // sliding window, 4-element tail
    {1, 8, 8, 128, 300, 299, 0},  // decode over a long cache
    {2, 2, 1, 160, 40, 30, 0},    // head wider than one 128-element block of accumulators
    {4, 4, 4, 96, 64, 20, 9},
};

struct AttnData {
    std::vector<float> q;
    std::vector<ggml_half> k, v;
};

AttnData make_attn(const AttnCase &a) {
    AttnData d;
    d.q = make_data(kRandom, a.m * a.n_head * a.hd);
    for (auto &x : d.q) x *= 3.0f;
    const std::vector<float> kf = make_data(kRandom, a.n_kv_head * a.n_ctx * a.hd);
    const std::vector<float> vf = make_data(kWide, a.n_kv_head * a.n_ctx * a.hd);
    d.k.resize(kf.size());
    d.v.resize(vf.size());
    quantize_row_f16_ref(kf.data(), d.k.data(), (int64_t)kf.size());
    quantize_row_f16_ref(vf.data(), d.v.data(), (int64_t)vf.size());
    return d;
}

// Σ_j p_j |v_j| per output element (double), the scale attention errors are measured on; and the
// double-precision attention itself.
void attention_double(const AttnCase &a, const AttnData &d, float scale, std::vector<double> *out,
                      std::vector<double> *mag) {
    out->assign(a.m * a.n_head * a.hd, 0.0);
    mag->assign(out->size(), 0.0);
    const int64_t group = a.n_head / a.n_kv_head;
    for (int64_t i = 0; i < a.m; ++i)
        for (int64_t h = 0; h < a.n_head; ++h) {
            const int64_t p = a.pos0 + i, kvh = h / group;
            const int64_t lo = a.window > 0 ? std::max<int64_t>(0, p - a.window + 1) : 0;
            const float *q = d.q.data() + (i * a.n_head + h) * a.hd;
            std::vector<double> s;
            double mx = -INFINITY;
            for (int64_t j = lo; j <= p; ++j) {
                double dot = 0.0;
                for (int64_t e = 0; e < a.hd; ++e)
                    dot += (double)fp16_to_fp32(fp32_to_fp16(q[e])) *
                           fp16_to_fp32(d.k[(kvh * a.n_ctx + j) * a.hd + e]);
                s.push_back(dot * scale);
                mx = std::max(mx, s.back());
            }
            double sum = 0.0;
            for (auto &v : s) sum += (v = std::exp(v - mx));
            for (size_t j = 0; j < s.size(); ++j)
                for (int64_t e = 0; e < a.hd; ++e) {
                    const double v =
                        fp16_to_fp32(d.v[(kvh * a.n_ctx + lo + (int64_t)j) * a.hd + e]);
                    (*out)[(i * a.n_head + h) * a.hd + e] += s[j] / sum * v;
                    (*mag)[(i * a.n_head + h) * a.hd + e] += s[j] / sum * std::fabs(v);
                }
        }
}

std::vector<float> run_attention(const AttnCase &a, const AttnData &d, float scale) {
    std::vector<float> out(a.m * a.n_head * a.hd);
    attention(d.q.data(), d.k.data(), d.v.data(), a.m, a.n_head, a.n_kv_head, a.hd, a.n_ctx, a.pos0,
              scale, a.window, out.data());
    return out;
}

// Softmax weights are rounded to f16 before ·V, so results move by up to ~2^-11 of Σp|v|.
constexpr double kAttnRel = 2e-3;

void test_attention_reference() {
    Section s("reference: attention ~ double formula");
    set_isa("scalar");
    for (const AttnCase &a : kAttnCases) {
        const AttnData d = make_attn(a);
        const float scale = 1.0f / std::sqrt((float)a.hd);
        std::vector<double> ref, mag;
        attention_double(a, d, scale, &ref, &mag);
        const std::vector<float> got = run_attention(a, d, scale);
        bool ok = true;
        for (size_t i = 0; i < got.size(); ++i)
            ok &= within(std::fabs(got[i] - ref[i]), kAttnRel * mag[i] + 1e-6);
        check(ok, fmt("attention hd=%lld n_ctx=%lld window=%lld vs double", (long long)a.hd,
                      (long long)a.n_ctx, (long long)a.window));
    }
}

void test_attention(const std::string &isa, const DotKernels &K) {
    Section s("[" + isa + "] attention ~ scalar");
    for (const AttnCase &a : kAttnCases) {
        const AttnData d = make_attn(a);
        const float scale = 1.0f / std::sqrt((float)a.hd);
        std::vector<double> ref, mag;
        attention_double(a, d, scale, &ref, &mag);
        set_isa("scalar");
        const std::vector<float> want = run_attention(a, d, scale);
        set_kernels(K);
        const std::vector<float> got = run_attention(a, d, scale);
        bool ok = true;
        for (size_t i = 0; i < got.size(); ++i)
            ok &= within(std::fabs((double)got[i] - want[i]), kAttnRel * mag[i] + 1e-6);
        check(ok, fmt("attention hd=%lld n_ctx=%lld window=%lld: %s vs scalar", (long long)a.hd,
                      (long long)a.n_ctx, (long long)a.window, isa.c_str()));
    }
}

struct RopeCase {
    int64_t m, n_head, head_dim, n_rot;
    bool neox, factors;
    float freq_scale, attn_factor;
};
const RopeCase kRopeCases[] = {
    {3, 2, 96, 96, true, false, 1.0f, 1.0f},
    {4, 3, 64, 32, true, true, 1.0f, 1.2f},     // partial rotation (Phi-2), Phi-3 long factors
    {2, 2, 64, 64, false, false, 0.25f, 1.0f},  // Llama pairs, linear scaling
};

std::vector<float> run_rope(const RopeCase &r, const std::vector<float> &x0,
                            const std::vector<int32_t> &pos, const std::vector<float> &ff) {
    std::vector<float> x = x0;
    rope(x.data(), pos.data(), r.m, r.n_head, r.head_dim, r.n_rot, 10000.0f, r.freq_scale,
         r.factors ? ff.data() : nullptr, r.attn_factor, r.neox);
    return x;
}

// rope has no ISA twin; under each ISA it must give the scalar bytes, and the double formula.
void test_rope(const std::string &isa, const DotKernels &K) {
    Section s("[" + isa + "] rope == scalar, ~ double formula");
    for (const RopeCase &r : kRopeCases) {
        const std::vector<float> x0 = make_data(kRandom, r.m * r.n_head * r.head_dim);
        std::vector<int32_t> pos(r.m);
        for (auto &p : pos) p = uniform_int(0, 40);
        std::vector<float> ff(r.n_rot / 2);
        for (auto &f : ff) f = uniform(1.0f, 8.0f);
        set_isa("scalar");
        const std::vector<float> want = run_rope(r, x0, pos, ff);
        set_kernels(K);
        const std::vector<float> got = run_rope(r, x0, pos, ff);
        check(std::memcmp(want.data(), got.data(), got.size() * sizeof(float)) == 0,
              fmt("rope n_rot=%lld neox=%d: %s != scalar", (long long)r.n_rot, (int)r.neox,
                  isa.c_str()));
        bool ok = true;
        for (int64_t t = 0; t < r.m; ++t)
            for (int64_t h = 0; h < r.n_head; ++h) {
                const float *in = x0.data() + (t * r.n_head + h) * r.head_dim;
                const float *out = got.data() + (t * r.n_head + h) * r.head_dim;
                std::vector<double> expect(in, in + r.head_dim);
                for (int64_t i = 0; i < r.n_rot / 2; ++i) {
                    const double theta = pos[t] * std::pow(10000.0, -2.0 * i / r.n_rot) *
                                         r.freq_scale / (r.factors ? ff[i] : 1.0);
                    const int64_t a = r.neox ? i : 2 * i, b = r.neox ? i + r.n_rot / 2 : 2 * i + 1;
                    const double c = std::cos(theta) * r.attn_factor,
                                 sn = std::sin(theta) * r.attn_factor;
                    expect[a] = in[a] * c - in[b] * sn;
                    expect[b] = in[a] * sn + in[b] * c;
                }
                for (int64_t i = 0; i < r.head_dim; ++i)
                    ok &= within(std::fabs(out[i] - expect[i]), 5e-4 * r.attn_factor);
            }
        check(ok, fmt("rope n_rot=%lld neox=%d factors=%d vs double", (long long)r.n_rot,
                      (int)r.neox, (int)r.factors));
    }
}

}  // namespace

// Every task of every run executes exactly once, across runs of varied sizes back to back (a
// worker waking late must not claim a finished run's tasks) and across a resize.
void test_thread_pool() {
    Section s("thread pool: each task runs exactly once");
    ThreadPool &pool = global_pool();
    std::vector<std::atomic<int>> hits(4096);
    for (int round = 0; round < 2000; ++round) {
        if (round == 1000) set_num_threads(2);
        const int64_t n = 1 + (round * 37) % 4096;
        for (int64_t i = 0; i < n; ++i) hits[i].store(0, std::memory_order_relaxed);
        pool.run(n, [&](int64_t t, int) { hits[t].fetch_add(1, std::memory_order_relaxed); });
        bool once = true;
        for (int64_t i = 0; i < n; ++i) once &= hits[i].load() == 1;
        check(once,
              fmt("round %d (%lld tasks): a task ran zero or several times", round, (long long)n));
    }
    set_num_threads(3);
}

// Every twin check on one ISA's table (made active for the matmul and attention paths).
void test_isa(const std::string &isa, const DotKernels &K, const DotKernels &S) {
    set_kernels(K);
    test_table(K, S);
    test_converters(isa, K, S);
    test_dots(isa, K, S);
    test_dot_rows(isa, K, S);
    test_dot_acts(isa, K, S);
    test_axpy(isa, K, S);
    test_matmul(isa, K);
    test_packed_gemm(isa, K);
    test_q4x16(isa, K);
    test_attention(isa, K);
    test_rope(isa, K);
}

// --isas: print the ISA line alone (CI checks what each emulated CPU selects) and exit.
int main(int argc, char **argv) {
    set_num_threads(3);  // several workers even on a small machine, so matmul/attention split work
    const std::vector<std::string> isas = available_isas();
    std::string list;
    for (const auto &i : isas) list += " " + i;
    std::printf("available ISAs:%s (active at start: %s)\n", list.c_str(), active_kernels().isa);
    if (argc > 1 && std::strcmp(argv[1], "--isas") == 0) return 0;
    try {
        test_unpack_matches_dequantize();
        test_round_trip();
        test_activation_round_trip();
        test_attention_reference();
        test_thread_pool();
        const DotKernels &S = dot_kernels_scalar();
        test_table(S, S);
        for (const std::string &isa : isas) {
            if (isa == "scalar") continue;
            set_isa(isa);
            const DotKernels &K = active_kernels();
            check(isa == K.isa, fmt("set_isa(%s) activated %s", isa.c_str(), K.isa));
            test_isa(isa, K, S);
        }
        // The AVX-VNNI kernel source built for AVX512-VL + VNNI (EVEX VPDPBUSD, the same operation
        // on ymm registers), where no AVX-VNNI CPU is at hand but an AVX-512 VNNI one is.
        const CpuFeatures &f = cpu_features();
        if (f.avx2 && f.fma && f.f16c && f.avx512vl && f.avx512vnni) {  // before its code runs
            const DotKernels *evex = dot_kernels_avxvnni_evex();
            if (evex != nullptr)
                test_isa("avxvnni-evex", *evex, S);
            else
                std::printf("note: the AVX-VNNI kernels are not built as EVEX here\n");
        } else {
            std::printf("note: no AVX512-VL + VNNI: the AVX-VNNI kernels are not run as EVEX\n");
        }
        if (isas.size() == 1)
            std::printf("note: no SIMD ISA on this machine/build; reference checks only\n");
    } catch (const std::exception &e) {
        check(false, fmt("exception: %s", e.what()));
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

// CPU feature detection (CPUID/XGETBV on x86-64, HWCAP on aarch64) and the active kernel table.
#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
// Bit values from the Linux ABI, for kernel headers older than the features (e.g. Jetson Nano's).
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

namespace phirt {

// Which ISA paths this build compiled; their table functions are stubs otherwise.
#if defined(PHIRT_HAVE_X86_SIMD)
constexpr bool kHaveX86 = true;
#else
constexpr bool kHaveX86 = false;
#endif
#if defined(PHIRT_HAVE_AVXVNNI)
constexpr bool kHaveAvxVnni = true;
#else
constexpr bool kHaveAvxVnni = false;
#endif
#if defined(PHIRT_HAVE_NEON)
constexpr bool kHaveNeon = true;
#else
constexpr bool kHaveNeon = false;
#endif

#if !defined(PHIRT_HAVE_X86_SIMD)
const DotKernels *dot_kernels_avx2() {
    return nullptr;
}
const DotKernels *dot_kernels_avx512() {
    return nullptr;
}
#endif
#if !defined(PHIRT_HAVE_AVXVNNI)  // the compiler had no -mavxvnni
const DotKernels *dot_kernels_avxvnni() {
    return nullptr;
}
#endif
#if !defined(PHIRT_HAVE_NEON)
const DotKernels *dot_kernels_neon() {
    return nullptr;
}
const DotKernels *dot_kernels_neon_dotprod() {
    return nullptr;
}
const DotKernels *dot_kernels_neon_i8mm() {
    return nullptr;
}
#endif

namespace {

CpuFeatures detect() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(_M_X64)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = c & (1u << 27);
    const bool avx = c & (1u << 28);
    f.fma = c & (1u << 12);
    f.f16c = c & (1u << 29);
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    if (osxsave) __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    const bool os_ymm = (xcr0_lo & 0x6) == 0x6;
    const bool os_zmm = (xcr0_lo & 0xE6) == 0xE6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    f.avx2 = avx && os_ymm && (b & (1u << 5));
    f.avx512f = os_zmm && (b & (1u << 16));
    f.avx512dq = os_zmm && (b & (1u << 17));
    f.avx512bw = os_zmm && (b & (1u << 30));
    f.avx512vl = os_zmm && (b & (1u << 31));
    f.avx512vnni = os_zmm && (c & (1u << 11));
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avxvnni = os_ymm && (a & (1u << 4));
    if (!f.avx2) f.fma = f.f16c = false;
#elif defined(__aarch64__)
    f.neon = true;  // mandatory on AArch64
#if defined(__linux__)
    f.dotprod = getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
    f.i8mm = getauxval(AT_HWCAP2) & HWCAP2_I8MM;
#endif
#endif
    return f;
}

// An ISA path. Its table function runs that ISA's code (building the table is compiled with its
// flags, and the compiler may use its instructions there), so it is called only once `compiled`
// and `supported` hold.
struct Candidate {
    const char *name;
    bool compiled;
    const DotKernels *(*table)();
    bool (*supported)(const CpuFeatures &);
};

// Worst to best where a CPU has several (Sapphire Rapids has AVX-VNNI and AVX-512 VNNI).
const Candidate kCandidates[] = {
    {"avx2", kHaveX86, dot_kernels_avx2,
     [](const CpuFeatures &f) { return f.avx2 && f.fma && f.f16c; }},
    {"avxvnni", kHaveAvxVnni, dot_kernels_avxvnni,
     [](const CpuFeatures &f) { return f.avx2 && f.fma && f.f16c && f.avxvnni; }},
    {"avx512", kHaveX86, dot_kernels_avx512,
     [](const CpuFeatures &f) {
         return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.f16c;
     }},
    {"neon", kHaveNeon, dot_kernels_neon, [](const CpuFeatures &f) { return f.neon; }},
    {"neon_dotprod", kHaveNeon, dot_kernels_neon_dotprod,
     [](const CpuFeatures &f) { return f.neon && f.dotprod; }},
    {"neon_i8mm", kHaveNeon, dot_kernels_neon_i8mm,
     [](const CpuFeatures &f) { return f.neon && f.dotprod && f.i8mm; }},
};

const DotKernels *lookup(const std::string &name) {
    if (name == "scalar") return &dot_kernels_scalar();
    for (const auto &c : kCandidates) {
        if (name != c.name) continue;
        if (!c.compiled)
            throw std::invalid_argument("ISA '" + name + "' is not compiled into this build");
        if (!c.supported(cpu_features()))
            throw std::invalid_argument("ISA '" + name + "' is not supported by this CPU");
        return c.table();
    }
    throw std::invalid_argument(
        "unknown ISA '" + name +
        "' (expected scalar, avx2, avxvnni, avx512, neon, neon_dotprod or neon_i8mm)");
}

const DotKernels *initial_table() {
    const char *env = std::getenv("PHIRT_ISA");
    if (env != nullptr && env[0] != '\0') return lookup(env);
    return lookup(available_isas().back());
}

std::atomic<const DotKernels *> g_active{nullptr};

}  // namespace

const CpuFeatures &cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out{"scalar"};
    for (const auto &c : kCandidates)
        if (c.compiled && c.supported(cpu_features())) out.push_back(c.name);
    return out;
}

const DotKernels &active_kernels() {
    const DotKernels *t = g_active.load(std::memory_order_acquire);
    if (t == nullptr) {
        t = initial_table();  // may throw for a bad PHIRT_ISA; surfaced at import
        g_active.store(t, std::memory_order_release);
    }
    return *t;
}

void set_isa(const std::string &name) {
    g_active.store(lookup(name), std::memory_order_release);
}

void set_kernels(const DotKernels &table) {
    g_active.store(&table, std::memory_order_release);
}

}  // namespace phirt

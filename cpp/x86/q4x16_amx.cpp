// AMX twin of q4x16_ref.cpp (interleaved Q4_0, see q4x16.h) for calls with many activation rows
// (prefill, and a server step with a joining prompt): Sapphire Rapids and later Xeons.
//
// Why. Prefill on AVX-512 VNNI spends its time in VPDPBUSD, one 16-lane int8 dot per cycle at
// best; AMX's TDPBSSD multiplies a 16-row activation tile by a 16-row weight tile in one
// instruction. The layout already fits: a panel block's four 64-byte chunks, split into low and
// high nibbles, are the eight rows of AMX's B tile (row kk holds elements 4kk..4kk+3 of the 16
// weight rows), so a panel is unpacked once into eight 64-byte rows per block and reused by every
// tile of 16 activation rows.
//
// Numerics: per block the tile gives each output the spec's exact isum = Σ q·(u - 8) (the
// panel is unpacked to signed u - 8 once, so no zero-point term is left per row), and acc =
// fma((float)isum, d_w · d_x, acc) runs over the blocks in order, so every output is the spec's
// bits (and the VNNI kernel's) whichever kernel or batch computed it.
//
// Compiled with the AVX-512 flags plus -mamx-tile -mamx-int8; reached only through the avx512
// table's q4_0x16_many, set when amx_ready() (the CPU has AMX-INT8 and Linux granted the tile
// state to this process).
#include <cpuid.h>
#include <immintrin.h>

#include <array>
#include <utility>
#include <vector>

#include "../q4x16.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace phirt {

namespace {

constexpr int kTileRows = 16;            // activation rows per tile (AMX's maximum)
constexpr int64_t kUnpackedBlock = 512;  // B tile of one block: 8 rows of 64 bytes

// Palette 1 tile configuration, as LDTILECFG reads it.
struct alignas(64) TileConfig {
    uint8_t palette_id = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

// Tiles: 0, 1 results (blocks b, b + 1); 2, 3 activations; 4, 5 weights.
void configure(int mr) {
    TileConfig c;
    for (int t = 0; t < 2; ++t) {
        c.rows[t] = (uint8_t)mr, c.colsb[t] = 64;          // mr × 16 int32
        c.rows[2 + t] = (uint8_t)mr, c.colsb[2 + t] = 32;  // mr × 32 int8 (one block)
        c.rows[4 + t] = 8, c.colsb[4 + t] = 64;            // 8 × (16 rows × 4 bytes)
    }
    _tile_loadconfig(&c);
}

// The panel's blocks as B tiles of signed weights u - 8: row c from the low nibbles of chunk c,
// row 4 + c from its high nibbles.
void unpack_panel(const uint8_t *codes, int64_t nb, uint8_t *out) {
    const __m512i low = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t *cb = codes + b * kQ4x16BlockCodes;
        uint8_t *ob = out + b * kUnpackedBlock;
        for (int c = 0; c < 4; ++c) {
            const __m512i v = _mm512_loadu_si512(cb + 64 * c);
            const __m512i lo = _mm512_and_si512(v, low);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            _mm512_storeu_si512(ob + 64 * c, _mm512_sub_epi8(lo, eight));
            _mm512_storeu_si512(ob + 64 * (4 + c), _mm512_sub_epi8(hi, eight));
        }
    }
}

// acc[i] = fma((float)isum[i], d_w · d_x, acc[i]) for the mr rows of one block's result.
template <int MR>
inline void scale_block(const int32_t *isum, __m512 sc, const GemmActs &a, int64_t i0, int64_t b,
                        __m512 *acc) {
    for (int i = 0; i < MR; ++i) {
        const int64_t row = i0 + i;
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(isum + 16 * i)),
                                 _mm512_mul_ps(sc, _mm512_set1_ps(a.d[row * a.ldg + b])), acc[i]);
    }
}

template <int MR>
void tile(const uint8_t *unpacked, const uint16_t *scales, int64_t nb, const GemmActs &a,
          int64_t i0, float *y, int64_t ldy, __mmask16 mask) {
    alignas(64) int32_t isum[2][kTileRows * 16];
    __m512 acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
    const int8_t *q = a.q + i0 * a.ldq;
    auto scale = [&](int64_t b) {
        return _mm512_cvtph_ps(
            _mm256_loadu_si256(reinterpret_cast<const __m256i *>(scales + b * 16)));
    };
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {  // two blocks in flight: the second's product overlaps the first's
        _tile_zero(0);
        _tile_zero(1);
        _tile_loadd(2, q + b * 32, a.ldq);
        _tile_loadd(4, unpacked + b * kUnpackedBlock, 64);
        _tile_loadd(3, q + (b + 1) * 32, a.ldq);
        _tile_loadd(5, unpacked + (b + 1) * kUnpackedBlock, 64);
        _tile_dpbssd(0, 2, 4);
        _tile_dpbssd(1, 3, 5);
        _tile_stored(0, isum[0], 64);
        _tile_stored(1, isum[1], 64);
        scale_block<MR>(isum[0], scale(b), a, i0, b, acc);
        scale_block<MR>(isum[1], scale(b + 1), a, i0, b + 1, acc);
    }
    if (b < nb) {
        _tile_zero(0);
        _tile_loadd(2, q + b * 32, a.ldq);
        _tile_loadd(4, unpacked + b * kUnpackedBlock, 64);
        _tile_dpbssd(0, 2, 4);
        _tile_stored(0, isum[0], 64);
        scale_block<MR>(isum[0], scale(b), a, i0, b, acc);
    }
    for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + (i0 + i) * ldy, mask, acc[i]);
}

using TileFn = void (*)(const uint8_t *, const uint16_t *, int64_t, const GemmActs &, int64_t,
                        float *, int64_t, __mmask16);

template <int... I>
constexpr auto make_tiles(std::integer_sequence<int, I...>) {
    return std::array<TileFn, sizeof...(I)>{tile<I + 1>...};
}
constexpr auto kTiles = make_tiles(std::make_integer_sequence<int, kTileRows>{});

}  // namespace

bool amx_ready() {
    static const bool ready = [] {
        unsigned a, b, c, d;
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
        const bool tile = d & (1u << 24), int8 = d & (1u << 25);
        if (!tile || !int8) return false;
#if defined(__linux__)
        // Linux hands out the 8 KiB of tile state only to a process that asks for it.
        constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
        return false;
#endif
    }();
    return ready;
}

void q4x16_gemm_amx(const uint8_t *panel, int64_t nb, const GemmActs &a, int64_t m, float *y,
                    int64_t ldy, int n_rows) {
    thread_local std::vector<uint8_t> unpacked;
    if ((int64_t)unpacked.size() < nb * kUnpackedBlock) unpacked.resize(nb * kUnpackedBlock);
    unpack_panel(panel, nb, unpacked.data());
    const auto *scales = reinterpret_cast<const uint16_t *>(panel + nb * kQ4x16BlockCodes);
    const __mmask16 mask = (__mmask16)((1u << n_rows) - 1);
    int configured = 0;
    for (int64_t i0 = 0; i0 < m; i0 += kTileRows) {
        const int mr = m - i0 < kTileRows ? (int)(m - i0) : kTileRows;
        if (mr != configured) configure(configured = mr);
        kTiles[mr - 1](unpacked.data(), scales, nb, a, i0, y, ldy, mask);
    }
    _tile_release();  // no tile state for the kernel to save at the next context switch
}

}  // namespace phirt

#include "weight_buffer.h"

#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace phirt {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}  // namespace

void WeightBuffer::Free::operator()(uint8_t *p) const {
    std::free(p);
}

WeightBuffer::WeightBuffer(size_t need, bool huge_pages) {
    const size_t align = huge_pages && need >= kHugePage ? kHugePage : 64;
    const size_t bytes = (need + align - 1) / align * align;
    auto *p = static_cast<uint8_t *>(std::aligned_alloc(align, bytes == 0 ? align : bytes));
    if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (align == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // advice: failure changes nothing
#endif
    data_.reset(p);
}

}  // namespace phirt

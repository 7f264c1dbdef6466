// Memory for weights phirt lays out itself at load time (ONNX MatMulNBits, the interleaved Q4_0
// panels): 64-byte aligned, and from 2 MiB on 2 MiB aligned. With huge_pages, transparent huge
// pages are asked for (where THP is "madvise", as on many servers): 4 KiB pages cost a TLB miss
// each when decode streams every byte once per token, but faulting the huge pages in is slow
// where the kernel compacts memory for them (defrag "madvise"). Each user weighs the two.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace phirt {

class WeightBuffer {
   public:
    WeightBuffer(size_t bytes, bool huge_pages);  // throws std::bad_alloc
    uint8_t *data() const { return data_.get(); }

   private:
    struct Free {
        void operator()(uint8_t *p) const;
    };
    std::unique_ptr<uint8_t, Free> data_;
};

}  // namespace phirt

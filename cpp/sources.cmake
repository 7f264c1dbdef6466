# Kernel sources and per-file ISA flags, shared by the Python module and the C++ test binary.
# Sets PHIRT_SOURCES and PHIRT_DEFINITIONS.
set(PHIRT_CPP_DIR ${CMAKE_CURRENT_LIST_DIR})

set(PHIRT_REFERENCE_SOURCES
    ${PHIRT_CPP_DIR}/quants.cpp
    ${PHIRT_CPP_DIR}/quants_k.cpp
    ${PHIRT_CPP_DIR}/dot_ref.cpp
    ${PHIRT_CPP_DIR}/gemm_ref.cpp
    ${PHIRT_CPP_DIR}/attn_q8_ref.cpp
    ${PHIRT_CPP_DIR}/nbits.cpp      # ONNX MatMulNBits: repack, dequantize, driver
    ${PHIRT_CPP_DIR}/nbits_ref.cpp   # ONNX MatMulNBits kernels (spec numerics)
    ${PHIRT_CPP_DIR}/nbits_quant.cpp)  # float -> MatMulNBits (the exporter's quantizer)
set(PHIRT_SOURCES
    ${PHIRT_REFERENCE_SOURCES}
    ${PHIRT_CPP_DIR}/dispatch.cpp
    ${PHIRT_CPP_DIR}/threadpool.cpp
    ${PHIRT_CPP_DIR}/matmul.cpp
    ${PHIRT_CPP_DIR}/ops.cpp)
set(PHIRT_DEFINITIONS "")

# The scalar reference is the spec: no FMA contraction, so rounding is the same on every machine.
set_source_files_properties(${PHIRT_REFERENCE_SOURCES} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
    set(_avx2 ${PHIRT_CPP_DIR}/x86/dot_avx2.cpp ${PHIRT_CPP_DIR}/x86/nbits_avx2.cpp)
    set(_avx512 ${PHIRT_CPP_DIR}/x86/dot_avx512.cpp ${PHIRT_CPP_DIR}/x86/gemm_avx512.cpp
        ${PHIRT_CPP_DIR}/x86/nbits_avx512.cpp)
    set_source_files_properties(${_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    set_source_files_properties(${_avx512} PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni")
    # bit-identical to the reference: no contraction of its separate products and sums
    set(_avx512_exact ${PHIRT_CPP_DIR}/x86/attn_q8_avx512.cpp)
    set_source_files_properties(${_avx512_exact} PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-ffp-contract=off")
    list(APPEND PHIRT_SOURCES ${_avx2} ${_avx512} ${_avx512_exact})
    list(APPEND PHIRT_DEFINITIONS PHIRT_HAVE_X86_SIMD)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64|ARM64")
    set(_neon ${PHIRT_CPP_DIR}/arm/dot_neon.cpp)
    set_source_files_properties(${_neon} PROPERTIES COMPILE_OPTIONS "-march=armv8.2-a+dotprod")
    list(APPEND PHIRT_SOURCES ${_neon})
    list(APPEND PHIRT_DEFINITIONS PHIRT_HAVE_NEON)
endif()

# Kernel sources and per-file ISA flags, shared by the Python module and the C++ test binary.
# Sets PHIRT_SOURCES, PHIRT_BINDING_SOURCES and PHIRT_DEFINITIONS.
set(PHIRT_CPP_DIR ${CMAKE_CURRENT_LIST_DIR})

set(PHIRT_REFERENCE_SOURCES
    ${PHIRT_CPP_DIR}/quants.cpp
    ${PHIRT_CPP_DIR}/quants_k.cpp
    ${PHIRT_CPP_DIR}/dot_ref.cpp
    ${PHIRT_CPP_DIR}/gemm_ref.cpp
    ${PHIRT_CPP_DIR}/q4x16_ref.cpp   # interleaved Q4_0 panels: repack and spec kernel
    ${PHIRT_CPP_DIR}/attn_q8_ref.cpp
    ${PHIRT_CPP_DIR}/nbits.cpp      # ONNX MatMulNBits: repack, dequantize, driver
    ${PHIRT_CPP_DIR}/nbits_ref.cpp   # ONNX MatMulNBits kernels (spec numerics)
    ${PHIRT_CPP_DIR}/nbits_quant.cpp)  # float -> MatMulNBits (the exporter's quantizer)
set(PHIRT_SOURCES
    ${PHIRT_REFERENCE_SOURCES}
    ${PHIRT_CPP_DIR}/dispatch.cpp
    ${PHIRT_CPP_DIR}/threadpool.cpp
    ${PHIRT_CPP_DIR}/weight_buffer.cpp
    ${PHIRT_CPP_DIR}/matmul.cpp
    ${PHIRT_CPP_DIR}/ops.cpp)
set(PHIRT_DEFINITIONS "")
# The Python module's own files (the only ones that include pybind11), on top of PHIRT_SOURCES.
set(PHIRT_BINDING_SOURCES
    ${PHIRT_CPP_DIR}/bindings.cpp
    ${PHIRT_CPP_DIR}/bind_gguf.cpp
    ${PHIRT_CPP_DIR}/sigbus_note.cpp)

# The scalar reference is the spec: no FMA contraction, so rounding is the same on every machine.
set_source_files_properties(${PHIRT_REFERENCE_SOURCES} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
    set(_avx2 ${PHIRT_CPP_DIR}/x86/dot_avx2.cpp ${PHIRT_CPP_DIR}/x86/nbits_avx2.cpp)
    set(_avx512 ${PHIRT_CPP_DIR}/x86/dot_avx512.cpp ${PHIRT_CPP_DIR}/x86/gemm_avx512.cpp
        ${PHIRT_CPP_DIR}/x86/nbits_avx512.cpp ${PHIRT_CPP_DIR}/x86/q4x16_avx512.cpp)
    set_source_files_properties(${_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    set_source_files_properties(${_avx512} PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni")
    # bit-identical to the reference: no contraction of its separate products and sums
    set(_avx2_exact ${PHIRT_CPP_DIR}/x86/attn_q8_avx2.cpp)
    set_source_files_properties(${_avx2_exact} PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-ffp-contract=off")
    set(_avx512_exact ${PHIRT_CPP_DIR}/x86/attn_q8_avx512.cpp)
    set_source_files_properties(${_avx512_exact} PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-ffp-contract=off")
    list(APPEND PHIRT_SOURCES ${_avx2} ${_avx512} ${_avx2_exact} ${_avx512_exact})
    list(APPEND PHIRT_DEFINITIONS PHIRT_HAVE_X86_SIMD)
    # AVX-VNNI (VEX VPDPBUSD) needs GCC >= 11 or Clang >= 12; older compilers build without it.
    include(CheckCXXCompilerFlag)
    check_cxx_compiler_flag(-mavxvnni PHIRT_CXX_HAS_AVXVNNI)
    if(PHIRT_CXX_HAS_AVXVNNI)
        set(_avxvnni ${PHIRT_CPP_DIR}/x86/dot_avxvnni.cpp)
        set_source_files_properties(${_avxvnni} PROPERTIES COMPILE_OPTIONS
            "-mavx2;-mfma;-mf16c;-mavxvnni")
        list(APPEND PHIRT_SOURCES ${_avxvnni})
        list(APPEND PHIRT_DEFINITIONS PHIRT_HAVE_AVXVNNI)
    endif()
    # AMX (tile int8) needs GCC >= 11 or Clang >= 12 as well; used only where the CPU has it.
    check_cxx_compiler_flag(-mamx-int8 PHIRT_CXX_HAS_AMX)
    if(PHIRT_CXX_HAS_AMX)
        set(_amx ${PHIRT_CPP_DIR}/x86/q4x16_amx.cpp)
        set_source_files_properties(${_amx} PROPERTIES COMPILE_OPTIONS
            "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mamx-tile;-mamx-int8")
        list(APPEND PHIRT_SOURCES ${_amx})
        list(APPEND PHIRT_DEFINITIONS PHIRT_HAVE_AMX)
    endif()
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64|ARM64")
    # One file per NEON level, each with its own -march: the baseline object must hold no SDOT or
    # SMMLA (one wheel runs on every AArch64 CPU; .ci/neon_tests.sh checks with objdump).
    set(_neon ${PHIRT_CPP_DIR}/arm/dot_neon.cpp)
    set(_neon_exact ${PHIRT_CPP_DIR}/arm/attn_q8_neon.cpp)  # bit-identical to the reference
    set(_neon_dotprod ${PHIRT_CPP_DIR}/arm/dot_neon_dotprod.cpp)
    set(_neon_i8mm ${PHIRT_CPP_DIR}/arm/dot_neon_i8mm.cpp)
    set_source_files_properties(${_neon} PROPERTIES COMPILE_OPTIONS "-march=armv8-a")
    set_source_files_properties(${_neon_exact} PROPERTIES COMPILE_OPTIONS
        "-march=armv8-a;-ffp-contract=off")
    # -fno-schedule-insns: GCC's pre-allocation scheduling spilled the GEMV/GEMM accumulators on
    # these out-of-order cores' kernels (3-5 % more instructions with it, benchmarks/neon_vs_ggml.py);
    # the baseline keeps it, for in-order Cortex-A53/A55.
    set_source_files_properties(${_neon_dotprod} PROPERTIES COMPILE_OPTIONS
        "-march=armv8.2-a+dotprod;-fno-schedule-insns")
    set_source_files_properties(${_neon_i8mm} PROPERTIES COMPILE_OPTIONS
        "-march=armv8.2-a+dotprod+i8mm;-fno-schedule-insns")
    list(APPEND PHIRT_SOURCES ${_neon} ${_neon_exact} ${_neon_dotprod} ${_neon_i8mm})
    list(APPEND PHIRT_DEFINITIONS PHIRT_HAVE_NEON)
endif()

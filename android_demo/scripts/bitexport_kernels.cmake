# The bitexport kernels (runtime_ops/csrc) as a static library inside ExecuTorch's own Android
# build. build_aar_with_kernels.sh injects this file into ExecuTorch's top-level project through
# CMAKE_PROJECT_executorch_INCLUDE, so the kernels compile with the very definitions the AAR's
# runtime is built with (ET_LOG_ENABLED, thread pool, ...), and passes
# EXECUTORCH_JNI_CUSTOM_LIBRARY=bitexport_kernels, which extension/android/CMakeLists.txt links
# --whole-archive into libexecutorch.so: the EXECUTORCH_LIBRARY registration then runs when the
# app loads the library.
if(TARGET bitexport_kernels)
  return()
endif()
if(NOT BITEXPORT_CSRC OR NOT EXISTS "${BITEXPORT_CSRC}/tq2_op_executorch.cpp")
  message(FATAL_ERROR "BITEXPORT_CSRC must name bitexport's runtime_ops/csrc (got '${BITEXPORT_CSRC}')")
endif()

# Every kernel source (tq2_kernel_arm.cpp holds the NEON / dotprod / i8mm paths; the x86 file
# compiles to nothing here); the C entry points serve the desktop micro-benchmark only. No -march:
# the dotprod and i8mm functions carry their own target attributes and are chosen at run time from
# HWCAP, so one arm64-v8a library serves every phone.
file(GLOB _bitexport_sources CONFIGURE_DEPENDS "${BITEXPORT_CSRC}/*.cpp")
list(FILTER _bitexport_sources EXCLUDE REGEX "tq2_c_api\\.cpp$")

add_library(bitexport_kernels STATIC ${_bitexport_sources})
set_target_properties(bitexport_kernels PROPERTIES
  CXX_STANDARD 17
  CXX_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON
)
# ExecuTorch's own include roots (<executorch/...> and its vendored c10), as its targets use them.
target_include_directories(bitexport_kernels PRIVATE
  "${BITEXPORT_CSRC}"
  "${CMAKE_CURRENT_SOURCE_DIR}/.."
  "${CMAKE_CURRENT_SOURCE_DIR}/runtime/core/portable_type/c10"
)
# parallel_for goes to the runtime's thread pool when the build has one (targets are known only at
# generate time: this file runs before ExecuTorch defines them).
target_compile_definitions(bitexport_kernels PRIVATE
  C10_USING_CUSTOM_GENERATED_MACROS
  $<$<TARGET_EXISTS:extension_threadpool>:ET_USE_THREADPOOL>
)
# Bit-exact float arithmetic (runtime_ops/csrc/tq2_layout.h): no FMA contraction, no fast-math.
target_compile_options(bitexport_kernels PRIVATE -ffp-contract=off -fno-fast-math)
target_link_libraries(bitexport_kernels PRIVATE
  executorch_core
  $<TARGET_NAME_IF_EXISTS:extension_threadpool>
)

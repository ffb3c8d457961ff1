# Cross compiling for aarch64 Linux with Debian's g++-aarch64-linux-gnu (its sysroot is
# /usr/aarch64-linux-gnu, which qemu-aarch64 -L also uses to run the result).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
if(NOT CMAKE_CXX_COMPILER)
  set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
endif()
if(NOT CMAKE_C_COMPILER)
  set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
endif()
# No CMAKE_FIND_ROOT_PATH: the executorch package is an unpacked wheel outside the sysroot and is
# named by executorch_DIR; re-rooting searches under the sysroot would hide it.

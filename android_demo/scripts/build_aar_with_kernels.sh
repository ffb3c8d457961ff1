#!/usr/bin/env bash
# Builds ExecuTorch's Android AAR with bitexport's tq2 kernels linked into libexecutorch.so, for
# the demo app's tq2 bundles (`bitexport export --target android`, the default --weights tq2).
#
#   ANDROID_NDK=~/Library/Android/sdk/ndk/28.2.13676358 ANDROID_SDK=~/Library/Android/sdk \
#     android_demo/scripts/build_aar_with_kernels.sh
#   cd android_demo && ./gradlew installRelease -PbitexportAar=$PWD/aar/executorch-bitexport.aar
#
# What it does: clones ExecuTorch at the tag of the wheel bitexport pins (v1.5.1, with
# submodules), then runs that version's own scripts/build_android_library.sh with three CMake
# definitions added to its configure step:
#   CMAKE_PROJECT_executorch_INCLUDE=bitexport_kernels.cmake  defines the static library
#                                                             bitexport_kernels from runtime_ops/csrc
#   BITEXPORT_CSRC=<repo>/runtime_ops/csrc
#   EXECUTORCH_JNI_CUSTOM_LIBRARY=bitexport_kernels           linked --whole-archive into the JNI .so
# and copies the resulting AAR to android_demo/aar/executorch-bitexport.aar.
#
#   android_demo/scripts/build_aar_with_kernels.sh --dry-run   # checks the settings, prints the plan,
#                                                               # needs no NDK/SDK, clones and builds nothing
#
# Environment: ANDROID_NDK (required; r28c, the NDK ExecuTorch's CI uses), ANDROID_SDK or
# ANDROID_HOME (required, for the Gradle step; platform 34), ANDROID_ABIS (default arm64-v8a; a
# space- or comma-separated list: "arm64-v8a x86_64" adds the emulator; build the app with
# -PbitexportAbis=arm64-v8a,x86_64 then), AAR_OUT_DIR (default android_demo/aar),
# EXECUTORCH_VERSION (default 1.5.1), EXECUTORCH_SRC (an existing checkout of that tag, in a
# folder named executorch), PYTHON_EXECUTABLE (default: the repository's .venv, which has the
# torch and executorch the build's code generators import).
set -euo pipefail

die() { echo "build_aar_with_kernels.sh: $*" >&2; exit 2; }

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d'; exit 0 ;;
    *) die "unknown argument '$arg' (only --dry-run)" ;;
  esac
done

# ANDROID_ABIS arrives from the environment as one string, but ExecuTorch's
# scripts/build_android_library.sh loops over a bash array ("${ANDROID_ABIS[@]}"), and arrays do
# not pass through the environment: "arm64-v8a x86_64" would reach it as a single ABI named
# "arm64-v8a x86_64". Split it here into an array, check every entry, and hand the array over
# below (abi_array is also what the checks at the end loop over).
read -r -a abi_array <<< "$(printf '%s' "${ANDROID_ABIS:-arm64-v8a}" | tr ',' ' ')"
[ "${#abi_array[@]}" -gt 0 ] || die "ANDROID_ABIS is empty; use e.g. \"arm64-v8a\" or \"arm64-v8a x86_64\""
for abi in "${abi_array[@]}"; do
  case "$abi" in
    # the presets of ExecuTorch's CMakePresets.json (android-<abi>)
    arm64-v8a|x86_64) ;;
    *) die "ANDROID_ABIS: '$abi' is not an ABI ExecuTorch's Android presets build (arm64-v8a, x86_64)" ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/android_demo/scripts"
CSRC="$REPO/runtime_ops/csrc"
EXECUTORCH_VERSION="${EXECUTORCH_VERSION:-1.5.1}"
WORK="${WORK:-$REPO/android_demo/build/executorch-aar}"
EXECUTORCH_SRC="${EXECUTORCH_SRC:-$WORK/executorch}"
OUT_DIR="${AAR_OUT_DIR:-$REPO/android_demo/aar}"
EXTRA="-DCMAKE_PROJECT_executorch_INCLUDE=$HERE/bitexport_kernels.cmake -DBITEXPORT_CSRC=$CSRC -DEXECUTORCH_JNI_CUSTOM_LIBRARY=bitexport_kernels"

if [ "$DRY_RUN" = 1 ]; then
  echo "executorch: v$EXECUTORCH_VERSION in $EXECUTORCH_SRC"
  for abi in "${abi_array[@]}"; do echo "abi: $abi"; done
  echo "cmake definitions: $EXTRA"
  echo "aar: $OUT_DIR/executorch-bitexport.aar"
  echo "app: ./gradlew installRelease -PbitexportAar=$OUT_DIR/executorch-bitexport.aar -PbitexportAbis=$(IFS=,; echo "${abi_array[*]}")"
  exit 0
fi

[ -n "${ANDROID_NDK:-}" ] || die "set ANDROID_NDK to an Android NDK (r28c, what ExecuTorch's CI uses), e.g. \$ANDROID_HOME/ndk/28.2.13676358"
[ -d "$ANDROID_NDK" ] || die "ANDROID_NDK=$ANDROID_NDK is not a folder"
export ANDROID_NDK
export ANDROID_SDK="${ANDROID_SDK:-${ANDROID_HOME:-}}"
[ -n "$ANDROID_SDK" ] || die "set ANDROID_SDK (or ANDROID_HOME) to the Android SDK; the AAR is packaged by Gradle"
[ -f "$CSRC/tq2_op_executorch.cpp" ] || die "$CSRC has no kernel sources; run this from a bitexport checkout"
if [ -z "${PYTHON_EXECUTABLE:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then
  PYTHON_EXECUTABLE="$REPO/.venv/bin/python"
fi
export PYTHON_EXECUTABLE="${PYTHON_EXECUTABLE:-python3}"

[ "$(basename "$EXECUTORCH_SRC")" = "executorch" ] || die "EXECUTORCH_SRC must be a folder named executorch (ExecuTorch's CMake requires it)"
if [ ! -d "$EXECUTORCH_SRC/.git" ]; then
  mkdir -p "$(dirname "$EXECUTORCH_SRC")"
  git clone --depth 1 --branch "v$EXECUTORCH_VERSION" --recurse-submodules --shallow-submodules \
    https://github.com/pytorch/executorch.git "$EXECUTORCH_SRC"
fi

UPSTREAM="$EXECUTORCH_SRC/scripts/build_android_library.sh"
[ -f "$UPSTREAM" ] || die "$UPSTREAM not found; is $EXECUTORCH_SRC an ExecuTorch checkout?"
# The upstream configure step has one `--preset "android-${ANDROID_ABI}" \` line; our definitions
# go on a new line right after it, inside the same continued cmake command.
PRESET_LINE='--preset "android-${ANDROID_ABI}"'
grep -qF -- "$PRESET_LINE" "$UPSTREAM" \
  || die "$UPSTREAM has no line '$PRESET_LINE'; this ExecuTorch version builds its AAR differently, add the three -D definitions above by hand"
# The upstream script runs main only when executed, not when sourced: sourcing it lets us set
# ANDROID_ABIS as a real array before calling main.
grep -qF 'if [[ "${BASH_SOURCE[0]}" == "${0}" ]]' "$UPSTREAM" \
  || die "$UPSTREAM cannot be sourced without running; this ExecuTorch version builds its AAR differently"
PATCHED="$EXECUTORCH_SRC/scripts/.build_android_library_bitexport.sh"
awk -v line="$PRESET_LINE" -v extra="    $EXTRA \\" '{ print } index($0, line) { print extra }' "$UPSTREAM" > "$PATCHED"

mkdir -p "$OUT_DIR"
(
  cd "$EXECUTORCH_SRC"
  unset ANDROID_ABIS
  # $0 of the inner shell must not be the script's path, or its guard would run main on source.
  BUILD_AAR_DIR="$OUT_DIR" bash -c 'script="$1"; shift; source "$script" && ANDROID_ABIS=("$@") && main' \
    build_aar_with_kernels "$PATCHED" "${abi_array[@]}"
)
mv "$OUT_DIR/executorch.aar" "$OUT_DIR/executorch-bitexport.aar"

# The kernel registration must be in the shipped library, or tq2 bundles fail at load with
# "Missing operator" (0x14) on the phone.
for abi in "${abi_array[@]}"; do
  so="$EXECUTORCH_SRC/cmake-out-android-so/$abi/libexecutorch.so"
  if ! grep -qa "tq2_linear" "$so"; then
    die "$so has no bitexport::tq2_linear registration; the custom library was not linked"
  fi
done
echo "wrote $OUT_DIR/executorch-bitexport.aar"
echo "build the app with: (cd android_demo && ./gradlew installRelease -PbitexportAar=$OUT_DIR/executorch-bitexport.aar -PbitexportAbis=$(IFS=,; echo "${abi_array[*]}"))"

#!/usr/bin/env bash
# Builds libbitexport_kernels.a (the tq2 kernels of runtime_ops/csrc) for iOS devices and the
# simulator with CMake's own iOS support, and writes Config/Kernels.local.xcconfig so the app
# links it with -force_load (the EXECUTORCH_LIBRARY registration is a static initializer that the
# linker would otherwise drop). Needed for tq2 ExecuTorch bundles only.
#
#   ios_demo/scripts/build_kernels_ios.sh        # on a Mac with Xcode 16+
#   (cd ios_demo && xcodegen generate)           # then build the app as usual
#
# Environment: EXECUTORCH_INCLUDE_DIR (default: the executorch wheel of the repository's .venv,
# `pip install -e .` on the Mac), CMAKE (default: cmake from .venv, else PATH; 3.28 or newer),
# IOS_DEPLOYMENT_TARGET (default 17.0), BITEXPORT_KERNEL_LOGS=ON when the app links the
# *_debug ExecuTorch frameworks.
set -euo pipefail

die() { echo "build_kernels_ios.sh: $*" >&2; exit 2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IOS="$REPO/ios_demo"
CSRC="$REPO/runtime_ops/csrc"
OUT="$IOS/build/kernels"

[ "$(uname)" = "Darwin" ] || die "builds for iOS need macOS with Xcode (xcrun); on Linux only the aarch64 cross-compile test runs"
xcrun --sdk iphoneos --show-sdk-path > /dev/null || die "no iOS SDK: install Xcode and run xcode-select -s /Applications/Xcode.app"

PY="$REPO/.venv/bin/python"
if [ -z "${EXECUTORCH_INCLUDE_DIR:-}" ]; then
  [ -x "$PY" ] || die "set EXECUTORCH_INCLUDE_DIR, or create the repository's .venv (pip install -e .)"
  EXECUTORCH_INCLUDE_DIR="$("$PY" -c 'import executorch, os; print(os.path.join(list(executorch.__path__)[0], "include"))')"
fi
CMAKE="${CMAKE:-}"
if [ -z "$CMAKE" ]; then
  if [ -x "$REPO/.venv/bin/cmake" ]; then CMAKE="$REPO/.venv/bin/cmake"; else CMAKE="$(command -v cmake || true)"; fi
fi
[ -n "$CMAKE" ] || die "no cmake found; pip install cmake (3.28 or newer)"

for sdk in iphoneos iphonesimulator; do
  build="$OUT/cmake-$sdk"
  "$CMAKE" -S "$IOS/scripts/kernels" -B "$build" \
    -DCMAKE_SYSTEM_NAME=iOS \
    -DCMAKE_OSX_SYSROOT="$sdk" \
    -DCMAKE_OSX_ARCHITECTURES=arm64 \
    -DCMAKE_OSX_DEPLOYMENT_TARGET="${IOS_DEPLOYMENT_TARGET:-17.0}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBITEXPORT_CSRC="$CSRC" \
    -DEXECUTORCH_INCLUDE_DIR="$EXECUTORCH_INCLUDE_DIR" \
    -DBITEXPORT_KERNEL_LOGS="${BITEXPORT_KERNEL_LOGS:-OFF}"
  "$CMAKE" --build "$build" --config Release
  mkdir -p "$OUT/$sdk"
  cp "$build/libbitexport_kernels.a" "$OUT/$sdk/libbitexport_kernels.a"
done

cat > "$IOS/Config/Kernels.local.xcconfig" <<XCCONFIG
// Written by scripts/build_kernels_ios.sh: links the tq2 kernels into the app. Delete this file
// (and rebuild) to go back to the stock runtime.
BITEXPORT_KERNELS_DIR = $OUT
BITEXPORT_KERNEL_LDFLAGS[sdk=iphoneos*] = -force_load \$(BITEXPORT_KERNELS_DIR)/iphoneos/libbitexport_kernels.a
BITEXPORT_KERNEL_LDFLAGS[sdk=iphonesimulator*] = -force_load \$(BITEXPORT_KERNELS_DIR)/iphonesimulator/libbitexport_kernels.a
BITEXPORT_SWIFT_CONDITIONS = BITEXPORT_KERNELS
XCCONFIG
echo "wrote $OUT/{iphoneos,iphonesimulator}/libbitexport_kernels.a and $IOS/Config/Kernels.local.xcconfig"

#!/usr/bin/env bash
# Compiles every Kotlin source of the Android app with a real Kotlin compiler against stubs/
# (ExecuTorch's LLM API with its runtime's behaviour modelled; org.json, android.util.JsonReader,
# androidx.lifecycle; the signatures of the Compose, activity and lifecycle-compose calls of
# MainActivity.kt), then runs src/Check.kt on the JVM: LlmRunner, BundleManifest and DemoViewModel
# against the modelled runtime (the Compose screen is type-checked only). Needs java 17+ and a
# Kotlin compiler: KOTLINC, kotlinc-jvm on PATH, or `npm install --prefix android_demo/jvmcheck
# kotlin-compiler@2.4.20` (this script does that with --install).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APP="$HERE/../app/src/main/java/org/bitexport/demo"
if [ "${1:-}" = "--install" ] && [ ! -x "$HERE/node_modules/kotlin-compiler/bin/kotlinc-jvm" ]; then
  npm install --prefix "$HERE" --no-audit --no-fund kotlin-compiler@2.4.20 >&2
fi
KOTLINC="${KOTLINC:-$(command -v kotlinc-jvm || true)}"
[ -n "$KOTLINC" ] || KOTLINC="$HERE/node_modules/kotlin-compiler/bin/kotlinc-jvm"
[ -x "$KOTLINC" ] || { echo "jvmcheck: no Kotlin compiler (set KOTLINC, or run with --install)" >&2; exit 3; }
LIB="$(cd "$(dirname "$KOTLINC")/../lib" && pwd)"
COROUTINES="$LIB/kotlinx-coroutines-core-jvm.jar"
[ -f "$COROUTINES" ] || { echo "jvmcheck: $COROUTINES missing (a full Kotlin distribution has it)" >&2; exit 3; }
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$KOTLINC" -nowarn -cp "$COROUTINES" -jvm-target 17 -d "$OUT/check.jar" \
  "$HERE"/stubs/*.kt "$HERE"/src/*.kt "$APP"/*.kt
java -cp "$OUT/check.jar:$LIB/kotlin-stdlib.jar:$COROUTINES" CheckKt

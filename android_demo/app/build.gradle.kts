import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

// ExecuTorch's AAR at the version of the executorch wheel the exporter pins (gradle.properties).
val executorchVersion: String = providers.gradleProperty("executorchVersion").getOrElse("1.5.1")

// The tq2 switch: -PbitexportAar=/abs/path/executorch.aar (or bitexportAar= in gradle.properties)
// points at an AAR built by scripts/build_aar_with_kernels.sh, whose libexecutorch.so has the
// bitexport::tq2_linear.out kernel linked in. The stock AAR exports only JNI symbols, so a kernel
// cannot be added to it from outside (../shared/NOTES.md); --weights int4 bundles need no kernel.
val bitexportAar: String? = providers.gradleProperty("bitexportAar").orNull?.takeIf { it.isNotBlank() }

// The ABIs packaged: arm64-v8a (phones) by default, which is what build_aar_with_kernels.sh builds
// by default too. The stock AAR also ships x86_64 (the emulator on x86-64 hosts): add it with
// -PbitexportAbis=arm64-v8a,x86_64, for a kernel AAR only when it was built with
// ANDROID_ABIS="arm64-v8a x86_64" (the script's dry run prints the matching flag).
val bitexportAbis: List<String> = providers.gradleProperty("bitexportAbis").getOrElse("arm64-v8a")
    .split(',', ' ').map { it.trim() }.filter { it.isNotEmpty() }

if (bitexportAar != null && !file(bitexportAar).isFile) {
    throw GradleException(
        "bitexportAar=$bitexportAar is not a file; build it with android_demo/scripts/build_aar_with_kernels.sh",
    )
}

android {
    namespace = "org.bitexport.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.bitexport.demo"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk { abiFilters += bitexportAbis }
        buildConfigField("boolean", "BITEXPORT_KERNELS", (bitexportAar != null).toString())
        buildConfigField(
            "String",
            "EXECUTORCH_RUNTIME",
            "\"" + (bitexportAar?.let { "local AAR " + file(it).name } ?: "org.pytorch:executorch-android:$executorchVersion") + "\"",
        )
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            // Benchmarks are meant to be run from a release build: debuggable builds run slower.
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    buildFeatures {
        compose = true
        buildConfig = true
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    if (bitexportAar != null) {
        implementation(files(bitexportAar))
        // A file dependency brings no POM: these are what org.pytorch:executorch-android declares.
        implementation("com.facebook.fbjni:fbjni:0.7.0")
        implementation("com.facebook.soloader:nativeloader:0.10.5")
    } else {
        implementation("org.pytorch:executorch-android:$executorchVersion")
    }

    implementation(platform("androidx.compose:compose-bom:2024.12.01"))
    implementation("androidx.compose.ui:ui")
    implementation("androidx.compose.material3:material3")
    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.lifecycle:lifecycle-viewmodel-compose:2.8.7")
    implementation("androidx.lifecycle:lifecycle-runtime-compose:2.8.7")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}

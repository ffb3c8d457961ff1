// Versions: Android Gradle Plugin 8.7 (needs Gradle >= 8.9, JDK 17), Kotlin 2.1 with its Compose
// compiler plugin. Android Studio Ladybug (2024.2) or newer opens this project as it is.
plugins {
    id("com.android.application") version "8.7.3" apply false
    id("org.jetbrains.kotlin.android") version "2.1.0" apply false
    id("org.jetbrains.kotlin.plugin.compose") version "2.1.0" apply false
}

@file:Suppress("UNUSED_PARAMETER", "unused")

package androidx.activity

import android.os.Bundle

open class ComponentActivity {
    open fun onCreate(savedInstanceState: Bundle?) {}
}

inline fun <reified VM : Any> ComponentActivity.viewModels(): Lazy<VM> = lazy { error("stub") }

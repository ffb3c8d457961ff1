@file:Suppress("UNUSED_PARAMETER", "unused")

package androidx.compose.ui.text.font

class FontFamily private constructor() {
    companion object { val Monospace = FontFamily(); val Default = FontFamily() }
}

@file:Suppress("UNUSED_PARAMETER", "unused")

package androidx.compose.ui

interface Modifier {
    companion object : Modifier
}

interface Alignment {
    interface Vertical
    interface Horizontal
    companion object {
        val CenterVertically: Vertical = object : Vertical {}
        val Top: Vertical = object : Vertical {}
        val Start: Horizontal = object : Horizontal {}
    }
}

package androidx.compose.ui.graphics

class Color(val argb: Long) { companion object { val Unspecified = Color(0) } }

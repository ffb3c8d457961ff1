@file:Suppress("UNUSED_PARAMETER", "unused")

package androidx.compose.foundation

import androidx.compose.ui.Modifier

class ScrollState
fun rememberScrollState(initial: Int = 0): ScrollState = ScrollState()
fun Modifier.verticalScroll(state: ScrollState, enabled: Boolean = true): Modifier = this

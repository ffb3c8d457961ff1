@file:Suppress("UNUSED_PARAMETER", "unused")

package androidx.compose.foundation.layout

import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.Dp

object Arrangement {
    interface Horizontal
    interface Vertical
    interface HorizontalOrVertical : Horizontal, Vertical
    val Start: Horizontal = object : Horizontal {}
    val Top: Vertical = object : Vertical {}
    fun spacedBy(space: Dp): HorizontalOrVertical = object : HorizontalOrVertical {}
}

interface RowScope { fun Modifier.weight(weight: Float, fill: Boolean = true): Modifier = this }
interface ColumnScope { fun Modifier.weight(weight: Float, fill: Boolean = true): Modifier = this }

inline fun Column(
    modifier: Modifier = Modifier,
    verticalArrangement: Arrangement.Vertical = Arrangement.Top,
    horizontalAlignment: Alignment.Horizontal = Alignment.Start,
    content: ColumnScope.() -> Unit,
) {}

inline fun Row(
    modifier: Modifier = Modifier,
    horizontalArrangement: Arrangement.Horizontal = Arrangement.Start,
    verticalAlignment: Alignment.Vertical = Alignment.Top,
    content: RowScope.() -> Unit,
) {}

fun Modifier.fillMaxSize(fraction: Float = 1f): Modifier = this
fun Modifier.fillMaxWidth(fraction: Float = 1f): Modifier = this
fun Modifier.imePadding(): Modifier = this
fun Modifier.safeDrawingPadding(): Modifier = this
fun Modifier.padding(all: Dp): Modifier = this

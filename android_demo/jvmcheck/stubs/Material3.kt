@file:Suppress("UNUSED_PARAMETER", "unused")

package androidx.compose.material3

import androidx.compose.foundation.layout.RowScope
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.text.TextStyle
import androidx.compose.ui.text.font.FontFamily

class Typography { val titleMedium = TextStyle(); val bodyLarge = TextStyle(); val bodyMedium = TextStyle() }
class ColorScheme { val error = Color(0xFFB3261E) }

object MaterialTheme {
    val typography: Typography get() = Typography()
    val colorScheme: ColorScheme get() = ColorScheme()
}

fun MaterialTheme(content: () -> Unit) {}
fun Surface(modifier: Modifier = Modifier, content: () -> Unit) {}
fun Text(
    text: String,
    modifier: Modifier = Modifier,
    color: Color = Color.Unspecified,
    fontFamily: FontFamily? = null,
    style: TextStyle = TextStyle(),
) {}
fun Button(onClick: () -> Unit, modifier: Modifier = Modifier, enabled: Boolean = true, content: RowScope.() -> Unit) {}
fun OutlinedButton(onClick: () -> Unit, modifier: Modifier = Modifier, enabled: Boolean = true, content: RowScope.() -> Unit) {}
fun OutlinedTextField(
    value: String,
    onValueChange: (String) -> Unit,
    modifier: Modifier = Modifier,
    enabled: Boolean = true,
    label: (() -> Unit)? = null,
) {}
fun Switch(checked: Boolean, onCheckedChange: ((Boolean) -> Unit)?, modifier: Modifier = Modifier, enabled: Boolean = true) {}

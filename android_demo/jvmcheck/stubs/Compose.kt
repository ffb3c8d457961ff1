// Signatures of the Jetpack Compose, activity and lifecycle APIs MainActivity.kt calls (Compose BOM
// 2024.12, activity-compose 1.9, lifecycle-runtime-compose 2.8), as plain functions: enough for
// kotlinc to type-check the screen (names, parameter names and types, scopes), nothing runs.
@file:Suppress("UNUSED_PARAMETER", "unused")

package androidx.compose.runtime

import kotlin.reflect.KProperty
import kotlinx.coroutines.CoroutineScope

annotation class Composable

interface State<out T> { val value: T }
interface MutableState<T> : State<T> { override var value: T }

operator fun <T> State<T>.getValue(thisObj: Any?, property: KProperty<*>): T = value
operator fun <T> MutableState<T>.setValue(thisObj: Any?, property: KProperty<*>, value: T) { this.value = value }

fun <T> mutableStateOf(value: T): MutableState<T> = object : MutableState<T> { override var value: T = value }
inline fun <T> remember(calculation: () -> T): T = calculation()
fun LaunchedEffect(key1: Any?, block: suspend CoroutineScope.() -> Unit) {}

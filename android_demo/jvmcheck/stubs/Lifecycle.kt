package androidx.lifecycle

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel

open class AndroidViewModel(app: android.app.Application) {
    internal val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
    protected open fun onCleared() {}
    /** What the framework does when the screen goes away: cancel the scope, then onCleared, on the caller's (main) thread. */
    fun clear() { scope.cancel(); onCleared() }
}

val AndroidViewModel.viewModelScope: CoroutineScope get() = scope

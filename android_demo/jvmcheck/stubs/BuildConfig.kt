package org.bitexport.demo

object BuildConfig {
    const val BITEXPORT_KERNELS = false
    const val EXECUTORCH_RUNTIME = "jvmcheck"
}

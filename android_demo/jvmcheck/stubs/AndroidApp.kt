package android.app

open class Application {
    open fun getExternalFilesDir(type: String?): java.io.File? = null
}

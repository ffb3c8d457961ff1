// org.json (Android's) and android.util.JsonReader, just what the app calls, over a small JSON
// parser: enough to run BundleManifest.kt on the JVM.
package org.json

internal class Parser(private val s: String) {
    private var i = 0
    fun parse(): Any? = value().also { ws(); require(i == s.length) { "trailing text at $i" } }
    private fun ws() { while (i < s.length && s[i].isWhitespace()) i++ }
    private fun value(): Any? {
        ws()
        return when (s[i]) {
            '{' -> obj()
            '[' -> arr()
            '"' -> str()
            't' -> { i += 4; true }
            'f' -> { i += 5; false }
            'n' -> { i += 4; JSONObject.NULL }
            else -> num()
        }
    }
    private fun obj(): JSONObject {
        val o = JSONObject(); i++; ws()
        if (s[i] == '}') { i++; return o }
        while (true) {
            ws(); val k = str(); ws(); require(s[i] == ':'); i++
            o.map[k] = value(); ws()
            if (s[i] == ',') { i++; continue }
            require(s[i] == '}'); i++; return o
        }
    }
    private fun arr(): JSONArray {
        val a = JSONArray(); i++; ws()
        if (s[i] == ']') { i++; return a }
        while (true) {
            a.list += value(); ws()
            if (s[i] == ',') { i++; continue }
            require(s[i] == ']'); i++; return a
        }
    }
    private fun str(): String {
        require(s[i] == '"'); i++
        val b = StringBuilder()
        while (s[i] != '"') {
            if (s[i] == '\\') {
                i++
                when (s[i]) {
                    'n' -> b.append('\n'); 't' -> b.append('\t'); 'r' -> b.append('\r'); 'b' -> b.append('\b'); 'f' -> b.append('\u000c')
                    'u' -> { b.append(s.substring(i + 1, i + 5).toInt(16).toChar()); i += 4 }
                    else -> b.append(s[i])
                }
                i++
            } else b.append(s[i++])
        }
        i++
        return b.toString()
    }
    private fun num(): Number {
        val start = i
        while (i < s.length && (s[i].isDigit() || s[i] in "+-.eE")) i++
        val t = s.substring(start, i)
        return if (t.any { it in ".eE" }) t.toDouble() else t.toLong().let { if (it in Int.MIN_VALUE..Int.MAX_VALUE) it.toInt() else it }
    }
}

class JSONObject() {
    internal val map = LinkedHashMap<String, Any?>()
    constructor(text: String) : this() { map.putAll((Parser(text).parse() as JSONObject).map) }
    companion object { @JvmField val NULL: Any = object { override fun toString() = "null" } }
    fun opt(name: String): Any? = map[name]
    fun has(name: String): Boolean = name in map
    fun getLong(name: String): Long = (map[name] as Number).toLong()
    fun getInt(name: String): Int = (map[name] as Number).toInt()
    fun optDouble(name: String, fallback: Double): Double = (map[name] as? Number)?.toDouble() ?: fallback
}

class JSONArray {
    internal val list = ArrayList<Any?>()
    fun length(): Int = list.size
    fun opt(index: Int): Any? = list.getOrNull(index)
}

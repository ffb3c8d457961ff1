// android.util.JsonReader's streaming calls, replayed over a parsed tree; android.app.Application;
// androidx.lifecycle's AndroidViewModel and viewModelScope (on a plain dispatcher: no main looper here).
package android.util

import java.io.Reader
import org.json.JSONArray
import org.json.JSONObject
import org.json.Parser

class JsonReader(reader: Reader) : java.io.Closeable {
    private val events = ArrayDeque<Any?>()
    private object BeginObject
    private object EndObject
    private object BeginArray
    private object EndArray
    private class Name(val name: String)

    init { flatten(Parser(reader.readText()).parse()) }

    private fun flatten(v: Any?) {
        when (v) {
            is JSONObject -> { events += BeginObject; v.map.forEach { (k, x) -> events += Name(k); flatten(x) }; events += EndObject }
            is JSONArray -> { events += BeginArray; v.list.forEach { flatten(it) }; events += EndArray }
            else -> events += v
        }
    }

    private fun expect(e: Any) { val got = events.removeFirst(); require(got === e) { "expected $e, got $got" } }
    fun beginObject() = expect(BeginObject)
    fun endObject() = expect(EndObject)
    fun beginArray() = expect(BeginArray)
    fun endArray() = expect(EndArray)
    fun hasNext(): Boolean = events.first() !== EndObject && events.first() !== EndArray
    fun nextName(): String = (events.removeFirst() as Name).name
    fun nextInt(): Int = (events.removeFirst() as Number).toInt()
    fun nextString(): String = events.removeFirst() as String
    fun skipValue() {
        var depth = 0
        do {
            when (events.removeFirst()) { BeginObject, BeginArray -> depth++; EndObject, EndArray -> depth-- }
        } while (depth > 0)
    }
    override fun close() {}
}

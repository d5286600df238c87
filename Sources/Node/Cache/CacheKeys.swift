// MARK: - Cache keys in Redis and the cache's bus messages (CONTRACT §3)
//
// One cache key <k> owns two Redis keys, both under the hash tag `{<k>}` so one Lua script may
// touch them and the layout moves to Redis Cluster unchanged:
//
//   concord:<cluster>:cache:{<k>}:value  hash  value (JSON text), version, expire_at_ms
//   concord:<cluster>:cache:{<k>}:dir    hash  v (last version), d (version of a dirty M copy,
//                                              write-back only), h:<node> -> "<state>:<lease_until_ms>"
//
// `<k>` is the key with `%`, `{` and `}` percent-encoded, so the first `}` always closes the tag
// and two different keys never build the same Redis key.

import Runtime

enum CacheKeys {
    /// `%` -> `%25`, `{` -> `%7B`, `}` -> `%7D`; everything else verbatim.
    static func escape(_ key: String) -> String { keyEscape(key, escaping: specials) }
    private static let specials: Set<UInt8> = [UInt8(ascii: "%"), UInt8(ascii: "{"), UInt8(ascii: "}")]

    static func value(cluster: String, key: String) -> String { "concord:\(cluster):cache:{\(escape(key))}:value" }
    static func dir(cluster: String, key: String) -> String { "concord:\(cluster):cache:{\(escape(key))}:dir" }
}

/// A MESI bus transaction between nodes, carried as the payload of a `.cache` bus request
/// (the reply is the acknowledgement). JSON: {"op", "key", "v", "flush"}.
///
/// - `BusRd`   (a reader to an E/M holder, or to a dirty M holder it needs flushed): E/M -> S,
///             a dirty line is written back first. `v`: the directory version the reader saw.
/// - `BusRdX`  (a writer that held no valid copy) and `BusUpgr` (a writer that held S): every line
///             with version <= `v` goes to I. No write-back: the new write replaces the value.
/// - `Inv`     (DELETE /cache/invalidate): lines with version <= `v` go to I; with `flush`, a dirty
///             line is written back first.
/// - `Del`     (POST /cache/delete): lines with version <= `v` go to I, no write-back.
///
/// Versions make late and duplicate messages harmless: a message never installs anything, it
/// only lowers lines up to its version, and a node remembers the highest version it was told
/// to drop while a fill or write of that key is in flight so the fill's older reply is not
/// installed afterwards.
struct CacheBusMessage: Equatable {
    enum Op: String, CaseIterable { case busRead = "BusRd", busReadExclusive = "BusRdX", busUpgrade = "BusUpgr", invalidate = "Inv", delete = "Del" }
    var op: Op
    var key: String
    var version: UInt64
    var flush: Bool = false

    func encode() -> [UInt8] {
        JSONValue.object([("op", .string(op.rawValue)), ("key", .string(key)), ("v", .int(version)), ("flush", .bool(flush))]).bytes
    }

    static func decode(_ bytes: [UInt8]) -> CacheBusMessage? {
        guard let json = try? JSONParser.parse(bytes), let opText = json["op"]?.stringValue, let op = Op(rawValue: opText),
              let key = json["key"]?.stringValue, !key.isEmpty, key.utf8.count <= Validate.maxNameBytes,
              let v = json["v"]?.int64Value, v >= 0 else { return nil }
        return CacheBusMessage(op: op, key: key, version: UInt64(v), flush: json["flush"]?.boolValue ?? false)
    }
}

// StableHash: a 64-bit hash that is the same in every process, on every run and on every
// platform. Swift's `Hasher` is randomly seeded per process, so it must never decide where a
// key or a partition lives: two nodes would disagree.
//
// Definition (reproducible in any language):
//   hash64(s) = fmix64(fnv1a64(utf8 bytes of s))
//   fnv1a64   = FNV-1a, 64-bit: h = 0xcbf29ce484222325; for each byte b: h = (h ^ b) * 0x100000001b3
//   fmix64    = MurmurHash3's 64-bit finalizer (below)
// FNV-1a alone mixes its last bytes poorly (the virtual nodes "n1#1", "n1#2", ... would differ
// mostly in low bits), so the finalizer spreads every input bit over the whole word.
//
// Strings are hashed by their UTF-8 bytes exactly as stored, without Unicode normalization:
// the same bytes on the wire give the same hash everywhere.

public enum StableHash {
    /// FNV-1a 64-bit offset basis.
    public static let fnvOffsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    /// FNV-1a 64-bit prime.
    public static let fnvPrime: UInt64 = 0x0000_0100_0000_01b3

    /// FNV-1a, 64-bit, over raw bytes.
    public static func fnv1a64<Bytes: Sequence>(bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        var hash = fnvOffsetBasis
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* fnvPrime
        }
        return hash
    }

    /// FNV-1a, 64-bit, over the UTF-8 bytes of `string`.
    public static func fnv1a64(_ string: String) -> UInt64 {
        // Fast path: native Swift strings expose their UTF-8 storage contiguously.
        if let hash = string.utf8.withContiguousStorageIfAvailable({ fnv1a64(bytes: $0) }) {
            return hash
        }
        return fnv1a64(bytes: string.utf8)
    }

    /// MurmurHash3's fmix64 finalizer: a bijection on UInt64 with full avalanche.
    public static func fmix64(_ value: UInt64) -> UInt64 {
        var mixed = value
        mixed ^= mixed >> 33
        mixed = mixed &* 0xff51_afd7_ed55_8ccd
        mixed ^= mixed >> 33
        mixed = mixed &* 0xc4ce_b9fe_1a85_ec53
        mixed ^= mixed >> 33
        return mixed
    }

    /// The hash every placement decision uses: `fmix64(fnv1a64(utf8(string)))`.
    public static func hash64(_ string: String) -> UInt64 {
        fmix64(fnv1a64(string))
    }
}

/// The partition (in `0..<partitions`) a message key lands in: `hash64(key) % partitions`.
/// The same key always lands in the same partition of a topic, in every process, because the
/// hash is stable and a topic's partition count never changes (CONTRACT §2.2).
/// Precondition: `partitions > 0`.
public func partition(forKey key: String, partitions: Int) -> Int {
    precondition(partitions > 0, "a topic has at least one partition")
    return Int(StableHash.hash64(key) % UInt64(partitions))
}

// A small seeded generator. The core never touches a global random source: every node owns
// one of these, seeded by its caller, so a run is reproduced exactly from its seeds.

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, trivially seedable.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, bound). `bound` must be > 0.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        return Int(next() % UInt64(bound))
    }

    /// True with probability `perMille` / 1000.
    public mutating func chance(_ perMille: Int) -> Bool {
        below(1000) < perMille
    }
}

/// Mixes a string into a seed so nodes sharing a cluster seed draw different timeouts.
func mixSeed(_ seed: UInt64, _ id: NodeID) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325 // FNV-1a offset basis
    for byte in id.utf8 {
        hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }
    var generator = SplitMix64(seed: seed ^ hash)
    return generator.next()
}

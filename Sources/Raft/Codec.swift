// Binary codec for Message (the bus envelope wraps these bytes; see issue 4).
//
// Layout, version 1 (all integers LEB128 varints unless noted):
//   u8 version(=1) | u8 type | u8 flags (bit0 reject, bit1 transfer, bit2 snapshot chunk)
//   string from | string to | term | logTerm | index | commit | hintIndex | hintTerm | context
//   entryCount | entryCount x (term | index | u8 kind | bytes data)
//   [snapshot chunk: index | term | voterCount | voterCount x string | totalBytes | offset | bytes data]
// string/bytes = varint length + raw bytes. Decoding checks every length against the bytes
// that remain before allocating, so a hostile input cannot make it allocate more than its size.

public enum MessageDecodeError: Error, Equatable, Sendable {
    case empty
    case tooLarge(Int)
    case unsupportedVersion(UInt8)
    case unknownType(UInt8)
    case unknownEntryKind(UInt8)
    case unknownFlags(UInt8)
    case truncated
    case varintOverflow
    case lengthOutOfRange
    case invalidUTF8
    case trailingBytes(Int)
    case invalidSnapshotChunk
}

extension Message {
    public static let codecVersion: UInt8 = 1
    /// Largest encoded message accepted by decode.
    public static let maxEncodedBytes = 64 << 20
    static let maxNodeIDBytes = 1024

    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        var size = 64 + from.utf8.count + to.utf8.count
        for entry in entries { size += entry.data.count + 24 }
        if let snapshot { size += snapshot.data.count + 64 }
        out.reserveCapacity(size)
        out.append(Message.codecVersion)
        out.append(type.rawValue)
        var flags: UInt8 = 0
        if reject { flags |= 1 }
        if transfer { flags |= 2 }
        if snapshot != nil { flags |= 4 }
        out.append(flags)
        Wire.putString(from, &out)
        Wire.putString(to, &out)
        for value in [term, logTerm, index, commit, hintIndex, hintTerm, context] {
            Wire.putVarint(value, &out)
        }
        Wire.putVarint(UInt64(entries.count), &out)
        for entry in entries {
            Wire.putVarint(entry.term, &out)
            Wire.putVarint(entry.index, &out)
            out.append(entry.kind.rawValue)
            Wire.putBytes(entry.data, &out)
        }
        if let snapshot {
            Wire.putVarint(snapshot.index, &out)
            Wire.putVarint(snapshot.term, &out)
            Wire.putVarint(UInt64(snapshot.voters.count), &out)
            for voter in snapshot.voters { Wire.putString(voter, &out) }
            Wire.putVarint(snapshot.totalBytes, &out)
            Wire.putVarint(snapshot.offset, &out)
            Wire.putBytes(snapshot.data, &out)
        }
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws -> Message {
        guard !bytes.isEmpty else { throw MessageDecodeError.empty }
        guard bytes.count <= maxEncodedBytes else { throw MessageDecodeError.tooLarge(bytes.count) }
        var reader = Wire.Reader(buffer: bytes)
        let version = try reader.byte()
        guard version == codecVersion else { throw MessageDecodeError.unsupportedVersion(version) }
        let rawType = try reader.byte()
        guard let type = MessageType(rawValue: rawType) else { throw MessageDecodeError.unknownType(rawType) }
        let flags = try reader.byte()
        guard flags & ~7 == 0 else { throw MessageDecodeError.unknownFlags(flags) }
        let from = try reader.string(maxBytes: maxNodeIDBytes)
        let to = try reader.string(maxBytes: maxNodeIDBytes)
        var message = Message(from: from, to: to, term: try reader.varint(), type: type)
        message.logTerm = try reader.varint()
        message.index = try reader.varint()
        message.commit = try reader.varint()
        message.hintIndex = try reader.varint()
        message.hintTerm = try reader.varint()
        message.context = try reader.varint()
        message.reject = flags & 1 != 0
        message.transfer = flags & 2 != 0
        // Each entry takes at least 4 bytes (term, index, kind, length), which bounds the count.
        let entryCount = try reader.count(minBytesEach: 4)
        var entries: [Entry] = []
        entries.reserveCapacity(entryCount)
        for _ in 0..<entryCount {
            let term = try reader.varint()
            let index = try reader.varint()
            let rawKind = try reader.byte()
            guard let kind = EntryKind(rawValue: rawKind) else { throw MessageDecodeError.unknownEntryKind(rawKind) }
            entries.append(Entry(term: term, index: index, kind: kind, data: try reader.bytes()))
        }
        message.entries = entries
        if flags & 4 != 0 {
            let index = try reader.varint()
            let term = try reader.varint()
            let voterCount = try reader.count(minBytesEach: 1)
            var voters: [NodeID] = []
            voters.reserveCapacity(voterCount)
            for _ in 0..<voterCount { voters.append(try reader.string(maxBytes: maxNodeIDBytes)) }
            let totalBytes = try reader.varint()
            let offset = try reader.varint()
            let data = try reader.bytes()
            let (end, overflow) = offset.addingReportingOverflow(UInt64(data.count))
            guard !overflow, end <= totalBytes else { throw MessageDecodeError.invalidSnapshotChunk }
            message.snapshot = SnapshotChunk(index: index, term: term, voters: voters,
                                             totalBytes: totalBytes, offset: offset, data: data)
        }
        guard reader.remaining == 0 else { throw MessageDecodeError.trailingBytes(reader.remaining) }
        return message
    }
}

enum Wire {
    static func putVarint(_ value: UInt64, _ out: inout [UInt8]) {
        var rest = value
        while rest >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(rest))
    }

    static func putBytes(_ bytes: [UInt8], _ out: inout [UInt8]) {
        putVarint(UInt64(bytes.count), &out)
        out.append(contentsOf: bytes)
    }

    static func putString(_ string: String, _ out: inout [UInt8]) {
        putBytes(Array(string.utf8), &out)
    }

    struct Reader {
        let buffer: [UInt8]
        var position = 0

        var remaining: Int { buffer.count - position }

        mutating func byte() throws -> UInt8 {
            guard position < buffer.count else { throw MessageDecodeError.truncated }
            defer { position += 1 }
            return buffer[position]
        }

        mutating func varint() throws -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                let next = try byte()
                if shift == 63 && next > 1 { throw MessageDecodeError.varintOverflow }
                result |= UInt64(next & 0x7F) << shift
                if next & 0x80 == 0 { return result }
                shift += 7
                if shift > 63 { throw MessageDecodeError.varintOverflow }
            }
        }

        /// A length that must fit in what remains.
        mutating func length() throws -> Int {
            let value = try varint()
            guard value <= UInt64(remaining) else {
                throw value > UInt64(Int32.max) ? MessageDecodeError.lengthOutOfRange : MessageDecodeError.truncated
            }
            return Int(value)
        }

        /// An element count, each element needing at least `minBytesEach` bytes.
        mutating func count(minBytesEach: Int) throws -> Int {
            let value = try varint()
            guard value <= UInt64(remaining / minBytesEach) else { throw MessageDecodeError.truncated }
            return Int(value)
        }

        mutating func bytes() throws -> [UInt8] {
            let count = try length()
            defer { position += count }
            return Array(buffer[position..<position + count])
        }

        mutating func string(maxBytes: Int) throws -> String {
            let raw = try bytes()
            guard raw.count <= maxBytes else { throw MessageDecodeError.lengthOutOfRange }
            guard let string = String(validating: raw, as: UTF8.self) else { throw MessageDecodeError.invalidUTF8 }
            return string
        }
    }
}

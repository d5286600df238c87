import CHiredis
import Foundation

/// hiredis's blocking client (the raw Streams baseline of `concord bench queue`, and the
/// benches' set-up on Redis): commands are appended (pipelined) and their replies read in
/// order, each visited in place.
public final class HiredisSync {
    private let context: UnsafeMutablePointer<redisContext>

    public init(url: RedisURL) throws {
        let tv = timeval(tv_sec: 5, tv_usec: 0)
        guard let c = redisConnectWithTimeout(url.host, Int32(url.port), tv) else { throw RuntimeError("cannot allocate a hiredis context") }
        guard c.pointee.err == 0 else {
            let message = HiredisSync.errorText(c)
            redisFree(c)
            throw RuntimeError("cannot connect to redis at \(url.host):\(url.port): \(message)")
        }
        redisSetTimeout(c, tv)
        context = c
        if let password = url.password, try call(url.user.map { ["AUTH", $0, password] } ?? ["AUTH", password]).isError {
            throw RuntimeError("AUTH failed")
        }
        if url.db != 0 { _ = try call(["SELECT", String(url.db)]) }
    }

    deinit { redisFree(context) }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// One command and its reply, copied (for set-up and clean-up, not the measured loop).
    public func call(_ args: [String]) throws -> RedisReply {
        append(args.map { Array($0.utf8) })
        var copied = RedisReply.null
        try reply { copied = $0.copied }
        return copied
    }

    /// Queues one command (written on the next `reply`).
    public func append(_ args: [[UInt8]]) {
        var flat: [UInt8] = []
        flat.reserveCapacity(args.reduce(0) { $0 + $1.count })
        for a in args { flat += a }
        let lengths = args.map(\.count)
        flat.withUnsafeBufferPointer { base in
            var offset = 0
            var argv: [UnsafePointer<CChar>?] = []
            argv.reserveCapacity(args.count)
            for n in lengths {
                argv.append(UnsafeRawPointer(base.baseAddress.map { $0 + offset } ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self))
                offset += n
            }
            _ = redisAppendCommandArgv(context, Int32(args.count), &argv, lengths)
        }
    }

    /// The next reply, visited in place and then freed.
    public func reply(_ visit: (RedisReplyView) -> Void) throws {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
            throw RuntimeError("redis connection failed: \(HiredisSync.errorText(context))")
        }
        let r = raw.assumingMemoryBound(to: redisReply.self)
        visit(RedisReplyView(UnsafePointer(r)))
        freeReplyObject(raw)
    }
}

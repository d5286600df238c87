// MARK: - The MESI near cache (CONTRACT §2.3, DESIGN §5)
//
// Each node keeps an LRU of lines (value, version, MESI state, lease). Redis is the memory;
// a directory hash per key, changed only by the `lua/cache_*.lua` scripts, is the single point
// of order: it assigns versions, knows every holder and its lease, and tells a writer whom to
// invalidate. Bus transactions (BusRd, BusRdX, BusUpgr, Inv, Del) travel as `.cache` bus
// requests over pub/sub; their replies are the acknowledgements.
//
// Why the invariant holds ("once a write returns, every later read returns it or newer"):
//   - a node serves a hit only from a line whose lease is valid on its own monotonic clock; that
//     lease ends `leaseSafetyMarginMs` before the lease the directory recorded (both counted from
//     the moment the granting script was sent);
//   - the write script turns every other holder into "being invalidated" (X) atomically with
//     the version bump, so no lease of an older version can be renewed afterwards, and returns
//     every node listed with a running lease, X ones included: a later write must also wait
//     for invalidations an earlier write has not yet seen acknowledged (an X entry goes when
//     its lease ends, or at once by cache_forget-1.lua after the node acknowledged);
//   - the writer returns only after each of them acknowledged the invalidation (acknowledging
//     means the line is already I) or its recorded lease has passed on the writer's clock
//     (plus `writerMarginMs`): after that no node can serve the old version;
//   - replies and bus messages travel on different connections, so an invalidation may overtake
//     the reply of a fill that registered just before the write: while a fill or write of a key
//     is in flight the node remembers the highest version it was told to drop (the key's
//     "floor") and never installs a reply at or below it.
// Lost messages never break this, they only cost the writer a wait of at most one lease; a
// node whose subscriber connection drops also drops every line at once and caches nothing
// until it is back (CONTRACT: it serves no cached copy meanwhile), and reads go to Redis.
// Leases assume clock skew between nodes below leaseSafetyMarginMs + writerMarginMs.
//
// Reads that hit touch no Redis at all; a line in use is renewed in the background once half
// its lease is gone (cache_renew-1.lua), a line not in use lapses to I when its lease ends.

import Cache
import CoreMetrics
import Foundation
import Logging
import Runtime

public final class CacheService: NodeService {
    /// Lease of a line in the directory (env CONCORD_CACHE_LEASE_MS, default 2000): a writer waits
    /// at most this long for a holder that went silent.
    let leaseMs: Int64
    /// A holder stops serving this much before the lease the directory recorded.
    let leaseSafetyMarginMs: Int64 = 100
    /// A writer waits this much past a silent holder's recorded lease.
    let writerMarginMs: Int64 = 50
    /// A reader waits at most this long for an E/M holder to acknowledge its downgrade to S
    /// (correctness does not depend on it; it keeps the holders' reported states exact).
    let downgradeWaitMs: Int64 = 300
    /// Write-back: dirty lines are flushed on this period, so within 1 s of the write.
    let flushPeriodMs = 250
    /// Directory entries (versions) outlive the last touch by a day, so versions stay monotonic
    /// across deletes and TTL expiry.
    let directoryTTLMs: Int64 = 86_400_000
    public static let maxValueBytes = 512 * 1024
    static let maxCacheBytes = 256 << 20
    static let maxTTLMs: Int64 = 365 * 86_400_000
    /// Retries of a read that finds a dirty M copy elsewhere (each waits for a flush or a lease).
    static let maxFlushRetries = 6

    private unowned let node: ConcordNode
    let writeBack: Bool
    let store: CacheStore
    private var subscribed = false
    /// Bumped whenever the subscription drops: a reply to a script sent before cannot install.
    private var epoch: UInt64 = 0
    private var shuttingDown = false
    private var timers: [LoopTimer] = []

    /// Keys with a fill or write in flight: count and floor (highest version to drop seen meanwhile).
    private struct KeyOps { var count = 0; var floor: UInt64 = 0 }
    private var inFlight: [String: KeyOps] = [:]
    /// Write-back writes of a key whose script reply has not been handled yet, and the read misses
    /// of that key waiting for it: a read script run after our write script would find our own
    /// fresh dirty M entry and take it for a copy lost in a restart (dropping it: the acknowledged
    /// write would be lost), so such a read waits until the write's line is installed.
    private var writeBackWrites: [String: (count: Int, deferred: [() -> Void])] = [:]
    /// Dirty lines removed from the LRU (evicted, lost subscription) whose write-back has not succeeded yet.
    private var pendingFlush: [String: (line: CacheLine, expireAt: Int64, attempts: Int)] = [:]

    // Counters for /cache/status and their Prometheus twins (handles cached: the hit path is hot).
    private(set) var hits: UInt64 = 0
    private(set) var misses: UInt64 = 0
    private(set) var evictions: UInt64 = 0
    private var writesWaiting = 0
    private let hitCounter: CoreMetrics.Counter
    private let missCounter: CoreMetrics.Counter
    private let evictionCounter: CoreMetrics.Counter

    private var cluster: String { node.config.cluster }
    private var nodeID: String { node.config.id }
    private var logger: Logger { node.logger }

    public init(node: ConcordNode) {
        self.node = node
        writeBack = node.config.cacheWriteBack
        var lease: Int64 = 2000
        if let text = ProcessInfo.processInfo.environment["CONCORD_CACHE_LEASE_MS"], let v = Int64(text), (200...60_000).contains(v) { lease = v }
        leaseMs = lease
        store = CacheStore(capacity: node.config.cacheCapacity, maxBytes: CacheService.maxCacheBytes)
        hitCounter = node.metrics.counter("concord_cache_hits_total")
        missCounter = node.metrics.counter("concord_cache_misses_total")
        evictionCounter = node.metrics.counter("concord_cache_evictions_total")
    }

    // MARK: NodeService

    public func register(_ router: Router) {
        router.add(.GET, "/cache/read/{key}") { [unowned self] request, params in
            let key = try Validate.name(params["key"] ?? "", field: "key")
            self.read(request, key)
        }
        router.add(.POST, "/cache/write") { [unowned self] request, _ in try self.write(request) }
        router.add(.DELETE, "/cache/invalidate/{key}") { [unowned self] request, params in
            let key = try Validate.name(params["key"] ?? "", field: "key")
            self.invalidate(request, key)
        }
        router.add(.POST, "/cache/delete") { [unowned self] request, _ in
            let key = try Fields(try request.jsonObject()).name("key")
            self.delete(request, key)
        }
        router.add(.GET, "/cache/status") { [unowned self] request, _ in request.respond(200, self.statusJSON()) }
        router.add(.GET, "/cache/status/{key}") { [unowned self] request, params in
            let key = try Validate.name(params["key"] ?? "", field: "key")
            request.respond(200, self.keyStatusJSON(key))
        }
    }

    public func start() {
        subscribed = node.subscriber.isReady
        node.subscriber.addStateListener { [unowned self] ready in self.subscriptionChanged(ready) }
        node.bus.onRequest(.cache) { [unowned self] envelope, reply in self.snoop(envelope, reply) }
        timers.append(node.loop.every(ms: 100) { [unowned self] in
            _ = self.store.expireLeases(nowMs: EventLoop.monoMs())
        })
        timers.append(node.loop.every(ms: flushPeriodMs) { [unowned self] in self.flushDirty() })
        timers.append(node.loop.every(ms: 1000) { [unowned self] in self.recordGauges() })
        recordGauges()
        logger.info("cache ready", metadata: ["policy": "\(writeBack ? "write-back" : "write-through")", "lease_ms": "\(leaseMs)", "capacity": "\(node.config.cacheCapacity)"])
    }

    /// Writes every dirty line back and leaves the directory with every clean one, so no other
    /// node waits for this one's leases; bounded at 2.5 s (the node exits within 5 s).
    public func shutdown(_ done: @escaping () -> Void) {
        shuttingDown = true
        for t in timers { t.cancel() }
        timers.removeAll()
        var remaining = 1
        var finished = false
        let finish = { [unowned self] in
            guard !finished else { return }
            finished = true
            self.logger.info("cache stopped", metadata: ["unflushed": "\(self.pendingFlush.count)"])
            done()
        }
        let countDown = { remaining -= 1; if remaining == 0 { finish() } }
        let alreadyPending = Array(pendingFlush.keys)
        for entry in store.removeAll() {
            remaining += 1
            if entry.value.line.dirty {
                pendingFlush[entry.key] = (entry.value.line, entry.value.expireAtWallMs, 0)
                writeBackPending(entry.key) { _ in countDown() }
            } else {
                release(entry.key, version: entry.value.line.version) { countDown() }
            }
        }
        for key in alreadyPending {
            remaining += 1
            writeBackPending(key) { _ in countDown() }
        }
        node.loop.after(ms: 2500) { finish() }
        countDown()
    }

    // MARK: read (PrRd)

    /// A read (PrRd). Also the retry of a miss that found a dirty M copy elsewhere
    /// (`attempt` > 0): the retry goes through every check here again, because meanwhile this
    /// node may have written the key itself (write-back) and must then serve or flush its own
    /// dirty line, never send a read script that would take that line for a lost copy.
    private func read(_ request: HTTPRequest, _ key: String, attempt: Int = 0, deadline: Int64? = nil) {
        guard !request.isDone else { return }
        let now = EventLoop.monoMs()
        if subscribed, let e = store.get(key), e.line.isServable(nowMs: now),
           e.expireAtWallMs == 0 || EventLoop.wallMs() < e.expireAtWallMs {
            if attempt == 0 {
                hits += 1
                hitCounter.increment(by: 1)
            }
            request.respond(200, bytes: readBody(key, e.line.value, e.line.version, e.line.state.rawValue), contentType: "application/json", headers: [])
            if e.line.leaseUntilMs - now < leaseMs / 2 && !e.renewInFlight { renew(key, e.line.version) }
            return
        }
        if writeBackWrites[key] != nil {
            // Our own write-back write of this key is on its way: read once its line is in.
            writeBackWrites[key]?.deferred.append { [unowned self] in self.read(request, key, attempt: attempt, deadline: deadline) }
            return
        }
        if attempt == 0 {
            misses += 1
            missCounter.increment(by: 1)
        }
        let until = deadline ?? now + 3 * leaseMs
        // Our own dirty copy must reach Redis (or be found superseded) before a read script
        // runs: the script would take it for a copy lost in a restart. If that write-back
        // failed (Redis away), the read answers 503 rather than risk it.
        let afterOwnWriteBack = { [unowned self] (ok: Bool) in
            if ok {
                self.fill(request, key, attempt: attempt, deadline: until)
            } else {
                request.fail(HTTPError.unavailable("this node's modified copy of '\(key)' could not be written back yet"))
            }
        }
        if pendingFlush[key] != nil {
            // Our evicted dirty copy is still on its way back: finish that first.
            writeBackPending(key, afterOwnWriteBack)
            return
        }
        if let e = store.peek(key), e.line.dirty {
            // Our own dirty copy whose lease ran out: write it back (if nobody superseded it),
            // then read like anybody else.
            flush(key, next: "M", afterOwnWriteBack)
            return
        }
        fill(request, key, attempt: attempt, deadline: until)
    }

    /// `{"key":..,"value":<stored JSON text>,"version":n,"state":"X"}` without re-parsing the value.
    private func readBody(_ key: String, _ value: [UInt8], _ version: UInt64, _ state: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(value.count + key.utf8.count + 64)
        out.append(contentsOf: "{\"key\":".utf8)
        out.append(contentsOf: JSONValue.string(key).serialized().utf8)
        out.append(contentsOf: ",\"value\":".utf8)
        out.append(contentsOf: value)
        out.append(contentsOf: ",\"version\":".utf8)
        out.append(contentsOf: String(version).utf8)
        out.append(contentsOf: ",\"state\":\"".utf8)
        out.append(contentsOf: state.utf8)
        out.append(contentsOf: "\"}".utf8)
        return out
    }

    /// A read miss: cache_read-2.lua (BusRd through the directory).
    private func fill(_ request: HTTPRequest, _ key: String, attempt: Int, deadline: Int64) {
        guard !request.isDone else { return }
        let register = subscribed && !shuttingDown
        let startEpoch = epoch
        let sentMono = EventLoop.monoMs()
        let sentWall = EventLoop.wallMs()
        beginOp(key)
        node.scripts.run("cache_read", keys: [CacheKeys.value(cluster: cluster, key: key), CacheKeys.dir(cluster: cluster, key: key)],
                         args: [nodeID, String(sentWall), String(leaseMs), register ? "1" : "0", String(directoryTTLMs)]) { [unowned self] reply in
            let floor = self.endOp(key)
            guard let items = reply.array, let kind = items.first?.integer else {
                request.fail(HTTPError.unavailable("redis: \(reply.errorMessage ?? "unexpected reply to cache_read")"))
                return
            }
            switch kind {
            case 0:
                // Not in Redis (never written, deleted, expired): cached nowhere, 404.
                if let e = self.store.peek(key), !e.line.dirty { self.store.remove(key) }
                request.fail(HTTPError.notFound("no value for key '\(key)'"))
            case 2:
                guard items.count >= 3, let holder = items[1].string, let leaseUntil = items[2].integer else {
                    request.fail(HTTPError(500, "internal", "malformed cache_read reply")); return
                }
                self.awaitFlush(of: key, by: holder, leaseUntilWall: leaseUntil) { [unowned self] in
                    if attempt + 1 >= CacheService.maxFlushRetries || EventLoop.monoMs() > deadline {
                        request.fail(HTTPError.unavailable("node \(holder) holds a modified copy of '\(key)' and has not written it back"))
                    } else {
                        self.read(request, key, attempt: attempt + 1, deadline: deadline)
                    }
                }
            default:
                guard items.count >= 6, let value = items[1].bytes, let version = items[2].integer.map({ UInt64(max(0, $0)) }),
                      let stateText = items[3].string, let expireAt = items[4].integer else {
                    request.fail(HTTPError(500, "internal", "malformed cache_read reply")); return
                }
                let downgraded = (items[5].array ?? []).compactMap(\.string)
                var state = "I"
                if register, startEpoch == self.epoch, self.subscribed, version > floor,
                   let mesi = MESIState(rawValue: stateText), mesi.isValid, expireAt == 0 || expireAt > EventLoop.wallMs() {
                    let installed = self.install(key, value: value, version: version, state: mesi, leaseFromMono: sentMono, expireAt: expireAt, dirty: false)
                    state = installed?.line.state.rawValue ?? "I"
                }
                let answer = { [unowned self] in
                    // Report the line as it is now (a snoop may have arrived meanwhile).
                    let now = EventLoop.monoMs()
                    let current = self.store.peek(key).flatMap { $0.line.version == version && $0.line.isServable(nowMs: now) ? $0.line.state.rawValue : nil }
                    request.respond(200, bytes: self.readBody(key, value, version, state == "I" ? "I" : (current ?? "I")), contentType: "application/json", headers: [])
                }
                if downgraded.isEmpty {
                    answer()
                } else {
                    // E/M holders were turned to S in the directory: tell them (bounded wait).
                    self.sendAll(downgraded.map { ($0, EventLoop.wallMs() + self.downgradeWaitMs, false) }, CacheBusMessage(op: .busRead, key: key, version: version), waitLeases: false, answer)
                }
            }
        }
    }

    /// Asks the dirty M holder of `key` to write back, then calls `next` (after its reply, or
    /// once its lease is over if it cannot be reached).
    private func awaitFlush(of key: String, by holder: String, leaseUntilWall: Int64, _ next: @escaping () -> Void) {
        let message = CacheBusMessage(op: .busRead, key: key, version: 0, flush: true)
        if holder == nodeID {
            // Ourselves (e.g. the line was evicted while its write-back was pending).
            writeBackPending(key) { _ in next() }
            return
        }
        sendAll([(holder, leaseUntilWall, true)], message, waitLeases: true, next)
    }

    // MARK: write (PrWr)

    private func write(_ request: HTTPRequest) throws {
        let fields = Fields(try request.jsonObject())
        let key = try fields.name("key")
        guard let valueJSON = fields.object["value"] else { throw HTTPError.badRequest("missing field 'value'") }
        let value = valueJSON.bytes
        guard value.count <= CacheService.maxValueBytes else {
            throw HTTPError.badRequest("field 'value' is over \(CacheService.maxValueBytes) bytes serialized")
        }
        let ttl = try fields.optionalInt("ttl_ms", in: 1...CacheService.maxTTLMs)
        let register = subscribed && !shuttingDown
        // Write-back keeps the value only in this node's M line; without a subscription this node
        // cannot hold a line, so the value goes to Redis now.
        let storeNow = !writeBack || !register
        let sentMono = EventLoop.monoMs()
        let sentWall = EventLoop.wallMs()
        let expireAt = ttl.map { sentWall + $0 } ?? 0
        let startEpoch = epoch
        let heldShared = store.peek(key).map { $0.line.state == .S && $0.line.isServable(nowMs: sentMono) } ?? false
        beginOp(key)
        if !storeNow { writeBackWrites[key, default: (0, [])].count += 1 }
        node.scripts.run("cache_write", keys: [CacheKeys.value(cluster: cluster, key: key), CacheKeys.dir(cluster: cluster, key: key)],
                         args: [Array(nodeID.utf8), Array(String(sentWall).utf8), Array(String(leaseMs).utf8), value,
                                Array((storeNow ? "1" : "0").utf8), Array(String(expireAt).utf8), Array((register ? "1" : "0").utf8),
                                Array(String(directoryTTLMs).utf8)]) { [unowned self] reply in
            let floor = self.endOp(key)
            // Reads that waited for this write run once its line is installed (end of this callback).
            defer { if !storeNow { self.writeBackWriteDone(key) } }
            guard let items = reply.array, items.count >= 2, let v = items[0].integer, v > 0 else {
                request.fail(HTTPError.unavailable("redis: \(reply.errorMessage ?? "unexpected reply to cache_write")"))
                return
            }
            let version = UInt64(v)
            // The state this write left the line in: M when its line went in. Answered as such
            // even if another node's read turns the line to S before the invalidations below
            // are acknowledged (the write completed as M; the read is ordered after it). I when
            // the node holds no line for it (no subscription, or a newer version overtook it).
            var state = "I"
            if !storeNow && (self.shuttingDown || startEpoch != self.epoch || !self.subscribed) {
                // A write-back write whose reply arrives after its node stopped holding lines
                // (shutdown, lost subscription): the value exists only here, write it back now.
                if version > floor {
                    self.pendingFlush[key] = (CacheLine(value: value, version: version, state: .M, leaseUntilMs: 0, dirty: true), expireAt, 0)
                    self.writeBackPending(key) { _ in }
                }
            } else if register, startEpoch == self.epoch, self.subscribed, version > floor {
                let line = self.install(key, value: value, version: version, state: .M, leaseFromMono: sentMono, expireAt: expireAt, dirty: !storeNow)?.line
                if line?.version == version && line?.state == .M { state = "M" }
            } else if !storeNow {
                // A write-back write not installed because an invalidation at or above its version
                // overtook the reply: the value exists only here, so write it back now (the
                // script refuses if a newer write or a delete superseded it).
                self.pendingFlush[key] = (CacheLine(value: value, version: version, state: .M, leaseUntilMs: 0, dirty: true), expireAt, 0)
                self.writeBackPending(key) { _ in }
                if let e = self.store.peek(key), e.line.version < version { self.store.remove(key) }
            } else if let e = self.store.peek(key), e.line.version < version {
                // Our older copy is superseded by our own write.
                self.store.remove(key)
            }
            let holders = CacheService.holders(items[1], withFlush: false)
            let answer = {
                request.respond(200, .object([("key", .string(key)), ("version", .int(version)), ("state", .string(state))]))
            }
            if holders.isEmpty {
                answer() // E/M -> M, or no other copy: no bus message at all
            } else {
                let op: CacheBusMessage.Op = heldShared ? .busUpgrade : .busReadExclusive
                self.sendAll(holders, CacheBusMessage(op: op, key: key, version: version - 1), waitLeases: true, answer)
            }
        }
    }

    private func writeBackWriteDone(_ key: String) {
        guard var w = writeBackWrites[key] else { return }
        w.count -= 1
        if w.count > 0 { writeBackWrites[key] = w; return }
        writeBackWrites.removeValue(forKey: key)
        for next in w.deferred { next() }
    }

    /// Installs a line from a script reply. Never replaces a newer line; a line of the same
    /// version keeps its value and dirtiness and takes the newer state and lease.
    @discardableResult
    private func install(_ key: String, value: [UInt8], version: UInt64, state: MESIState, leaseFromMono: Int64, expireAt: Int64, dirty: Bool) -> LocalLine? {
        let lease = leaseFromMono + leaseMs - leaseSafetyMarginMs
        if let e = store.peek(key), e.line.version >= version {
            guard e.line.version == version else { return e }
            return store.modify(key) { l in
                l.line.state = state
                l.line.leaseUntilMs = max(l.line.leaseUntilMs, lease)
            }
        }
        let entry = LocalLine(line: CacheLine(value: value, version: version, state: state, leaseUntilMs: lease, dirty: dirty), expireAtWallMs: expireAt)
        let evicted = store.put(key, entry)
        for e in evicted where e.key != key { evict(e.key, e.value) }
        return store.peek(key)
    }

    /// An LRU eviction: a dirty (M) line is written back first, a clean one leaves the directory.
    private func evict(_ key: String, _ entry: LocalLine) {
        evictions += 1
        evictionCounter.increment(by: 1)
        if entry.line.dirty {
            pendingFlush[key] = (entry.line, entry.expireAtWallMs, 0)
            writeBackPending(key) { _ in }
        } else {
            release(key, version: entry.line.version) {}
        }
    }

    // MARK: invalidate and delete

    private func invalidate(_ request: HTTPRequest, _ key: String) {
        node.scripts.run("cache_invalidate", keys: [CacheKeys.value(cluster: cluster, key: key), CacheKeys.dir(cluster: cluster, key: key)],
                         args: [String(EventLoop.wallMs()), String(directoryTTLMs)]) { [unowned self] reply in
            guard let items = reply.array, items.count >= 2, let v = items[0].integer else {
                request.fail(HTTPError.unavailable("redis: \(reply.errorMessage ?? "unexpected reply to cache_invalidate")"))
                return
            }
            let holders = CacheService.holders(items[1], withFlush: true)
            let message = CacheBusMessage(op: .invalidate, key: key, version: UInt64(max(0, v)), flush: true)
            self.sendAll(holders, message, waitLeases: true) {
                request.respond(200, .object([("key", .string(key)), ("invalidated", .bool(true))]))
            }
        }
    }

    private func delete(_ request: HTTPRequest, _ key: String) {
        node.scripts.run("cache_delete", keys: [CacheKeys.value(cluster: cluster, key: key), CacheKeys.dir(cluster: cluster, key: key)],
                         args: [String(EventLoop.wallMs()), String(directoryTTLMs)]) { [unowned self] reply in
            guard let items = reply.array, items.count >= 3, let existed = items[0].integer, let v = items[1].integer else {
                request.fail(HTTPError.unavailable("redis: \(reply.errorMessage ?? "unexpected reply to cache_delete")"))
                return
            }
            // No value: the script changed nothing, and neither does the node (no bus message,
            // no cache_forget): a failed request leaves every state as it was.
            guard existed == 1 else {
                request.fail(HTTPError.notFound("no value for key '\(key)'"))
                return
            }
            let holders = CacheService.holders(items[2], withFlush: false)
            self.sendAll(holders, CacheBusMessage(op: .delete, key: key, version: UInt64(max(0, v))), waitLeases: true) {
                request.respond(200, .object([("key", .string(key)), ("deleted", .bool(true))]))
            }
        }
    }

    // MARK: the bus side

    /// The other holders a directory script returns: flat `node, lease_until_ms` pairs, or
    /// `node, lease_until_ms, flush (0/1)` triples when `withFlush`.
    private static func holders(_ reply: RedisReply, withFlush: Bool) -> [(node: String, leaseUntilWall: Int64, flush: Bool)] {
        let list = reply.array ?? []
        let width = withFlush ? 3 : 2
        var out: [(node: String, leaseUntilWall: Int64, flush: Bool)] = []
        var i = 0
        while i + width - 1 < list.count {
            if let h = list[i].string, let lease = list[i + 1].integer { out.append((h, lease, withFlush && list[i + 2].integer == 1)) }
            i += width
        }
        return out
    }

    /// Sends `message` to every holder as a bus request and calls `done` once each one has
    /// acknowledged or (with `waitLeases`) its lease has passed; without `waitLeases` a silent
    /// holder is given up at its deadline. This node's own line is handled directly, always.
    private func sendAll(_ holders: [(node: String, leaseUntilWall: Int64, flush: Bool)], _ message: CacheBusMessage, waitLeases: Bool, _ done: @escaping () -> Void) {
        var remaining = 1
        var acknowledged: [String] = []
        let isWrite = message.op != .busRead
        if isWrite { writesWaiting += 1; node.metrics.set("concord_cache_writes_waiting", [], Double(writesWaiting)) }
        let countDown = { [unowned self] in
            remaining -= 1
            guard remaining == 0 else { return }
            if isWrite {
                self.writesWaiting -= 1
                self.node.metrics.set("concord_cache_writes_waiting", [], Double(self.writesWaiting))
                // Nodes that acknowledged need not be waited for by later writers: drop their
                // "being invalidated" entries. Sent before answering, so this node's next
                // command is ordered after it; nobody waits for its reply.
                if !acknowledged.isEmpty {
                    self.node.scripts.run("cache_forget", keys: [CacheKeys.dir(cluster: self.cluster, key: message.key)],
                                          args: [String(message.version)] + acknowledged.prefix(1000)) { _ in }
                }
            }
            done()
        }
        if isWrite {
            // Our own line goes too, whether or not the directory listed us.
            remaining += 1
            applySnoop(message) { [unowned self] in acknowledged.append(self.nodeID); countDown() }
        }
        for holder in holders where holder.node != nodeID {
            remaining += 1
            let started = EventLoop.monoMicros()
            let timeout = max(1, holder.leaseUntilWall - EventLoop.wallMs() + writerMarginMs)
            count(message.op, "sent")
            node.bus.request(to: holder.node, type: .cache, payload: message.encode(), timeoutMs: Int(timeout)) { [unowned self] result in
                switch result {
                case .success:
                    acknowledged.append(holder.node)
                    self.node.metrics.recordMicros("concord_cache_invalidation_rtt_seconds", [("type", message.op.rawValue)], EventLoop.monoMicros() - started)
                    countDown()
                case .failure(let error):
                    // Silent or unreachable: its lease bounds how long it may still serve.
                    let wait = holder.leaseUntilWall + self.writerMarginMs - EventLoop.wallMs()
                    if waitLeases && wait > 0 {
                        self.node.metrics.increment("concord_cache_lease_waits_total", [("reason", error == .timeout ? "timeout" : "unreachable")])
                        self.node.loop.after(ms: Int(wait)) { countDown() }
                    } else {
                        countDown()
                    }
                }
            }
        }
        countDown()
    }

    /// A `.cache` bus request from another node.
    private func snoop(_ envelope: Envelope, _ reply: @escaping Bus.Reply) {
        guard let message = CacheBusMessage.decode(envelope.payload) else {
            node.metrics.increment("concord_cache_bus_messages_total", [("type", "malformed"), ("direction", "received")])
            reply(Array("{\"ok\":false}".utf8))
            return
        }
        count(message.op, "received")
        applySnoop(message) { reply(Array("{\"ok\":true}".utf8)) }
    }

    /// Applies a snooped transaction to this node's line, then acknowledges (`ack`).
    private func applySnoop(_ message: CacheBusMessage, _ ack: @escaping () -> Void) {
        let key = message.key
        switch message.op {
        case .busRead:
            guard let e = store.peek(key) else {
                // An evicted dirty line may still be on its way back: the reader retries after our
                // reply, which travels behind that write-back on the same connection.
                if pendingFlush[key] != nil { writeBackPending(key) { _ in ack() } } else { ack() }
                return
            }
            if e.line.dirty {
                flush(key, next: "S") { _ in ack() }
            } else {
                // A downgrade names the version the reader registered at; a newer line of ours
                // (we wrote since) is not the one it meant.
                if message.flush || e.line.version <= message.version { store.modify(key) { l in _ = l.line.apply(.busRead) } }
                ack()
            }
        case .busReadExclusive, .busUpgrade, .delete, .invalidate:
            raiseFloor(key, message.version)
            guard let e = store.peek(key), e.line.version <= message.version else { ack(); return }
            if message.op == .invalidate && message.flush && e.line.dirty {
                flush(key, next: "I") { [unowned self] _ in
                    if let now = self.store.peek(key), now.line.version <= message.version { self.store.remove(key) }
                    ack()
                }
                return
            }
            // A newer write or a delete replaces the value: a dirty copy is dropped, not flushed.
            store.remove(key)
            ack()
        }
    }

    private func count(_ op: CacheBusMessage.Op, _ direction: String) {
        node.metrics.increment("concord_cache_bus_messages_total", [("type", op.rawValue), ("direction", direction)])
    }

    // MARK: in-flight bookkeeping

    private func beginOp(_ key: String) { inFlight[key, default: KeyOps()].count += 1 }

    /// Ends an op and returns the key's floor (nothing at or below it may be installed).
    private func endOp(_ key: String) -> UInt64 {
        guard var ops = inFlight[key] else { return 0 }
        ops.count -= 1
        if ops.count <= 0 { inFlight.removeValue(forKey: key) } else { inFlight[key] = ops }
        return ops.floor
    }

    private func raiseFloor(_ key: String, _ version: UInt64) {
        if var ops = inFlight[key] { ops.floor = max(ops.floor, version); inFlight[key] = ops }
    }

    // MARK: leases, write-back, release

    /// Extends a line's lease in the directory (cache_renew-1.lua); the local lease counts from
    /// the send time. A refusal means the line is no longer ours: it goes to I.
    private func renew(_ key: String, _ version: UInt64) {
        store.modify(key) { $0.renewInFlight = true }
        let sentMono = EventLoop.monoMs()
        let startEpoch = epoch
        node.scripts.run("cache_renew", keys: [CacheKeys.dir(cluster: cluster, key: key)],
                         args: [nodeID, String(version), String(EventLoop.wallMs()), String(leaseMs)]) { [unowned self] reply in
            guard let e = self.store.peek(key), e.line.version == version else { return }
            if let text = reply.string, !reply.isError, let state = MESIState(rawValue: text), startEpoch == self.epoch {
                self.store.modify(key) { l in
                    l.renewInFlight = false
                    l.line.leaseUntilMs = max(l.line.leaseUntilMs, sentMono + self.leaseMs - self.leaseSafetyMarginMs)
                    if state == .S && l.line.state != .S && !l.line.dirty { l.line.state = .S }
                }
            } else if reply.integer == 0 {
                if !e.line.dirty { self.store.remove(key) } else { self.store.modify(key) { $0.renewInFlight = false } }
            } else {
                self.store.modify(key) { $0.renewInFlight = false }
            }
        }
    }

    /// Writes a dirty line back (cache_writeback-2.lua), then keeps it M, turns it S or drops it.
    /// `done(true)` when written back or nothing was dirty; a refusal (superseded) drops the line.
    private func flush(_ key: String, next: String, _ done: @escaping (Bool) -> Void) {
        guard let e = store.peek(key), e.line.dirty else { done(true); return }
        let version = e.line.version
        node.scripts.run("cache_writeback", keys: [CacheKeys.value(cluster: cluster, key: key), CacheKeys.dir(cluster: cluster, key: key)],
                         args: [Array(nodeID.utf8), Array(String(version).utf8), e.line.value, Array(String(e.expireAtWallMs).utf8),
                                Array(String(EventLoop.wallMs()).utf8), Array(next.utf8), Array(String(directoryTTLMs).utf8)]) { [unowned self] reply in
            self.node.metrics.increment("concord_cache_writebacks_total", [("result", reply.integer == 1 ? "written" : reply.isError ? "error" : "superseded")])
            guard let current = self.store.peek(key), current.line.version == version else { done(reply.integer == 1); return }
            if reply.integer == 1 {
                self.store.modify(key) { l in
                    l.line.dirty = false
                    if next == "S" { l.line.state = .S } else if next == "I" { l.line.state = .I }
                }
                done(true)
            } else if reply.integer == 0 {
                self.store.remove(key)
                done(true)
            } else {
                self.logger.warning("cache write-back failed", metadata: ["key": "\(key)", "error": "\(reply.errorMessage ?? "")"])
                done(false)
            }
        }
    }

    /// Writes back a dirty line that already left the LRU (kept in `pendingFlush` until it succeeds).
    private func writeBackPending(_ key: String, _ done: @escaping (Bool) -> Void) {
        guard let p = pendingFlush[key] else { done(true); return }
        pendingFlush[key]?.attempts += 1
        node.scripts.run("cache_writeback", keys: [CacheKeys.value(cluster: cluster, key: key), CacheKeys.dir(cluster: cluster, key: key)],
                         args: [Array(nodeID.utf8), Array(String(p.line.version).utf8), p.line.value, Array(String(p.expireAt).utf8),
                                Array(String(EventLoop.wallMs()).utf8), Array("I".utf8), Array(String(directoryTTLMs).utf8)]) { [unowned self] reply in
            self.node.metrics.increment("concord_cache_writebacks_total", [("result", reply.integer == 1 ? "written" : reply.isError ? "error" : "superseded")])
            if !reply.isError || (self.pendingFlush[key]?.attempts ?? 0) >= 20 {
                if self.pendingFlush[key]?.line.version == p.line.version { self.pendingFlush.removeValue(forKey: key) }
                if reply.isError { self.logger.error("cache write-back abandoned", metadata: ["key": "\(key)", "error": "\(reply.errorMessage ?? "")"]) }
                done(!reply.isError)
            } else {
                done(false)
            }
        }
    }

    private func release(_ key: String, version: UInt64, _ done: @escaping () -> Void) {
        node.scripts.run("cache_release", keys: [CacheKeys.dir(cluster: cluster, key: key)], args: [nodeID, String(version)]) { _ in done() }
    }

    /// Write-back: every dirty line reaches Redis within `flushPeriodMs` (+ a round trip).
    private func flushDirty() {
        for key in store.dirtyKeys { flush(key, next: "M") { _ in } }
        for key in Array(pendingFlush.keys) { writeBackPending(key) { _ in } }
    }

    // MARK: the subscription

    /// Lost: every line falls to I at once (dirty ones are written back), nothing is installed
    /// until the subscriber is back. Back: lines are filled again by the next reads.
    private func subscriptionChanged(_ ready: Bool) {
        guard !shuttingDown else { return }
        if ready {
            subscribed = true
            logger.info("cache subscription back: caching again")
            return
        }
        subscribed = false
        epoch &+= 1
        let all = store.removeAll()
        logger.warning("cache subscription lost: every line is I until it is back", metadata: ["lines": "\(all.count)"])
        node.metrics.increment("concord_cache_subscription_losses_total")
        for entry in all {
            if entry.value.line.dirty {
                pendingFlush[entry.key] = (entry.value.line, entry.value.expireAtWallMs, 0)
                writeBackPending(entry.key) { _ in }
            } else {
                release(entry.key, version: entry.value.line.version) {}
            }
        }
    }

    // MARK: status and metrics

    private func statusJSON() -> JSONValue {
        .object([
            ("capacity", .int(node.config.cacheCapacity)), ("entries", .int(store.count)), ("bytes", .int(store.totalBytes)),
            ("hits", .int(hits)), ("misses", .int(misses)), ("evictions", .int(evictions)),
            ("states", .object([("M", .int(store.counts[.M] ?? 0)), ("E", .int(store.counts[.E] ?? 0)), ("S", .int(store.counts[.S] ?? 0))])),
            ("write_policy", .string(writeBack ? "write-back" : "write-through")), ("lease_ms", .int(leaseMs)),
            ("subscribed", .bool(subscribed)), ("dirty", .int(store.dirtyKeys.count + pendingFlush.count)),
        ])
    }

    private func keyStatusJSON(_ key: String) -> JSONValue {
        let now = EventLoop.monoMs()
        guard subscribed, let e = store.peek(key), e.line.isServable(nowMs: now) || e.line.dirty else {
            return .object([("key", .string(key)), ("state", .string("I")), ("version", store.peek(key).map { .int($0.line.version) } ?? .null)])
        }
        return .object([
            ("key", .string(key)), ("state", .string(e.line.state.rawValue)), ("version", .int(e.line.version)),
            ("dirty", .bool(e.line.dirty)), ("lease_remaining_ms", .int(max(0, e.line.leaseUntilMs - now))),
        ])
    }

    private func recordGauges() {
        for state in [MESIState.M, .E, .S] { node.metrics.set("concord_cache_lines", [("state", state.rawValue)], Double(store.counts[state] ?? 0)) }
        node.metrics.set("concord_cache_entries", [], Double(store.count))
        node.metrics.set("concord_cache_bytes", [], Double(store.totalBytes))
        node.metrics.set("concord_cache_dirty_lines", [], Double(store.dirtyKeys.count + pendingFlush.count))
    }
}

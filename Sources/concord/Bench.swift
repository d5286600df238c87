import ArgumentParser
import Foundation
import Histogram
import Runtime

// MARK: - The load generator
//
// N client threads, each with its own keep-alive connection, run one operation in a loop until
// the duration passes; latencies go into an HDR histogram per thread (merged at the end). A
// progress line is printed each second to stderr. The baseline (Redis, etcd) runs in the same
// invocation so ratios compare like with like on a noisy machine.

struct BenchResult {
    var name: String
    var ops: UInt64
    var errors: UInt64
    var seconds: Double
    var histogram: Histogram<UInt64>   // microseconds
    var opsPerSecond: Double { seconds > 0 ? Double(ops) / seconds : 0 }

    func percentileMs(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) / 1000 }

    var json: JSONValue {
        .object([
            ("name", .string(name)), ("ops", .int(Int64(ops))), ("errors", .int(Int64(errors))), ("seconds", .double(round(seconds * 1000) / 1000)),
            ("ops_per_s", .double(round(opsPerSecond))),
            ("p50_ms", .double(round(percentileMs(50) * 1000) / 1000)), ("p90_ms", .double(round(percentileMs(90) * 1000) / 1000)),
            ("p99_ms", .double(round(percentileMs(99) * 1000) / 1000)), ("p999_ms", .double(round(percentileMs(99.9) * 1000) / 1000)),
        ])
    }

    var line: String {
        String(format: "%-28@ %10.0f ops/s  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  (%llu ops, %llu errors)",
               name as NSString, opsPerSecond, percentileMs(50), percentileMs(90), percentileMs(99), percentileMs(99.9), ops, errors)
    }
}

final class Counters: @unchecked Sendable {
    private let lock = NSLock()
    private var ops: UInt64 = 0
    private var errors: UInt64 = 0
    private var firstError: String?
    func add(ops o: UInt64, errors e: UInt64, error: String?) {
        lock.lock(); ops += o; errors += e; if firstError == nil { firstError = error }; lock.unlock()
    }
    var snapshot: (UInt64, UInt64, String?) { lock.lock(); defer { lock.unlock() }; return (ops, errors, firstError) }
}

/// Runs `operation` on `concurrency` threads for `seconds`. `setup` builds the per-thread
/// state (a client and whatever it needs); the operation returns false on an error.
func runLoad<State>(name: String, concurrency: Int, seconds: Double, quiet: Bool,
                    setup: @escaping @Sendable (Int) throws -> State,
                    operation: @escaping @Sendable (inout State, UInt64) throws -> Bool) -> BenchResult {
    runThreads(name: name, concurrency: concurrency, seconds: seconds, quiet: quiet, setup: setup, prepare: nil,
               operation: { state, _, i in try operation(&state, i) })
}

/// Like `runLoad`, but each iteration first runs `prepare` (not timed), then times `operation`;
/// ops/s is over the timed part only.
func runMeasured<State>(name: String, concurrency: Int, seconds: Double, quiet: Bool,
                        setup: @escaping @Sendable (Int) throws -> State,
                        prepare: @escaping @Sendable (inout State, Int) throws -> Void,
                        operation: @escaping @Sendable (inout State, Int, UInt64) throws -> Bool) -> BenchResult {
    runThreads(name: name, concurrency: concurrency, seconds: seconds, quiet: quiet, setup: setup, prepare: prepare, operation: operation)
}

/// The threaded runner behind both: `concurrency` threads loop until `seconds` pass. Without
/// `prepare`, every iteration is timed (an error's back-off too) and progress prints each
/// second; with it, only successful operations are timed and seconds are the busiest
/// thread's timed total.
private func runThreads<State>(name: String, concurrency: Int, seconds: Double, quiet: Bool,
                               setup: @escaping @Sendable (Int) throws -> State,
                               prepare: (@Sendable (inout State, Int) throws -> Void)?,
                               operation: @escaping @Sendable (inout State, Int, UInt64) throws -> Bool) -> BenchResult {
    let counters = Counters()
    let start = Date()
    let deadline = start.addingTimeInterval(seconds)
    let group = DispatchGroup()
    let histLock = NSLock()
    nonisolated(unsafe) var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    nonisolated(unsafe) var busySeconds = 0.0
    for worker in 0..<concurrency {
        group.enter()
        let thread = Thread {
            defer { group.leave() }
            var hist = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
            var state: State
            do { state = try setup(worker) } catch {
                counters.add(ops: 0, errors: 1, error: "\(error)"); return
            }
            var i: UInt64 = 0
            var localOps: UInt64 = 0, localErrors: UInt64 = 0
            var firstError: String?
            var measured: Int64 = 0
            while Date() < deadline {
                var t0 = EventLoop.monoMicros()
                do {
                    if let prepare { try prepare(&state, worker); t0 = EventLoop.monoMicros() }
                    let ok = try operation(&state, worker, i)
                    if prepare != nil {
                        let took = max(1, EventLoop.monoMicros() - t0)
                        measured += took
                        _ = hist.record(UInt64(took))
                    }
                    if ok { localOps += 1 } else { localErrors += 1 }
                } catch {
                    localErrors += 1
                    if firstError == nil { firstError = "\(error)" }
                    usleep(10_000)
                }
                if prepare == nil { _ = hist.record(UInt64(max(1, EventLoop.monoMicros() - t0))) }
                i += 1
                if i % 64 == 0 { counters.add(ops: localOps, errors: localErrors, error: firstError); localOps = 0; localErrors = 0 }
            }
            counters.add(ops: localOps, errors: localErrors, error: firstError)
            histLock.lock(); merged.add(hist); busySeconds = max(busySeconds, Double(measured) / 1e6); histLock.unlock()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    if !quiet && prepare == nil {
        var last: UInt64 = 0
        while group.wait(timeout: .now() + 1) == .timedOut {
            let (ops, errors, _) = counters.snapshot
            FileHandle.standardError.write(Data(String(format: "\r[%@] %6.1fs  %8.0f ops/s  %llu ops  %llu errors   ", name, Date().timeIntervalSince(start), Double(ops - last), ops, errors).utf8))
            last = ops
        }
        FileHandle.standardError.write(Data("\n".utf8))
    } else {
        if !quiet { FileHandle.standardError.write(Data("[\(name)] running \(String(format: "%.0f", seconds)) s...\n".utf8)) }
        group.wait()
    }
    let (ops, errors, firstError) = counters.snapshot
    if let firstError, errors > 0 { FileHandle.standardError.write(Data("[\(name)] first error: \(firstError)\n".utf8)) }
    let elapsed = Date().timeIntervalSince(start)
    return BenchResult(name: name, ops: ops, errors: errors, seconds: prepare != nil && busySeconds > 0 ? busySeconds : elapsed, histogram: merged)
}

/// Drives `connections` keep-alive connections from one event loop (the shape of
/// redis-benchmark and wrk) and returns the result with an HDR histogram of latencies.
///
/// `pairLatency` (one connection only): each two consecutive requests are one operation whose
/// latency is their sum (an acquire and its release).
func runEvented(name: String, targets: [(host: String, port: Int)], connections: Int, seconds: Double, quiet: Bool, framing: LoadDriver.Framing,
                request: @escaping (Int, UInt64) -> [UInt8], validate: @escaping ([UInt8]) -> Bool,
                onResponse: ((Int, [UInt8]) -> Void)? = nil, pairLatency: Bool = false) -> BenchResult {
    precondition(!pairLatency || connections == 1, "pair latency needs one connection")
    var hist = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var firstOfPair: Int64?
    let driver = LoadDriver(targets: targets, framing: framing, request: request, validate: validate, record: { micros in
        guard pairLatency else { _ = hist.record(UInt64(max(1, micros))); return }
        if let first = firstOfPair {
            _ = hist.record(UInt64(max(1, first + micros)))
            firstOfPair = nil
        } else {
            firstOfPair = micros
        }
    }, onResponse: onResponse)
    var last: UInt64 = 0
    let start = Date()
    let outcome = driver.run(connections: connections, seconds: seconds, progress: quiet ? nil : { ops, errors in
        FileHandle.standardError.write(Data(String(format: "\r[%@] %6.1fs  %8.0f ops/s  %llu ops  %llu errors   ", name, Date().timeIntervalSince(start), Double(ops - last), ops, errors).utf8))
        last = ops
    })
    if !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
    if let e = outcome.firstError, outcome.errors > 0 { FileHandle.standardError.write(Data("[\(name)] first error: \(e)\n".utf8)) }
    return BenchResult(name: name, ops: pairLatency ? outcome.ops / 2 : outcome.ops, errors: outcome.errors, seconds: outcome.seconds, histogram: hist)
}

/// Runs `a` and `b` alternately for `rounds` slices of `seconds / rounds` each and merges each
/// side's slices: both see the same drift of a shared, noisy machine, so their ratio is steadier
/// than one long run of each.
func interleaved(rounds: Int, seconds: Double, _ a: (Double) -> BenchResult, _ b: (Double) -> BenchResult) -> (BenchResult, BenchResult) {
    let slice = seconds / Double(max(1, rounds))
    var first = a(slice), second = b(slice)
    for _ in 1..<max(1, rounds) {
        first.merge(a(slice))
        second.merge(b(slice))
    }
    return (first, second)
}

extension BenchResult {
    mutating func merge(_ other: BenchResult) {
        ops += other.ops
        errors += other.errors
        seconds += other.seconds
        histogram.add(other.histogram)
    }
}

/// `http://host:port` -> (host, port).
func hostPort(_ url: String) -> (host: String, port: Int) {
    let c = HTTPClient(url: url)!
    return (c.host, c.port)
}

/// 2xx HTTP status in a framed response.
func httpOK(_ response: [UInt8]) -> Bool {
    response.count > 12 && response[9] == UInt8(ascii: "2")
}

/// Runs `redis-benchmark` and returns its requests/s for one test (the Redis baseline).
func redisBenchmark(port: Int, host: String, test: String, clients: Int, requests: Int) -> Double? {
    guard let tool = findOnPath("redis-benchmark") else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = ["-h", host, "-p", String(port), "-t", test, "-c", String(clients), "-n", String(requests), "-q", "--csv"]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    waitExit(p)
    let text = String(decoding: data, as: UTF8.self)
    // CSV: "test","rps",...
    for line in text.split(separator: "\n") {
        let cols = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        if cols.count >= 2, cols[0].uppercased().hasPrefix(test.uppercased()), let v = Double(cols[1]) { return v }
    }
    return nil
}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Load generator: ops/s and latency percentiles, with a baseline in the same run.",
                                                    subcommands: [BenchHTTP.self, BenchLocks.self, BenchFailover.self, BenchRaftCore.self, BenchQueue.self, BenchCache.self])
}

struct BenchOptions: ParsableArguments {
    @Option(name: .customLong("target"), help: "Node URL(s); clients spread over them.") var targets: [String] = ["http://127.0.0.1:8001"]
    @Option(help: "Seconds per measurement.") var duration: Double = 10
    @Option(help: "Concurrent connections.") var concurrency: Int = 32
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        guard duration > 0 && duration <= 3600 else { throw ValidationError("--duration must be in (0, 3600]") }
        guard (1...1024).contains(concurrency) else { throw ValidationError("--concurrency must be in [1, 1024]") }
        for t in targets where HTTPClient(url: t) == nil { throw ValidationError("--target must be an http:// URL, got '\(t)'") }
    }

    func client(_ worker: Int) -> HTTPClient { HTTPClient(url: targets[worker % targets.count])! }
}

func printResults(_ results: [BenchResult], ratios: [(String, Double)], json: Bool, extra: [(String, JSONValue)] = []) {
    if json {
        var members: [(String, JSONValue)] = [("results", .array(results.map(\.json)))]
        for (k, v) in ratios { members.append((k, .double((v * 1000).rounded() / 1000))) }
        members += extra
        print(JSONValue.object(members).serialized())
    } else {
        for r in results { print(r.line) }
        for (k, v) in ratios { print(String(format: "%@: %.3f", k, v)) }
        for (k, v) in extra { print("\(k): \(v.serialized())") }
    }
}

/// `concord bench http`: GET /health at N connections, beside `redis-benchmark -t ping`.
struct BenchHTTP: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "http", abstract: "GET /health against the node(s), beside redis-benchmark PING.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Redis for the baseline (redis://host:port); default: the one the first node reports.") var redis: String?

    @Option(help: "With --redis: alternate Concord and redis-benchmark in this many slices of the duration each.") var rounds: Int = 4

    func validate() throws {
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be in [1, 100]") }
    }

    func run() throws {
        let opts = options
        let targets = opts.targets.map(hostPort)
        let requests = targets.map { LoadDriver.http("GET", "/health", host: "\($0.host):\($0.port)") }
        let slices = redis == nil ? 1 : rounds
        let seconds = opts.duration / Double(slices)
        var concord: BenchResult?
        var baselineRequests = 0, baselineSeconds = 0.0
        // Alternating slices (with --redis): both see the same noise of this shared machine;
        // redis-benchmark gets as many requests as Concord served in the slice before.
        for _ in 0..<slices {
            let slice = runEvented(name: "concord GET /health", targets: targets, connections: opts.concurrency, seconds: seconds, quiet: opts.json,
                                   framing: .http, request: { conn, _ in requests[conn % requests.count] }, validate: httpOK)
            if concord == nil { concord = slice } else { concord!.merge(slice) }
            guard let redisURL = redis.flatMap(RedisURL.init) else { continue }
            let n = max(10_000, Int(slice.opsPerSecond * seconds))
            if let rps = redisBenchmark(port: redisURL.port, host: redisURL.host, test: "ping_mbulk", clients: opts.concurrency, requests: n) ?? redisBenchmark(port: redisURL.port, host: redisURL.host, test: "ping", clients: opts.concurrency, requests: n), rps > 0 {
                baselineRequests += n
                baselineSeconds += Double(n) / rps
            }
        }
        var results = [concord!]
        var ratios: [(String, Double)] = []
        if baselineSeconds > 0 {
            let rps = Double(baselineRequests) / baselineSeconds
            var h = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
            _ = h.record(1)
            results.append(BenchResult(name: "redis-benchmark PING", ops: UInt64(baselineRequests), errors: 0, seconds: baselineSeconds, histogram: h))
            ratios.append(("ratio_concord_to_redis", results[0].opsPerSecond / rps))
        }
        printResults(results, ratios: ratios, json: opts.json)
    }
}

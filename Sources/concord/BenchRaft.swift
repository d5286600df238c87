import ArgumentParser
import Foundation
import Raft
import Runtime

/// `concord bench raft-core`: entries/s the pure Raft core commits in a 3-node in-memory
/// simulation (no I/O), per batch size, so the core is shown never to bound the service.
struct BenchRaftCore: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "raft-core", abstract: "Entries/s committed by the pure Raft core in a 3-node simulation (no I/O).")
    @Option(help: "Entries per measurement.") var entries: Int = 200_000
    @Option(help: "Batch sizes (proposals between two Ready rounds).") var batch: [Int] = [1, 16, 64, 256]
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        guard (1...10_000_000).contains(entries) else { throw ValidationError("--entries must be in [1, 10000000]") }
        guard batch.allSatisfy({ (1...100_000).contains($0) }) else { throw ValidationError("--batch must be in [1, 100000]") }
    }

    func run() throws {
        var rows: [JSONValue] = []
        for b in batch {
            let start = EventLoop.monoMicros()
            let result = runThroughputSimulation(entries: entries, batch: b)
            let seconds = Double(EventLoop.monoMicros() - start) / 1_000_000
            let rate = Double(result.committed) / max(seconds, 1e-9)
            if json {
                rows.append(.object([("batch", .int(b)), ("committed", .int(result.committed)), ("ticks", .int(result.ticks)), ("seconds", .double((seconds * 1000).rounded() / 1000)), ("entries_per_s", .double(rate.rounded()))]))
            } else {
                print(String(format: "batch %5d: %9d entries in %.3f s = %12.0f entries/s (%d ticks)", b, result.committed, seconds, rate, result.ticks))
            }
        }
        if json { print(JSONValue.object([("raft_core", .array(rows))]).serialized()) }
    }
}

import ArgumentParser
import Foundation

@main
struct Concord: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "concord",
        abstract: "Concord: distributed locks (Raft), a partitioned queue and a MESI near cache over one Redis.",
        subcommands: [NodeCommand.self, DevCommand.self, BenchCommand.self, StatusCommand.self, LockCommand.self, QueueCommand.self, CacheCommand.self]
    )
}

/// Exit with status 1 and a one-line reason (CONTRACT §1).
func die(_ reason: String) -> Never {
    FileHandle.standardError.write(Data("concord: \(reason)\n".utf8))
    exit(1)
}

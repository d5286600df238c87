import Foundation
import Logging

// MARK: - Lua scripts
//
// Every `lua/*.lua` file is loaded at start (SCRIPT LOAD) and run by EVALSHA. A NOSCRIPT error
// (Redis restarted without persistence of its script cache, or SCRIPT FLUSH) loads the script
// again and retries once, transparently to the caller.

public final class LuaScripts {
    public struct Script { public let name: String; public let source: String }

    private var scripts: [String: Script] = [:]
    /// SHA1 of each script as Redis reported it from SCRIPT LOAD.
    private var shas: [String: String] = [:]
    private let redis: RedisConnection
    private let logger: Logger
    public private(set) var reloads = 0

    public init(redis: RedisConnection, directory: URL, logger: Logger) throws {
        self.redis = redis
        self.logger = logger
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".lua") }.sorted()
        guard !files.isEmpty else { throw RuntimeError("no Lua scripts in \(directory.path)") }
        for file in files {
            let source = try LuaScripts.source(file: file, directory: directory)
            // Script names drop the BullMQ-style key count: "queue_produce-4.lua" -> "queue_produce".
            var name = String(file.dropLast(4))
            if let dash = name.lastIndex(of: "-"), Int(name[name.index(after: dash)...]) != nil { name = String(name[..<dash]) }
            scripts[name] = Script(name: name, source: source)
        }
    }

    public var names: [String] { scripts.keys.sorted() }

    /// A script's text with every `--@include name` line replaced by `includes/name.lua`
    /// (Redis scripts cannot load code, so shared helpers are spliced in before SCRIPT LOAD,
    /// as BullMQ does at build time).
    public static func source(file: String, directory: URL) throws -> String {
        let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
        guard text.contains("--@include ") else { return text }
        var out: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("--@include ") {
                let name = line.dropFirst("--@include ".count).trimmingCharacters(in: .whitespaces)
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                    throw RuntimeError("\(file): bad include '\(name)'")
                }
                let included = try String(contentsOf: directory.appendingPathComponent("includes/\(name).lua"), encoding: .utf8)
                out.append(included.hasSuffix("\n") ? String(included.dropLast()) : included)
            } else {
                out.append(String(line))
            }
        }
        return out.joined(separator: "\n")
    }

    /// Finds `lua/`: $CONCORD_LUA_DIR, then upward from the executable and the working
    /// directory, then /usr/local/share/concord/lua.
    public static func locateDirectory() -> URL? {
        let fm = FileManager.default
        if let env = ProcessInfo.processInfo.environment["CONCORD_LUA_DIR"], !env.isEmpty { return URL(fileURLWithPath: env) }
        var starts: [URL] = [URL(fileURLWithPath: fm.currentDirectoryPath)]
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        starts.append(exe.deletingLastPathComponent())
        if let real = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") { starts.append(URL(fileURLWithPath: real).deletingLastPathComponent()) }
        for start in starts {
            var dir = start
            for _ in 0..<6 {
                let candidate = dir.appendingPathComponent("lua")
                if fm.fileExists(atPath: candidate.appendingPathComponent("node_register-2.lua").path) { return candidate }
                dir = dir.deletingLastPathComponent()
            }
        }
        let shared = URL(fileURLWithPath: "/usr/local/share/concord/lua")
        return fm.fileExists(atPath: shared.path) ? shared : nil
    }

    /// Loads every script; the callback gets nil or the first error.
    public func loadAll(_ done: @escaping (String?) -> Void) {
        var remaining = scripts.count
        var firstError: String?
        for script in scripts.values {
            redis.send(["SCRIPT", "LOAD", script.source]) { [weak self, logger] reply in
                if let sha = reply.string, !reply.isError {
                    self?.shas[script.name] = sha
                } else {
                    let error = reply.errorMessage ?? "unexpected reply"
                    firstError = firstError ?? "\(script.name): \(error)"
                    logger.error("lua load failed", metadata: ["script": "\(script.name)", "error": "\(error)"])
                }
                remaining -= 1
                if remaining == 0 { done(firstError) }
            }
        }
    }

    /// EVALSHA name KEYS... ARGV...; reloads on NOSCRIPT and retries once.
    public func run(_ name: String, keys: [String], args: [[UInt8]], _ callback: @escaping (RedisReply) -> Void) {
        run(name, keys: keys, argCount: args.count, argBytes: args.reduce(0) { $0 + $1.count }, write: { c in for a in args { c.add(a) } }, callback)
    }

    public func run(_ name: String, keys: [String], args: [String], _ callback: @escaping (RedisReply) -> Void) {
        run(name, keys: keys, argCount: args.count, argBytes: args.reduce(0) { $0 + $1.utf8.count }, write: { c in for a in args { c.add(a) } }, callback)
    }

    private static let evalsha = Array("EVALSHA".utf8)

    /// The command is written in RESP straight from the keys and arguments (no array per
    /// argument); `write` adds the `argCount` arguments, again after a reload.
    private func run(_ name: String, keys: [String], argCount: Int, argBytes: Int, write: @escaping (inout RESPCommand) -> Void,
                     _ callback: @escaping (RedisReply) -> Void) {
        guard let script = scripts[name], let sha = shas[name] else { callback(.error("ERR script \(name) not loaded")); return }
        let capacity = 64 + argBytes + 16 * argCount + keys.reduce(0) { $0 + $1.utf8.count + 8 }
        func command(_ sha: String) -> RESPCommand {
            var c = RESPCommand(arguments: 3 + keys.count + argCount, capacity: capacity)
            c.add(LuaScripts.evalsha)
            c.add(sha)
            c.add(String(keys.count))
            for k in keys { c.add(k) }
            write(&c)
            return c
        }
        redis.send(command(sha)) { [weak self] reply in
            guard let self, let message = reply.errorMessage, message.hasPrefix("NOSCRIPT") else { callback(reply); return }
            self.reloads += 1
            self.logger.info("lua script missing in redis; reloading", metadata: ["script": "\(name)"])
            self.redis.send(["SCRIPT", "LOAD", script.source]) { loaded in
                guard let newSha = loaded.string, !loaded.isError else { callback(loaded); return }
                self.shas[name] = newSha
                self.redis.send(command(newSha), callback)
            }
        }
    }
}

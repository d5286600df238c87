import ArgumentParser
import Foundation
import Runtime

// MARK: - The HTTP client commands (like etcdctl / redis-cli)

struct ClientOptions: ParsableArguments {
    @Option(help: "Node URL (env CONCORD_URL).") var url: String?

    func client() throws -> HTTPClient {
        let u = url ?? ProcessInfo.processInfo.environment["CONCORD_URL"] ?? "http://127.0.0.1:8001"
        guard let c = HTTPClient(url: u) else { throw ValidationError("--url must be http://host:port, got '\(u)'") }
        return c
    }
}

/// Prints the answer; exits 1 on a non-2xx status (the body says why).
func show(_ response: HTTPResponse) throws {
    let text = response.json.map { pretty($0) } ?? response.text
    if (200..<300).contains(response.status) {
        print(text)
    } else {
        FileHandle.standardError.write(Data("HTTP \(response.status): \(text)\n".utf8))
        throw ExitCode(1)
    }
}

func pretty(_ value: JSONValue, indent: String = "") -> String {
    switch value {
    case .object(let members) where !members.isEmpty:
        let inner = indent + "  "
        return "{\n" + members.map { "\(inner)\(JSONValue.string($0.0).serialized()): \(pretty($0.1, indent: inner))" }.joined(separator: ",\n") + "\n\(indent)}"
    case .array(let items) where !items.isEmpty:
        let inner = indent + "  "
        return "[\n" + items.map { inner + pretty($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
    default:
        return value.serialized()
    }
}

func call(_ options: ClientOptions, _ method: String, _ path: String, _ body: JSONValue? = nil) throws {
    let c = try options.client()
    do {
        try show(c.request(method, path, body: body?.bytes))
    } catch let e as RuntimeError {
        die(e.description)
    }
}

func pathEscape(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
}

/// Parses a command-line body: JSON if it parses, otherwise the text as a JSON string.
func jsonArgument(_ text: String) -> JSONValue {
    (try? JSONParser.parse(text)) ?? .string(text)
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a node's /status.")
    @OptionGroup var options: ClientOptions
    func run() throws { try call(options, "GET", "/status") }
}

struct LockCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lock", abstract: "Acquire, release, renew and inspect locks.",
                                                    subcommands: [Acquire.self, Release.self, Renew.self, Status.self])

    struct Acquire: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var resource: String
        @Option var owner: String
        @Option var mode: String = "exclusive"
        @Option(name: .customLong("ttl-ms")) var ttlMs: Int = 30000
        @Option(name: .customLong("wait-ms")) var waitMs: Int = 0
        @Option(name: .customLong("request-id")) var requestId: String?
        func run() throws {
            var body: [(String, JSONValue)] = [("resource", .string(resource)), ("owner", .string(owner)), ("mode", .string(mode)), ("ttl_ms", .int(ttlMs)), ("wait_ms", .int(waitMs))]
            if let requestId { body.append(("request_id", .string(requestId))) }
            try call(options, "POST", "/lock/acquire", .object(body))
        }
    }
    struct Release: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var resource: String
        @Option var owner: String
        @Option(name: .customLong("fencing-token")) var fencingToken: Int?
        func run() throws {
            var body: [(String, JSONValue)] = [("resource", .string(resource)), ("owner", .string(owner))]
            if let fencingToken { body.append(("fencing_token", .int(fencingToken))) }
            try call(options, "POST", "/lock/release", .object(body))
        }
    }
    struct Renew: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var resource: String
        @Option var owner: String
        @Option(name: .customLong("ttl-ms")) var ttlMs: Int = 30000
        func run() throws {
            try call(options, "POST", "/lock/renew", .object([("resource", .string(resource)), ("owner", .string(owner)), ("ttl_ms", .int(ttlMs))]))
        }
    }
    struct Status: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var resource: String?
        func run() throws { try call(options, "GET", resource.map { "/lock/status/\(pathEscape($0))" } ?? "/lock/status") }
    }
}

struct QueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "queue", abstract: "Produce, consume, ack and inspect queues.",
                                                    subcommands: [Topic.self, Produce.self, Consume.self, Ack.self, Nack.self, Status.self, DLQ.self, Redrive.self])

    struct Topic: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a topic with a partition count (POST /queue/topic).")
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Option(help: "Partition count, 1-256 (default 8; 409 if the topic exists with another count).") var partitions: Int?
        func run() throws {
            var b: [(String, JSONValue)] = [("topic", .string(topic))]
            if let partitions { b.append(("partitions", .int(partitions))) }
            try call(options, "POST", "/queue/topic", .object(b))
        }
    }

    struct Produce: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Argument(help: "Message body: JSON, or text sent as a JSON string.") var body: String
        @Option var key: String?
        @Option var id: String?
        @Option(name: .customLong("delay-ms")) var delayMs: Int?
        @Option(name: .customLong("max-attempts")) var maxAttempts: Int?
        func run() throws {
            var b: [(String, JSONValue)] = [("topic", .string(topic)), ("body", jsonArgument(body))]
            if let key { b.append(("key", .string(key))) }
            if let id { b.append(("id", .string(id))) }
            if let delayMs { b.append(("delay_ms", .int(delayMs))) }
            if let maxAttempts { b.append(("max_attempts", .int(maxAttempts))) }
            try call(options, "POST", "/queue/produce", .object(b))
        }
    }
    struct Consume: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Option var group: String = "default"
        @Option var consumer: String = "cli-\(getpid())"
        @Option var max: Int = 1
        @Option(name: .customLong("visibility-ms")) var visibilityMs: Int = 30000
        @Option(name: .customLong("wait-ms")) var waitMs: Int = 0
        func run() throws {
            try call(options, "POST", "/queue/consume", .object([("topic", .string(topic)), ("group", .string(group)), ("consumer", .string(consumer)), ("max", .int(max)), ("visibility_ms", .int(visibilityMs)), ("wait_ms", .int(waitMs))]))
        }
    }
    struct Ack: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Argument var receipts: [String]
        @Option var group: String = "default"
        func run() throws {
            try call(options, "POST", "/queue/ack", .object([("topic", .string(topic)), ("group", .string(group)), ("receipts", .array(receipts.map { .string($0) }))]))
        }
    }
    struct Nack: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Argument var receipt: String
        @Option var group: String = "default"
        @Option(name: .customLong("delay-ms")) var delayMs: Int?
        func run() throws {
            var b: [(String, JSONValue)] = [("topic", .string(topic)), ("group", .string(group)), ("receipt", .string(receipt))]
            if let delayMs { b.append(("delay_ms", .int(delayMs))) }
            try call(options, "POST", "/queue/nack", .object(b))
        }
    }
    struct Status: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        func run() throws { try call(options, "GET", "/queue/status/\(pathEscape(topic))") }
    }
    struct DLQ: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "dlq")
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Option var group: String = "default"
        @Option var limit: Int = 100
        func run() throws { try call(options, "GET", "/queue/dlq/\(pathEscape(topic))?group=\(pathEscape(group))&limit=\(limit)") }
    }
    struct Redrive: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Option var group: String = "default"
        @Option var ids: [String] = []
        func run() throws {
            var b: [(String, JSONValue)] = [("topic", .string(topic)), ("group", .string(group))]
            if !ids.isEmpty { b.append(("ids", .array(ids.map { .string($0) }))) }
            try call(options, "POST", "/queue/dlq/redrive", .object(b))
        }
    }
}

struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cache", abstract: "Read, write, invalidate and inspect the near cache.",
                                                    subcommands: [Get.self, Put.self, Invalidate.self, Delete.self, Status.self])

    struct Get: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var key: String
        func run() throws { try call(options, "GET", "/cache/read/\(pathEscape(key))") }
    }
    struct Put: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var key: String
        @Argument(help: "Value: JSON, or text sent as a JSON string.") var value: String
        @Option(name: .customLong("ttl-ms")) var ttlMs: Int?
        func run() throws {
            var b: [(String, JSONValue)] = [("key", .string(key)), ("value", jsonArgument(value))]
            if let ttlMs { b.append(("ttl_ms", .int(ttlMs))) }
            try call(options, "POST", "/cache/write", .object(b))
        }
    }
    struct Invalidate: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var key: String
        func run() throws { try call(options, "DELETE", "/cache/invalidate/\(pathEscape(key))") }
    }
    struct Delete: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var key: String
        func run() throws { try call(options, "POST", "/cache/delete", .object([("key", .string(key))])) }
    }
    struct Status: ParsableCommand {
        @OptionGroup var options: ClientOptions
        @Argument var key: String?
        func run() throws { try call(options, "GET", key.map { "/cache/status/\(pathEscape($0))" } ?? "/cache/status") }
    }
}

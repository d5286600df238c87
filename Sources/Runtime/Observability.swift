import CoreMetrics
import Foundation
import Logging
import Metrics
import Prometheus

// MARK: - Metrics (swift-metrics API, Prometheus text via swift-prometheus)
//
// Handlers are created once per (name, labels) and cached: the factory takes a lock per
// lookup, which the hot path should not pay on every request.

public final class NodeMetrics {
    public let registry: PrometheusCollectorRegistry
    private var counters: [String: CoreMetrics.Counter] = [:]
    private var gauges: [String: CoreMetrics.Gauge] = [:]
    private var timers: [String: CoreMetrics.Timer] = [:]

    nonisolated(unsafe) private static var bootstrapped: PrometheusCollectorRegistry?

    /// Bootstraps the process-wide metrics system once (swift-metrics allows one bootstrap).
    public init() {
        if let existing = NodeMetrics.bootstrapped {
            registry = existing
        } else {
            let registry = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [
                .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
                .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                .seconds(1), .seconds(2), .seconds(5), .seconds(10),
            ]
            MetricsSystem.bootstrap(factory)
            NodeMetrics.bootstrapped = registry
            self.registry = registry
        }
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        var k = name
        for (a, b) in labels { k += "|\(a)=\(b)" }
        return k
    }

    public func counter(_ name: String, _ labels: [(String, String)] = []) -> CoreMetrics.Counter {
        let k = NodeMetrics.key(name, labels)
        if let c = counters[k] { return c }
        let c = CoreMetrics.Counter(label: name, dimensions: labels)
        counters[k] = c
        return c
    }

    public func gauge(_ name: String, _ labels: [(String, String)] = []) -> CoreMetrics.Gauge {
        let k = NodeMetrics.key(name, labels)
        if let g = gauges[k] { return g }
        let g = CoreMetrics.Gauge(label: name, dimensions: labels)
        gauges[k] = g
        return g
    }

    public func timer(_ name: String, _ labels: [(String, String)] = []) -> CoreMetrics.Timer {
        let k = NodeMetrics.key(name, labels)
        if let t = timers[k] { return t }
        let t = CoreMetrics.Timer(label: name, dimensions: labels)
        timers[k] = t
        return t
    }

    public func increment(_ name: String, _ labels: [(String, String)] = [], by amount: Int = 1) {
        counter(name, labels).increment(by: amount)
    }

    public func set(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        gauge(name, labels).record(value)
    }

    public func recordMicros(_ name: String, _ labels: [(String, String)] = [], _ micros: Int64) {
        timer(name, labels).recordNanoseconds(micros * 1000)
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        registry.emit(into: &buffer)
        return buffer
    }
}

// MARK: - Logging

public enum LogFormat: String, Sendable { case text, json }

/// One JSON object per line: {"ts", "level", "label", "msg", ...metadata}.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var members: [(String, JSONValue)] = [
            ("ts", .string(JSONLogHandler.timestamp())),
            ("level", .string(event.level.rawValue)),
            ("label", .string(label)),
            ("msg", .string(event.message.description)),
        ]
        let merged = self.metadata.merging(event.metadata ?? [:]) { _, new in new }
        for (k, v) in merged.sorted(by: { $0.key < $1.key }) { members.append((k, .string(v.description))) }
        let line = JSONValue.object(members).serialized() + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func timestamp() -> String {
        let ms = EventLoop.wallMs()
        var t = time_t(ms / 1000)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, Int(ms % 1000))
    }
}

public enum Logs {
    /// Bootstraps swift-log once for the process.
    public static func bootstrap(format: LogFormat, level: Logger.Level = .info) {
        LoggingSystem.bootstrap { label in
            switch format {
            case .json:
                var h = JSONLogHandler(label: label)
                h.logLevel = level
                return h
            case .text:
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = level
                return h
            }
        }
    }
}

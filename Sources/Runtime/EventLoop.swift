import CLibevent
import Foundation

// MARK: - The event loop
//
// One thread, one `event_base`. Every object the node owns (HTTP server, Redis
// connections, timers) is touched only on the loop thread; the only way in from another
// thread is `LoopHandle.post`, which uses `event_base_once` (thread-safe once
// `evthread_use_pthreads()` ran before `event_base_new()`).

/// Boxes a Swift closure so it can travel through a C `void *` argument.
final class ClosureBox {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

private let onceTrampoline: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, arg in
    guard let arg else { return }
    let box = Unmanaged<ClosureBox>.fromOpaque(arg).takeRetainedValue()
    box.body()
}

private let timerTrampoline: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, arg in
    guard let arg else { return }
    let timer = Unmanaged<LoopTimer>.fromOpaque(arg).takeUnretainedValue()
    timer.fire()
}

private let soonTrampoline: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, arg in
    guard let arg else { return }
    Unmanaged<EventLoop>.fromOpaque(arg).takeUnretainedValue().runSoon()
}

private let pthreadsOnce: Void = {
    _ = evthread_use_pthreads()
}()

public final class EventLoop {
    public let base: OpaquePointer
    private var stopped = false
    /// `soon`: closures to run once the callbacks already active in this iteration are done.
    private var soonEvent: OpaquePointer?
    private var soonQueue: [() -> Void] = []
    private var soonActive = false
    private var soonRunning = false

    public init() {
        _ = pthreadsOnce
        // With the epoll changelist, libevent folds the EV_READ disable/enable pair evhttp does
        // around every request into one epoll_ctl (or none) per loop iteration.
        let config = event_config_new()
        if let config { event_config_set_flag(config, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue)) }
        guard let base = (config.flatMap { event_base_new_with_config($0) }) ?? event_base_new() else { fatalError("event_base_new failed") }
        if let config { event_config_free(config) }
        self.base = base
        soonEvent = event_new(base, -1, 0, soonTrampoline, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        if let soonEvent { event_free(soonEvent) }
        event_base_free(base)
    }

    /// Runs `body` later in this same loop iteration: after the callbacks that are already
    /// active (everything the last poll reported), before the loop waits again. Work scheduled
    /// from several callbacks of one iteration is thereby batched without costing another
    /// trip through epoll, as a zero timeout (`after(ms: 0)`) would. Closures scheduled while
    /// the queue runs run in a later pass (of this iteration, up to `soonPassesPerIteration`).
    public func soon(_ body: @escaping () -> Void) {
        soonQueue.append(body)
        guard !soonActive, !soonRunning, let soonEvent else { return }
        soonActive = true
        event_active(soonEvent, Int32(EV_TIMEOUT), 0)
    }

    /// Passes over the `soon` queue per loop iteration. Work scheduled from `soon` work (the
    /// Raft Ready loop queues a Redis write whose flush is itself `soon`) still goes out in this
    /// iteration; past the bound it waits for the next poll, so a closure that keeps
    /// rescheduling itself cannot starve I/O.
    static let soonPassesPerIteration = 4

    fileprivate func runSoon() {
        soonActive = false
        soonRunning = true
        var passes = 0
        while !soonQueue.isEmpty && passes < EventLoop.soonPassesPerIteration {
            passes += 1
            let queue = soonQueue
            soonQueue.removeAll(keepingCapacity: true)
            for body in queue { body() }
        }
        soonRunning = false
        if !soonQueue.isEmpty, !soonActive {
            soonActive = true
            after(ms: 0) { [weak self] in
                guard let self, let event = self.soonEvent else { return }
                event_active(event, Int32(EV_TIMEOUT), 0)
            }
        }
    }

    /// Runs the loop until `stop()` (or `LoopHandle.stop()`).
    public func run() {
        stopped = false
        while !stopped {
            let rc = event_base_loop(base, 0)
            // rc 1: no events left at all; -1: error; a loopbreak also ends the run.
            if rc != 0 || event_base_got_break(base) != 0 { break }
        }
    }

    public func stop() {
        stopped = true
        event_base_loopbreak(base)
    }

    public var handle: LoopHandle { LoopHandle(base: base) }

    /// A one-shot timer; the returned handle cancels it. Keep the handle alive only if you
    /// may cancel: the loop retains the timer until it fires.
    @discardableResult
    public func after(ms: Int, _ body: @escaping () -> Void) -> LoopTimer {
        let timer = LoopTimer(loop: self, repeating: false, body: body)
        timer.start(ms: ms)
        return timer
    }

    /// A repeating timer that runs until cancelled.
    public func every(ms: Int, _ body: @escaping () -> Void) -> LoopTimer {
        let timer = LoopTimer(loop: self, repeating: true, body: body)
        timer.start(ms: ms)
        return timer
    }

    /// Milliseconds since the Unix epoch (wall clock; for lease stamps and logs).
    public static func wallMs() -> Int64 {
        var tv = timeval()
        gettimeofday(&tv, nil)
        return Int64(tv.tv_sec) * 1000 + Int64(tv.tv_usec) / 1000
    }

    /// Monotonic milliseconds (for timeouts and the failure detector).
    public static func monoMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Monotonic microseconds (latency measurements).
    public static func monoMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
}

/// The one thread-safe way into a loop.
public struct LoopHandle: @unchecked Sendable {
    let base: OpaquePointer

    /// Runs `body` on the loop thread soon. Safe from any thread.
    public func post(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(ClosureBox(body)).toOpaque()
        var tv = timeval(tv_sec: 0, tv_usec: 0)
        if event_base_once(base, -1, Int16(EV_TIMEOUT), onceTrampoline, box, &tv) != 0 {
            Unmanaged<ClosureBox>.fromOpaque(box).release()
        }
    }

    /// Breaks the loop. Safe from any thread.
    public func stop() { event_base_loopbreak(base) }
}

/// A libevent timer owned by Swift. While armed, the loop holds a retain on it.
public final class LoopTimer {
    private var event: OpaquePointer?
    private let repeating: Bool
    private var body: (() -> Void)?
    private var armedRetain: Unmanaged<LoopTimer>?
    private var intervalMs = 0

    init(loop: EventLoop, repeating: Bool, body: @escaping () -> Void) {
        self.repeating = repeating
        self.body = body
        let flags = Int16(EV_TIMEOUT) | (repeating ? Int16(EV_PERSIST) : 0)
        event = event_new(loop.base, -1, flags, timerTrampoline, Unmanaged.passUnretained(self).toOpaque())
    }

    func start(ms: Int) {
        guard let event else { return }
        intervalMs = max(0, ms)
        var tv = timeval(tv_sec: intervalMs / 1000, tv_usec: (intervalMs % 1000) * 1000)
        if armedRetain == nil { armedRetain = Unmanaged.passRetained(self) }
        event_add(event, &tv)
    }

    fileprivate func fire() {
        let body = self.body
        if !repeating { disarm() }
        body?()
    }

    private func disarm() {
        if let event { event_del(event) }
        if let retained = armedRetain { armedRetain = nil; retained.release() }
    }

    /// Stops the timer; its closure never runs again.
    public func cancel() {
        body = nil
        disarm()
    }

    public var isArmed: Bool { armedRetain != nil }

    deinit {
        if let event { event_free(event) }
    }
}

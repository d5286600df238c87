import XCTest
@testable import Runtime

final class EventLoopTests: XCTestCase {
    /// `soon` runs after the callbacks already active in this iteration, before the loop waits
    /// again, in order; work it schedules while running goes to a later pass, so a closure
    /// that keeps rescheduling itself cannot starve timers (or I/O).
    func testSoonRunsInOrderWithinTheIterationAndCannotStarveTheLoop() {
        let loop = EventLoop()
        var order: [String] = []
        loop.after(ms: 0) {
            loop.soon { order.append("soon 1") }
            loop.soon { order.append("soon 2") }
            order.append("timer")
        }
        var spins = 0
        var timerFired = false
        loop.after(ms: 20) {
            // A closure that reschedules itself forever: the 30 ms timer must still fire.
            func spin() {
                spins += 1
                if !timerFired && spins < 10_000_000 { loop.soon(spin) }  // bounded: a failure must not hang
            }
            loop.soon(spin)
        }
        loop.after(ms: 50) {
            timerFired = true
            loop.after(ms: 5) { loop.stop() }
        }
        let watchdog = loop.after(ms: 5000) { loop.stop() }
        loop.run()
        watchdog.cancel()
        XCTAssertEqual(order, ["timer", "soon 1", "soon 2"])
        XCTAssertTrue(timerFired, "a rescheduling closure starved the loop")
        XCTAssertGreaterThan(spins, 1)
        XCTAssertLessThan(spins, 10_000_000, "the timer fired only once the spinning stopped by itself")
    }
}

final class HTTPClientHeadTests: XCTestCase {
    func testResponseHeadsParseOnBytes() {
        func parse(_ text: String) -> (Int, [String: String])? { HTTPClient.parseHead(ArraySlice(Array(text.utf8))) }
        let ok = parse("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length:  27 \r\nX-Odd:\r\nRetry-After:\t1")
        XCTAssertEqual(ok?.0, 200)
        XCTAssertEqual(ok?.1, ["content-type": "application/json", "content-length": "27", "x-odd": "", "retry-after": "1"])
        XCTAssertEqual(parse("HTTP/1.1 503")?.0, 503, "no reason phrase")
        XCTAssertEqual(parse("HTTP/1.1 404 Not Found\r\nnonsense line\r\n")?.1, [:])
        for bad in ["", "HTTP/1.1", "HTTP/1.1 20", "HTTP/1.1 2x0 OK", "garbage"] {
            XCTAssertNil(parse(bad), bad)
        }
    }
}

final class RedisCommandFormatTests: XCTestCase {
    /// Commands go to hiredis pre-formatted: binary-safe RESP, lengths in bytes.
    func testCommandsAreFormattedAsBinarySafeRESP() {
        let args: [[UInt8]] = [Array("SET".utf8), Array("k".utf8), [], Array("a\r\nb".utf8), [0, 255]]
        let expected = Array("*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$4\r\na\r\nb\r\n$2\r\n".utf8) + [0, 255] + [13, 10]
        XCTAssertEqual(RedisConnection.format(args), expected)
        let big = [UInt8](repeating: 0x78, count: 1_234_567)
        let formatted = RedisConnection.format([big])
        XCTAssertEqual(Array(formatted.prefix(14)), Array("*1\r\n$1234567\r\n".utf8))
        XCTAssertEqual(formatted.count, 14 + big.count + 2)
        XCTAssertEqual(RedisConnection.format([]), Array("*0\r\n".utf8))
    }
}

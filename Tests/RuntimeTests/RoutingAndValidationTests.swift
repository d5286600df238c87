import XCTest
@testable import Runtime

final class RoutingTests: XCTestCase {
    private func router() -> Router {
        let r = Router()
        r.add(.GET, "/lock/status/{resource}") { _, _ in }
        r.add(.GET, "/lock/status") { _, _ in }
        r.add(.POST, "/lock/acquire") { _, _ in }
        r.add(.DELETE, "/cache/invalidate/{key}") { _, _ in }
        return r
    }

    func testMatchesWithPercentDecodedParameters() {
        guard case .matched(let pattern, let params, _) = router().resolve(.GET, "/lock/status/a%20b%2Fc") else { return XCTFail("no match") }
        XCTAssertEqual(pattern, "/lock/status/{resource}")
        XCTAssertEqual(params["resource"], "a b/c")
    }

    func testUnknownPathIs404AndWrongMethodIs405() {
        guard case .notFound = router().resolve(.GET, "/nope") else { return XCTFail("expected 404") }
        guard case .notFound = router().resolve(.GET, "/lock/status/a/b") else { return XCTFail("expected 404") }
        guard case .methodNotAllowed = router().resolve(.PUT, "/lock/acquire") else { return XCTFail("expected 405") }
        guard case .methodNotAllowed = router().resolve(.UNKNOWN, "/lock/status") else { return XCTFail("expected 405") }
        guard case .matched = router().resolve(.HEAD, "/lock/status") else { return XCTFail("HEAD follows GET") }
    }

    func testInvalidPercentEncodingIsFlagged() {
        guard case .matched(_, let params, _) = router().resolve(.DELETE, "/cache/invalidate/%zz") else { return XCTFail("no match") }
        XCTAssertEqual(params["key"], Router.invalidMarker)
    }

    /// The byte-level decoder agrees with Foundation's removingPercentEncoding.
    func testPercentDecodingMatchesFoundation() {
        let samples = ["plain", "a%20b", "%e2%82%ac", "%E2%82%AC", "%ff", "%c3", "%4", "%", "%%", "a%2", "%zz1",
                       "%2F%2f", "caf%C3%A9", "x+y", "%00", "", "\u{00e9}t\u{00e9}", "%41%42c", "100%25"]
        for sample in samples {
            var s = sample
            let ours = s.withUTF8 { Router.percentDecoded($0) }
            XCTAssertEqual(ours, sample.removingPercentEncoding, "decoding \(sample)")
        }
    }

    /// A trailing slash where a route ends in a parameter is that route with an empty parameter
    /// (the handler's name check answers 400), not the route without it.
    func testTrailingSlashIsAnEmptyLastParameter() {
        guard case .matched(let pattern, let params, _) = router().resolve(.GET, "/lock/status/") else { return XCTFail("no match") }
        XCTAssertEqual(pattern, "/lock/status/{resource}")
        XCTAssertEqual(params["resource"], "")
        guard case .matched(let listPattern, let listParams, _) = router().resolve(.GET, "/lock/status") else { return XCTFail("no match") }
        XCTAssertEqual(listPattern, "/lock/status")
        XCTAssertTrue(listParams.isEmpty)
        guard case .matched(let p2, let params2, _) = router().resolve(.DELETE, "/cache/invalidate/") else { return XCTFail("no match") }
        XCTAssertEqual(p2, "/cache/invalidate/{key}")
        XCTAssertEqual(params2["key"], "")
        guard case .matched(_, let params3, _) = router().resolve(.DELETE, "//cache//invalidate//") else { return XCTFail("no match") }
        XCTAssertEqual(params3["key"], "")
        // The route exists for another method only: 405 naming it, not a fall-back to a shorter path.
        guard case .methodNotAllowed(let allowed) = router().resolve(.GET, "/cache/invalidate/") else { return XCTFail("expected 405") }
        XCTAssertEqual(allowed, [.DELETE])
        // No route ends in a parameter there: the slash is skipped as before.
        guard case .matched(let p4, _, _) = router().resolve(.POST, "/lock/acquire/") else { return XCTFail("no match") }
        XCTAssertEqual(p4, "/lock/acquire")
        guard case .matched(_, let params5, _) = router().resolve(.GET, "/lock/status/x/") else { return XCTFail("no match") }
        XCTAssertEqual(params5["resource"], "x")
        guard case .notFound = router().resolve(.GET, "/nope/") else { return XCTFail("expected 404") }
        guard case .notFound = router().resolve(.GET, "/") else { return XCTFail("expected 404") }
    }

    func testMethodNotAllowedListsThePathsMethods() {
        let r = router()
        r.add(.POST, "/lock/status") { _, _ in }
        guard case .methodNotAllowed(let a1) = r.resolve(.PUT, "/lock/acquire") else { return XCTFail("expected 405") }
        XCTAssertEqual(a1, [.POST])
        guard case .methodNotAllowed(let a2) = r.resolve(.DELETE, "/lock/status") else { return XCTFail("expected 405") }
        XCTAssertEqual(a2, [.GET, .HEAD, .POST])
        guard case .methodNotAllowed(let a3) = r.resolve(.UNKNOWN, "/lock/status/x") else { return XCTFail("expected 405") }
        XCTAssertEqual(a3, [.GET, .HEAD])
    }

    func testQueryDecodingFlagsBadPercentEncoding() {
        let good = HTTPRequest.parseQuery("group=a%20b+c&limit=5&flag")
        XCTAssertEqual(good.values, ["group": "a b c", "limit": "5", "flag": ""])
        XCTAssertNil(good.malformed)
        for (text, name) in [("group=%ZZ&limit=5", "group"), ("limit=5&group=%zz", "group"), ("group=%", "group"),
                             ("group=%4", "group"), ("group=%ff", "group"), ("%ZZ=1", "%ZZ"), ("a=1&b=%c3", "b")] {
            let parsed = HTTPRequest.parseQuery(text)
            XCTAssertEqual(parsed.malformed, name, text)
            XCTAssertNil(parsed.values[name], text)
        }
        XCTAssertEqual(HTTPRequest.parseQuery("group=%ZZ&limit=5").values["limit"], "5")
    }

    func testEmptySegmentsAreSkippedAndLongPathsRefused() {
        guard case .matched(_, let params, _) = router().resolve(.GET, "//lock//status/x/") else { return XCTFail("no match") }
        XCTAssertEqual(params["resource"], "x")
        guard case .notFound = router().resolve(.GET, String(repeating: "/a", count: 100)) else { return XCTFail("expected 404") }
    }
}

final class ValidationTests: XCTestCase {
    func testNameRules() {
        XCTAssertNoThrow(try Validate.name("orders", field: "topic"))
        XCTAssertNoThrow(try Validate.name(String(repeating: "a", count: 256), field: "topic"))
        for bad in ["", String(repeating: "a", count: 257), "a\nb", "a\u{0}b", "tab\there", "\u{7f}"] {
            XCTAssertThrowsError(try Validate.name(bad, field: "topic")) { error in
                XCTAssertEqual((error as? HTTPError)?.status, 400)
                XCTAssertTrue((error as? HTTPError)?.message.contains("topic") ?? false)
            }
        }
    }

    func testFieldsNameTheField() throws {
        let f = Fields(try JSONParser.parse(#"{"ttl_ms":"x","wait_ms":5.5,"n":99999999,"mode":"weird","owner":7}"#))
        XCTAssertThrowsError(try f.int("ttl_ms", in: 100...3_600_000)) { XCTAssertTrue(($0 as! HTTPError).message.contains("ttl_ms")) }
        XCTAssertThrowsError(try f.int("wait_ms", in: 0...300_000)) { XCTAssertTrue(($0 as! HTTPError).message.contains("wait_ms")) }
        XCTAssertThrowsError(try f.int("n", in: 0...10)) { XCTAssertTrue(($0 as! HTTPError).message.contains("[0, 10]")) }
        XCTAssertThrowsError(try f.oneOf("mode", ["exclusive", "shared"], default: "exclusive"))
        XCTAssertThrowsError(try f.name("owner")) { XCTAssertTrue(($0 as! HTTPError).message.contains("owner")) }
        XCTAssertThrowsError(try f.name("resource")) { XCTAssertTrue(($0 as! HTTPError).message.contains("missing field 'resource'")) }
        XCTAssertEqual(try f.int("absent", default: 30000, in: 100...3_600_000), 30000)
    }

    func testNodeIDs() {
        XCTAssertTrue(Validate.isNodeID("n1"))
        XCTAssertTrue(Validate.isNodeID("node_A-9"))
        XCTAssertFalse(Validate.isNodeID(""))
        XCTAssertFalse(Validate.isNodeID("a b"))
        XCTAssertFalse(Validate.isNodeID(String(repeating: "a", count: 65)))
    }

    func testRedisURLs() {
        XCTAssertEqual(RedisURL("redis://127.0.0.1:6379/0"), RedisURL(host: "127.0.0.1", port: 6379, db: 0))
        XCTAssertEqual(RedisURL("redis://user:p%40ss@h:7000/3"), RedisURL(host: "h", port: 7000, user: "user", password: "p@ss", db: 3))
        XCTAssertEqual(RedisURL("redis://:secret@h"), RedisURL(host: "h", port: 6379, password: "secret"))
        XCTAssertNil(RedisURL("http://h:1"))
        XCTAssertNil(RedisURL("redis://h:99999"))
        XCTAssertNil(RedisURL("redis://h:1/x"))
    }
}

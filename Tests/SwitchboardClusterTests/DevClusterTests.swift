import Foundation
import SwitchboardTestSupport
import Testing

@Suite("switchboard dev")
struct DevClusterTests {
    @Test func devStartsRoutesCallsAndStopsLeavingNothingBehind() async throws {
        let dev = try CLIProcess(["dev", "--routers", "2", "--workers", "2", "--callers", "2", "--call-seconds", "1"])
        try await dev.waitForOutput("cluster ready", timeout: .seconds(60))
        try await dev.waitForOutput("echo ok", timeout: .seconds(30))
        // Wait for a table line showing echoed calls, then stop it as an operator would.
        let deadline = ContinuousClock.now + .seconds(30)
        while !echoedSome(dev.output) {
            guard ContinuousClock.now < deadline else { Issue.record("no echoed call in:\n\(dev.output)"); break }
            try await Task.sleep(for: .milliseconds(200))
        }
        kill(dev.pid, SIGTERM)
        let status = await dev.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "exit status \(String(describing: status))\n\(dev.output)")
        #expect(dev.output.contains("stopped; nothing left running"))
        #expect(dev.output.contains("failures: none"), "\(dev.output.suffix(600))")
        // Every call that played through echoed the tone; those the stop cut short are said apart, not judged.
        let summary = try #require(dev.output.split(separator: "\n").first { $0.hasPrefix("demo calls: ") }.map(String.init))
        let echo = try #require(summary.firstMatch(of: /, (\d+) of the (\d+) played through echoed/), "\(summary)")
        #expect(Int(echo.1)! == Int(echo.2)! && Int(echo.2)! > 0, "\(summary)")
        // Every process it started is gone.
        let pids = dev.output.split(separator: "\n").compactMap { line -> Int32? in
            guard line.hasPrefix("started "), let open = line.range(of: "(pid "), let close = line.lastIndex(of: ")") else { return nil }
            return Int32(line[open.upperBound..<close])
        }
        #expect(pids.count == 5, "2 routers, 2 workers and a gateway")
        #expect(dev.output.contains("browser page http://127.0.0.1:") && dev.output.contains("/#token=v1.demo."), "\(dev.output.prefix(1_500))")
        for pid in pids { #expect(kill(pid, 0) != 0, "process \(pid) still running") }
        let ports = dev.output.split(separator: "\n").compactMap { line -> Int? in
            guard line.hasPrefix("nats-server") || line.hasPrefix("redis-server"), let colon = line.lastIndex(of: ":") else { return nil }
            return Int(line[line.index(after: colon)...])
        }
        #expect(ports.count == 2)
        for port in ports { #expect(!TestServer.canConnect(port: port), "port \(port) still served") }
        // How to look at it from another terminal was shown; its folder (logs, NATS keys and credentials) is gone.
        #expect(dev.output.contains("export SWITCHBOARD_ROUTER_URL=http://127.0.0.1:") && dev.output.contains("SWITCHBOARD_API_KEY=admin-"))
        let folder = try #require(dev.output.split(separator: "\n").first { $0.hasPrefix("logs ") }?.split(separator: " ").last.map(String.init))
        #expect(folder.contains("sbdev-cluster-") && !FileManager.default.fileExists(atPath: folder), "\(folder) left behind")
    }

    /// A table line with at least one call that echoed the tone.
    private func echoedSome(_ output: String) -> Bool {
        output.split(separator: "\n").contains { line in
            guard let range = line.range(of: "echo ok ") else { return false }
            return (Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0) > 0
        }
    }
}

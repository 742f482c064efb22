import Foundation
import SwitchboardCore

/// Runs a call that blocks its thread (a nats.c connect, flush or round-trip ping) on a thread of its own, so
/// no thread of Swift's cooperative pool (two of them on a two-core machine) ever waits on the network.
/// Only for rare calls: each one costs a thread start.
func onBlockingThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws(SwitchboardError) -> T) async throws(SwitchboardError) -> T {
    let result: Result<T, SwitchboardError> = await withCheckedContinuation { continuation in
        let thread = Thread {
            continuation.resume(returning: Result { () throws(SwitchboardError) -> T in try body() })
        }
        thread.name = name
        thread.start()
    }
    return try result.get()
}

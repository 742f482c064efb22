import Foundation

/// Runs a call that blocks its thread (a nats.c connect, flush or round-trip ping) on a thread of its own, so
/// no thread of Swift's cooperative pool (two of them on a two-core machine) ever waits on the network.
/// Only for rare calls: each one costs a thread start.
func onBlockingThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.name = name
        thread.start()
    }
}

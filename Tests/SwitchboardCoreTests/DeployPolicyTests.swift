import Testing
@testable import SwitchboardCore

@Suite struct DeployPolicyTests {
    let t0: Int64 = 1_800_000_000_000

    func deploy(_ policy: DeployPolicy, _ version: String, canary: Double? = nil, by: DeployPolicy.CanaryKey? = nil,
                live: Set<String>, at offset: Int64 = 0, options: DeployPolicy.Options = .init()) throws -> DeployPolicy {
        try policy.applying(.deploy(version: version, canaryPercent: canary, canaryBy: by, options: options), liveVersions: live,
                            nowMillis: t0 + offset, actor: "ops")
    }

    @Test func withNoPolicyEveryVersionIsEligible() {
        let none = DeployPolicy.none
        #expect(none.eligibleVersions == nil)
        #expect(none.standing(of: "anything") == .eligible)
        #expect(none.moveTargets(for: "1") == nil)
    }

    @Test func aRollingDeployRetiresTheOldVersionAndKeepsItAsTheRollbackTarget() throws {
        let first = try deploy(.none, "1", live: ["1"])
        #expect(first.revision == 1 && first.active == "1" && first.previous.isEmpty && first.retired.isEmpty)
        let second = try deploy(first, "2", live: ["1", "2"], at: 1000)
        #expect(second.revision == 2 && second.active == "2" && second.previous == ["1"])
        #expect(second.retired == ["1": t0 + 1000])
        #expect(second.standing(of: "2") == .eligible)
        #expect(second.standing(of: "1") == .outdated(drainAtMillis: t0 + 1000 + 30 * 60 * 1000))
        #expect(second.standing(of: "0.9") == .outdated(drainAtMillis: nil), "never took calls: no drain")
        #expect(second.moveTargets(for: "1") == [["1"], ["2"]])
        // Rollback: 1 is active again, no longer retired; 2 becomes the rollback target (and is retired).
        let back = try second.applying(.rollback(), liveVersions: ["1", "2"], nowMillis: t0 + 2000, actor: "ops")
        #expect(back.revision == 3 && back.active == "1" && back.previous == ["2"] && back.action == .rollback)
        #expect(back.retired == ["2": t0 + 2000])
    }

    @Test func theFirstPolicyRetiresTheVersionsThatRanBefore() throws {
        let first = try deploy(.none, "2", live: ["1", "2"])
        #expect(first.previous == ["1"])
        #expect(first.retired == ["1": t0])
        #expect(first.standing(of: "1") == .outdated(drainAtMillis: t0 + 30 * 60 * 1000))
    }

    @Test func aFirstPolicyAsACanaryTakesTheOneVersionRunningAsActive() throws {
        let first = try deploy(.none, "2", canary: 10, live: ["1", "2"])
        #expect(first.revision == 1 && first.active == "1" && first.canary?.version == "2" && first.previous.isEmpty)
        #expect(first.retired.isEmpty, "both still take calls")
    }

    @Test func aCanaryThenPromoteOrAbort() throws {
        let base = try deploy(.none, "1", live: ["1"])
        let canary = try deploy(base, "2", canary: 20, live: ["1", "2"], at: 10)
        #expect(canary.active == "1" && canary.canary == .init(version: "2", percent: 20, by: .call))
        #expect(canary.eligibleVersions == ["1", "2"])
        #expect(canary.moveTargets(for: "2") == [["2"], ["1"]])
        #expect(canary.moveTargets(for: "0") == [["0"], ["1"], ["2"]])
        let weighted = try deploy(canary, "2", canary: 50, by: .tenant, live: ["1", "2"])
        #expect(weighted.canary == .init(version: "2", percent: 50, by: .tenant))
        let promoted = try weighted.applying(.promote, liveVersions: [], nowMillis: t0 + 20, actor: "ops")
        #expect(promoted.active == "2" && promoted.canary == nil && promoted.previous == ["1"] && promoted.retired == ["1": t0 + 20])
        let aborted = try canary.applying(.abort, liveVersions: [], nowMillis: t0 + 30, actor: "ops")
        #expect(aborted.active == "1" && aborted.canary == nil && aborted.previous.isEmpty && aborted.retired == ["2": t0 + 30])
        // A rollback during a canary drops the canary: every new call on the active version.
        let twice = try deploy(try deploy(base, "2", live: ["1", "2", "3"]), "3", canary: 10, live: ["1", "2", "3"])
        let back = try twice.applying(.rollback(), liveVersions: ["1", "2", "3"], nowMillis: t0 + 40, actor: "ops")
        #expect(back.active == "2" && back.canary == nil && back.previous == ["1"] && back.action == .rollback)
        #expect(back.retired == ["1": t0, "3": t0 + 40])
        // Named, it goes there (and drops the canary too).
        let named = try twice.applying(.rollback(to: "1"), liveVersions: ["1", "2", "3"], nowMillis: t0 + 50, actor: "ops")
        #expect(named.active == "1" && named.canary == nil && named.previous == ["2"])
        #expect(Set(named.retired.keys) == ["2", "3"])
    }

    @Test func guardsGiveOneClearError() throws {
        let base = try deploy(.none, "1", live: ["1"])
        func code(_ body: () throws -> DeployPolicy) -> String? {
            guard case .failure(let error) = Result(catching: body) else { return nil }
            return (error as? SwitchboardError)?.code.rawValue ?? "?"
        }
        #expect(code { try deploy(base, "2", live: ["1"]) } == "version_not_found")
        #expect(code { try base.applying(.deploy(version: "2"), liveVersions: ["1"], force: true, nowMillis: t0, actor: "ops") } == nil)
        #expect(code { try deploy(base, "2", canary: 150, live: ["1", "2"]) } == "invalid_argument")
        #expect(code { try deploy(base, "2", canary: -1, live: ["1", "2"]) } == "invalid_argument")
        #expect(code { try deploy(base, "2", canary: .nan, live: ["1", "2"]) } == "invalid_argument")
        #expect(code { try deploy(.none, "2", canary: 10, live: ["2"]) } == "conflict", "no active version to be a canary beside")
        #expect(code { try deploy(.none, "3", canary: 10, live: ["1", "2", "3"]) } == "conflict", "which one is active?")
        #expect(code { try deploy(base, "1", canary: 10, live: ["1"]) } == "invalid_argument")
        #expect(code { try deploy(base, "1", live: ["1"]) } == "conflict", "already active")
        #expect(code { try deploy(base, "", live: ["1"]) } == "invalid_argument")
        #expect(code { try base.applying(.promote, liveVersions: [], nowMillis: t0, actor: "ops") } == "conflict")
        #expect(code { try base.applying(.abort, liveVersions: [], nowMillis: t0, actor: "ops") } == "conflict")
        #expect(code { try base.applying(.rollback(), liveVersions: ["1"], nowMillis: t0, actor: "ops") } == "conflict", "nothing before")
        let second = try deploy(base, "2", live: ["1", "2"])
        #expect(code { try second.applying(.rollback(), liveVersions: ["2"], nowMillis: t0, actor: "ops") } == "version_not_found",
                "its workers are gone")
        #expect(code { try second.applying(.rollback(), liveVersions: ["2"], force: true, nowMillis: t0, actor: "ops") } == nil)
        #expect(code { try second.applying(.rollback(to: "7"), liveVersions: ["2", "7"], nowMillis: t0, actor: "ops") } == "invalid_argument")
        #expect(code { try deploy(base, "2", live: ["1", "2"], options: .init(rollbackWindow: .seconds(-1))) } == "invalid_argument")
        #expect(code { try deploy(base, "2", live: ["1", "2"], options: .init(drainDeadline: .seconds(8 * 24 * 3600))) } == "invalid_argument")
    }

    @Test func optionsStayUntilAnotherDeploySetsThem() throws {
        let base = try deploy(.none, "1", live: ["1", "2", "3"],
                              options: .init(rollbackWindow: .seconds(5), drainDeadline: .seconds(60), atDeadline: .end))
        let next = try deploy(base, "2", live: ["1", "2", "3"])
        #expect(next.rollbackWindowMillis == 5000 && next.drainDeadlineMillis == 60_000 && next.atDeadline == .end)
    }

    @Test func historyIsBounded() throws {
        var policy = try deploy(.none, "v0", live: ["v0"])
        for i in 1...15 { policy = try policy.applying(.deploy(version: "v\(i)"), liveVersions: [], force: true, nowMillis: t0 + Int64(i), actor: "ops") }
        #expect(policy.previous.count == DeployPolicy.historyDepth && policy.previous.first == "v14")
        #expect(policy.retired.count == DeployPolicy.historyDepth && policy.retired["v14"] == t0 + 15)
        #expect(throws: Never.self) { try policy.validate() }
    }

    @Test func aPolicyFromOutsideIsValidated() throws {
        var policy = try deploy(.none, "1", live: ["1"])
        policy.canary = .init(version: "2", percent: .infinity)
        #expect(throws: SwitchboardError.self) { try policy.validate() }
        policy.canary = nil
        policy.retired = ["0": Int64.max]
        #expect(throws: SwitchboardError.self) { try policy.validate() }
        policy.retired = [:]
        policy.rollbackWindowMillis = -5
        #expect(throws: SwitchboardError.self) { try policy.validate() }
        policy.rollbackWindowMillis = 0
        policy.active = nil
        #expect(throws: SwitchboardError.self) { try policy.validate() }
        let notice = DeployNotice(policy: try deploy(.none, "1", live: ["1"]))
        #expect(try DeployNotice.decode(notice.encoded()) == notice)
    }
}

@Suite struct CanarySplitTests {
    let policy = DeployPolicy(revision: 2, active: "1", canary: .init(version: "2", percent: 20))

    @Test func byCallTheShareIsExactOverAnyRun() {
        var split = CanarySplit()
        var canary = 0
        for n in 1...2000 {
            let choice = split.choose(policy, tenant: "t")
            if choice.isCanary {
                canary += 1
                #expect(choice.versions == ["2"] && choice.fallback == [["1"]] && choice.version == "2")
            } else {
                #expect(choice.versions == ["1"] && choice.fallback.isEmpty && choice.version == "1")
            }
            #expect(canary == n / 5, "after \(n) calls")
        }
        var odd = DeployPolicy(revision: 2, active: "1", canary: .init(version: "2", percent: 33.33))
        var split2 = CanarySplit()
        let count = (0..<10_000).filter { _ in split2.choose(odd, tenant: "t").isCanary }.count
        #expect(count == 3333)
        odd.canary?.percent = 0
        #expect(!(0..<100).contains { _ in split2.choose(odd, tenant: "t").isCanary })
        odd.canary?.percent = 100
        #expect((0..<100).allSatisfy { _ in split2.choose(odd, tenant: "t").isCanary })
    }

    @Test func byTenantEachTenantSeesOneVersionAndARaisedShareOnlyAddsTenants() {
        var tenant = policy
        tenant.canary?.by = .tenant
        var split = CanarySplit()
        let tenants = (0..<2000).map { "tenant-\($0)" }
        var onCanary: Set<String> = []
        for t in tenants {
            let first = split.choose(tenant, tenant: t).isCanary
            #expect((0..<3).allSatisfy { _ in split.choose(tenant, tenant: t).isCanary == first })
            if first { onCanary.insert(t) }
        }
        // A hash of 2,000 names: near the share, not exact.
        #expect((300...500).contains(onCanary.count), "\(onCanary.count) of 2000 tenants")
        tenant.canary?.percent = 50
        let onCanaryAtHalf = Set(tenants.filter { split.choose(tenant, tenant: $0).isCanary })
        #expect(onCanary.isSubset(of: onCanaryAtHalf))
        // Another canary version picks other tenants.
        tenant.canary = .init(version: "3", percent: 20, by: .tenant)
        let other = Set(tenants.filter { split.choose(tenant, tenant: $0).isCanary })
        #expect(other != onCanary)
    }

    @Test func noPolicyOrNoCanary() {
        var split = CanarySplit()
        #expect(split.choose(.none, tenant: "t") == .any)
        let plain = DeployPolicy(revision: 1, active: "1")
        #expect(split.choose(plain, tenant: "t") == .init(versions: ["1"], fallback: [], isCanary: false, version: "1"))
    }
}

@Suite struct DeployStandingTests {
    let t0: Int64 = 1_800_000_000_000

    func policy(_ revision: Int64, active: String, retired: [String: Int64] = [:], window: Int64 = 60_000) -> DeployPolicy {
        var p = DeployPolicy(revision: revision, active: active, rollbackWindow: .milliseconds(window), drainDeadline: .seconds(600),
                             atDeadline: .migrate, retired: retired)
        p.changedAtMillis = t0
        return p
    }

    @Test func outdatedThenDrainedWhenTheWindowIsOverAndBackOnARollback() {
        var standing = DeployStanding(version: "1")
        #expect(standing.apply(policy(1, active: "1"), nowMillis: t0).isEmpty)
        #expect(standing.apply(policy(2, active: "2", retired: ["1": t0 + 10]), nowMillis: t0 + 10) == [.outdated(revision: 2)])
        #expect(standing.tick(nowMillis: t0 + 60_009).isEmpty)
        #expect(standing.tick(nowMillis: t0 + 60_010) == [.drain(deadline: .seconds(600), atDeadline: .migrate)])
        #expect(standing.tick(nowMillis: t0 + 70_000).isEmpty, "once")
        // The same policy read again does not drain it a second time.
        #expect(standing.apply(policy(2, active: "2", retired: ["1": t0 + 10]), nowMillis: t0 + 80_000).isEmpty)
        #expect(standing.apply(policy(3, active: "1", retired: ["2": t0 + 90_000]), nowMillis: t0 + 90_000) == [.current, .undrain])
        #expect(!standing.isOutdated && !standing.drained)
    }

    @Test func aRollbackWithinTheWindowMakesItCurrentWithNoDrain() {
        var standing = DeployStanding(version: "1")
        _ = standing.apply(policy(1, active: "1"), nowMillis: t0)
        _ = standing.apply(policy(2, active: "2", retired: ["1": t0]), nowMillis: t0)
        #expect(standing.apply(policy(3, active: "1", retired: ["2": t0 + 5]), nowMillis: t0 + 5) == [.current])
        #expect(standing.tick(nowMillis: t0 + 1_000_000).isEmpty)
    }

    @Test func aWorkerStartedAfterTheWindowStaysOutdatedAndIdle() {
        var standing = DeployStanding(version: "1")
        #expect(standing.apply(policy(2, active: "2", retired: ["1": t0]), nowMillis: t0 + 120_000) == [.outdated(revision: 2)])
        #expect(standing.tick(nowMillis: t0 + 999_999).isEmpty)
        #expect(standing.isOutdated && standing.drainAtMillis == nil)
    }

    @Test func aVersionStartedAheadOfItsDeployWaitsUndrained() {
        var standing = DeployStanding(version: "2")
        #expect(standing.apply(policy(1, active: "1"), nowMillis: t0) == [.outdated(revision: 1)])
        #expect(standing.tick(nowMillis: t0 + 999_999_999).isEmpty)
        #expect(standing.apply(policy(2, active: "2", retired: ["1": t0 + 5]), nowMillis: t0 + 5) == [.current])
    }

    @Test func anOlderRevisionIsIgnoredAndANewerOutdatedOneIsReported() {
        var standing = DeployStanding(version: "1")
        _ = standing.apply(policy(5, active: "2", retired: ["1": t0]), nowMillis: t0)
        #expect(standing.apply(policy(4, active: "1"), nowMillis: t0).isEmpty)
        #expect(standing.isOutdated)
        #expect(standing.apply(policy(6, active: "3", retired: ["1": t0, "2": t0]), nowMillis: t0) == [.outdated(revision: 6)])
    }
}

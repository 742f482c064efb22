import SwitchboardCore
import Testing

@Suite struct ResourceParsingTests {
    @Test func cgroupFiles() {
        #expect(ResourceParsing.cgroupCPULimit("200000 100000\n") == 2)
        #expect(ResourceParsing.cgroupCPULimit("50000 100000") == 0.5)
        #expect(ResourceParsing.cgroupCPULimit("max 100000\n") == nil)
        #expect(ResourceParsing.cgroupCPULimit("garbage") == nil)
        #expect(ResourceParsing.cgroupCPUUsageMicros("usage_usec 123456\nuser_usec 100\n") == 123456)
        #expect(ResourceParsing.cgroupCPUUsageMicros("nothing 1") == nil)
        #expect(ResourceParsing.cgroupBytes("1073741824\n") == 1 << 30)
        #expect(ResourceParsing.cgroupBytes("max\n") == nil)
    }

    @Test func procFiles() throws {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n"
        let cpu = try #require(ResourceParsing.procStatCPU(stat))
        #expect(cpu.total == 1000)
        #expect(cpu.busy == 150)
        let rss = ResourceParsing.kilobytesField("VmRSS", in: "Name: x\nVmRSS:\t  2048 kB\n")
        #expect(rss == Int64(2_097_152))
        #expect(ResourceParsing.kilobytesField("MemTotal", in: "MemFree: 1 kB") == nil)
    }
}

@Suite struct ProcPidStatTests {
    @Test func readsUserPlusSystemTicksPastACommandNameWithSpacesAndParentheses() {
        let text = "4242 (python (bot) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 315 27 0 0 20 0 3 0 98765 123456789 4567 18446744073709551615\n"
        #expect(ResourceParsing.procPidStatCPUTicks(text) == 342)
        #expect(ResourceParsing.procPidStatCPUTicks("garbage") == nil)
        #expect(ResourceParsing.procPidStatCPUTicks("1 (x) S 1 2") == nil)
        #expect(ResourceParsing.procPidStatCPUTicks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 18446744073709551615 1 0 0") == nil)
    }
}

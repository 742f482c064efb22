"""The sample agents as real processes on loopback, driven by a fake Twilio media server (what a Switchboard
worker is to them). Run: .venv-agents/bin/python -m pytest agents/test_agents.py
"""

import asyncio
import base64
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference_agent.py"
PIPECAT = HERE / "pipecat_echo_bot.py"
STREAM_SID = "MZ00000000000000000000000000000001"


# --- mu-law, written out here so the agents' own codecs are checked, not trusted ---

def _ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 7)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


ULAW = [_ulaw_decode(b) for b in range(256)]
# Encoding by nearest decoded level: slow to build once, exact, and independent of the agents' encoder.
_LEVELS = sorted(range(256), key=lambda b: ULAW[b])


def ulaw_encode(sample: int) -> int:
    return min(_LEVELS, key=lambda b: abs(ULAW[b] - sample))


def decode(payloads) -> list[int]:
    return [ULAW[b] for p in payloads for b in base64.b64decode(p)]


def frequency(samples: list[int]) -> float:
    """A tone's frequency from its zero crossings, over the part that is not silence."""
    loud = [i for i, s in enumerate(samples) if abs(s) > 1000]
    assert loud, "no audio above silence"
    part = samples[loud[0]:loud[-1] + 1]
    signs = [s > 0 for s in part if s != 0]
    crossings = sum(a != b for a, b in zip(signs, signs[1:]))
    return crossings / 2 / (len(part) / 8000)


def tone_frames(hz: float, frames: int) -> list[str]:
    """`frames` 20 ms mu-law frames of a tone, base64, as Twilio sends the caller's audio."""
    table = {}
    out = []
    for f in range(frames):
        chunk = bytearray()
        for i in range(160):
            s = int(8000 * math.sin(2 * math.pi * hz * (f * 160 + i) / 8000))
            if s not in table:
                table[s] = ulaw_encode(s)
            chunk.append(table[s])
        out.append(base64.b64encode(bytes(chunk)).decode())
    return out


# --- agent processes ---

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """An agent process in its own process group (as the worker runs them), killed with its group at the end."""

    def __init__(self, script: Path, *args: str, env_port: bool = False, tmp: Path, prelude: str = ""):
        self.port = free_port()
        env = dict(os.environ)
        if env_port:
            env["SWITCHBOARD_AGENT_PORT"] = str(self.port)
        else:
            args = ("--port", str(self.port), *args)
        self.log = tmp / f"{script.stem}-{self.port}.log"
        with open(self.log, "w") as log:
            # A prelude (Python run first, then the script as __main__) lets a test change a library default.
            main = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
            launch = ["-c", prelude + "\n" + main] if prelude else []
            self.proc = subprocess.Popen([sys.executable, *launch, str(script), *args], env=env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        try:
            self._wait_listening(deadline=time.monotonic() + 60)
        except BaseException:
            self.stop()  # a test that fails here leaves no process either
            raise

    def _wait_listening(self, deadline: float) -> None:
        while True:
            assert self.proc.poll() is None, f"agent exited early:\n{self.log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "agent never listened"
                time.sleep(0.05)

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # nothing of its group may be left
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def reference(tmp_path):
    agent = Agent(REFERENCE, tmp=tmp_path)
    yield agent
    agent.stop()


@pytest.fixture
def pipecat(tmp_path):
    agent = Agent(PIPECAT, tmp=tmp_path)
    yield agent
    agent.stop()


# --- the fake media server ---

class Call:
    """One agent session, as a worker holds it: sends `connected` and `start`, then records what comes back."""

    def __init__(self, url: str, metadata: dict | None = None, state=None):
        self.url = url
        params = {"call_id": "call-1", "tenant": "acme", "resumed": "false", "metadata": json.dumps(metadata or {})}
        if state is not None:
            params.update(resumed="true", state=json.dumps(state))
        self.start_message = {
            "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
            "start": {"accountSid": "AC" + "0" * 32, "streamSid": STREAM_SID, "callSid": "call-1",
                      "tracks": ["inbound"], "customParameters": params,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }
        self.received = []  # (monotonic time, raw text)
        self.sequence = 1
        self.return_marks = False  # answer each mark as played, as a worker does once its audio is out

    async def __aenter__(self):
        self.ws = await websockets.connect(self.url, max_size=None, ping_interval=None)
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.ws.send(json.dumps(self.start_message))
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc):
        self.reader.cancel()
        await self.ws.close()

    async def _read(self):
        try:
            async for raw in self.ws:
                self.received.append((time.monotonic(), raw))
                message = _json(raw)
                if self.return_marks and isinstance(message, dict) and message.get("event") == "mark":
                    await self.send("mark", mark={"name": message["mark"]["name"]})
        except websockets.ConnectionClosed:
            pass

    async def send(self, event: str, **body):
        self.sequence += 1
        message = {"event": event, "sequenceNumber": str(self.sequence), "streamSid": STREAM_SID, **body}
        await self.ws.send(json.dumps(message))

    async def dtmf(self, digit: str):
        await self.send("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    async def media(self, payloads, pace: bool = True):
        for n, payload in enumerate(payloads):
            media = {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20), "payload": payload}
            await self.send("media", media=media)
            if pace:
                await asyncio.sleep(0.02)

    def messages(self) -> list:
        return [_json(raw) for _, raw in self.received]

    def events(self, event: str) -> list[dict]:
        return [m for m in self.messages() if isinstance(m, dict) and m.get("event") == event]

    def states(self) -> list:
        return [m["state"] for m in self.events("checkpoint")]

    async def until(self, predicate, timeout: float = 5, what: str = "the agent's answer"):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)


def _json(raw):
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return None


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


# --- the reference agent ---

def test_reference_echo_returns_each_payload(reference):
    async def one(first: int):
        payloads = [base64.b64encode(bytes([n]) * 160).decode() for n in range(first, first + 10)]
        async with Call(reference.url) as call:
            await call.media(payloads)
            await call.until(lambda: len(call.events("media")) >= 10)
            assert [m["media"]["payload"] for m in call.events("media")] == payloads
            assert all(m["streamSid"] == STREAM_SID for m in call.events("media"))
            await call.until(lambda: call.states() and call.states()[-1]["media_in"] == 10)

    async def main():  # three calls at once on one server, each hearing only itself
        await asyncio.gather(one(0), one(100), one(200))
    run(main())


def test_reference_tone_is_440_hz_in_real_time_with_marks_in_order(reference):
    async def main():
        async with Call(reference.url, {"agent": "tone"}) as call:
            call.return_marks = True
            began = time.monotonic()
            await asyncio.sleep(1.05)
            media = call.events("media")
            # Real time, 100 ms pieces: the first at once, then one each 100 ms.
            assert 8 <= len(media) <= 13, len(media)
            assert all(len(base64.b64decode(m["media"]["payload"])) == 800 for m in media)
            samples = decode(m["media"]["payload"] for m in media)
            assert abs(frequency(samples) - 440) < 3
            rms = math.sqrt(sum(s * s for s in samples) / len(samples))
            assert 4500 < rms < 6500, rms  # amplitude ~8000
            # A mark after each piece, chunk-0, chunk-1, ...
            kinds = [m["event"] for m in call.messages() if m["event"] in ("media", "mark")]
            assert kinds[:6] == ["media", "mark"] * 3
            names = [m["mark"]["name"] for m in call.events("mark")]
            assert names == [f"chunk-{n}" for n in range(len(names))]
            # The marks the server returned are saved, in order, with the tone's phase.
            await call.until(lambda: call.states()[-1]["marks"][:len(names)] == names, what="marks saved")
            assert call.states()[-1]["samples"] >= 800 * len(names)
            assert time.monotonic() - began < 3
    run(main())


def test_reference_hash_clears_and_pauses(reference):
    async def main():
        async with Call(reference.url, {"agent": "tone", "pause_after_clear_ms": "600"}) as call:
            await asyncio.sleep(0.35)
            await call.dtmf("#")
            await call.until(lambda: call.events("clear"), what="clear")
            cleared = next(t for t, raw in call.received if _json(raw)["event"] == "clear")
            await asyncio.sleep(1.0)
            after = [t for t, raw in call.received if t > cleared and _json(raw)["event"] == "media"]
            assert after, "the tone never resumed"
            assert after[0] - cleared > 0.5, after[0] - cleared
            assert call.states()[-1]["dtmf"] == "#"
    run(main())


def test_reference_star_hangs_up_with_a_normal_close(reference):
    async def main():
        async with Call(reference.url) as call:
            await call.dtmf("4")
            await call.dtmf("*")
            await asyncio.wait_for(call.reader, 5)  # ends when the agent closes
            assert call.ws.close_code == 1000
            assert call.states()[-1]["dtmf"] == "4*"  # saved before it hung up
    run(main())


def test_reference_resumed_call_continues_from_its_state(reference):
    saved = {"pid": 1, "sessions": 1, "resumed": False, "dtmf": "12", "marks": ["chunk-3"], "samples": 3210,
             "media_in": 7}

    async def main():
        async with Call(reference.url, {"agent": "tone"}, state=saved) as call:
            await call.dtmf("3")
            await call.until(lambda: call.states() and call.states()[-1]["dtmf"] == "123")
            state = call.states()[-1]
            assert state["sessions"] == 2 and state["resumed"] is True
            assert state["marks"][0] == "chunk-3" and state["media_in"] == 0
            assert state["pid"] == reference.proc.pid
            # The tone goes on from sample 3210: same phase, and its pieces are numbered on.
            first = decode([call.events("media")[0]["media"]["payload"]])
            expected = [8000 * math.sin(2 * math.pi * 440 * (3210 + i) / 8000) for i in range(len(first))]
            assert max(abs(a - b) for a, b in zip(first, expected)) < 300
            assert call.events("mark")[0]["mark"]["name"] == "chunk-4"
    run(main())


def test_reference_checkpoints_are_valid_small_json(reference):
    async def main():
        async with Call(reference.url, {"agent": "tone"}) as call:
            call.return_marks = True
            await call.media(tone_frames(440, 20))
            for digit in "0123456789" * 3:
                await call.dtmf(digit)
            await asyncio.sleep(0.3)
            raws = [raw for _, raw in call.received if '"checkpoint"' in raw]
            assert len(raws) >= 10
            for raw in raws:
                assert isinstance(raw, str) and len(raw.encode()) < 64 * 1024
                message = json.loads(raw)
                assert set(message) == {"event", "state"}
                assert set(message["state"]) == {"pid", "sessions", "resumed", "dtmf", "marks", "samples", "media_in"}
            assert call.states()[-1]["dtmf"] == "0123456789" * 3
            assert call.states()[-1]["media_in"] == 20
            # Saved at most about every 100 ms, DTMF aside (one checkpoint per key).
            assert len(raws) <= 30 + 25
    run(main())


def test_reference_seven_sends_malformed_messages(reference):
    async def main():
        async with Call(reference.url) as call:
            await call.dtmf("7")
            await call.until(lambda: any(len(raw) >= 2 << 20 for _, raw in call.received), what="the 2 MiB frame")
            bad = [m for m in call.messages() if not isinstance(m, dict) or m.get("event") != "checkpoint"]
            assert len(bad) == 100
    run(main())


def test_reference_one_call_process_exits_after_its_call(tmp_path):
    agent = Agent(REFERENCE, "--one-call", env_port=True, tmp=tmp_path)  # port from SWITCHBOARD_AGENT_PORT
    try:
        async def main():
            async with Call(agent.url) as call:
                await call.until(lambda: call.states())
                await call.send("stop", stop={"accountSid": "AC0", "callSid": "call-1"})
                await asyncio.wait_for(call.reader, 5)  # stop: the agent closes its side
        run(main())
        assert agent.proc.wait(timeout=5) == 0
        log = agent.log.read_text()
        assert "call call-1 started (session 1)" in log and "call call-1 ended" in log
    finally:
        agent.stop()


# --- the Pipecat bot ---

def test_pipecat_echoes_440_hz_and_checkpoints(pipecat):
    async def main():
        async with Call(pipecat.url) as call:
            await call.media(tone_frames(440, 100))  # 2 s, paced as a caller is
            await call.until(lambda: call.states(), what="a checkpoint")
            await asyncio.sleep(0.5)
            media = call.events("media")
            samples = decode(m["media"]["payload"] for m in media)
            assert len(samples) > 8000  # over a second of it came back
            assert abs(frequency(samples) - 440) < 3
            for raw in (raw for _, raw in call.received if '"checkpoint"' in raw):
                assert len(raw.encode()) < 64 * 1024
            state = call.states()[-1]
            assert state["echoed"] > 0 and state["resumed"] is False
    run(main())


def test_pipecat_serves_calls_at_once_each_hearing_itself(pipecat):
    async def one(hz: float):
        async with Call(pipecat.url) as call:
            await call.media(tone_frames(hz, 75))
            await call.until(lambda: len(call.events("media")) > 25, what="the echo")
            assert abs(frequency(decode(m["media"]["payload"] for m in call.events("media"))) - hz) < 5

    async def main():
        await asyncio.gather(one(300), one(440), one(700))
    run(main())


def test_pipecat_resumed_call_counts_on_from_its_state(pipecat):
    async def main():
        async with Call(pipecat.url, state={"echoed": 100, "resumed": False}) as call:
            await call.media(tone_frames(440, 60))
            await call.until(lambda: call.states(), what="a checkpoint")
            assert all(s["echoed"] >= 100 and s["resumed"] is True for s in call.states())
    run(main())


def test_pipecat_call_outlives_the_idle_timeout(tmp_path):
    # Pipecat's idle timeout (300 s) shortened to 2 s: an echo makes no frame it counts as activity.
    prelude = "from pipecat.pipeline.worker import PipelineWorker\n" \
              "PipelineWorker.__init__.__kwdefaults__['idle_timeout_secs'] = 2"
    agent = Agent(PIPECAT, tmp=tmp_path, prelude=prelude)
    try:
        async def main():
            async with Call(agent.url) as call:
                await call.media(tone_frames(440, 200))  # 4 s
                assert not call.reader.done(), f"the bot hung up: {call.ws.close_code}"
                assert len(call.events("media")) > 50
        run(main())
    finally:
        agent.stop()

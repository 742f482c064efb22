"""A small plain-Python agent that speaks Twilio Media Streams (the agent's side), as Switchboard's worker
expects agents to: the reference the bridge is tested against, and a template for agents without Pipecat.

It serves any number of calls on one port (an agent server, `--agent-url`) or one call (`--one-call`, one
process per call from a warm pool, `--agent-command`). What each call does comes from its metadata
(`start.customParameters.metadata`):

  agent=echo (default)  every 20 ms of the caller's audio is sent straight back
  agent=tone            a tone of tone_hz (440) Hz, in chunk_ms (100) pieces with a mark "chunk-<n>" after
                        each, lead_ms (0) ahead of real time; its phase is saved, so a resumed call goes on

Keys: '#' sends `clear` (and a tone pauses pause_after_clear_ms, 1000), '*' hangs up (closes the socket), '7'
sends 100 malformed messages, the last a 2 MiB one (a test of the worker's defences).

Its state, saved with Switchboard's `checkpoint` event at start and on every change (at most every 100 ms):
pid, sessions (1, +1 per resume), resumed, dtmf (keys so far), marks (names returned, last 50), samples (tone
samples sent), media_in (caller media this session).
"""

import argparse
import asyncio
import base64
import json
import math
import os
import sys
import time

import websockets


def mulaw_encode(sample: int) -> int:
    """One 16-bit sample as G.711 mu-law."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone(frequency: float, start: int, count: int) -> bytes:
    """`count` mu-law samples of a tone at 8 kHz, from sample `start` on (so the phase carries across pieces)."""
    return bytes(mulaw_encode(int(8000 * math.sin(2 * math.pi * frequency * (start + i) / 8000))) for i in range(count))


class Call:
    def __init__(self, ws, start: dict):
        self.ws = ws
        self.stream_sid = start["streamSid"]
        params = start["start"].get("customParameters", {})
        self.metadata = json.loads(params.get("metadata") or "{}")
        saved = json.loads(params["state"]) if params.get("state") else {}
        resumed = params.get("resumed") == "true"
        self.state = {
            "pid": os.getpid(),
            "sessions": saved.get("sessions", 0) + 1,
            "resumed": resumed,
            "dtmf": saved.get("dtmf", ""),
            "marks": saved.get("marks", []),
            "samples": saved.get("samples", 0),
            "media_in": 0,
        }
        self.dirty = True
        self.paused_until = 0.0
        self.call_id = params.get("call_id", "?")

    async def send(self, message: dict) -> None:
        message.setdefault("streamSid", self.stream_sid)
        await self.ws.send(json.dumps(message))

    async def save_loop(self) -> None:
        while True:
            if self.dirty:
                self.dirty = False
                await self.ws.send(json.dumps({"event": "checkpoint", "state": self.state}))
            await asyncio.sleep(0.1)

    async def speak(self) -> None:
        frequency = float(self.metadata.get("tone_hz", 440))
        chunk = int(self.metadata.get("chunk_ms", 100)) * 8
        lead = float(self.metadata.get("lead_ms", 0)) / 1000
        began, sent_here = time.monotonic(), 0
        while True:
            now = time.monotonic()
            if now < self.paused_until:
                await asyncio.sleep(self.paused_until - now)
                began, sent_here = time.monotonic(), 0
                continue
            # Stay `lead` seconds ahead of real time, as a bot streaming TTS does.
            if sent_here / 8000 > now - began + lead:
                await asyncio.sleep(0.01)
                continue
            audio = tone(frequency, self.state["samples"], chunk)
            await self.send({"event": "media", "media": {"payload": base64.b64encode(audio).decode()}})
            await self.send({"event": "mark", "mark": {"name": f"chunk-{self.state['samples'] // chunk}"}})
            self.state["samples"] += chunk
            sent_here += chunk
            self.dirty = True

    async def on_message(self, message: dict):
        event = message.get("event")
        if event == "media":
            self.state["media_in"] += 1
            self.dirty = True
            if self.metadata.get("agent", "echo") == "echo":
                await self.send({"event": "media", "media": {"payload": message["media"]["payload"]}})
        elif event == "mark":
            self.state["marks"] = (self.state["marks"] + [message["mark"]["name"]])[-50:]
            self.dirty = True
        elif event == "dtmf":
            digit = message["dtmf"]["digit"]
            self.state["dtmf"] += digit
            # Saved at once, not within 100 ms: a key may be followed by a hang-up or a move at once.
            await self.ws.send(json.dumps({"event": "checkpoint", "state": self.state}))
            if digit == "#":
                # Paused before `clear` goes, so no chunk slips in behind it.
                self.paused_until = time.monotonic() + float(self.metadata.get("pause_after_clear_ms", 1000)) / 1000
                await self.send({"event": "clear"})
            elif digit == "*":
                return "hang up"
            elif digit == "7":
                # The worker may close the session at the first of these; the sends then stop with it.
                for i in range(99):
                    await self.ws.send(["not json", "[]", '{"event": 5}', '{"event":"media"}'][i % 4])
                await self.ws.send("x" * (2 << 20))
        elif event == "stop":
            return "stop"
        return None


async def handle(ws) -> None:
    call = None
    tasks = []
    try:
        async for raw in ws:
            try:
                message = json.loads(raw)
            except ValueError:
                continue  # not this agent's to police: the worker only sends JSON
            if call is None:
                if message.get("event") == "start":
                    call = Call(ws, message)
                    session = call.state["sessions"]
                    print(f"call {call.call_id} started (session {session})", file=sys.stderr, flush=True)
                    tasks.append(asyncio.create_task(call.save_loop()))
                    if call.metadata.get("agent") == "tone":
                        tasks.append(asyncio.create_task(call.speak()))
                continue
            outcome = await call.on_message(message)
            if outcome == "hang up":
                await ws.close()  # a normal close: the agent's hang-up
                break
            if outcome == "stop":
                break  # the call is over; returning closes our side at once
    except websockets.ConnectionClosed:
        pass
    finally:
        for task in tasks:
            task.cancel()
        if call:
            print(f"call {call.call_id} ended", file=sys.stderr, flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    port = os.environ.get("SWITCHBOARD_AGENT_PORT") or os.environ.get("PORT") or 8765
    parser.add_argument("--port", type=int, default=int(port))
    parser.add_argument("--one-call", action="store_true", help="exit when the first call ends (one process per call)")
    args = parser.parse_args()
    done = asyncio.Event()

    async def serve(ws):
        await handle(ws)
        if args.one_call:
            done.set()

    # max_size: the worker's own frames are small; ping_interval None: the worker pings, this answers.
    async with websockets.serve(serve, args.host, args.port, max_size=1 << 20, ping_interval=None):
        print(f"reference agent listening on ws://{args.host}:{args.port}", file=sys.stderr, flush=True)
        await done.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

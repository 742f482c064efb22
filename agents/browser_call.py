"""Places one call through the gateway's browser page in a real headless Chromium, and says how it went.

    .venv-agents/bin/python agents/browser_call.py --url 'http://127.0.0.1:8090/#token=...' \
        [--tone-hz 440] [--seconds 4] [--min-frames 0] [--screenshot call.png] [--chromium PATH]

Chromium's fake microphone plays a tone (a WAV written here: 48 kHz, -12 dBFS). The script calls
`switchboardCall.start()`, stays live `--seconds` (and longer, up to 30 s, until `--min-frames` frames came
back: a loaded machine may drop or delay some), analyses the last second of what the agent sent back (with
an echo agent: the tone again), then hangs up and waits for the page to end. It prints one JSON line:

    state_after       the page's state after hanging up ('ended' when the gateway ended the call)
    call_id           from the gateway's `started` event
    frames_sent, frames_received
    rms               of that last second, as a fraction of full scale (0 to 1)
    tone_power_ratio  power at the tone over the largest power at 300, 600 and 1000 Hz
    samples           how many samples were analysed (16000 unless less came back)
    events            the gateway's text events, in order

Exit 0 when the call went live, whatever the numbers (the caller judges them); 2 when Chromium did not start or
the page never went live, with the page's console on stderr. Needs Playwright (in .venv-agents, see
scripts/agents-venv) and Debian's chromium-headless-shell (scripts/install-deps). The page must be served from
localhost or over https: browsers give the microphone to secure origins only.
"""

import argparse
import json
import math
import os
import struct
import sys
import tempfile
import time
import wave

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

RATE = 16000  # the page's and the wire's sample rate
CHROMIUM_PATHS = (
    "/usr/bin/chromium-headless-shell",
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/bin/chromium",
)
COMPARE_HZ = (300, 600, 1000)


def write_tone(path: str, frequency: float, seconds: float = 10, rate: int = 48000) -> None:
    """A 16-bit mono WAV of a sine at about -12 dBFS (Chromium loops it as the fake microphone)."""
    amplitude = 32767 * 10 ** (-12 / 20)
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(
            struct.pack("<h", round(amplitude * math.sin(2 * math.pi * frequency * i / rate)))
            for i in range(int(seconds * rate))
        ))


def goertzel_power(samples: list[float], frequency: float) -> float:
    """The power of `samples` (at RATE) at `frequency`."""
    coefficient = 2 * math.cos(2 * math.pi * frequency / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / len(samples) ** 2


def analyse(samples: list[int], tone_hz: float) -> tuple[float, float]:
    """(rms as a fraction of full scale, power at tone_hz / largest power at COMPARE_HZ)."""
    if not samples:
        return 0.0, 0.0
    n = len(samples)
    scaled = [x / 32768 for x in samples]
    rms = math.sqrt(sum(x * x for x in scaled) / n)
    # A Hann window, so a click or a gap does not smear the tone into the other frequencies as much.
    windowed = [x * (0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1 or 1))) for i, x in enumerate(scaled)]
    tone = goertzel_power(windowed, tone_hz)
    others = max(goertzel_power(windowed, f) for f in COMPARE_HZ if abs(f - tone_hz) > 20)
    return rms, tone / max(others, 1e-15)


def fail(message: str, console: list[str]) -> None:
    print(f"browser_call: {message}", file=sys.stderr)
    if console:
        print("page console:\n  " + "\n  ".join(console), file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the page, with #token=... (a call token)")
    parser.add_argument("--chromium", default=next((p for p in CHROMIUM_PATHS if os.path.exists(p)), None),
                        help="the browser binary (default: Debian's chromium-headless-shell)")
    parser.add_argument("--tone-hz", type=float, default=440)
    parser.add_argument("--seconds", type=float, default=4, help="how long to stay live")
    parser.add_argument("--min-frames", type=int, default=0, help="stay live longer (up to 30 s) until this many frames came back")
    parser.add_argument("--screenshot", help="a PNG of the page after hanging up")
    args = parser.parse_args()
    if not args.chromium:
        fail("no Chromium found (tried " + ", ".join(CHROMIUM_PATHS) + "); pass --chromium", [])

    console: list[str] = []
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        wav = os.path.join(scratch, "tone.wav")
        write_tone(wav, args.tone_hz)
        try:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=[
                "--use-fake-ui-for-media-stream",  # grants the microphone without asking
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
            ])
        except PlaywrightError as error:
            fail(f"Chromium ({args.chromium}) did not start: {error}", console)
        page = browser.new_page(viewport={"width": 480, "height": 640})
        page.on("console", lambda message: console.append(f"[{message.type}] {message.text}"))
        page.on("pageerror", lambda error: console.append(f"[pageerror] {error}"))
        try:
            page.goto(args.url)
            page.wait_for_function("() => window.switchboardCall !== undefined", timeout=10_000)
            page.evaluate("() => { switchboardCall.start(); }")  # not awaited: it resolves once set up
            page.wait_for_function("() => ['live', 'ended', 'error'].includes(switchboardCall.state)",
                                   timeout=20_000, polling=50)
        except PlaywrightError as error:
            fail(f"the page at {args.url} never went live: {error}", console)
        if page.evaluate("switchboardCall.state") != "live":
            call = page.evaluate("({state: switchboardCall.state, events: switchboardCall.events})")
            fail(f"the page never went live: state {call['state']}, events {json.dumps(call['events'])}", console)

        time.sleep(args.seconds)
        longest = time.monotonic() + 30 - args.seconds
        while page.evaluate("switchboardCall.framesReceived") < args.min_frames and time.monotonic() < longest \
                and page.evaluate("switchboardCall.state") == "live":
            time.sleep(0.2)
        samples = page.evaluate("n => switchboardCall.receivedSamples(n)", RATE)
        rms, ratio = analyse(samples, args.tone_hz)

        page.evaluate("() => switchboardCall.hangup()")
        try:
            page.wait_for_function("() => ['ended', 'error'].includes(switchboardCall.state)",
                                   timeout=10_000, polling=50)
        except PlaywrightError:
            pass  # state_after says so
        if args.screenshot:
            page.screenshot(path=args.screenshot)
        call = page.evaluate("""() => ({state: switchboardCall.state, callID: switchboardCall.callID,
            framesSent: switchboardCall.framesSent, framesReceived: switchboardCall.framesReceived,
            events: switchboardCall.events})""")
        browser.close()

    print(json.dumps({
        "state_after": call["state"],
        "call_id": call["callID"],
        "frames_sent": call["framesSent"],
        "frames_received": call["framesReceived"],
        "rms": round(rms, 5),
        "tone_power_ratio": round(ratio, 3),
        "samples": len(samples),
        "events": call["events"],
    }))


if __name__ == "__main__":
    main()

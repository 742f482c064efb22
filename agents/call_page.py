"""Opens a call's page on a router in a real headless Chromium and says what it shows.

    .venv-agents/bin/python agents/call_page.py --url 'http://127.0.0.1:8080/ui/calls/<id>#key=<admin key>' \
        [--screenshot call-page.png] [--chromium PATH]

Waits for the page to have drawn the call's timeline, clicks the first turn's bar (when there is one), and
prints one JSON line:

    loaded     whether the page drew the timeline
    error      the page's error line, if any
    summary    its summary line
    rows       the event types in its table, in order
    marks      how many events are marked on its time axis; turns: how many turn bars
    selected   the event type selected by the click
    recording  the page's recording line; waves: how many waveforms it drew
    played     seconds the player advanced in the 1.5 s after the click (it plays from the clicked turn)
    current    whether the turn bar under the playhead is marked current
    trace      the call's trace as the page shows it, and trace_href where it links (when the router traces)

Exit 0 when the page loaded the timeline, 2 when it did not (or Chromium did not start), with the page's
console on stderr. Needs Playwright (in .venv-agents, see scripts/agents-venv) and Debian's
chromium-headless-shell (scripts/install-deps).
"""

import argparse
import json
import os
import sys

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM_PATHS = (
    "/usr/bin/chromium-headless-shell",
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/bin/chromium",
)


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The options every page script takes (--url, --screenshot, --chromium), parsed; exits 2 without Chromium."""
    parser.add_argument("--url", required=True)
    parser.add_argument("--screenshot")
    parser.add_argument("--chromium", default=next((p for p in CHROMIUM_PATHS if os.path.exists(p)), None))
    args = parser.parse_args()
    if not args.chromium:
        print(f"no Chromium found at {', '.join(CHROMIUM_PATHS)}; pass --chromium", file=sys.stderr)
        sys.exit(2)
    return args


def open_page(playwright, args: argparse.Namespace, console: list, ready: str):
    """Headless Chromium on args.url, its console kept in `console`, once `ready` (a selector) is in the page or
    15 s passed; exits 2 when Chromium does not start. Returns the browser and the page."""
    try:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                             args=["--autoplay-policy=no-user-gesture-required"])
    except PlaywrightError as error:
        print(f"Chromium ({args.chromium}) did not start: {error}", file=sys.stderr)
        sys.exit(2)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"page error: {error}"))
    page.goto(args.url)
    try:
        # Selectors, not script: the pages' CSP forbids the eval a polled wait_for_function needs.
        page.wait_for_selector(ready, state="attached", timeout=15000)
    except PlaywrightError:
        pass
    return browser, page


def main() -> None:
    args = parse_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    console: list[str] = []
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, args, console, "body[data-loaded], #error:not(:empty)")
        loaded = page.evaluate("document.body.dataset.loaded === 'true'")
        if loaded:
            try:  # the recording comes after the timeline: its waveforms and player, or the line saying there is none
                page.wait_for_selector("body[data-recording]", state="attached", timeout=15000)
            except PlaywrightError:
                pass
        result = {
            "loaded": loaded,
            "error": page.inner_text("#error"),
            "summary": page.inner_text("#summary"),
            "rows": page.eval_on_selector_all("#events tr", "rows => rows.map(r => r.dataset.type)"),
            "marks": page.eval_on_selector_all("svg .mark", "marks => marks.length"),
            "turns": page.eval_on_selector_all("svg rect.turn", "bars => bars.length"),
            "selected": None,
            "recording": page.inner_text("#recording"),
            "waves": page.eval_on_selector_all("svg path.wave", "paths => paths.length"),
            "played": None,
            "current": None,
            "trace": page.evaluate("(document.getElementById('trace') || {}).textContent || null"),
            "trace_href": page.evaluate("(document.getElementById('trace') || {}).href || null"),
        }
        if result["turns"]:
            page.click("svg rect.turn")
            result["selected"] = page.evaluate("(document.querySelector('tr.sel') || {dataset: {}}).dataset.type || null")
            if result["waves"]:
                page.wait_for_timeout(300)  # the seek lands
                start = page.evaluate("document.getElementById('player').currentTime")
                page.wait_for_timeout(1500)
                result["played"] = page.evaluate("document.getElementById('player').currentTime") - start
                result["current"] = page.evaluate("document.querySelectorAll('svg rect.turn.current').length === 1")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        browser.close()
    print(json.dumps(result))
    if not loaded:
        print("\n".join(console), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Opens a router's calls list in a real headless Chromium, searches it and says what it shows.

    .venv-agents/bin/python agents/calls_page.py --url 'http://127.0.0.1:8080/ui/calls#key=<admin key>' \
        [--tenant acme] [--screenshot calls.png] [--chromium PATH]

Waits for the list, then (with --tenant) types the tenant into the search and submits it, then clicks the first
call's link, and prints one JSON line:

    loaded     whether the list loaded
    error      the page's error line, if any
    first      the call ids listed at first, in order
    searched   the call ids listed after the search by tenant
    tenants    the tenants of those
    opened     the path the first call's link opened

Exit 0 when the list loaded, 2 when it did not (or Chromium did not start), with the page's console on stderr.
"""

import argparse
import json
import sys

from playwright.sync_api import sync_playwright

from call_page import open_page, parse_args

ROWS = "rows => rows.map(r => r.dataset.call)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenant")
    args = parse_args(parser)
    console: list[str] = []
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, args, console, "body[data-loaded]")
        result = {
            "loaded": page.evaluate("document.body.dataset.loaded === 'true'"),
            "error": page.inner_text("#error"),
            "first": page.eval_on_selector_all("#calls tr", ROWS),
            "searched": None,
            "tenants": None,
            "opened": None,
        }
        if result["loaded"] and args.tenant:
            page.evaluate("delete document.body.dataset.loaded")
            page.fill("input[name=tenant]", args.tenant)
            page.click("#filters button")
            page.wait_for_selector("body[data-loaded]", state="attached", timeout=15000)
            result["searched"] = page.eval_on_selector_all("#calls tr", ROWS)
            result["tenants"] = page.eval_on_selector_all("#calls tr td:nth-child(3)", "cells => cells.map(c => c.textContent)")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        if result["loaded"] and page.query_selector("#calls tr a"):
            page.click("#calls tr a")
            page.wait_for_load_state()
            result["opened"] = page.evaluate("location.pathname")
        browser.close()
    print(json.dumps(result))
    if not result["loaded"]:
        print("\n".join(console), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

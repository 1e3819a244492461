"""Screenshot the live console of a running service (docs/img/console.png in the README).

Run: livemind demo --serve   (prints the URL), then
     python scripts/console_screenshot.py http://127.0.0.1:PORT --viewer 42 --question "how much is it right now?"
Drives the system chromium headless (Playwright, no browser download).
"""

from __future__ import annotations

import argparse
import shutil

from playwright.sync_api import expect, sync_playwright


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--out", default="docs/img/console.png")
    ap.add_argument("--viewer", type=int, default=1)
    ap.add_argument("--question", default="how much is it right now?")
    ap.add_argument("--width", type=int, default=1360)
    ap.add_argument("--height", type=int, default=860)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.url + "/")
        expect(page.locator(".room").first).to_be_visible(timeout=15_000)
        page.locator("#viewer").fill(str(args.viewer))
        page.locator("#viewer").press("Enter")
        expect(page.locator("#recs-onelive li").first).to_be_visible(timeout=15_000)
        page.locator(".room").first.click()
        page.locator("#ask-viewer").fill(str(args.viewer))  # the same viewer asks (their turns are kept per room)
        page.locator("#question").fill(args.question)
        page.locator("#question").press("Enter")
        expect(page.locator(".msg.a .timing")).to_contain_text("total", timeout=60_000)
        page.wait_for_timeout(1500)  # the strip picks up the answer's latency
        page.screenshot(path=args.out)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

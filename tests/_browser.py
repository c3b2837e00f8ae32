"""Headless Chromium (Debian's chromium) driven over the DevTools protocol, for report tests."""

from __future__ import annotations

import base64
import json
import os
import signal
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests
import websocket

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


class _Chromium:
    def __init__(self, binary: str, profile: str) -> None:
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 90
        port = None
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        assert port, "chromium did not start its DevTools endpoint"
        target = next(t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                      if t["type"] == "page")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]
            self.events.append(msg)

    def eval(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"]["value"]

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        finally:
            try:  # its helper processes (renderer, crashpad) too: they write into the profile until they exit
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# what a reader would call a broken page, measured in the page itself
LAYOUT_CHECKS = r"""(() => {
  const lines = (node) => {  // the line boxes a cell's text takes: fragments grouped by their top
    const range = document.createRange(); range.selectNodeContents(node);
    const tops = [...range.getClientRects()].filter(r => r.width > 0).map(r => r.top).sort((a, b) => a - b);
    let n = 0, last = -1e9;
    for (const t of tops) { if (t - last > 3) { n += 1; last = t; } }
    return n;
  };
  const broken = [], indexLike = [];
  for (const cell of document.querySelectorAll('td, th')) {
    const text = cell.innerText.trim();
    if (text && lines(cell) > text.split(/\s+/).length) broken.push(text.slice(0, 80));
  }
  for (const table of document.querySelectorAll('table')) {
    const first = [...table.querySelectorAll('tbody tr')].map(tr => tr.cells[0] ? tr.cells[0].innerText.trim() : '');
    if (first.length > 1 && first.every(x => /^\d+$/.test(x))) {
      const nums = first.map(Number).sort((a, b) => a - b);
      if (nums.every((n, i) => n === i)) indexLike.push(first.join(','));
    }
  }
  // content cut off by a scroll box of its own (the page's scrollWidth does not see it): what a reader misses
  const clipped = [];
  for (const el of document.querySelectorAll('body *')) {
    const ox = getComputedStyle(el).overflowX;
    if (ox !== 'visible' && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
      clipped.push({tag: el.tagName.toLowerCase(), table: !!el.querySelector('table'),
                    by: el.scrollWidth - el.clientWidth, text: el.innerText.trim().slice(0, 80)});
    }
  }
  const states = {};
  for (const td of document.querySelectorAll('nav.toc td[data-state]')) {
    states[td.parentElement.cells[0].innerText.trim()] = td.dataset.state;
  }
  return {broken, indexLike, clipped, decimals: document.body.innerText.match(/\d+\.\d{4,}/g) || [], states};
})()"""


def open_report(path: Path, *, width: int = 1280, screenshot: str | None = None) -> dict:
    """Load ``path`` offline at ``width`` px; return images, scrollWidth, requested URLs, verdict title, text,
    and ``layout`` (LAYOUT_CHECKS: cells broken inside a word, index-like first columns, boxes whose content is
    cut off, long decimals, the section table's states)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Debian package chromium is needed (apt-get install -y --no-install-recommends chromium)"
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = _Chromium(binary, profile)
        try:
            browser.call("Network.enable")
            browser.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                         mobile=False)
            browser.call("Page.navigate", url=path.as_uri())
            deadline = time.monotonic() + 60
            while browser.eval("document.readyState") != "complete":
                assert time.monotonic() < deadline, "report did not finish loading offline"
                time.sleep(0.05)
            out = {
                "images": browser.eval("[...document.images].map(i => [i.complete, i.naturalWidth])"),
                "width": browser.eval("document.scrollingElement.scrollWidth"),
                "title": browser.eval("(document.querySelector('#verdict h1') || {}).textContent || ''"),
                "text": browser.eval("document.body.innerText"),
                "layout": browser.eval(LAYOUT_CHECKS),
            }
            shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            out["requested"] = [e["params"]["request"]["url"] for e in browser.events
                                if e.get("method") == "Network.requestWillBeSent"]
        finally:
            browser.close()
    png = base64.b64decode(shot["data"])
    out["png"] = png
    if screenshot:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / screenshot).write_bytes(png)
    return out

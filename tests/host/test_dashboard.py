"""The neighbourhood dashboard (host_tools/hub/dashboard.html) in headless
Chromium: the real HubService's database is filled through Ingest and
Rounds as in test_hub_rounds.py (devices sign with lib/, a fake clock, no
broker), StatusAPI serves it, and Chromium's dumped DOM must show what the
round did. Skipped when no Chromium is installed (`make ensure-chromium`)."""

import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib")]

import cose  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402
from trade.witness import Witness, is_request  # noqa: E402

from host_tools.hub.api import DASHBOARD, StatusAPI  # noqa: E402
from host_tools.hub.rounds import Rounds  # noqa: E402
from host_tools.hub.service import HubService  # noqa: E402

START = 1750507200  # on the 15-minute grid
END = START + 900
SETTLE = END + 300  # settle_after_s 300
HOUSE = {"grid_meter": b"grid", "max_import_w": 11000, "max_export_w": 4000,
         "retail_price": 300000, "feed_in_price": 80000}
A, B = Signer(0xA11CE), Signer(0xB0B)
A_NAME = "<b>Alice</b> & co"  # markup in a device's name must stay text
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium, chromium-browser or google-chrome on PATH: `make ensure-chromium`")


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def send(hub, s, leaf, mtype, seq, ts, fields):
    out = hub.ingest.handle(f"pgw/1/street/dev/{s.kid.hex()}/{leaf}", m.sign(mtype, seq, ts, fields, s.kid, s))
    assert out, (leaf, seq, dict(hub.ingest.counts))  # ACKed: stored
    return out


def order(hub, s, seq, side, wh, limit, start, ts):
    send(hub, s, "order", m.ORDER, seq, ts, {"interval_start": start, "interval_min": 15, "side": side,
                                              "energy_wh": wh, "limit_price": limit})


def reading(hub, s, seq, ts, imp, exp, imp_reg, exp_reg, power_w):
    send(hub, s, "reading", m.READING, seq, ts, {
        "interval_min": 15, "import_wh": imp, "export_wh": exp, "import_register_wh": imp_reg,
        "export_register_wh": exp_reg, "power_w": power_w, "meter": b"grid"})


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One settled round: A sold B 400 Wh at 175000 µ/kWh and delivered it all.
    Block 0 (the interval before) is witnessed by both and final, block 1
    (the trade's interval) pending; A has an ask in the next gate's book."""
    clock = Clock(START - 300)
    hub = HubService(tmp_path_factory.mktemp("hub"), community="street", clock=clock)  # never started: no broker
    hub.ingest.register(cose.encode_key(*A.pub), A_NAME)
    hub.ingest.register(cose.encode_key(*B.pub))
    hub.rounds = Rounds(hub.store, hub.key, "street", {A.kid: HOUSE, B.kid: HOUSE}, committee_size=2)
    hub.rounds.tick(START - 300)
    order(hub, A, 10, 1, 500, 150000, START, START - 120)
    order(hub, B, 20, 0, 400, 200000, START, START - 120)
    reading(hub, A, 1, START, 0, 10, 100, 5000, 0)
    reading(hub, B, 2, START, 50, 0, 7000, 0, 0)
    hub.rounds.tick(START)  # the gate closes: one trade
    first = hub.rounds.tick(START + 300)  # block 0
    clock.t = END + 60
    reading(hub, A, 11, END, 0, 400, 100, 5400, -1600)
    reading(hub, B, 22, END, 420, 0, 7420, 0, 1700)
    clock.t = SETTLE
    hub.rounds.tick(SETTLE)  # settled; block 1
    hub_kid, pub = cose.decode_key(hub.key.cose_key())
    for s in (A, B):  # both members witness block 0, as the gateway does
        w = Witness(s.kid, {hub_kid: pub}.get)
        for seq, data in sorted((r[1], bytes(r[4])) for r in hub.store.messages(kid=s.kid)):
            w.remember(seq, data)
        request = next(d for t, d in first if t.endswith(s.kid.hex() + "/in") and is_request(d))
        send(hub, s, "witness", m.WITNESS, 100, SETTLE, w.check(request, SETTLE).fields)
    order(hub, A, 200, 1, 200, 120000, START + 1800, SETTLE)  # for the next gate
    assert [b["state"] for b in hub.rounds.status(SETTLE)["blocks"]] == ["pending", "final"]
    yield hub
    hub.store.close()


class Elements(HTMLParser):
    """A DOM dump as a flat list of elements: tag, attributes, and the text
    inside it, its children's included."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self, html):
        super().__init__()
        self.all, self._open = [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        e = {"tag": tag, "text": "", **dict(attrs)}
        self.all.append(e)
        if tag not in self.VOID:
            self._open.append(e)

    def handle_endtag(self, tag):
        while self._open and self._open.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        for e in self._open:
            e["text"] += data

    def find(self, **attrs):
        """Elements whose attributes equal these (or match, for a compiled pattern)."""
        want = {k.replace("_", "-"): v if isinstance(v, re.Pattern) else re.compile(re.escape(str(v)))
                for k, v in attrs.items()}
        return [e for e in self.all if all(k in e and v.fullmatch(e[k]) for k, v in want.items())]

    def one(self, **attrs):
        found = self.find(**attrs)
        assert len(found) == 1, (attrs, found)
        return found[0]


def dump_dom(url, profile):
    """The page's DOM after 8 s of Chromium's virtual time: four polls."""
    r = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox",  # --no-sandbox: CI runs it as root
                        "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
                        "--virtual-time-budget=8000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and "</html>" in r.stdout, r.stderr[-2000:]
    return r.stdout


def get(url, method="GET"):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# -- the page and its route --------------------------------------------------------------


def test_the_api_serves_the_page_at_root_and_dashboard_as_html(hub):
    api = StatusAPI(hub).start()
    try:
        for path in ("/", "/dashboard"):
            code, headers, body = get(api.url + path)
            assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
            assert body == DASHBOARD.read_bytes() and b'id="status"' in body
            assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert get(api.url + "/", "POST")[0] == 405  # still read-only
        assert get(api.url + "/dashboard.html")[0] == 404
    finally:
        api.close()


def test_the_page_loads_nothing_from_elsewhere_and_never_parses_data_as_html():
    page = DASHBOARD.read_text()
    assert not re.search(r"\b(src|href)\s*=|@import|url\(|https?:", page)
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", page)
    assert len(page.splitlines()) < 250


# -- in Chromium ---------------------------------------------------------------------


@needs_chromium
def test_the_dashboard_shows_households_book_trades_and_ledger_live(hub, tmp_path):
    api = StatusAPI(hub).start()
    try:
        html = dump_dom(api.url + "/dashboard", tmp_path / "profile")
    finally:
        api.close()
    dom = Elements(html)
    status = dom.one(id="status")
    assert status["data-state"] == "live" and status["text"].startswith("live"), status
    assert dom.one(id="community")["text"] == "street"
    assert dom.one(id="next-gate")["text"] == "2025-06-21 12:30 UTC"  # the hub's clock, 12:20

    houses = dom.one(id="households")
    assert houses["data-count"] == "2"
    balances = hub.rounds.balances()
    assert balances[A.kid] == 70000 and sum(balances.values()) == 0  # 400 Wh at 0.175
    for s, power, name in ((A, -1600, A_NAME + " (%s)"), (B, 1700, "%s")):
        row = dom.one(tag="tr", data_kid=s.kid.hex())
        assert row["data-power-w"] == str(power) and row["data-balance"] == str(balances[s.kid])
        assert row["text"].startswith(name % s.kid.hex()[:8] + ("−1600" if power < 0 else "+1700"))
    assert "&lt;b&gt;Alice&lt;/b&gt; &amp; co" in html and "<b>Alice</b>" not in html  # text, not markup
    assert "−0.07" in dom.one(data_kid=B.kid.hex())["text"]  # µ shown exactly, as a decimal

    assert dom.one(id="trades")["data-count"] == "1"
    trade = dom.one(tag="tr", data_trade_id=1)
    assert (trade["data-energy-wh"], trade["data-price"], trade["data-status"]) == ("400", "175000", "settled")
    assert re.search(r"400\s*0\.175\s*400\s*0\.07\s*settled", trade["text"]), trade["text"]
    assert f"{A.kid.hex()[:8]}" in trade["text"] and f"{B.kid.hex()[:8]}" in trade["text"]

    assert dom.one(id="blocks")["data-count"] == "2"
    blocks = [(b["data-height"], b["data-state"], b["data-signed"], b["data-needed"])
              for b in dom.find(tag="tr", data_height=re.compile(r"\d+"))]
    assert blocks == [("1", "pending", "0", "2"), ("0", "final", "2", "2")]  # newest first
    assert dom.one(tag="tr", data_height=0)["text"].endswith("final2 / 2")

    asks = dom.one(tag="tr", data_side="asks")
    assert (asks["data-orders"], asks["data-wh"]) == ("1", "200")
    assert dom.one(tag="tr", data_side="bids")["data-orders"] == "0"
    assert asks["text"].endswith("0.12") and dom.one(id="orders-dropped")["text"] == ""  # nothing was dropped
    assert dom.one(data_counter="ingest accepted")["text"] == str(hub.ingest.counts["accepted"])


@needs_chromium
def test_the_dashboard_says_hub_unreachable_when_the_api_is_gone(hub, tmp_path):
    """The API serves the page once and stops: every poll meets a port
    nothing listens on."""
    api = StatusAPI(hub)
    served = []
    page = api._send_dashboard
    api._send_dashboard = lambda req: (served.append(req.path), page(req))
    api.server.RequestHandlerClass.timeout = 10  # a connection that sends nothing cannot hold the loop
    # one request at a time, in this thread, so nothing is accepted after the page
    api.server.process_request = lambda request, address: (api.server.finish_request(request, address),
                                                           api.server.shutdown_request(request))

    def serve_the_page_then_stop():
        api.server.timeout = 30
        for _ in range(5):
            api.server.handle_request()
            if served:
                break
        api.server.server_close()

    once = threading.Thread(target=serve_the_page_then_stop)
    once.start()
    try:
        html = dump_dom(api.url + "/", tmp_path / "profile")
    finally:
        once.join(60)
        api.server.server_close()
    assert served == ["/"]
    dom = Elements(html)
    status = dom.one(id="status")
    assert (status["data-state"], status["text"]) == ("unreachable", "hub unreachable")
    assert dom.one(id="households")["data-count"] == "0" and dom.one(id="trades")["data-count"] == "0"
    assert "stale" in dom.one(id="main")["class"]


@needs_chromium
def test_the_dashboard_tells_an_api_error_from_an_absent_hub(tmp_path):
    broken = HubService(tmp_path / "hub", community="street", clock=Clock(START))
    broken.store.close()  # every query fails: /api/devices answers 500
    api = StatusAPI(broken).start()
    try:
        html = dump_dom(api.url + "/", tmp_path / "profile")
    finally:
        api.close()
    status = Elements(html).one(id="status")
    assert status["data-state"] == "error" and status["text"].startswith("hub error: api/devices: HTTP 500"), status

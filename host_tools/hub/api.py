"""The hub's read-only status API: JSON over HTTP (docs/hub.md, "Status API").

    GET /api/status    the interval, the rounds' counters, recent blocks with
                       their finality, balances, ingest counters
    GET /api/orders    the order book of the next gate: Wh and price range a side
    GET /api/trades    the latest trades (?limit=N, at most 500) with settlements
    GET /api/devices   per registered device: messages, last ts, last arrival
                       since the hub started, last reading
    GET / , /dashboard the neighbourhood dashboard: dashboard.html, a static
                       page that polls the four endpoints above

Everything is read from the hub's database and counters; nothing here can
change them (any other method is 405). The server binds to loopback unless
told otherwise: the figures name households."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from host_tools.hub.store import READING, payload_of

MAX_TRADES = 500
DASHBOARD = Path(__file__).with_name("dashboard.html")
# The page loads nothing from elsewhere and talks only to this server.
DASHBOARD_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                 "connect-src 'self'; base-uri 'none'; form-action 'none'")


def order_book(rounds, start):
    orders, dropped = rounds.orders_of(start)
    sides = {}
    for name, side in (("bids", 0), ("asks", 1)):
        mine = [o for o in orders if o.side == side]
        prices = [p for o in mine for p, _ in o.steps]
        sides[name] = {"orders": len(mine), "wh": sum(o.energy_wh for o in mine),
                       "price_min": min(prices, default=None), "price_max": max(prices, default=None)}
    return dict(sides, interval_start=start, dropped=dict(sorted(dropped.items())))


def trades(store, limit):
    rows = store.query(
        "SELECT t.trade_id, t.interval_start, t.seller, t.buyer, t.energy_wh, t.price, "
        "s.delivered_wh, s.amount, s.status FROM trades t LEFT JOIN settlements s ON s.trade_id = t.trade_id "
        "ORDER BY t.trade_id DESC LIMIT ?", (limit,))
    return [{"trade_id": r[0], "interval_start": r[1], "seller": bytes(r[2]).hex(), "buyer": bytes(r[3]).hex(),
             "energy_wh": r[4], "price": r[5], "delivered_wh": r[6], "amount": r[7], "status": r[8]}
            for r in rows]


def devices(store):
    out = []
    for kid, _, name in store.devices():
        kid = bytes(kid)
        n, last_ts = store.query("SELECT COUNT(*), MAX(ts) FROM messages WHERE kid = ?", (kid,))[0]
        last_received = store.last_arrival.get(kid)  # kept in memory: the ledger holds no arrival times
        reading = store.query("SELECT data FROM messages WHERE kid = ? AND type = ? ORDER BY seq DESC LIMIT 1",
                              (kid, READING))
        last = None
        if reading:
            p = payload_of(bytes(reading[0][0]))
            if p is not None and len(p) >= 11:
                last = {"seq": p[2], "ts": p[3], "import_wh": p[5], "export_wh": p[6], "power_w": p[9],
                        "meter": p[10].hex() if isinstance(p[10], bytes) else None}
        out.append({"kid": kid.hex(), "name": name, "messages": n, "last_ts": last_ts,
                    "last_received": last_received, "last_reading": last})
    return out


class StatusAPI:
    """Serves a HubService's state on http://host:port until close()."""

    def __init__(self, hub, host="127.0.0.1", port=0):
        self.hub = hub
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api._get(self)

            def do_POST(self):
                self._refuse()

            do_PUT = do_DELETE = do_PATCH = do_POST

            def _refuse(self):
                api._send(self, 405, {"error": "read-only"})

            def log_message(self, *args):  # the hub's console is for the hub's own lines
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, name="pgw-hub-api", daemon=True)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def status(self):
        hub = self.hub
        now = int(hub.clock())
        out = {"community": hub.community, "hub_kid": hub.key.kid.hex(), "now": now,
               "connected": hub.connected.is_set(), "ingest": dict(sorted(hub.ingest.counts.items()))}
        if hub.rounds is not None:
            out["rounds"] = hub.rounds.status(now)
        return out

    def _get(self, req):
        url = urlparse(req.path)
        hub = self.hub
        if url.path in ("/", "/dashboard"):
            return self._send_dashboard(req)
        try:
            if url.path == "/api/status":
                body = self.status()
            elif url.path == "/api/orders":
                if hub.rounds is None:
                    return self._send(req, 404, {"error": "no market: pgw hub --market FILE"})
                now = int(hub.clock())
                body = order_book(hub.rounds, hub.rounds.interval_of(now) + hub.rounds.interval_s)
            elif url.path == "/api/trades":
                try:
                    limit = int(parse_qs(url.query).get("limit", ["50"])[0])
                except ValueError:
                    return self._send(req, 400, {"error": "limit is a whole number"})
                if not 1 <= limit <= MAX_TRADES:
                    return self._send(req, 400, {"error": f"limit is 1..{MAX_TRADES}"})
                body = trades(hub.store, limit)
            elif url.path == "/api/devices":
                body = devices(hub.store)
            else:
                return self._send(req, 404, {"error": "no such path"})
        except Exception as e:  # a bad row must not take the API down; say what failed
            return self._send(req, 500, {"error": f"{type(e).__name__}: {e}"})
        self._send(req, 200, body)

    @staticmethod
    def _send_dashboard(req):
        try:
            data = DASHBOARD.read_bytes()  # read each time: a small file, fetched once per open page
        except OSError as e:
            return StatusAPI._send(req, 404, {"error": f"no dashboard: {e.strerror}"})
        req.send_response(200)
        req.send_header("Content-Type", "text/html; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Cache-Control", "no-store")
        req.send_header("Content-Security-Policy", DASHBOARD_CSP)
        req.send_header("X-Content-Type-Options", "nosniff")
        req.end_headers()
        req.wfile.write(data)

    @staticmethod
    def _send(req, code, body):
        data = json.dumps(body, sort_keys=True).encode()
        req.send_response(code)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(data)

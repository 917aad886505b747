"""`pgw hub` with its rounds on a real Mosquitto: two households' ORDERs
go in over MQTT, and at gate closure both parties get the signed TRADE
within 1 s (issue 6, "Market"); after the interval, their READINGs settle
it, the block goes out with each committee member's witness request, and
the members' WITNESSes make it final. Devices sign and check with lib/, as
the gateway does; the hub's clock is a fake one the test moves."""

import queue
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib")]

import cose  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402
from trade.witness import Witness, is_request  # noqa: E402

from host_tools.hub.service import HubService, load_market  # noqa: E402

START = 1750507200  # on the 15-minute grid
HOUSE = {"grid_meter": "grid", "max_import_w": 11000, "max_export_w": 11000,
         "retail_price": 300000, "feed_in_price": 80000}
SELLER, BUYER = Signer(0x5E11E7), Signer(0xB0B0B)


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class Devices:
    """Both households' MQTT side: they publish signed messages and collect
    what arrives on their `in` topics and on the block topic, with the wall
    time it arrived."""

    def __init__(self, port, community):
        self.community = community
        self.inbox = queue.Queue()
        self.sent = {}  # kid -> [(seq, signed bytes)]
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="households")
        self.client.on_message = lambda c, u, msg: self.inbox.put((time.monotonic(), msg.topic, msg.payload))
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for topic in (f"pgw/1/{community}/dev/+/in", f"pgw/1/{community}/hub/block"):
            self.client.subscribe(topic, qos=1)
            subscribed.get(timeout=10)

    def send(self, s, leaf, mtype, seq, ts, fields):
        data = m.sign(mtype, seq, ts, fields, s.kid, s)
        self.sent.setdefault(s.kid, []).append((seq, data))
        self.client.publish(f"pgw/1/{self.community}/dev/{s.kid.hex()}/{leaf}", data, qos=1).wait_for_publish(10)
        return data

    def collect(self, want, timeout=15):
        """Messages until want(list) holds -> [(arrival, topic, payload)]."""
        got, deadline = [], time.monotonic() + timeout
        while not want(got):
            left = deadline - time.monotonic()
            assert left > 0, "timed out; got %r" % [(t, len(p)) for _, t, p in got]
            try:
                got.append(self.inbox.get(timeout=left))
            except queue.Empty:
                pass
        return got

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_orders_trades_settlements_block_and_witnesses(broker, tmp_path):
    clock = Clock(START - 240)
    community = "live"
    hub = HubService(tmp_path / "hub", "127.0.0.1", broker.port, community, clock=clock)
    hub_kid, hub_pub = cose.decode_key(hub.key.cose_key())
    lookup = lambda kid: hub_pub if kid == hub_kid else None  # noqa: E731
    for s in (SELLER, BUYER):
        hub.ingest.register(cose.encode_key(*s.pub))
    market = tmp_path / "market.json"
    market.write_text('{"settle_after_s": 60, "committee_size": 2, "defaults": %s, "households": {"%s": {}, '
                      '"%s": {}}}' % (str(HOUSE).replace("'", '"'), SELLER.kid.hex(), BUYER.kid.hex()))
    households, kw = load_market(market)
    hub.run_rounds(households, **kw)
    hub.start()
    dev = Devices(broker.port, community)
    def of_type(got, mtype):
        """The signed messages of one type among `got` -> [(arrival, topic, Message)]."""
        out = []
        for at, t, p in got:
            if t.endswith("/in") and not is_request(p):
                msg = m.open_signed(p, lookup)
                if msg.type == mtype:
                    out.append((at, t, msg))
        return out

    def requests(got):
        return [(t, p) for _, t, p in got if t.endswith("/in") and is_request(p)]

    try:
        assert hub.subscribed.wait(10)
        order = {"interval_start": START, "interval_min": 15}
        dev.send(SELLER, "order", m.ORDER, 1, START - 200, dict(order, side=1, energy_wh=800, limit_price=100000))
        dev.send(BUYER, "order", m.ORDER, 1, START - 200, dict(order, side=0, energy_wh=1000, limit_price=250000))
        dev.collect(lambda got: len(of_type(got, m.ACK)) >= 2)

        clock.t = START  # the gate closes
        closed = time.monotonic()
        trades = of_type(dev.collect(lambda got: len(of_type(got, m.TRADE)) >= 2), m.TRADE)
        assert {t.split("/")[4] for _, t, _ in trades} == {SELLER.kid.hex(), BUYER.kid.hex()}
        assert max(at for at, _, _ in trades) - closed < 1.0  # both parties within 1 s of gate closure
        trade = trades[0][2]
        assert (trade["seller"], trade["buyer"], trade["energy_wh"], trade["price"]) == (
            SELLER.kid, BUYER.kid, 800, 175000)

        clock.t = START + 900  # the interval's readings: the seller exported 800 Wh, the buyer imported 900
        reading = {"interval_min": 15, "power_w": 0, "meter": b"grid"}
        for s, seq, imp, exp in ((SELLER, 2, 0, 800), (BUYER, 2, 900, 0)):
            dev.send(s, "reading", m.READING, seq, START + 900, dict(
                reading, import_wh=imp, export_wh=exp, import_register_wh=10000 + imp, export_register_wh=5000 + exp))
        dev.collect(lambda got: len(of_type(got, m.ACK)) >= 2)

        clock.t = START + 900 + 60  # settle_after_s later: settlement, then the block
        got = dev.collect(lambda got: any(t.endswith("/block") for _, t, _ in got)
                          and len(of_type(got, m.SETTLEMENT)) >= 2 and len(requests(got)) >= 2)
        s = of_type(got, m.SETTLEMENT)[0][2]
        assert (s["trade_id"], s["delivered_wh"], s["amount"], s["status"]) == (trade["trade_id"], 800, 140000, 0)

        # each member checks its request as the gateway does, and signs a WITNESS
        for member in (SELLER, BUYER):
            request = next(p for t, p in requests(got) if t.endswith(member.kid.hex() + "/in"))
            w = Witness(member.kid, lookup)
            for seq, data in dev.sent[member.kid]:  # what the gateway remembers as it signs
                w.remember(seq, data)
            ok = w.check(request, clock.t)
            assert ok.height == 0 and sorted(ok.proven) == [1, 2], ok  # its ORDER and READING are in the block
            dev.send(member, "witness", m.WITNESS, 3, clock.t, ok.fields)
        dev.collect(lambda got: len(of_type(got, m.ACK)) >= 2)
        assert hub.rounds.finality(0).final
        assert hub.rounds.balances() == {SELLER.kid: 140000, BUYER.kid: -140000}
        check_status_api(hub)
    finally:
        dev.close()
        hub.stop()


def get(url):
    """-> (HTTP status, decoded JSON)."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url[1], method=url[0]) if isinstance(url, tuple) else url
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def check_status_api(hub):
    """The read-only API tells what the round did (docs/hub.md, "Status API")."""
    from host_tools.hub.api import StatusAPI

    api = StatusAPI(hub).start()
    try:
        code, status = get(api.url + "/api/status")
        assert code == 200 and status["community"] == "live" and status["ingest"]["accepted"] == 6  # 2 ORDERs, 2 READINGs, 2 WITNESSes
        blocks = status["rounds"]["blocks"]
        assert blocks[-1]["height"] == 0 and blocks[-1]["state"] == "final", blocks
        assert status["rounds"]["balances"] == {SELLER.kid.hex(): 140000, BUYER.kid.hex(): -140000}
        code, trades = get(api.url + "/api/trades?limit=5")
        assert code == 200 and [(t["energy_wh"], t["price"], t["delivered_wh"], t["amount"], t["status"])
                                for t in trades] == [(800, 175000, 800, 140000, 0)]
        code, devices = get(api.url + "/api/devices")
        assert sorted(d["kid"] for d in devices) == sorted((SELLER.kid.hex(), BUYER.kid.hex()))
        assert {d["kid"]: d["last_reading"]["export_wh"] for d in devices}[SELLER.kid.hex()] == 800
        code, book = get(api.url + "/api/orders")
        assert code == 200 and book["bids"]["orders"] == book["asks"]["orders"] == 0  # the next gate's book is empty
        assert get(api.url + "/api/trades?limit=x")[0] == 400
        assert get(api.url + "/api/trades?limit=501")[0] == 400
        assert get(api.url + "/nothing")[0] == 404
        assert get(("POST", api.url + "/api/status"))[0] == 405  # read-only
    finally:
        api.close()


def test_the_market_file_fills_households_from_its_defaults(tmp_path):
    f = tmp_path / "market.json"
    f.write_text('{"feeder_wh": 5000, "defaults": {"max_import_w": 1, "max_export_w": 2, "retail_price": 3, '
                 '"feed_in_price": 4}, "households": {"0123456789abcdef": {"grid_meter": "g1", "max_export_w": 9}}}')
    households, kw = load_market(f)
    assert households == {bytes.fromhex("0123456789abcdef"): {
        "grid_meter": b"g1", "max_import_w": 1, "max_export_w": 9, "retail_price": 3, "feed_in_price": 4}}
    assert kw == {"feeder_wh": 5000}


def test_a_bad_market_file_says_what_is_wrong(tmp_path):
    import pytest

    f = tmp_path / "market.json"
    for text, words in (('{"households": {"not hex": {}}}', "not a kid"), ('[]', "households"),
                        ('{"households": []}', "households")):
        f.write_text(text)
        with pytest.raises(ValueError, match=words):
            load_market(f)

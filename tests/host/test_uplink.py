"""firmware/gateway/net/uplink.py on the MicroPython unix port, against the
real broker of the run and the hub (host_tools/hub: cbor2 and cryptography,
independent of lib/): messages leave the journal only on the hub's signed
ACK; outages and SIGKILLs lose nothing and store nothing twice.
Every wait is on an event (a line from the board, a row at the hub) with a
timeout."""

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import pytest

from host_tools import devicedeps
from host_tools.hub.service import HubService
from host_tools.netproxy import NetProxy

ROOT = Path(__file__).resolve().parents[2]
TS0 = 1750500000

SCRIPT = """
import sys
sys.path[:0] = [%(paths)s]
import asyncio, json, os
import cose
from gateway.keys import software
from gateway.net.mqtt import MqttLink
from gateway.net.uplink import Uplink, open_journal
from trade import messages, topics
cfg = json.loads(%(cfg)r)
state = cfg["state"]
try:
    key = software.SoftwareKey(state + "/device.key")
except Exception:
    key = software.provision(state + "/device.key")
print("key", cose.encode_key(*key.public_key()).hex())
hub_kid, hub_pub = cose.decode_key(bytes.fromhex(cfg["hub_key"]))
def say(*a):
    print(" ".join(str(x) for x in a))
link = MqttLink(cfg["link"], None, lambda m: say("log", m))
up = Uplink(key, (hub_pub[0], hub_pub[1], hub_kid), cfg["community"], open_journal(state + "/journal", 16),
            state + "/seq", link, log=lambda m: say("log", m), resend_ms=cfg["resend_ms"])
async def main():
    asyncio.create_task(up.run())
    st = up.stats()
    n = st["next_seq"]
    state = None
    while True:
        if link.state != state:
            state = link.state
            say("state", state)
        if n < cfg["count"] + 1 and (state == "up" or cfg["offline_submit"]):
            ts = %(ts0)d + 900 * n
            seq = up.submit(messages.READING, ts, {"interval_min": 15, "import_wh": n, "export_wh": 0,
                            "import_register_wh": 1000 + n, "export_register_wh": 5, "power_w": 100,
                            "meter": b"grid"})
            say("submitted", seq)
            n += 1
        st = up.stats()
        say("journal", st["records"], st["acks"], st["published"])
        await asyncio.sleep_ms(cfg["period_ms"])
asyncio.run(main())
"""


class Device:
    """The uplink under MicroPython; its stdout lines in a queue."""

    def __init__(self, state, port, hub_key, count, period_ms=20, offline_submit=True, resend_ms=3000):
        deps = devicedeps.fetch_all()
        umqtt_lib = str(deps["umqtt/simple.py"].parents[1])
        paths = ", ".join(repr(p) for p in (str(ROOT / "lib"), str(ROOT / "firmware"), umqtt_lib))
        cfg = {"state": str(state), "hub_key": hub_key.hex(), "community": "uplink", "count": count,
               "period_ms": period_ms, "offline_submit": offline_submit, "resend_ms": resend_ms,
               "link": {"host": "127.0.0.1", "port": port, "client_id": "pgw-uplink-test", "keepalive_s": 30,
                        "ping_ms": 1000, "dead_ms": 3000, "backoff_ms": 100, "backoff_max_ms": 800,
                        "will_topic": "pgw/1/uplink/dev/0000000000000000/status"}}
        mp = Path(sys.executable).parent / "micropython"
        self.proc = subprocess.Popen([str(mp), "-X", "heapsize=160wK", "-c",
                                      SCRIPT % {"paths": paths, "cfg": json.dumps(cfg), "ts0": TS0}],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.submitted = []
        self.last_journal = None
        self.log = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            line = line.strip()
            self.log.append(line)
            if line.startswith("submitted "):
                self.submitted.append(int(line.split()[1]))
            elif line.startswith("journal "):
                self.last_journal = tuple(int(x) for x in line.split()[1:])
            self.lines.put(line)

    def wait(self, prefix, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no %r in %.0f s; last lines:\n%s" % (prefix, timeout, "\n".join(self.log[-30:])))
            if line.startswith(prefix):
                return line

    def wait_for(self, pred, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not pred():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("%s: not within %.0f s; last lines:\n%s" % (what, timeout, "\n".join(
                    line for line in self.log[-200:] if not line.startswith("journal"))))
            time.sleep(0.02)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def hub(broker, tmp_path):
    service = HubService(tmp_path / "hub", "127.0.0.1", broker.port, "uplink",
                         clock=lambda: TS0 + 900 * 10_000)  # every reading's ts is in the hub's past
    service.start()
    assert service.connected.wait(10)
    yield service
    service.stop()


def start(tmp_path, hub, port, count, **kw):
    state = tmp_path / "device"
    state.mkdir(exist_ok=True)
    dev = Device(state, port, hub.key.cose_key(), count, **kw)
    line = dev.wait("key ")
    hub.ingest.register(bytes.fromhex(line.split()[1]))
    return dev


def stored(hub):
    return [(row[1], row[4]) for row in hub.store.messages(mtype=1)]


def check_hub_has(hub, seqs):
    rows = stored(hub)
    got = [seq for seq, _ in rows]
    assert len(got) == len(set(got))  # the primary key, and no conflicting copies
    missing = sorted(set(seqs) - set(got))
    assert not missing, missing
    for seq, data in rows:  # what the hub stored is what the device signed, field for field
        payload = cbor2.loads(cbor2.loads(data).value[2])
        assert payload == [1, 1, seq, TS0 + 900 * seq, 15, seq, 0, 1000 + seq, 5, 100, b"grid"], payload


def test_every_message_is_acknowledged_and_leaves_the_journal(tmp_path, hub, broker):
    dev = start(tmp_path, hub, broker.port, count=30)
    try:
        dev.wait_for(lambda: len(dev.submitted) == 30 and dev.last_journal and dev.last_journal[0] == 0,
                     "30 readings submitted and acknowledged")
        assert dev.last_journal[1] == 30, (dev.last_journal, hub.ingest.counts)  # one fresh ACK each
        check_hub_has(hub, dev.submitted)
        assert hub.ingest.counts["accepted"] == 30, hub.ingest.counts
    finally:
        dev.kill()


def test_broker_outage_loses_nothing(tmp_path, broker):
    from host_tools.broker import Broker

    with Broker() as own:
        service = HubService(tmp_path / "hub", "127.0.0.1", own.port, "uplink", clock=lambda: TS0 + 900 * 10_000)
        service.start()
        assert service.connected.wait(10)
        dev = start(tmp_path, service, own.port, count=60, period_ms=50)
        try:
            dev.wait_for(lambda: len(dev.submitted) >= 10, "10 readings")
            own.stop()
            dev.wait("state down", timeout=10)
            dev.wait_for(lambda: len(dev.submitted) >= 40, "readings journaled during the outage")
            backlog = dev.last_journal[0]
            assert backlog >= 20, dev.last_journal
            own.start()
            dev.wait("state up", timeout=15)
            dev.wait_for(lambda: len(dev.submitted) == 60 and dev.last_journal[0] == 0, "the backlog delivered")
            assert service.connected.wait(10)
            check_hub_has(service, dev.submitted)
        finally:
            dev.kill()
            service.stop()


def test_blackholed_network_then_sigkills(tmp_path, hub, broker):
    """The network is cut by the proxy (silence, no reset), then the device
    is killed at random moments; every reading it journaled reaches the hub
    once, and the journal ends empty."""
    import random

    rnd = random.Random(5)
    proxy = NetProxy("127.0.0.1", broker.port)
    dev = start(tmp_path, hub, proxy.port, count=10_000, period_ms=15)
    submitted = []
    try:
        dev.wait_for(lambda: len(dev.submitted) >= 5, "5 readings")
        proxy.blackhole()
        dev.wait("state down", timeout=10)
        dev.wait_for(lambda: len(dev.submitted) >= 30, "readings journaled while cut off")
        proxy.restore()
        for _ in range(8):
            time.sleep(rnd.uniform(0.05, 0.4))  # a random moment to kill, not a synchronisation
            dev.kill()
            submitted += dev.submitted
            dev = start(tmp_path, hub, proxy.port, count=10_000, period_ms=15)
        dev.wait_for(lambda: len(dev.submitted) >= 20, "20 more readings")
        dev.kill()
        submitted += dev.submitted
        dev = start(tmp_path, hub, proxy.port, count=0)  # submits nothing: only the backlog goes
        dev.wait_for(lambda: dev.last_journal is not None and dev.last_journal[0] == 0, "the backlog delivered")
        assert len(submitted) == len(set(submitted)), "a seq was used twice"
        check_hub_has(hub, submitted)
        got = {seq for seq, _ in stored(hub)}
        # a kill between the journal's write and the line that reports it: delivered, not reported
        assert len(got - set(submitted)) <= 9, sorted(got - set(submitted))
    finally:
        dev.kill()
        proxy.close()

"""The gateway end to end: a virtual board with a DLMS meter (gurux, HDLC on
the RS-485 pty, HLS-GMAC) and a wallbox (pymodbus, TCP), its
clock from the simulation's NTP server, the real broker, and the hub
(host_tools/hub). Time runs RATE times faster than the wall.

Every interval's READING of each meter reaches the hub once, in order,
with a signature that pycose (independent of lib/) verifies; outages of
the broker and SIGKILLs of the board lose nothing. Synchronisation is on
console lines, on rows in the hub's database and on GPIO events, each with
a timeout."""

import datetime
import json
import os
import re
import signal
import time
from types import SimpleNamespace

import cbor2
import pytest
from pycose.keys import CoseKey
from pycose.messages import Sign1Message

from conftest import deploy_and_enrol, wait_until
from host_tools.hub.service import HubService
from host_tools.sim import dlms_meter as dm
from host_tools.sim.household import UTC, Clock, Household
from host_tools.sim.modbus_devices import ModbusSimulator
from host_tools.sim.ntp import SimNtpServer
from host_tools.vboard import VirtualBoardProcess

RATE = 360  # a 15-minute interval every 2.5 s; the meters are polled every second
START = datetime.datetime(2025, 6, 21, 5, 0, 0, tzinfo=UTC)
COMMUNITY = "e2e"
EK = dm.DEFAULT_EK.hex().upper()
AK = dm.DEFAULT_AK.hex().upper()


def verify_with_pycose(data, cose_key):
    tag = cbor2.loads(data)
    p, u, payload, sig = tag.value
    msg = Sign1Message.from_cose_obj([p, dict(u), payload, sig], True)
    msg.key = CoseKey.decode(cose_key)
    assert msg.verify_signature(), "pycose refused a signature"
    return cbor2.loads(payload)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker):
    tmp = tmp_path_factory.mktemp("gateway")
    clock = Clock(start=START, speed=RATE)
    house = Household(seed=3, start=START - datetime.timedelta(days=2))
    meter = dm.Meter(household=house, clock=clock)
    modbus = ModbusSimulator("wallbox:3", household=house, clock=clock).start_tcp(0)
    ntp = SimNtpServer(clock.timestamp).start()
    hub = HubService(tmp / "hub", "127.0.0.1", broker.port, COMMUNITY, clock=clock.timestamp).start()
    assert hub.connected.wait(10)
    with VirtualBoardProcess(tmp / "flash", tmp / "vb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        con, cose_key, kid = deploy_and_enrol(vb, hub)
        meter.sample()
        serial = dm.SerialServer(meter, f"{vb.link}.rs485").start()
        config = {
            "community": COMMUNITY, "interval_min": 15, "clock_rate": RATE,
            "safe_mode_after": 100,  # the SIGKILL test kills the app before it counts as healthy
            "mqtt": {"host": "127.0.0.1", "port": broker.port},
            "ntp": {"host": "127.0.0.1", "port": ntp.port, "period_s": 3600},
            "hub": {"key": hub.key.cose_key().hex()},
            "meters": [
                {"name": "grid", "protocol": "dlms-hdlc", "security": "hls-gmac", "ek": EK, "ak": AK,
                 "system_title": "5047574757000001", "period_s": 1, "timeout_ms": 500, "retries": 1,
                 "registers": ["1-0:1.8.0", "1-0:2.8.0", "1-0:16.7.0"]},
                {"name": "wallbox", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus.port,
                 "unit": 3, "profile": "heidelberg_ec", "period_s": 1},
            ],
        }
        (vb.root / "config.json").write_text(json.dumps(config))
        mark = con.mark()
        vb.channel.power_cycle()
        con.wait_log(r"mqtt: connected", since=mark, timeout=30)
        con.wait_log(r"clock: set from", since=mark, timeout=30)
        try:
            yield SimpleNamespace(vb=vb, con=con, hub=hub, kid=kid, cose_key=cose_key, clock=clock,
                                  meter=meter, serial=serial, modbus=modbus, ntp=ntp, broker=broker)
        finally:
            con.close()
            serial.stop()
            modbus.stop()
            ntp.close()
            hub.stop()


def readings(hub, kid):
    """{meter name: [(seq, ts, payload)]} as the hub stored them, in seq order."""
    out = {}
    for _, seq, mtype, ts, data in hub.store.messages(kid=kid, mtype=1):
        payload = cbor2.loads(cbor2.loads(data).value[2])
        out.setdefault(payload[10].decode(), []).append((seq, ts, payload))
    return out


def check_complete(rows, cose_key, hub):
    """Each meter's READINGs: consecutive 15-minute intervals, none twice,
    seq increasing with ts, registers telescoping, pycose-valid."""
    by_seq = {row[1]: row[4] for row in hub.store.messages(mtype=1)}
    for name, items in rows.items():
        ts = [t for _, t, _ in items]
        assert ts == sorted(ts) and len(set(ts)) == len(ts), (name, ts)
        for (s0, t0, p0), (s1, t1, p1) in zip(items, items[1:]):
            assert t1 - t0 == 900 and p1[4] == 15, (name, t0, t1, p1)
            assert p1[7] - p0[7] == p1[5] and p1[8] - p0[8] == p1[6], (name, p0, p1)  # register deltas
            assert s1 > s0
        for seq, _, payload in items:
            assert verify_with_pycose(by_seq[seq], cose_key) == payload


def test_every_interval_reaches_the_hub_once_in_order(rig):
    wait_until("six intervals of the meters with registers",
               lambda: all(len(v) >= 6 for v in readings(rig.hub, rig.kid).values())
               and len(readings(rig.hub, rig.kid)) >= 2, timeout=60)
    rows = readings(rig.hub, rig.kid)
    assert set(rows) == {"grid", "wallbox"}, rows.keys()
    check_complete(rows, rig.cose_key, rig.hub)
    journal = rig.con.command("journal", "depth")
    assert "losses    none" in journal or "losses  none" in journal or re.search(r"losses +none", journal), journal
    status = rig.con.command("status", "clock")
    assert re.search(r"clock +ntp", status), status


def test_broker_outage_then_everything_is_delivered(rig):
    before = wait_until("a first reading", lambda: readings(rig.hub, rig.kid).get("grid") and readings(rig.hub, rig.kid),
                        timeout=60)
    mark = rig.con.mark()
    rig.broker.stop()
    t_stop = time.monotonic()
    try:
        rig.con.wait_log(r"mqtt: link lost", since=mark, timeout=10)
        detected = time.monotonic() - t_stop
        # two simulated hours: 8 intervals journaled meanwhile
        rig.con.wait_log(r"(reading grid seq \d+[^\n]*\n(?:.*\n)*?){8}", since=mark, timeout=60)
    finally:
        rig.broker.start()
    t_back = time.monotonic()
    rig.con.wait_log(r"mqtt: connected", since=mark, timeout=15)
    resumed = time.monotonic() - t_back
    print("broker outage detected after %.2f s; connected again %.2f s after its return" % (detected, resumed))
    assert detected <= 5.0, detected
    assert resumed <= 1.5, resumed
    assert rig.hub.connected.wait(10)
    try:
        wait_until("an empty journal", lambda: re.search(r"depth +0 unacknowledged",
                                                         rig.con.command("journal", "depth")), timeout=90, pause=1)
    except AssertionError:
        print(rig.con.transcript[-6000:])
        raise
    after = readings(rig.hub, rig.kid)
    assert len(after["grid"]) >= len(before["grid"]) + 8
    check_complete(after, rig.cose_key, rig.hub)


def test_sigkills_lose_nothing_and_repeat_nothing(rig):
    import random

    rnd = random.Random(11)
    for i in range(5):
        mark = rig.vb.channel.mark()
        time.sleep(rnd.uniform(0.2, 2.0))  # a random moment, not a synchronisation
        boot = [e for e in rig.vb.channel.events if e.get("kind") == "boot"][-1]
        os.kill(boot["pid"], signal.SIGKILL)
        rig.vb.channel.wait_kind("boot", since=mark, timeout=30)
    mark = rig.con.mark()
    rig.con.wait_log(r"mqtt: connected", since=mark, timeout=30)
    rig.con.wait_log(r"(reading grid seq[^\n]*\n(?:.*\n)*?){3}", since=mark, timeout=60)
    wait_until("an empty journal", lambda: re.search(r"depth +0 unacknowledged",
                                                     rig.con.command("journal", "depth")), timeout=90, pause=1)
    rows = readings(rig.hub, rig.kid)
    for name, items in rows.items():
        ts = [t for _, t, _ in items]
        assert len(set(ts)) == len(ts), (name, ts)  # no interval twice
    assert rig.hub.ingest.counts.get("rejected_conflict", 0) == 0, rig.hub.ingest.counts

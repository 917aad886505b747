"""`pgw provision` on a virtual board, with a HubService on the real broker
that trusts one installer key: the key is made on the board, the hub
registers it (the stored request verifies under the installer's key with
pycose), the board gets its config and trades: a READING of its meter
(pymodbus SDM630) goes in. Then re-provisioning rotates the key (the old
key's messages are refused as revoked) and decommissioning revokes the key
and wipes the board. The three tests run in order on one board."""

import datetime
import hashlib
import json
import re
import sys
from pathlib import Path

import cbor2
import pytest

from pycose_check import pycose_payload

from conftest import Console, Publisher, deploy, run_tool, verify_with_pycose, wait_until
from host_tools.sim.household import UTC, Clock, Household

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib")]

from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402

COMMUNITY = "prov"
RATE = 60  # a 1-minute interval every wall second
START = datetime.datetime(2025, 6, 21, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker):
    from types import SimpleNamespace

    from host_tools.hub.service import HubService
    from host_tools.sim.modbus_devices import ModbusSimulator
    from host_tools.sim.ntp import SimNtpServer
    from host_tools.vboard import VirtualBoardProcess

    tmp = tmp_path_factory.mktemp("provision")
    for name in ("installer", "release"):
        run_tool("pgw", "provision", "keygen", "--out", tmp / (name + ".pem"))
    clock = Clock(start=START, speed=RATE)
    house = Household(seed=11, start=START - datetime.timedelta(days=1), pv_kwp=0.0, battery_kwh=0.0, battery_kw=0.0,
                      ev=False)
    sim = ModbusSimulator("sdm630:1", household=house, clock=clock).start_tcp(0)
    ntp = SimNtpServer(clock.timestamp).start()
    hub = HubService(tmp / "hub", "127.0.0.1", broker.port, COMMUNITY, clock=clock.timestamp,
                     max_skew_s=300 + 5 * RATE, installer_keys=[(tmp / "installer.cose").read_bytes()]).start()
    pub = Publisher(broker.port, "provision-test")
    config = tmp / "site.json"  # what the technician brings; the tool adds broker, hub key, OTA key
    config.write_text(json.dumps({
        "interval_min": 1, "clock_rate": RATE,
        "ntp": {"host": "127.0.0.1", "port": ntp.port},
        "meters": [{"name": "grid", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim.port, "unit": 1,
                    "profile": "sdm630", "period_s": 1, "timeout_ms": 1000}]}))
    try:
        assert hub.connected.wait(10) and hub.subscribed.wait(10)
        with VirtualBoardProcess(tmp / "flash", tmp / "vb.tty") as vb:
            vb.channel.wait_kind("ready", timeout=20)
            deploy(vb)
            yield SimpleNamespace(tmp=tmp, vb=vb, hub=hub, pub=pub, broker=broker, config=config, clock=clock,
                                  kids=[])
    finally:
        pub.close()
        hub.stop()
        ntp.close()
        sim.stop()


def provision(rig, *extra, action=()):
    args = [*action, "--port", rig.vb.link, "--hub", "mqtt://127.0.0.1:%d" % rig.broker.port,
            "--community", COMMUNITY, "--installer-key", rig.tmp / "installer.pem",
            "--hub-key", rig.tmp / "hub" / "hub.cose", *extra]
    out = run_tool("pgw", "provision", *args, timeout=120).stdout
    print(out)
    return out


def board_says(rig, *asked):
    """(line, text its answer holds) ... -> the answers"""
    con = Console(rig.vb.link)
    try:
        return [con.command(line, contains, timeout=15).strip() for line, contains in asked]
    finally:
        con.close()


def readings(hub, kid):
    return hub.store.messages(kid=kid, mtype=1)


def test_provision_registers_the_key_made_on_the_board_and_the_board_trades(rig):
    from host_tools.hub.api import devices

    out = provision(rig, "--config", rig.config, "--ota-key", rig.tmp / "release.cose", "--name", "Lindenweg 12",
                    "--label-out", rig.tmp / "label.txt")
    kid = bytes.fromhex(re.search(r"^device id +([0-9a-f]{16})$", out, re.M).group(1))
    rig.kids.append(kid)
    # the label: printed and written, with the fingerprint of the key the hub holds
    label = (rig.tmp / "label.txt").read_text()
    assert label.strip() in out and "PGW:1:PROV:%s:" % kid.hex().upper() in label
    # the hub lists the device under its name
    listed = {d["kid"]: d for d in devices(rig.hub.store)}
    assert listed[kid.hex()]["name"] == "Lindenweg 12", listed
    cose_key = bytes(next(c for k, c, _ in rig.hub.store.devices() if bytes(k) == kid))
    fp = hashlib.sha256(cose_key).digest()[:8].hex()
    assert "fingerprint  %s %s %s %s" % (fp[:4], fp[4:8], fp[8:12], fp[12:]) in label
    # the stored request verifies under the installer's key (pycose) and carries the device's key
    (installer, action, reg_kid, replaces, ts, blob), = rig.hub.registry.registrations(kid)
    p = pycose_payload(blob, (rig.tmp / "installer.cose").read_bytes())
    assert (action, reg_kid, replaces, p[1], p[2], p[5], p[7]) == (1, kid, None, 1, COMMUNITY, cose_key,
                                                                   "Lindenweg 12"), p
    x, y = cbor2.loads(cose_key)[-2], cbor2.loads(cose_key)[-3]
    assert hashlib.sha256(b"\x04" + x + y).digest()[:8] == kid  # kid = SHA-256 of the point, first 8 bytes
    # the board's config, read back over its console
    hub_hex = (rig.tmp / "hub" / "hub.cose").read_bytes().hex()
    release_hex = (rig.tmp / "release.cose").read_bytes().hex()
    got = board_says(rig, ("config get hub.key", "hub.key"), ("config get mqtt.host", "mqtt.host"),
                     ("config get mqtt.port", "mqtt.port"), ("config get ota.key", "ota.key"),
                     ("config get community", "community"), ("identity", "kid"))
    assert got[:5] == ['hub.key "%s"' % hub_hex, 'mqtt.host "127.0.0.1"', "mqtt.port %d" % rig.broker.port,
                       'ota.key "%s"' % release_hex, 'community "%s"' % COMMUNITY], got
    assert kid.hex() in got[5]
    # and it trades: a READING of its meter, signed by the key made on the board, stored by the hub
    stored = wait_until("a READING at the hub", lambda: readings(rig.hub, kid), timeout=40, pause=0.5)
    assert verify_with_pycose(bytes(stored[0][4]), cose_key)[10] == b"grid"


def test_reprovisioning_rotates_the_key_and_the_old_one_is_refused(rig):
    old = rig.kids[-1]
    raw = (rig.vb.root / "state" / "device.key").read_bytes()
    old_signer = Signer(int.from_bytes(raw[5:37], "big"))  # the old key, taken off the virtual flash
    assert old_signer.kid == old
    # without the kid as confirmation, or with another, rotate and wipe change nothing
    got = board_says(rig, ("identity rotate", "ERR"), ("identity rotate 0123456789abcdef", "ERR"),
                     ("identity wipe", "ERR"), ("identity provision", "ERR"))
    assert got[0] == "ERR identity rotate makes a new key in place of %s, for good; to go ahead: " \
                     "identity rotate %s" % (old.hex(), old.hex()), got
    assert got[1] == "ERR confirm with this device's kid %s, got 0123456789abcdef" % old.hex(), got
    assert "deletes key %s" % old.hex() in got[2] and got[3].startswith("ERR a key already exists"), got
    assert (rig.vb.root / "state" / "device.key").read_bytes() == raw
    out = provision(rig, "--rotate", "--keep-config")
    new = bytes.fromhex(re.search(r"^device id +([0-9a-f]{16})$", out, re.M).group(1))
    rig.kids.append(new)
    assert new != old and "in place of %s" % old.hex() in out and "config: kept, board reset" in out
    rows = rig.hub.registry.registrations(new)
    assert [(r[1], r[2], r[3]) for r in rows] == [(1, new, old)], rows
    assert old in rig.hub.ingest.revoked and new not in rig.hub.ingest.revoked
    # a message signed by the old key now: refused as revoked, and counted
    before = rig.hub.ingest.counts["rejected_revoked"]
    now = int(rig.clock.timestamp())
    rig.pub.send("pgw/1/%s/dev/%s/reading" % (COMMUNITY, old.hex()),
                 m.sign(m.READING, 999999, now, {"interval_min": 1, "import_wh": 1, "export_wh": 0,
                                                  "import_register_wh": 1, "export_register_wh": 0, "power_w": 1,
                                                  "meter": b"grid"}, old, old_signer))
    wait_until("the old key's READING refused", lambda: rig.hub.ingest.counts["rejected_revoked"] > before, timeout=10)
    assert not [r for r in readings(rig.hub, old) if r[1] == 999999]
    # the board signs with the new key
    wait_until("a READING with the new key", lambda: readings(rig.hub, new), timeout=40, pause=0.5)


def test_decommissioning_revokes_the_key_and_wipes_the_board(rig):
    kid = rig.kids[-1]
    out = run_tool("pgw", "provision", "decommission", "--port", rig.vb.link, "--hub",
                   "mqtt://127.0.0.1:%d" % rig.broker.port, "--community", COMMUNITY,
                   "--installer-key", rig.tmp / "installer.pem", timeout=120).stdout
    print(out)
    assert "revoked %s" % kid.hex() in out
    assert kid in rig.hub.ingest.revoked
    assert [r[1] for r in rig.hub.registry.registrations(kid)] == [1, 2]
    assert not (rig.vb.root / "state" / "device.key").exists() and not (rig.vb.root / "config.json").exists()
    assert not [p for p in (rig.vb.root / "state" / "journal").glob("*")]
    got = board_says(rig, ("identity", "signing key"), ("config get mqtt.host", "mqtt.host"))
    assert got == ["no signing key yet: `identity provision` makes one on this device", 'mqtt.host ""'], got

"""The technician's whole path (issue 7, acceptance 1; docs/field.md), in
order, on a virtual board with nothing on its flash: `pgw flash --dry-run`,
then the deploy and provision commands it prints, run as printed (the
placeholders filled in), then a trade on the hub's market against a
neighbour, then an update over the air published with `pgw ota publish`.

The neighbour is a second virtual board running the same firmware, a
consumer enrolled the short way (host_tools.sim.day.deploy_and_enrol); the
provisioned board has PV at midday and sells. The meters are pymodbus
simulators of both households; the hub, the broker (Mosquitto) and the
boards' clocks run 120 times faster than real time. What happened is read
from the hub (its registry, its ledger's TRADEs) and from the board (its
console and `status`), never from the test's own account."""

import datetime
import json
import os
import re
import shlex
import signal

import cbor2
import pytest

from conftest import Console, deploy_and_enrol, run_tool, verify_with_pycose, wait_until
from host_tools import ota
from host_tools.boards import load_board
from host_tools.sim.household import UTC, Clock, Household
from host_tools.sim.neighbourhood import KINDS, Home
from test_ota_download import BASE, variant

COMMUNITY = "field"
RATE = 120  # a 15-minute interval every 7.5 wall seconds
START = datetime.datetime(2025, 6, 21, 11, 0, 0, tzinfo=UTC)  # late morning: the PV household sells
NEXT = BASE + "-field"
TRADE = 3


@pytest.fixture(scope="module")
def street(tmp_path_factory, broker):
    """The hub (trusting one installer key and one release key), the two
    households' meters, NTP; the neighbour's board up and trading; the
    technician's board fresh, with an empty flash."""
    import contextlib
    from types import SimpleNamespace

    from host_tools.hub.service import HubService
    from host_tools.sim.modbus_devices import ModbusSimulator
    from host_tools.sim.ntp import SimNtpServer
    from host_tools.vboard import VirtualBoardProcess

    tmp = tmp_path_factory.mktemp("field")
    run_tool("pgw", "provision", "keygen", "--out", tmp / "installer.pem")
    run_tool("pgw", "ota", "keygen", "--out", tmp / "release.pem")  # and release.cose beside it
    release = ota.ReleaseKey.load(tmp / "release.pem")
    clock = Clock(start=START, speed=RATE)
    homes = []
    for i, kind in enumerate(("pv", "consumer")):
        house = Household(seed=40 + i, start=START - datetime.timedelta(days=1), **KINDS[kind])
        homes.append(Home(i, kind, house))
    with contextlib.ExitStack() as stack:
        hub = HubService(tmp / "hub", "127.0.0.1", broker.port, COMMUNITY, clock=clock.timestamp,
                         max_skew_s=300 + 5 * RATE,
                         installer_keys=[(tmp / "installer.cose").read_bytes()]).start()
        stack.callback(hub.stop)
        assert hub.connected.wait(10) and hub.subscribed.wait(10)
        hub.serve_ota([release.pub], every_s=60)
        ntp = SimNtpServer(clock.timestamp).start()
        stack.callback(ntp.close)
        for home in homes:
            home.sim = ModbusSimulator(home.devices(), household=home.house, clock=clock).start_tcp(0)
            stack.callback(home.sim.stop)
            (tmp / home.name).mkdir()
            home.vb = stack.enter_context(VirtualBoardProcess(tmp / home.name / "flash", tmp / home.name / "vb.tty"))
        seller, neighbour = homes
        # the neighbour: deployed and enrolled the short way, then trading
        neighbour.vb.channel.wait_kind("ready", timeout=20)
        con, neighbour.cose_key, neighbour.kid = deploy_and_enrol(neighbour.vb, hub)
        con.close()
        cfg = neighbour.config(hub.key.cose_key(), broker.port, ntp.port, RATE)
        cfg["community"] = COMMUNITY
        (neighbour.vb.root / "config.json").write_text(json.dumps(cfg))
        neighbour.vb.channel.power_cycle()
        # what the technician brings for the PV household: its site config
        # (meters, household, limits); provisioning adds the rest
        site = seller.config(b"", 0, ntp.port, RATE)
        for key in ("community", "mqtt", "hub"):
            del site[key]
        (tmp / "site.json").write_text(json.dumps(site))
        seller.vb.channel.wait_kind("ready", timeout=20)
        yield SimpleNamespace(tmp=tmp, hub=hub, broker=broker, clock=clock, release=release, seller=seller,
                              neighbour=neighbour, homes=homes)


def printed_commands(out):
    """The `$ ...` lines of a dry run, as argument lists."""
    return [shlex.split(line.split("$", 1)[1]) for line in out.splitlines() if line.strip().startswith("$ ")]


def test_a_new_board_goes_from_flash_to_trading_to_an_update(street):
    s, tmp = street, street.tmp
    link = s.seller.vb.link

    # 1. flash, dry run: the steps for this board; nothing touched
    out = run_tool("pgw", "flash", "--board", "virtual", "--port", link, "--dry-run").stdout
    print(out)
    deploy_cmd, provision_cmd = printed_commands(out)
    assert deploy_cmd[:2] == ["pgw", "deploy"] and provision_cmd[:2] == ["pgw", "provision"], out
    assert not (s.seller.vb.root / "main.py").exists()  # a dry run writes nothing

    # 2. deploy, as printed
    print(run_tool(*deploy_cmd, timeout=300).stdout)
    assert (s.seller.vb.root / "main.py").exists()

    # 3. provision, as printed, its placeholders filled in, plus the site's config and the keys to pin
    fill = {"mqtt://HUB:1883": "mqtt://127.0.0.1:%d" % s.broker.port, "C": COMMUNITY,
            "installer.pem": str(tmp / "installer.pem")}
    args = [fill.get(a, a) for a in provision_cmd] + [
        "--config", tmp / "site.json", "--hub-key", tmp / "hub" / "hub.cose", "--ota-key", tmp / "release.cose",
        "--name", "PV household"]
    out = run_tool(*args, timeout=120).stdout
    print(out)
    kid = bytes.fromhex(re.search(r"^device id +([0-9a-f]{16})$", out, re.M).group(1))
    assert [r[2] for r in s.hub.registry.registrations(kid)] == [kid]  # registered with the hub
    cose_key = bytes(next(c for k, c, _ in s.hub.store.devices() if bytes(k) == kid))
    s.seller.kid = kid
    con = Console(link)
    try:
        # 4. trade: the hub's market pairs its PV with the neighbour's load
        market = {h.kid: {"grid_meter": b"grid", "max_import_w": 17250, "max_export_w": 17250,
                          "retail_price": 300000, "feed_in_price": 80000} for h in s.homes}
        s.hub.run_rounds(market, feeder_wh=7500, interval_min=15, settle_after_s=120, committee_size=2)
        sold = con.wait_log(r"trade (\d+): sold (\d+) Wh at (\d+) for the interval at (\d+)", timeout=150)
        tid, wh = int(sold.group(1)), int(sold.group(2))
        trades = [cbor2.loads(cbor2.loads(data).value[2])
                  for _, _, _, _, data in s.hub.store.messages(kid=s.hub.key.kid, mtype=TRADE)]
        mine = [t for t in trades if t[4] == tid]
        assert mine and mine[0][7] == kid and mine[0][8] == s.neighbour.kid and mine[0][9] == wh, (tid, trades)
        readings = wait_until("a READING signed by the key made on the board",
                              lambda: s.hub.store.messages(kid=kid, mtype=1), timeout=30, pause=0.5)
        assert verify_with_pycose(bytes(readings[-1][4]), cose_key)[10] == b"grid"

        # 5. OTA: a release of this firmware with another VERSION, published through the hub
        bundle = ota.build_bundle(load_board("virtual"), s.release, 1, NEXT, files=variant(tmp, NEXT)).data
        (tmp / "release.bin").write_bytes(bundle)
        mark = con.mark()
        out = run_tool("pgw", "ota", "publish", tmp / "release.bin", "--broker", "mqtt://127.0.0.1:%d" % s.broker.port,
                       "--community", COMMUNITY, timeout=90).stdout
        print(out)
        con.wait_log(r"ota: version %s \(seq 1\) checked and staged" % re.escape(NEXT), since=mark, timeout=120)
        # a power cut while the staged version waits for a gap in the trades:
        # after the reboot it still switches, at the next safe moment
        boots = [e for e in s.seller.vb.channel.events if e["kind"] == "boot"]
        os.kill(boots[-1]["pid"], signal.SIGKILL)
        con.wait_log(r"pgw: slot 1, seq 1 on trial", since=mark, timeout=90)
        con.wait_log(r"ota: seq 1 healthy: committed in slot 1", since=mark, timeout=90)
        answer = con.command("status", "firmware", timeout=20)
        assert re.search(r"^firmware +%s\r?$" % re.escape(NEXT), answer, re.M), answer
        # and the updated board trades on: a new READING after the commit
        mark = con.mark()
        con.wait_log(r"reading grid seq", since=mark, timeout=30)
    finally:
        con.close()

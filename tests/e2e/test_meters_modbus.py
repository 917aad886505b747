"""The firmware's meter service against pymodbus peers: Modbus RTU with two
devices on the virtual board's RS-485 pty, and Modbus TCP on loopback.

One board for the module: deployed once, with a /config.json of meters. The
simulators' household clock is frozen, so every reading compares with the
model. Synchronisation is on console output (the service logs each meter's
first reading and each change between failing and ok), on the simulators'
fault counters and on GPIO events, always with a timeout.
"""

import datetime
import json
import re
import socket
from types import SimpleNamespace

import pytest

from conftest import Console, deploy, details, errors, run_tool, wait_until
from host_tools.sim.household import UTC, Clock, Household
from host_tools.sim.modbus_devices import ModbusSimulator
from host_tools.vboard import VirtualBoardProcess

NOW = datetime.datetime(2025, 6, 21, 10, 0, 7, tzinfo=UTC)


def value(rows, quantity):
    return int(rows[quantity])


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meters")
    clock = Clock(start=NOW, monotonic=lambda: 0.0)  # frozen: the readings hold still
    house = Household(seed=9, start=NOW - datetime.timedelta(hours=10))
    with VirtualBoardProcess(tmp / "flash", tmp / "vb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        deploy(vb)
        rtu = ModbusSimulator("sdm630:1,sunspec:2", household=house, clock=clock)
        rtu.start_serial(f"{vb.link}.rs485", 9600)
        tcp = ModbusSimulator("sdm630:1", household=house, clock=clock).start_tcp(0)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()  # nobody listens there: connection refused
        meters = [
            {"name": "grid", "protocol": "modbus-rtu", "unit": 1, "profile": "sdm630",
             "period_s": 1, "timeout_ms": 400, "retries": 2},
            {"name": "inverter", "protocol": "modbus-rtu", "unit": 2, "profile": "sunspec_inverter",
             "period_s": 1, "timeout_ms": 400, "retries": 1},
            {"name": "ghost", "protocol": "modbus-rtu", "unit": 9, "profile": "sdm120",
             "period_s": 2, "timeout_ms": 150, "retries": 0},
            {"name": "lan", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": tcp.port,
             "profile": "sdm630", "period_s": 1},
            {"name": "offline", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": closed_port,
             "profile": "sdm630", "period_s": 2, "timeout_ms": 300, "retries": 0},
            {"name": "bad", "protocol": "modbus-rtu", "unit": 300, "profile": "sdm630"},
            {"name": "noprofile", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": tcp.port,
             "profile": "no_such_meter"},
        ]
        (vb.root / "config.json").write_text(json.dumps({"meters": meters}))
        con = Console(vb.link)
        try:
            mark = vb.channel.mark()
            vb.channel.power_cycle()
            boot = vb.channel.wait_kind("boot", since=mark, timeout=20)
            con.wait_log(r"meters: 6 configured, 5 running")
            for name in ("grid", "inverter", "lan"):
                con.wait_log(r"meter %s: first reading" % name, timeout=30)
            yield SimpleNamespace(vb=vb, con=con, rtu=rtu, tcp=tcp, house=house, clock=clock,
                                  boot_index=vb.channel.events.index(boot))
        finally:
            con.close()
            rtu.stop()
            tcp.stop()


def test_invalid_meters_are_rejected_and_the_others_run(rig):
    status = rig.con.command("status", "firmware")
    assert "meters[5] (bad): unit must be 1..247, got 300" in status, status
    table = rig.con.command("meters", "protocol")
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["name"][:4] == ["name", "protocol", "state", "age"], table
    assert "bad" not in rows, table  # rejected by the config check, not shown as a meter
    assert rows["noprofile"][2] == "off", table
    assert "no profile no_such_meter" in details(rig.con, "noprofile")["problem"]
    assert rig.con.command("meters nosuch", "ERR").strip().startswith("ERR no meter 'nosuch'")


def test_rtu_readings_match_the_simulated_sdm630(rig):
    s = rig.house.sample(rig.clock.timestamp())
    g = details(rig.con, "grid")
    assert g["state"] == "ok", g
    assert "unit 1 on rs485 (9600 8N1), profile sdm630" in g["device"], g
    for k in range(3):
        assert abs(value(g, "voltage_l%d_mv" % (k + 1)) - s.voltage[k] * 1000) <= 1, (k, g)
        assert abs(value(g, "current_l%d_ma" % (k + 1)) - s.current[k] * 1000) <= 1, (k, g)
        assert abs(value(g, "power_l%d_w" % (k + 1)) - s.phase_w[k]) <= 1, (k, g)
    assert abs(value(g, "power_w") - s.grid_w) <= 1, g  # negative while exporting
    assert abs(value(g, "frequency_mhz") - s.frequency * 1000) <= 1, g
    # float32 kWh: one unit in the last place is about 1 Wh at 10 MWh
    assert abs(value(g, "energy_import_wh") - s.import_wh) <= 2, g
    assert abs(value(g, "energy_export_wh") - s.export_wh) <= 2, g


def test_sunspec_discovery_and_inverter_readings(rig):
    s = rig.house.sample(rig.clock.timestamp())
    inv = details(rig.con, "inverter")
    assert inv["sunspec"] == "base 40000, models 1 103 120 124 160", inv
    assert value(inv, "inverter_power_w") == int(round(s.pv_w + s.battery_w)), inv
    assert value(inv, "battery_soc_permille") == int(round(s.soc * 1000)), inv
    assert value(inv, "inverter_energy_wh") == int(s.pv_wh), inv
    assert value(inv, "voltage_l1_mv") == int(round(s.voltage[0] * 10)) * 100, inv
    assert value(inv, "battery_capacity_wh") == int(round(rig.house.battery_kwh * 1000)), inv
    assert value(inv, "inverter_state") in (2, 4), inv


def test_tcp_meter_reads_the_same_house(rig):
    lan = details(rig.con, "lan")
    grid = details(rig.con, "grid")
    assert lan["state"] == "ok" and "127.0.0.1:%d" % rig.tcp.port in lan["device"], lan
    for q in ("power_w", "voltage_l1_mv", "energy_import_wh", "energy_export_wh"):
        assert lan[q] == grid[q], (q, lan, grid)
    # The SDM630 simulator lacks the per-phase energy block: skipped quietly, not an error.
    assert "absent" in lan and errors(lan).get("exc2") is None, lan


def test_meters_table_shows_key_values(rig):
    s = rig.house.sample(rig.clock.timestamp())
    table = rig.con.command("meters", "protocol")
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["name"] == ["name", "protocol", "state", "age", "power_w", "import_wh", "export_wh",
                            "soc", "errors"], table
    grid = rows["grid"]
    assert grid[1:3] == ["modbus-rtu", "ok"], table
    assert abs(int(grid[4]) - s.grid_w) <= 1, table
    inv = rows["inverter"]
    assert inv[7] == "%d.%d%%" % divmod(int(round(s.soc * 1000)), 10), table


def test_unknown_unit_times_out_on_that_meter_only(rig):
    rig.con.wait_log(r"meter ghost failing: timeout: no answer from unit 9")
    ghost = details(rig.con, "ghost")
    assert ghost["state"] == "failing" and ghost["last good"] == "never", ghost
    assert set(errors(ghost)) == {"timeout"}, ghost
    assert rig.rtu.unknown_unit_requests > 0  # the bus heard it; nobody answered
    for name in ("grid", "inverter"):
        assert details(rig.con, name)["state"] == "ok", name


def test_unreachable_tcp_device_is_a_connection_error(rig):
    rig.con.wait_log(r"meter offline failing: conn")
    offline = details(rig.con, "offline")
    assert offline["state"] == "failing" and set(errors(offline)) == {"conn"}, offline
    assert details(rig.con, "lan")["state"] == "ok"


def test_silent_device_fails_alone_and_recovers(rig):
    faults = rig.rtu.faults[2]
    before = errors(details(rig.con, "inverter")).get("timeout", 0)
    grid_before = int(details(rig.con, "grid")["polls"].split(":")[1].split()[0])
    mark = rig.con.mark()
    faults.silent = True
    try:
        rig.con.wait_log(r"meter inverter failing: timeout", since=mark)
        inv = details(rig.con, "inverter")
        assert inv["state"] == "failing", inv
        assert errors(inv)["timeout"] >= before + 2, inv  # the poll and its retry
        # The other device on the bus goes on being read meanwhile.
        grid = details(rig.con, "grid")
        good = int(grid["polls"].split(":")[1].split()[0])
        assert grid["state"] == "ok" and good > grid_before, grid
    finally:
        faults.silent = False
    rig.con.wait_log(r"meter inverter ok again after \d+ failed polls", since=mark, timeout=90)
    assert details(rig.con, "inverter")["state"] == "ok"


def test_corrupted_crc_is_counted_and_retried(rig):
    faults = rig.rtu.faults[1]
    before = errors(details(rig.con, "grid")).get("crc", 0)
    mark = rig.con.mark()
    faults.corrupt_next(1)
    wait_until("the corrupted answer", lambda: faults.corrupted >= 1)
    grid = wait_until("crc counted", lambda: (lambda r: r if errors(r).get("crc", 0) > before else None)(
        details(rig.con, "grid")))
    assert grid["last error"].startswith("crc: bad CRC in the answer from unit 1"), grid
    assert grid["state"] == "ok", grid  # the retry read it
    assert "meter grid failing" not in rig.con.transcript[mark:]


def test_exception_response_is_counted_by_code(rig):
    faults = rig.rtu.faults[1]
    before = errors(details(rig.con, "grid")).get("exc4", 0)
    faults.exception_next(4)  # server device failure
    grid = wait_until("exc4 counted", lambda: (lambda r: r if errors(r).get("exc4", 0) > before else None)(
        details(rig.con, "grid")))
    assert "exception 4 (server device failure)" in grid["last error"], grid
    assert grid["state"] == "ok", grid


def test_heap_with_meters_running(rig):
    status = rig.con.command("status", "firmware")
    free, used = (float(x) for x in re.search(r"heap +([\d.]+) KB free, ([\d.]+) KB used", status).groups())
    print("heap with 5 Modbus meters running: %.1f KB free, %.1f KB used (32-bit)" % (free, used))
    assert free >= 40, status  # of the virtual board's 160 KB


def test_direction_pin_covers_exactly_the_frame(rig):
    # Last in this module: mpremote stops the app. The bus drives a probe pin
    # that notes board ticks: DE must stay high until the last stop bit has
    # left (n x 10 bits at 9600) and drop right after, before a device answers.
    script = (
        "import time, asyncio\n"
        "from machine import UART\n"
        "from gateway.meters.bus import Rs485Bus\n"
        "class Probe:\n"
        "    log = []\n"
        "    def value(self, v):\n"
        "        self.log.append((v, time.ticks_us()))\n"
        "pin = Probe()\n"
        "bus = Rs485Bus(UART(1, baudrate=9600, timeout=0, timeout_char=0), (9600, 8, 'N', 1), pin, 1)\n"
        "async def main():\n"
        "    for n in (8, 40, 120):\n"
        "        for _ in range(5):\n"
        "            pin.log = []\n"
        "            await bus.send(bytes(range(n)))\n"
        "            (on, t1), (off, t2) = pin.log\n"
        "            print(n, on, off, time.ticks_diff(t2, t1))\n"
        "asyncio.run(main())\n")
    rig.con.close()  # mpremote needs the port to itself
    out = run_tool("mpremote", "connect", rig.vb.link, "exec", script, timeout=60).stdout
    spans = {}
    for line in out.strip().splitlines():
        n, on, off, us = (int(x) for x in line.split())
        assert (on, off) == (1, 0), line
        assert us >= n * 10 * 1000000 / 9600, line  # never before the last stop bit
        spans.setdefault(n, []).append(us)
    assert sorted(spans) == [8, 40, 120], out
    for n, us in spans.items():
        # The best of five: a busy host may deschedule the board now and then.
        assert min(us) <= n * 10 * 1000000 / 9600 + 3000, (n, us)

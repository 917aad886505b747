"""The console's `log`, `config get/set` and `selftest` on a virtual board
with a grid meter (pymodbus SDM630), the hub (the board's key, the
technician's login) and an NTP server.

Answers are matched on text that only the answer has (a log line can hold
the same words). What the relays did is read from the GPIO channel, not
from the firmware's account of it."""

import json
import re
from types import SimpleNamespace

import pytest

from conftest import SerialExpect, deploy_and_enrol, wait_until
from host_tools.hub.service import HubService
from host_tools.sim.modbus_devices import ModbusSimulator
from host_tools.sim.ntp import SimNtpServer
from host_tools.vboard import VirtualBoardProcess

COMMUNITY = "con"
DWELL_MS = 1000
PERIOD_MS = 500
LOG_LINES = 20
PIN = "2468"
SLACK_S = 0.3  # the GPIO event's trip home; a dwell is never shorter than this less


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker):
    tmp = tmp_path_factory.mktemp("console")
    sim = ModbusSimulator("sdm630:1,sunspec:2").start_tcp(0)
    ntp = SimNtpServer().start()
    hub = HubService(tmp / "hub", "127.0.0.1", broker.port, COMMUNITY).start()
    assert hub.connected.wait(10)
    with VirtualBoardProcess(tmp / "flash", tmp / "vb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        con, _cose_key, _kid = deploy_and_enrol(vb, hub)
        config = {
            "community": COMMUNITY, "safe_mode_after": 100, "log_lines": LOG_LINES,
            "mqtt": {"host": "127.0.0.1", "port": broker.port},
            "ntp": {"host": "127.0.0.1", "port": ntp.port},
            "hub": {"key": hub.key.cose_key().hex()},
            "meters": [{"name": "grid", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim.port,
                        "unit": 1, "profile": "sdm630", "period_s": 1, "timeout_ms": 1000}],
            "control": {"grid_meter": "grid", "period_ms": PERIOD_MS},
            "limits": {"relay_min_on_ms": DWELL_MS, "relay_min_off_ms": DWELL_MS,
                       "relay_max_switches": 100, "relay_window_ms": 60000, "stale_ms": 3000},
        }
        (vb.root / "config.json").write_text(json.dumps(config))
        mark = con.mark()
        vb.channel.power_cycle()
        con.wait_log(r"mqtt: connected", since=mark, timeout=30)
        con.wait_log(r"clock: set from", since=mark, timeout=30)
        con.wait_log(r"control: fail-safe over", since=mark, timeout=30)  # the grid meter read
        try:
            yield SimpleNamespace(vb=vb, con=con, config=config, broker=broker)
        finally:
            con.close()
            sim.stop()
            ntp.close()
            hub.stop()


def log_lines(answer):
    """`log` answer lines after its header, as (uptime s, text)."""
    lines = answer.strip("\r\n").split("\r\n")
    assert lines[0].startswith("log: last "), answer
    return [(int(m.group(1)), m.group(2)) for m in (re.match(r" *(\d+)  (.*)$", l) for l in lines[1:])]


def login(con):
    if "not set" in con.command("auth status", "logged in"):
        assert "PIN set" in con.command("auth setpin " + PIN, "PIN set")
    assert "logged in for" in con.command("auth pin " + PIN, "logged in for")


def test_log_shows_earlier_lines_with_their_uptime_and_at_most_n(rig):
    con = rig.con
    answer = con.command("log", "lines kept (ring of %d" % LOG_LINES)
    lines = log_lines(answer)
    assert 0 < len(lines) <= 20, answer
    said = [text for _, text in lines]
    assert any(t.startswith("mqtt: connected") for t in said), answer
    assert any(t.startswith("control: fail-safe over") for t in said), answer
    times = [t for t, _ in lines]
    assert times == sorted(times), answer
    assert len(log_lines(con.command("log 2", "lines kept (ring of"))) == 2
    assert "ERR n must be 1..100, got 0" in con.command("log 0", "ERR")


def test_config_get_and_a_refused_set_change_nothing(rig):
    con, path = rig.con, rig.vb.root / "config.json"
    answer = con.command("config get mqtt.port", "\r\n")
    assert re.search(r"^mqtt\.port %d\r$" % rig.broker.port, answer, re.M), repr(answer)
    assert "ERR unknown: unknown field 'mqtt.nope'" in con.command("config get mqtt.nope", "ERR")
    answer = con.command("config get", "limits.relay_min_on_ms")  # every field
    assert answer.startswith("meters 1: grid\r\n"), answer
    assert re.search(r"^limits\.relay_min_on_ms %d\r$" % DWELL_MS, answer, re.M), answer
    before = path.read_bytes()
    assert "ERR no_session" in con.command("config set mqtt.keepalive_s 120", "ERR")
    login(con)
    answer = con.command("config set mqtt.keepalive_s 5", "ERR")
    assert "ERR range: mqtt.keepalive_s must be 10..3600, got 5" in answer, answer
    answer = con.command("config set mqtt.ping_s 60", "ERR")  # a rule between two fields
    assert "ERR rule: mqtt.ping_s (60) must be below mqtt.keepalive_s (60)" in answer, answer
    assert "ERR type" in con.command("config set mqtt.port x", "ERR")
    assert "ERR read_only" in con.command("config set meters.grid 1", "ERR")
    assert "ERR usage: config set PATH VALUE" in con.command("config set mqtt.port", "ERR")
    assert path.read_bytes() == before
    assert not (rig.vb.root / "config.json.new").exists()


def test_an_accepted_set_is_saved_and_takes_effect_at_the_reboot(rig):
    con, vb = rig.con, rig.vb
    login(con)
    cmark = con.mark()
    answer = con.command("config set mqtt.keepalive_s 120", "takes effect")
    assert "saved: mqtt.keepalive_s 120; takes effect at the next reboot" in answer, answer
    answer = con.command("config set wifi.password hunter2hunter2", "takes effect")
    assert "saved: wifi.password ***;" in answer, answer
    assert "hunter2" not in con.transcript[cmark:]  # never echoed, never logged
    answer = con.command("config get mqtt", "mqtt.keepalive_s")
    assert re.search(r"^mqtt\.keepalive_s 60  \(next boot: 120\)\r$", answer, re.M), answer
    saved = json.loads((vb.root / "config.json").read_text())
    want = json.loads(json.dumps(rig.config))
    want["mqtt"]["keepalive_s"] = 120
    want["wifi"] = {"password": "hunter2hunter2"}
    assert saved == want
    mark, cmark = vb.channel.mark(), con.mark()
    assert "rebooting" in con.command("reboot", "rebooting in")
    vb.channel.wait_kind("boot", since=mark, timeout=20)
    con.wait_log(r"mqtt: connected", since=cmark, timeout=30)
    answer = con.command("config get mqtt.keepalive_s", "mqtt.keepalive_s")
    assert re.search(r"^mqtt\.keepalive_s 120\r$", answer, re.M), answer
    assert "wifi.password ***" in con.command("config get wifi.password", "wifi.password")


def selftest_rows(con):
    answer = con.command("selftest", "\r\nheap  ")
    return dict(re.match(r"(\S+(?: \S+)?) {2,}(.*)\r?$", l).groups() for l in answer.strip("\r\n").split("\r\n"))


def test_selftest_has_one_row_per_check(rig):
    con = rig.con
    rows = wait_until("every check ok", lambda: (lambda r: r if all(
        v.startswith("ok") for v in r.values()) else None)(selftest_rows(con)), timeout=20, pause=1)
    assert sorted(rows) == ["clock", "heap", "journal", "key", "meter grid"], rows
    assert rows["key"].startswith("ok (software key in /state/device.key"), rows
    assert re.match(r"ok \(ntp \d+ s ago", rows["clock"]), rows
    assert re.match(r"ok \(\d+\.\d KB free of 64\.0 KB", rows["journal"]), rows
    assert re.match(r"ok \(\d+\.\d KB free\)", rows["heap"]), rows
    print("selftest: %s" % rows)


def test_the_relay_click_test_asks_first_then_clicks_each_relay_after_its_dwell(rig):
    con, ch = rig.con, rig.vb.channel
    assert "logged out" in con.command("auth logout", "logged out")
    answer = con.command("selftest relays", "confirm, within 30 s")
    assert "battery (gpio 4), ev (gpio 5)" in answer and "leaves the fail-safe released" in answer, answer
    assert "ERR no_session" in con.command("selftest relays confirm", "ERR")
    login(con)
    mark, cmark = ch.mark(), con.mark()
    assert "click test started" in con.command("selftest relays confirm", "click test started")
    done = con.wait_log(r"selftest: relays (.*): (\d+) clicks; fail-safe (\w+)", since=cmark, timeout=30)
    assert done.groups() == ("ok", "4", "released"), done.group(0)
    con.wait_log(r"control: fail-safe over", since=cmark, timeout=10)
    for role in ("relay_battery", "relay_ev_enable"):
        changes = [(e["t"], e["value"]) for e in ch.events[mark:] if e.get("kind") == "out"
                   and e.get("role") == role]
        assert [v for _, v in changes] == [1, 0], (role, changes)
        assert changes[1][0] - changes[0][0] >= DWELL_MS / 1000.0 - SLACK_S, changes
    # the relays one after the other, and the EV pilot paused throughout
    bat = [e["t"] for e in ch.events[mark:] if e.get("role") == "relay_battery" and e.get("kind") == "out"]
    ev = [e["t"] for e in ch.events[mark:] if e.get("role") == "relay_ev_enable" and e.get("kind") == "out"]
    assert bat[1] <= ev[0], (bat, ev)
    pilot = [e["duty_u16"] for e in ch.events[mark:] if e.get("kind") == "pwm" and e.get("role") == "ev_pilot_pwm"]
    assert set(pilot) <= {65535}, pilot
    assert re.findall(r"selftest: (\w+) relay (\w+)", con.transcript[cmark:]) == [
        ("battery", "closed"), ("battery", "open"), ("ev", "closed"), ("ev", "open")]
    assert "ERR selftest relays first" in con.command("selftest relays confirm", "ERR")  # used up


def test_the_log_ring_keeps_the_newest_lines_only(rig):
    con = rig.con
    login(con)
    for _ in range(LOG_LINES + 5):
        con.command("battery auto", "target ")  # each says "technician: battery back to automatic"
    answer = con.command("log 100", "lines kept (ring of")
    lines = log_lines(answer)
    assert len(lines) == LOG_LINES, answer
    # the newest 20 of 25 (a heartbeat may fall among them)
    ours = [t for _, t in lines if t == "technician: battery back to automatic"]
    assert len(ours) >= LOG_LINES - 2, answer
    assert re.search(r"log: last %d of %d lines kept \(ring of %d, \d+ said since boot\)" % (
        LOG_LINES, LOG_LINES, LOG_LINES), answer), answer


def test_a_bare_board_answers_not_configured(deployed):
    # defaults only: no meters, no hub, no control, no key yet
    con = SerialExpect(deployed.link)
    try:
        rows = selftest_rows(con)
        assert sorted(rows) == ["clock", "heap", "journal", "key", "meters"], rows
        for name in ("meters", "key", "clock", "journal"):
            assert rows[name].startswith("- ("), rows
        assert rows["heap"].startswith("ok ("), rows
        assert "ERR no control" in con.command("selftest relays", "ERR")
        assert "ERR no technician login" in con.command("config set heartbeat_s 30", "ERR")
        answer = con.command("config get heartbeat_s", "heartbeat_s")
        assert re.search(r"^heartbeat_s 10\r$", answer, re.M), answer
        assert not (deployed.root / "config.json").exists()
        assert log_lines(con.command("log", "lines kept (ring of 30,")), answer  # the default size
    finally:
        con.close()

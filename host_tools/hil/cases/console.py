"""The technician console: what a technician types first on site. The
board half is the app itself, as it boots; the host half types."""

import re
import time

from host_tools.hil.case import CONSOLE, Skip, needs

ORDER = 10
VIRTUAL_PIN = "4711"  # set on the virtual board, which has none; a real board's comes from --pin


def version_on_host():
    from host_tools.deploy import FIRMWARE

    return re.search(r'VERSION = "([^"]+)"', (FIRMWARE / "gateway/version.py").read_text()).group(1)


def rows(answer):
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^([\w-]+) +(.*?)\s*$", answer, re.M)}


def ask(con, line, *expected, timeout=10.0):
    """Send a console line -> the first prompt-ended answer holding one of `expected`
    (heartbeat lines end in a prompt too, and are passed over)."""
    con.send(line + "\r")
    deadline = time.monotonic() + timeout
    while True:
        answer = con.expect(r"(?s)(.*?)pgw> ", max(0.1, deadline - time.monotonic())).group(1)
        if any(e in answer for e in expected):
            return answer.strip()


@needs(CONSOLE)
def case_help_and_status(hil):
    """help lists the commands; status names this firmware and this board"""
    con = hil.console()
    answer = ask(con, "help", "status")
    listed = {line.split()[0] for line in answer.splitlines() if line.strip()}
    for name in ("help", "status", "reboot", "meters", "config", "relays", "journal", "selftest"):
        assert name in listed, "help does not list %r:\n%s" % (name, answer)
    usage = ask(con, "help config", "config")
    assert "get [PATH]" in usage and "set PATH VALUE" in usage, usage
    status = rows(ask(con, "status", "firmware"))
    hil.log("status: %r" % status)
    assert status["firmware"] == version_on_host(), status
    assert status["board"].split()[0] == hil.target.board.name, status
    assert re.fullmatch(r"\d+ s", status["uptime"]), status
    assert re.match(r"[\d.]+ KB free, [\d.]+ KB used", status["heap"]), status
    assert int(status["boots"]) >= 1, status
    assert "config" not in status, "the board says its config has bad fields: %s" % status.get("config")
    nosuch = ask(con, "no_such_command", "ERR")
    assert nosuch.startswith("ERR"), nosuch


@needs(CONSOLE)
def case_config_set_is_checked_and_refusals_change_nothing(hil):
    """config set: refused without a login, refused with its reason for a bad value; nothing changes"""
    con = hil.console()
    before = ask(con, "config get", "watchdog_ms")
    assert re.search(r"^watchdog_ms +\d+", before, re.M), before
    assert "next boot" not in before, before
    refused = ask(con, "config set watchdog_ms 500", "ERR")
    if refused.startswith("ERR no technician login"):  # no signing key or hub on this board
        assert ask(con, "config get", "watchdog_ms") == before
        raise Skip("refused, but the rest needs a technician login, which needs the device's signing key "
                   "and a hub configured (docs/control.md): %s" % refused)
    assert refused.startswith("ERR no_session"), refused
    pin = getattr(hil.target, "pin", None)
    if hil.target.kind == "virtual":
        pin = VIRTUAL_PIN
        answer = ask(con, "auth setpin %s" % pin, "PIN", "ERR")
        hil.log("auth setpin -> %s" % answer)
    if pin is None:
        raise Skip("logging in needs the board's technician PIN: pass --pin")
    login = ask(con, "auth pin %s" % pin, "logged in", "ERR")
    assert "logged in" in login, "auth pin refused: %s" % login
    try:
        bad = ask(con, "config set watchdog_ms 500", "ERR", "saved")
        hil.log("config set watchdog_ms 500 -> %s" % bad)
        assert bad == "ERR range: watchdog_ms must be 1000..60000, got 500", bad
        unknown = ask(con, "config set no_such_field 1", "ERR", "saved")
        assert unknown.startswith("ERR unknown"), unknown
        rule = ask(con, "config set limits.soc_min_pct 99", "ERR", "saved")
        hil.log("config set limits.soc_min_pct 99 -> %s" % rule)
        assert rule.startswith("ERR limits: "), rule
        after = ask(con, "config get", "watchdog_ms")
        assert after == before, "the config changed although every set was refused:\n%s" % after
    finally:
        ask(con, "auth logout", "logged out", "ERR")

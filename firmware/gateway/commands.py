# The technician console's commands (docs/console.md): the table that
# checks each line's arguments, and the handlers, which read the app's
# state. Loaded for one console line and dropped after it (App.dispatch):
# the handlers, their help texts and argument specs are several KB that
# the app needs only while a technician types.

import asyncio
import machine

from gateway import boot, usbconsole
from gateway.app import kb
from gateway.version import VERSION
from techconsole import Arg, CommandTable, ConsoleError, table


def dispatch(app, line):
    # -> the answer's lines
    t = CommandTable()

    def add(name, handler, summary, args=()):
        t.add(name, lambda *values: handler(app, *values), summary, args)

    add("status", cmd_status, "firmware, code, board, uptime, heap, boots, reset cause")
    add("reboot", cmd_reboot, "restart the gateway (machine.reset)", (Arg("delay_ms", "int", 0, 60000, optional=True),))
    add("meters", cmd_meters,
        "meter states and key readings; NAME: all of one meter; NAME profile [hours]: its load profile (default 24 h)",
        (Arg("name", optional=True, maxlen=16), Arg("what", "choice", choices=("profile",), optional=True),
         Arg("hours", "int", 1, 1080, optional=True)))
    add("identity", cmd_identity, "the device's signing key: kid and public COSE_Key; provision: make it, once",
        (Arg("what", "choice", choices=("provision",), optional=True),))
    add("net", cmd_net, "WiFi, MQTT, round trip, reconnects, uplink and NTP counters")
    add("journal", cmd_journal, "store-and-forward journal: depth, oldest unacknowledged, capacity")
    add("trades", cmd_trades, "trading: the current interval, the plans and orders ahead, settlements, balance")
    add("relays", cmd_relays, "the battery and EV relays: state, why, switch counts, pins")
    add("ev", cmd_ev, "EV charging: pilot, current, target and its source; MA (0, 6000..32000) or auto: "
        "the technician's target (needs auth)", (Arg("target", optional=True, maxlen=8),))
    add("battery", cmd_battery, "battery: setpoint, target and its source, SoC; W (+ charge, - discharge) or auto: "
        "the technician's target (needs auth)", (Arg("target", optional=True, maxlen=8),))
    add("safe", cmd_safe, "hold the fail-safe (EV paused, battery idle, relays open); off: release it (needs auth)",
        (Arg("what", "choice", choices=("off",), optional=True),))
    add("auth", cmd_auth, "technician login: status, pin DIGITS, challenge, respond HEX, logout, setpin DIGITS",
        (Arg("what", "choice", choices=("status", "pin", "challenge", "respond", "logout", "setpin"), optional=True),
         Arg("arg", optional=True, maxlen=64)))
    add("log", cmd_log, "the last N console log lines (default 20), uptime s first",
        (Arg("n", "int", 1, 100, optional=True),))
    # one word per argument: a value with spaces cannot be set here (docs/console.md)
    add("config", cmd_config, "get [PATH]: the values in effect; set PATH VALUE: "
        "saved to /config.json for the next reboot (needs auth)",
        (Arg("what", "choice", choices=("get", "set")), Arg("path", optional=True, maxlen=48),
         Arg("value", optional=True, maxlen=80)))
    add("selftest", cmd_selftest, "meters, key, clock, journal, heap: ok or FAIL; "
        "relays [confirm]: click each relay once (confirm needs auth)",
        (Arg("what", "choice", choices=("relays",), optional=True),
         Arg("confirm", "choice", choices=("confirm",), optional=True)))
    return t.dispatch(line)


def cmd_status(app):
    rows = [
        ("firmware", VERSION),
        # where the code runs from: the ROM partition (in place) or .mpy files (in the heap)
        ("code", "rom partition" if globals().get("__file__", "").startswith("/rom/") else "files"),
        ("board", "%s (%s)" % (app.board.name, app.board.title)),
        ("uptime", "%d s" % (app.mono.ms() // 1000)),
        ("heap", app.heap_line() + " (32-bit equivalent)"),
        ("boots", boot.record.boots),
        ("reset", boot.reset_cause_name()),
    ]
    if app.hub is not None:
        rows.append(("clock", app.hub.clock_line()))
    if boot.config_errors:
        rows.append(("config", "; ".join(boot.config_errors)))
    return table(rows)

def _need_hub(app):
    if app.hub is None:
        raise ConsoleError("no hub link: %s" % app.hub_problem)
    return app.hub

def cmd_net(app):
    return table(_need_hub(app).net_rows())

def cmd_journal(app):
    st = _need_hub(app).uplink.stats()
    rows = [("depth", "%d unacknowledged" % st["records"]),
            ("oldest", "-" if not st["records"] else "seq %d" % st["oldest"]),
            ("newest", "-" if st["newest"] is None else "seq %d" % st["newest"]),
            ("next seq", st["next_seq"]),
            ("capacity", "%s used of %s, %d segments" % (kb(st["bytes"]), kb(st["capacity"]),
                                                        st["segments"])),
            ("sent", "%d published, %d acked" % (st["published"], st["acks"]))]
    losses = ["%s %d" % (k, st[k]) for k in ("dropped", "refused", "corrupt", "lost", "torn") if st[k]]
    rows.append(("losses", ", ".join(losses) or "none"))
    if app.readings is not None:
        rows.append(("readings", "%d intervals journaled, %d samples before the clock was set" % (
            app.readings.signed, app.readings.unsynced)))
    return table(rows)

def cmd_identity(app, what=None):
    # Only the public half is ever shown; the private key stays in its file.
    from gateway import keys

    try:
        key = keys.provision() if what == "provision" else keys.load()
    except keys.KeyProviderError as e:
        raise ConsoleError(str(e))
    if key is None:
        return "no signing key yet: `identity provision` makes one on this device"
    import cose

    pub = key.public_key()
    return table((("kid", key.kid.hex()),
                  ("provider", key.describe()),
                  ("cose_key", cose.encode_key(*pub).hex())))

def cmd_meters(app, name=None, what=None, hours=None):
    if app.meters is None:
        return "no meters configured" + (" (config errors: see status)" if boot.config_errors else "")
    if name is None:
        return app.meters.summary()
    h = app.meters.find(name)
    if h is None:
        raise ConsoleError("no meter %r; meters: %s" % (name, ", ".join(m.name for m in app.meters.meters)))
    if what == "profile":
        start = getattr(h.driver, "start_profile", None)
        if start is None:
            raise ConsoleError("meter %s has no load profile" % name)
        from gateway.meters import MeterError

        try:
            # Answers at once; the rows follow through say() as they arrive.
            return start(hours or 24, usbconsole.say)
        except MeterError as e:
            raise ConsoleError("profile %s: %s" % (name, e))
    return app.meters.details(h)

def _need_control(app):
    if app.control is None:
        raise ConsoleError("no control: control.grid_meter is not set")
    return app.control

def _need_tech(app):
    if app.tech is None:
        if app._kid is None:
            raise ConsoleError("no technician login without a signing key and hub link")
        from gateway.technician import Technician

        app.tech = Technician(app._kid, app.mono, usbconsole.say)
    return app.tech

def cmd_trades(app):
    if app.trading is None:
        return "no trading: %s" % app.trading_problem
    return table(app.trading.rows())

def cmd_relays(app):
    rows = list(_need_control(app).relay_rows())
    if app.gate is not None:
        counts = app.gate.counts()
        refused = ["%s %d" % (k, counts[k]) for k in sorted(counts) if k != "accepted" and counts[k]]
        rows.append(("commands", "%d accepted, last seq %d; refused: %s" % (
            counts["accepted"], app.gate.last_seq, ", ".join(refused) or "none")))
    return table(rows)

def _manual(app, text, kind, lo, hi, what):
    c = _need_control(app)
    if text is None:
        return False
    _need_tech(app).require()
    if text == "auto":
        c.set_manual(kind, None)
        usbconsole.say("technician: %s back to automatic" % what)
        return True
    try:
        value = int(text)
    except ValueError:
        raise ConsoleError("%s takes a whole number or auto, got %r" % (what, text))
    if not lo <= value <= hi or (kind == "ev_ma" and 0 < value < 6000):
        raise ConsoleError("%s must be %s, got %d" % (what, "0 or 6000..32000" if kind == "ev_ma"
                                                       else "%d..%d" % (lo, hi), value))
    c.set_manual(kind, value)
    usbconsole.say("technician: %s target %d" % (what, value))
    return True

def cmd_ev(app, target=None):
    _manual(app, target, "ev_ma", 0, 32000, "ev")
    return table(app.control.ev_rows())

def cmd_battery(app, target=None):
    _manual(app, target, "battery_w", -50000, 50000, "battery")
    return table(app.control.battery_rows())

def cmd_safe(app, what=None):
    c = _need_control(app)
    if what == "off":
        _need_tech(app).require()
        c.clear_safe()
        usbconsole.say("technician: fail-safe released")
        return "fail-safe released: the dispatcher decides again"
    c.request_safe()  # going safe needs no login
    usbconsole.say("console: fail-safe requested")
    return "fail-safe held: EV paused, battery idle, relays open once their dwell allows"

def cmd_auth(app, what="status", arg=None):
    return _need_tech(app).cmd_auth(what, arg)

def cmd_log(app, n=20):
    ring = usbconsole.ring
    # Written line by line: a 100-line answer as one list would not fit the heap.
    usbconsole.write("log: last %d of %d lines kept (ring of %d, %d said since boot)\r\n" % (
        min(n, ring.kept), ring.kept, ring.size, ring.said))
    for t, text in ring.tail(n):
        usbconsole.write("%6d  %s\r\n" % (t, text.replace("\r", " ").replace("\n", " ")))

def cmd_config(app, what, path=None, value=None):
    from gateway import settings

    if what == "get":
        if value is not None:
            raise ConsoleError("usage: config get [PATH]")
        return settings.show(path)
    if path is None or value is None:
        raise ConsoleError("usage: config set PATH VALUE (one word; \"\" for empty)")
    _need_tech(app).require()
    line = settings.save(path, value)
    usbconsole.say("console: config %s saved for the next reboot" % line)
    return "saved: %s; takes effect at the next reboot" % line

def cmd_selftest(app, what=None, confirm=None):
    from gateway import selftest  # dropped after the line, with the modules its checks load

    if what is None:
        return selftest.rows(app)
    if app._clicks is None:
        app._clicks = selftest.RelayClick(_need_control(app), app.board, app.mono, usbconsole.say)
    if confirm is None:
        return app._clicks.plan()
    _need_tech(app).require()
    return app._clicks.confirm()


def cmd_reboot(app, delay_ms=100):
    asyncio.create_task(_reboot(delay_ms))
    return "rebooting in %d ms" % delay_ms

async def _reboot(delay_ms):
    await asyncio.sleep_ms(delay_ms)
    machine.reset()

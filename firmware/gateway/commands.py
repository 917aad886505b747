# The technician console's commands (docs/console.md): the table that
# checks each line's arguments, and the handlers, which read the app's
# state. Loaded for one console line and dropped after it (App.dispatch):
# the handlers, their help texts and argument specs are several KB that
# the app needs only while a technician types.

import asyncio
import machine

import evse
from compat import ticks_ms
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
    add("identity", cmd_identity, "the device's signing key: kid and public COSE_Key; provision: make it, once; "
        "rotate KID: a new key in its place; wipe KID: delete key and config, reboot",
        (Arg("what", "choice", choices=("provision", "rotate", "wipe"), optional=True),
         Arg("kid", optional=True, maxlen=16)))
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
    if boot.rom_slot is not None:
        rows.append(("ota", _ota_line()))
    dl = app.ota
    if dl is not None and dl.target is not None and dl.reader is not None:
        rows.append(("download", "%d of %d bytes" % (dl.reader.offset, dl.target[1])))
    if app.hub is not None:
        rows.append(("clock", app.hub.clock_line()))
    if boot.config_errors:
        rows.append(("config", "; ".join(boot.config_errors)))
    return table(rows)


def _ota_line():
    # The code slot that runs and the slot record's state, read as text
    # (without lib/otaslots: this answer stays small; docs/ota.md).
    rec = {}
    try:
        with open("/state/ota.txt") as f:
            for field in f.read(200).split():
                key, _, value = field.partition("=")
                rec[key] = value
    except OSError:
        pass
    line = "slot %d, seq %s" % (boot.rom_slot, rec.get("seq", "0"))
    if rec.get("slot", "0") != "%d" % boot.rom_slot:
        line += " (the record names slot %s)" % rec.get("slot")
    if rec.get("trial") == "1":
        line += ", on trial: rolls back to seq %s unless healthy" % rec.get("prev_seq")
    if rec.get("stage"):
        line += ", seq %s %s" % (rec["stage"], "staged" if rec.get("ready") == "1" else "being written")
    if rec.get("failed"):
        line += ", seq %s rolled back" % rec["failed"]
    return line


def _need_hub(app):
    if app.hub is None:
        raise ConsoleError("no hub link: %s" % app.hub_problem)
    return app.hub


def cmd_net(app):
    return table(_net_rows(_need_hub(app)))


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


def cmd_identity(app, what=None, kid=None):
    # Only the public half is ever shown; the private key stays in its file.
    from gateway import keys

    rows = ()
    if what == "rotate" or what == "wipe":
        from gateway import identity  # the kid confirms; dropped after the line

        try:
            if what == "wipe":
                return "wiped: key %s deleted, config reset to defaults; rebooting" % identity.wipe(kid).hex()
            old, key = identity.rotate(kid)
        finally:
            boot.forget_modules(("gateway.identity",))
        rows = (("old kid", "%s (replaced; the new key signs from the next reboot)" % old.hex()),)
    elif kid is not None:
        raise ConsoleError("usage: identity [provision|rotate KID|wipe KID]")
    else:
        try:
            key = keys.provision() if what == "provision" else keys.load()
        except keys.KeyProviderError as e:
            raise ConsoleError(str(e))
        if key is None:
            return "no signing key yet: `identity provision` makes one on this device"
    import cose

    pub = key.public_key()
    return table(rows + (("kid", key.kid.hex()),
                         ("provider", key.describe()),
                         ("cose_key", cose.encode_key(*pub).hex())))


def cmd_meters(app, name=None, what=None, hours=None):
    if app.meters is None:
        return "no meters configured" + (" (config errors: see status)" if boot.config_errors else "")
    if name is None:
        return _meters_summary(app.meters)
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
    return _meter_details(h)


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
    return table(_trading_rows(app.trading))


def cmd_relays(app):
    rows = list(_relay_rows(_need_control(app)))
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
    return table(_ev_rows(app.control))


def cmd_battery(app, target=None):
    _manual(app, target, "battery_w", -50000, 50000, "battery")
    return table(_battery_rows(app.control))


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
    from gateway import selftest  # dropped after the line (App.dispatch)

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


# ---- the reports the handlers show ----


def _relay_rows(c):
    d = c.dispatcher
    if d is None:
        return (("control", "off: %s" % c.problem),)
    rows = []
    for name, guard, role in (("battery", d.battery_relay, "relay_battery"),
                              ("ev", d.ev_relay, "relay_ev_enable")):
        pin = "-"
        if c.board.has(role):
            pin = "gpio %d=%d" % (c.board.gpio(role), c.board.output(role).value())
        rows.append((name, "%s (%s), %d switches, %d deferred, %s%s" % (
            "closed" if guard.closed else "open", guard.reason or "as asked", guard.switches,
            guard.deferred, pin, ", latched" if guard.latched else "")))
    rows.append(("fail-safe", c.act.failsafe if c.act and c.act.failsafe else "no"))
    return rows


def _source(c, kinds):
    for k in kinds:
        if k in c.manual:
            return "technician (%s, %d s left)" % (k, (c.manual[k][1] - c.mono.ms()) // 1000)
    for k in kinds:
        if k in c.commands:
            return "hub command seq %d (%s)" % (c.commands[k].seq, k)
    return "trading agent"


def _ev_rows(c):
    a = c.act
    rows = [("pilot", c._pilot or "-"),
            ("current", "-" if a is None else "%d mA (%s)" % (a.ev_ma, a.ev_reason or "as asked")),
            ("target", "%s from %s" % (_ma(_targets_ev(c)), _source(c, ("ev_ma", "ev_relay"))))]
    if c.pwm is not None:
        rows.append(("drive", "pilot PWM %d Hz, duty %d/65535" % (
            c.pwm.freq(), a.ev_duty_u16 if a else evse.PAUSE_DUTY)))
    elif c.ev is not None:
        dv = c.ev_dev
        rows.append(("drive", "%s setpoint, %d writes, %d errors%s" % (
            c.ev.name, dv.writes, dv.errors, (" (" + dv.last_error + ")") if dv.errors else "")))
    if c.live is not None:
        rows.append(("session", "%d Wh since plug-in" % c.live.ev_session_wh))
    return rows


def _targets_ev(c):
    return c.targets(c.mono.ms()).ev_ma if c.limits else None


def _battery_rows(c):
    a, lv = c.act, c.live
    t = c.targets(c.mono.ms()).battery_w if c.limits else None
    rows = [("setpoint", "-" if a is None else "%+d W (%s)" % (a.battery_w, a.battery_reason or "as asked")),
            ("target", "%s from %s" % ("-" if t is None else "%+d W" % t,
                                       _source(c, ("battery_w", "battery_relay"))))]
    if lv is not None:
        rows.append(("measured", "%+d W, SoC %d %%" % (lv.battery_w, lv.soc_pct)))
    if c.battery is not None:
        dv = c.bat_dev
        rows.append(("drive", "%s storage model, %d writes, %d errors%s" % (
            c.battery.name, dv.writes, dv.errors, (" (" + dv.last_error + ")") if dv.errors else "")))
    return rows


def _ma(v):
    return "-" if v is None else "%d mA" % v


def _trading_rows(tr):
    now_s = tr.hub.now_s()
    rows = []
    for i, line in enumerate(tr.agent.explain(now_s).split("\n")):
        rows.append(("plan" if i == 0 else "", line))
    rows += [("counts", "%d orders, %d trades, %d refused; %d blocks witnessed, %d requests refused%s" % (
                tr.orders, tr.trades, tr.refused, tr.witnessed, tr.witness_refused,
                " (" + tr.witness_error + ")" if tr.witness_error else "")),
             ("balance", "%+d micro-units" % tr.balance)]
    for tid, wh, amount, status in tr.settlements:
        rows.append(("settled", "trade %d: %d Wh, %+d, %s" % (
            tid, wh, amount, ("in full", "partial", "failed")[status])))
    return rows


def _meters_summary(ms):
    # The `meters` table: one row per meter, key values, error total.
    now = ticks_ms()
    rows = [("name", "protocol", "state", "age", "power_w", "import_wh", "export_wh", "soc", "errors")]
    for h in ms.meters:
        v = h.values
        age = h.age_ms(now)
        power = v.get("power_w", v.get("inverter_power_w"))
        soc = v.get("battery_soc_permille")
        errs = h.error_total()
        last = h.last_error.split(":")[0] if errs else ""
        rows.append((h.name, h.cfg["protocol"], h.state(now),
                     "-" if age is None else "%ds" % (age // 1000),
                     _num(power), _num(v.get("energy_import_wh")), _num(v.get("energy_export_wh")),
                     "-" if soc is None else "%d.%d%%" % (soc // 10, soc % 10),
                     "%d%s" % (errs, " (last " + last + ")" if last else "")))
    return _columns(rows)


def _meter_details(h):
    now = ticks_ms()
    age = h.age_ms(now)
    rows = [("name", h.name), ("protocol", h.cfg["protocol"]), ("state", h.state(now))]
    if h.problem:
        rows.append(("problem", h.problem))
    if h.driver is not None:
        try:
            rows.extend(h.driver.info())
        except Exception as e:  # the report must not fail for a driver's sake
            rows.append(("info", "%s: %s" % (type(e).__name__, e)))
    rows.append(("period", "%d s, timeout %d ms, %d retries" % (
        h.cfg["period_s"], h.cfg["timeout_ms"], h.cfg.get("retries", 0))))
    rows.append(("last good", "never" if age is None else "%d.%d s ago, time %d" % (
        age // 1000, age % 1000 // 100, h.good_time)))
    rows.append(("polls", "%d: %d good, %d failed in a row" % (h.polls, h.good, h.fails)))
    errs = " ".join("%s=%d" % (k, h.errors[k]) for k in sorted(h.errors))
    rows.append(("errors", errs or "none"))
    if h.last_error:
        rows.append(("last error", h.last_error))
    for q in sorted(h.values):
        rows.append((q, h.values[q]))
    return _columns(rows)


def _num(v):
    return "-" if v is None else str(v)


def _columns(rows):
    # Left-aligned columns, two spaces apart.
    n = len(rows[0])
    widths = [0] * n
    for r in rows:
        for i in range(n - 1):
            if len(str(r[i])) > widths[i]:
                widths[i] = len(str(r[i]))
    out = []
    for r in rows:
        line = ""
        for i in range(n - 1):
            s = str(r[i])
            line += s + " " * (widths[i] - len(s) + 2)
        out.append(line + str(r[n - 1]))
    return out


def _net_rows(hub):
    link, up = hub.link, hub.uplink
    rtt = "-" if link.rtt_ms is None else "%d ms" % link.rtt_ms
    ha = getattr(hub, "ha", None)  # set by the app when Home Assistant discovery is on
    return (("wifi", hub.wifi.describe()),
            ("mqtt", "%s %s:%d, %d connects, %d failures, rtt %s" % (
                link.state, hub.config["mqtt"]["host"], hub.config["mqtt"]["port"], link.connects,
                link.failures, rtt)),
            ("last error", link.last_error or "-"),
            ("uplink", "%d published, %d acked, %d duplicate acks, %d refused" % (
                up.published, up.acks, up.duplicate_acks, up.rejected)),
            ("ntp", "%d syncs, %d failures%s" % (hub.ntp_ok, hub.ntp_failures,
                                                (" (" + hub.ntp_error + ")") if hub.ntp_error else ""))) + \
        ((("ha", ha.describe()),) if ha is not None else ())

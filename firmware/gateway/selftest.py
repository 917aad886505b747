# The console's `selftest` (docs/console.md): one row per check, "ok",
# "FAIL: why" or "-" (not configured), and the relay click test, which
# switches each relay through the dispatcher (lib/envelope click()), so
# every RelayGuard's dwell and rate still apply.
import gc

import asyncio

import envelope
from compat import const, heap_free_alloc32, ticks_ms
from gateway.app import kb
from relay import RATE
from techconsole import ConsoleError, table

_STALE_PERIODS = const(3)  # a meter is ok with a good reading in the last 3 poll periods
_DRIFT_MAX_PPM = const(500)  # a crystal is within ~100 ppm; more means a broken clock
_HEAP_MIN = const(16384)  # below this a signature table or a TLS handshake no longer fits
_CONFIRM_MS = const(30000)
_IDLE_WAIT_MS = const(10000)  # for the hold's setpoints to be written and the devices to stop
_RELAYS = (("battery", "relay_battery"), ("ev", "relay_ev_enable"))


def rows(app):
    out = _meter_rows(app.meters)
    out.append(("key", _key(app)))
    hub = app.hub
    if hub is None:
        none = "- (no hub link: %s)" % app.hub_problem
        out.append(("clock", none))
        out.append(("journal", none))
    else:
        out.append(("clock", _clock(hub, app.mono.ms())))
        out.append(("journal", _journal(hub.journal.stats())))
    out.append(("heap", _heap()))
    return table(out)


def _meter_rows(meters):
    if meters is None:
        return [("meters", "- (none configured)")]
    now = ticks_ms()
    out = []
    for h in meters.meters:
        out.append(("meter " + h.name, _meter(h, now)))
    return out


def _meter(h, now):
    if h.problem:
        return "FAIL: not running: " + h.problem
    age = h.age_ms(now)
    err = " (last error %s)" % h.last_error if h.last_error else ""
    if age is None:
        return "FAIL: no good reading yet" + err
    # the same bound as the `meters` state "stale": one answer's timeout of slack
    if age > _STALE_PERIODS * h.cfg["period_s"] * 1000 + h.cfg["timeout_ms"]:
        return "FAIL: last good reading %d s ago%s" % (age // 1000, err)
    return "ok (read %d.%d s ago)" % (age // 1000, age % 1000 // 100)


def _key(app):
    # Sign a fixed digest with the device's key provider and verify it.
    import hashlib

    import cose
    import p256

    key = app.hub.key if app.hub is not None else None
    if key is None:
        from gateway import keys

        try:
            key = keys.load()
        except keys.KeyProviderError as e:
            return "FAIL: " + str(e)
        if key is None:
            return "- (no signing key: identity provision)"
    digest = hashlib.sha256(b"pgw selftest").digest()
    try:
        pub = key.public_key()
        p256.verify_digest(pub, digest, key.sign_digest(digest))
        if cose.device_id(*pub) != key.kid:
            return "FAIL: the kid is not the public key's"
    except Exception as e:  # any provider's error (a chip's, I/O, a bad signature) is the finding
        return "FAIL: %s: %s" % (type(e).__name__, e)
    finally:
        if app.hub is None:
            p256.free_table()  # nothing else signs: give its table back
    return "ok (%s)" % key.describe()


def _clock(hub, now):
    clock = hub.clock
    line = hub.clock_line()
    if not clock.synced(now):
        return "FAIL: " + line
    if clock.drift_ppm is not None and abs(clock.drift_ppm) > _DRIFT_MAX_PPM:
        return "FAIL: drift beyond %d ppm: %s" % (_DRIFT_MAX_PPM, line)
    return "ok (%s)" % line


def _journal(st):
    room = "%s free of %s" % (kb(st["free"]), kb(st["capacity"]))
    bad = ["%s %d" % (k, st[k]) for k in ("corrupt", "lost") if st[k]]
    if st["state_lost"]:
        bad.append("acknowledgement state lost")
    if bad:
        return "FAIL: %s; %s" % (", ".join(bad), room)
    if st["free"] < st["capacity"] // 8:
        return "FAIL: nearly full, %s" % room
    # a torn record is what a power cut mid-write leaves; the journal recovered it
    return "ok (%s%s)" % (room, ", %d torn at open" % st["torn"] if st["torn"] else "")


def _heap():
    gc.collect()
    free = heap_free_alloc32()[0]
    if free is None:
        return "- (not MicroPython)"
    if free < _HEAP_MIN:
        return "FAIL: %s free, below %s" % (kb(free), kb(_HEAP_MIN))
    return "ok (%s free)" % kb(free)


class RelayClick:
    # `selftest relays` arms, `selftest relays confirm` (within 30 s, with
    # a technician's login) runs: the fail-safe held, then each relay to its
    # other state and back, each click reported, the hold left as it was.
    def __init__(self, control, board, mono, log):
        if control.dispatcher is None:
            raise ConsoleError("no dispatcher: %s" % control.problem)
        self.control = control
        self.board = board
        self.mono = mono
        self.log = log
        self.relays = [(n, r) for n, r in _RELAYS if board.has(r)]
        if not self.relays:
            raise ConsoleError("board %s has no relays" % board.name)
        self.armed_ms = None
        self.running = False

    def plan(self):
        d = self.control.dispatcher
        lim = d.limits
        self.armed_ms = self.mono.ms()
        return ["relay click test: holds the fail-safe (EV paused, battery idle), then switches",
                "  %s to the other state and back," % ", ".join(
                    "%s (gpio %d)" % (n, self.board.gpio(r)) for n, r in self.relays),
                "  each after its dwell (min_off %d ms, min_on %d ms), and leaves the fail-safe %s" % (
                    lim.relay_min_off_ms, lim.relay_min_on_ms, "held" if d.held() else "released"),
                "to go ahead: selftest relays confirm, within 30 s (needs auth)"]

    def confirm(self):
        if self.running:
            raise ConsoleError("the relay click test is running")
        armed, self.armed_ms = self.armed_ms, None
        if armed is None or self.mono.ms() - armed > _CONFIRM_MS:
            raise ConsoleError("selftest relays first, then selftest relays confirm within 30 s")
        self.running = True
        asyncio.create_task(self._run())
        return "relay click test started: each click follows as a selftest line"

    async def _run(self):
        c = self.control
        d = c.dispatcher
        held_before = d.held()
        clicks = 0
        why = None
        try:
            c.request_safe()
            why = await self._idle()
            for name, role in self.relays:
                if why:
                    break
                guard = d.battery_relay if name == "battery" else d.ev_relay
                for closed in (not guard.closed, guard.closed):
                    why = await self._switch(name, role, guard, closed)
                    if why:
                        break
                    clicks += 1
        except Exception as e:  # a bug here must still give the hold back below
            why = "%s: %s" % (type(e).__name__, e)
        finally:
            d.click(None)
            if d.held() is not None:  # released meanwhile by `safe off`: left so
                if held_before is None:
                    c.clear_safe()
                else:
                    d.request_safe(held_before)
            self.running = False
        self.log("selftest: relays %s: %d clicks; fail-safe %s" % (
            "FAIL: " + why if why else "ok", clicks, "held" if d.held() else "released"))

    async def _idle(self):
        # -> None once the hold has run two steps (its setpoints written)
        # and nothing draws, else why not after _IDLE_WAIT_MS.
        c = self.control
        first = c.steps
        until = self.mono.ms() + _IDLE_WAIT_MS
        while True:
            await asyncio.sleep_ms(c.period_ms // 2)
            if c.dispatcher.held() is None:
                return "the fail-safe was released"
            why = "the fail-safe hold has not run yet"
            if c.steps >= first + 2 and c.act is not None and c.act.failsafe:
                why = self._busy()
                if why is None:
                    return None
            if self.mono.ms() > until:
                return why

    def _busy(self):
        c = self.control
        if c.battery is not None and c.battery.driver is not None and c.bat_dev.value != 0:
            return "the inverter has not taken 0 W (%s)" % (c.bat_dev.last_error or "not written")
        if c.ev is not None and c.ev.driver is not None and c.ev_dev.value != 0:
            return "the wallbox has not taken 0 mA (%s)" % (c.ev_dev.last_error or "not written")
        who = envelope.running(c.live)
        if who == "ev":
            return "the EV still draws %d mA" % c.live.ev_ma
        if who == "battery":
            return "the battery still runs at %+d W" % c.live.battery_w
        return None

    def _active(self, role):
        level = self.board.output(role).value()
        return level ^ (1 if self.board.pins[role].get("active_low") else 0) == 1

    async def _switch(self, name, role, guard, closed):
        # One click: asked through the dispatcher, done once the output shows it.
        c = self.control
        d = c.dispatcher
        d.click(name, closed)
        asked = c.steps
        start = self.mono.ms()
        dwell = guard.min_off_ms if closed else guard.min_on_ms
        wait = guard.changed_ms + dwell - start
        until = start + (wait if wait > 0 else 0) + 5 * c.period_ms + 2000
        state = "closed" if closed else "open"
        while True:
            await asyncio.sleep_ms(c.period_ms // 2)
            if d.held() is None:
                return "the fail-safe was released"
            if c.steps > asked and guard.reason == RATE:
                return "%s relay: the rate limit (%d switchings in %d s) defers it" % (
                    name, guard.max_switches, guard.window_ms // 1000)
            if guard.closed == closed and self._active(role) == closed:
                break
            if self.mono.ms() > until:
                return "%s relay not %s in time (%s)" % (name, state, guard.reason or "no step")
        self.log("selftest: %s relay %s (gpio %d) after %d ms" % (
            name, state, self.board.gpio(role), self.mono.ms() - start))
        return None

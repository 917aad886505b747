# The gateway app: an asyncio loop with the watchdog, the heartbeat and
# the technician console. Later capabilities add their tasks here.
import gc
import sys

import asyncio
import machine

from compat import const, heap_free_alloc32, print_exception
from gateway import boot, usbconsole
from gateway.monotonic import Monotonic
from gateway.version import VERSION
from techconsole import Arg, CommandTable, ConsoleError, table


def _kb(nbytes):
    return "%d.%d KB" % (nbytes // 1024, nbytes % 1024 * 10 // 1024)


def _drop_config_modules():
    # meterconfig, deviceconfig and gateway.config are used once, at boot
    for name in ("meterconfig", "deviceconfig", "gateway.config"):
        sys.modules.pop(name, None)
    for mod, attr in ((boot, "_config"), (sys.modules.get("gateway"), "config")):
        try:
            delattr(mod, attr)
        except (AttributeError, TypeError):
            pass
    gc.collect()


# in gateway.boot.STATE_DIR, spelt out: const() folds no concatenation
_CMD_SEQ = const("/state/command.seq")  # the last accepted COMMAND's seq


def _load_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _save_int(path, n):
    boot.write_atomic(path, "%d\n" % n)


class App:
    def __init__(self):
        self.config = boot.config
        self.board = boot.board
        self.mono = Monotonic(boot.boot_ticks)
        self.crash = None
        self.crashed = asyncio.Event()
        self.commands = CommandTable()
        self.commands.add("status", self.cmd_status, "firmware, code, board, uptime, heap, boots, reset cause")
        self.commands.add("reboot", self.cmd_reboot, "restart the gateway (machine.reset)",
                          (Arg("delay_ms", "int", 0, 60000, optional=True),))
        self.commands.add("meters", self.cmd_meters,
                          "meter states and key readings; NAME: all of one meter; NAME profile [hours]: "
                          "its load profile (default 24 h)",
                          (Arg("name", optional=True, maxlen=16),
                           Arg("what", "choice", choices=("profile",), optional=True),
                           Arg("hours", "int", 1, 1080, optional=True)))
        self.commands.add("identity", self.cmd_identity,
                          "the device's signing key: kid and public COSE_Key; provision: make it, once",
                          (Arg("what", "choice", choices=("provision",), optional=True),))
        self.commands.add("net", self.cmd_net, "WiFi, MQTT, round trip, reconnects, uplink and NTP counters")
        self.commands.add("journal", self.cmd_journal,
                          "store-and-forward journal: depth, oldest unacknowledged, capacity")
        self.commands.add("trades", self.cmd_trades,
                          "trading: the current interval, the plans and orders ahead, settlements, balance")
        self.commands.add("relays", self.cmd_relays, "the battery and EV relays: state, why, switch counts, pins")
        self.commands.add("ev", self.cmd_ev,
                          "EV charging: pilot, current, target and its source; MA (0, 6000..32000) or auto: "
                          "the technician's target (needs auth)", (Arg("target", optional=True, maxlen=8),))
        self.commands.add("battery", self.cmd_battery,
                          "battery: setpoint, target and its source, SoC; W (+ charge, - discharge) or auto: "
                          "the technician's target (needs auth)", (Arg("target", optional=True, maxlen=8),))
        self.commands.add("safe", self.cmd_safe, "hold the fail-safe (EV paused, battery idle, relays open); "
                          "off: release it (needs auth)", (Arg("what", "choice", choices=("off",), optional=True),))
        self.commands.add("auth", self.cmd_auth,
                          "technician login: status, pin DIGITS, challenge, respond HEX, logout, setpin DIGITS",
                          (Arg("what", "choice", choices=("status", "pin", "challenge", "respond", "logout",
                                                          "setpin"), optional=True),
                           Arg("arg", optional=True, maxlen=64)))
        from gateway.logring import LogRing

        usbconsole.ring = LogRing(self.config["log_lines"], self.mono.ms)  # from here say() keeps its lines
        self.commands.add("log", self.cmd_log, "the last N console log lines (default 20), uptime s first",
                          (Arg("n", "int", 1, 100, optional=True),))
        # one word per argument: a value with spaces cannot be set here (docs/console.md)
        self.commands.add("config", self.cmd_config, "get [PATH]: the values in effect; set PATH VALUE: "
                          "saved to /config.json for the next reboot (needs auth)",
                          (Arg("what", "choice", choices=("get", "set")), Arg("path", optional=True, maxlen=48),
                           Arg("value", optional=True, maxlen=80)))
        self.commands.add("selftest", self.cmd_selftest, "meters, key, clock, journal, heap: ok or FAIL; "
                          "relays [confirm]: click each relay once (confirm needs auth)",
                          (Arg("what", "choice", choices=("relays",), optional=True),
                           Arg("confirm", "choice", choices=("confirm",), optional=True)))
        self._clicks = None  # selftest.RelayClick, made at the first `selftest relays`
        self.meters = None
        self.hub = None
        self.readings = None
        self.control = None
        self.trading = None
        self.trading_problem = "needs control.grid_meter, a hub and household.trading"
        self.gate = None
        self._said_ms = -1000
        self._said = self._unsaid = 0
        self.tech = None
        self._kid = None
        # The config is checked at most once per boot: give the schema modules' heap
        # back before the meter drivers load (a lower peak, less fragmentation).
        _drop_config_modules()
        # The hub link first: the signing key's 8 KB table wants one block
        # of the heap while it is still in one piece.
        self.hub_problem = self._start_hub()
        if self.config.get("meters"):
            # Imported only when configured: the service and its drivers cost heap.
            from gateway.meters.service import MeterService

            self.meters = MeterService(self.config["meters"], self.board, usbconsole.say)
            if self.hub is not None:
                from gateway.readings import IntervalReadings

                self.readings = IntervalReadings(self.meters, self.hub.clock, self.hub.uplink, self.mono,
                                                 self.config["interval_min"], usbconsole.say)
        if self.config["control"]["grid_meter"]:
            from gateway.control import Control

            self.control = Control(self.config, self.board, self.meters, self.mono, usbconsole.say)
            if self.hub is not None:
                hub, offline_ms = self.hub, self.config["mqtt"]["hub_offline_s"] * 1000
                self.control.hub_lost = lambda: hub.unreachable_ms() > offline_ms
                self.control.clock_s = hub.now_s
                if self.config["household"]["trading"] and self.control.dispatcher is not None:
                    self._start_trading()
        self.ha = None
        if self.config["ha_discovery"] and self.hub is not None:
            # Imported only when on: Home Assistant discovery costs no heap by default.
            from gateway.net.homeassistant import HomeAssistant

            # the settled balance; None (HA: unknown) without trading
            self.ha = self.hub.ha = HomeAssistant(self.config, self.hub, self.meters, self.control, VERSION,
                                                  self._balance, usbconsole.say)

    def _balance(self):
        return None if self.trading is None else self.trading.balance

    def _start_hub(self):
        # -> why the gateway does not talk to a hub, or None when it does
        cfg = self.config
        if not cfg["mqtt"]["host"]:
            return "mqtt.host not set"
        if not cfg["hub"]["key"]:
            return "hub.key not set"
        from gateway import keys

        try:
            key = keys.load()
        except keys.KeyProviderError as e:
            return str(e)
        if key is None:
            return "no signing key: `identity provision` first"
        from gateway.net.hub import HubLink

        self.hub = HubLink(cfg, key, self.mono, usbconsole.say)
        self.hub.uplink.on_inbound = self.on_hub_message
        self._kid = key.kid  # the technician's login is loaded at its first use, not at boot
        return None

    def _start_trading(self):
        from gateway.trading import Trading
        from trade.agent import AgentError

        try:
            self.trading = Trading(self.config, self.hub, self.control, self.mono, usbconsole.say)
        except AgentError as e:  # tariff or household values the agent refuses
            self.trading_problem = str(e)
            usbconsole.say("trading: off: %s" % e)
            return
        self.control.on_step = self.trading.step

    def on_hub_message(self, msg, raw):
        # Verified hub messages other than ACKs, and witness requests (msg None).
        if msg is None or msg.type != 7:  # COMMAND
            if self.trading is not None:
                self.trading.on_message(msg, raw)
            return
        now_s = self.hub.now_s()
        if self.control is None or now_s is None:
            return  # no actuators, or no clock to check the window with: dropped
        gate = self._gate()
        from trade.commands import CommandRejected

        try:
            cmd = gate.admit(raw, now_s)
        except CommandRejected as e:
            self._say_some("command refused: %s" % e)
            return
        _save_int(_CMD_SEQ, gate.last_seq)  # before acting: a reboot never applies it twice
        self.control.command(cmd)
        self._say_some("command seq %d: %s %d" % (cmd.seq, cmd.kind, cmd.value))

    def _say_some(self, line):
        # 10 lines a second at most: a storm of commands must not flood the console
        now = self.mono.ms()
        if now - self._said_ms >= 1000:
            self._said_ms, self._said = now, 0
        self._said += 1
        if self._said <= 10:
            usbconsole.say(line + (" (%d lines not shown)" % self._unsaid if self._unsaid else ""))
            self._unsaid = 0
        else:
            self._unsaid += 1

    def _gate(self):
        if self.gate is None:
            from trade.commands import CommandGate

            up = self.hub.uplink
            self.gate = CommandGate(self.hub.key.kid, {up.hub_kid: (up.hub_x, up.hub_y)}, _load_int(_CMD_SEQ))
        return self.gate

    def heap_line(self):
        gc.collect()
        free, used = heap_free_alloc32()
        return "%s free, %s used" % (_kb(free), _kb(used))

    def cmd_status(self):
        rows = [
            ("firmware", VERSION),
            # where the code runs from: the ROM partition (in place) or .mpy files (in the heap)
            ("code", "rom partition" if globals().get("__file__", "").startswith("/rom/") else "files"),
            ("board", "%s (%s)" % (self.board.name, self.board.title)),
            ("uptime", "%d s" % (self.mono.ms() // 1000)),
            ("heap", self.heap_line() + " (32-bit equivalent)"),
            ("boots", boot.record.boots),
            ("reset", boot.reset_cause_name()),
        ]
        if self.hub is not None:
            rows.append(("clock", self.hub.clock_line()))
        if boot.config_errors:
            rows.append(("config", "; ".join(boot.config_errors)))
        return table(rows)

    def _need_hub(self):
        if self.hub is None:
            raise ConsoleError("no hub link: %s" % self.hub_problem)
        return self.hub

    def cmd_net(self):
        return table(self._need_hub().net_rows())

    def cmd_journal(self):
        st = self._need_hub().uplink.stats()
        rows = [("depth", "%d unacknowledged" % st["records"]),
                ("oldest", "-" if not st["records"] else "seq %d" % st["oldest"]),
                ("newest", "-" if st["newest"] is None else "seq %d" % st["newest"]),
                ("next seq", st["next_seq"]),
                ("capacity", "%s used of %s, %d segments" % (_kb(st["bytes"]), _kb(st["capacity"]),
                                                            st["segments"])),
                ("sent", "%d published, %d acked" % (st["published"], st["acks"]))]
        losses = ["%s %d" % (k, st[k]) for k in ("dropped", "refused", "corrupt", "lost", "torn") if st[k]]
        rows.append(("losses", ", ".join(losses) or "none"))
        if self.readings is not None:
            rows.append(("readings", "%d intervals journaled, %d samples before the clock was set" % (
                self.readings.signed, self.readings.unsynced)))
        return table(rows)

    def cmd_identity(self, what=None):
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

    def cmd_meters(self, name=None, what=None, hours=None):
        if self.meters is None:
            return "no meters configured" + (" (config errors: see status)" if boot.config_errors else "")
        if name is None:
            return self.meters.summary()
        h = self.meters.find(name)
        if h is None:
            raise ConsoleError("no meter %r; meters: %s" % (name, ", ".join(m.name for m in self.meters.meters)))
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
        return self.meters.details(h)

    def _need_control(self):
        if self.control is None:
            raise ConsoleError("no control: control.grid_meter is not set")
        return self.control

    def _need_tech(self):
        if self.tech is None:
            if self._kid is None:
                raise ConsoleError("no technician login without a signing key and hub link")
            from gateway.technician import Technician

            self.tech = Technician(self._kid, self.mono, usbconsole.say)
        return self.tech

    def cmd_trades(self):
        if self.trading is None:
            return "no trading: %s" % self.trading_problem
        return table(self.trading.rows())

    def cmd_relays(self):
        rows = list(self._need_control().relay_rows())
        if self.gate is not None:
            counts = self.gate.counts()
            refused = ["%s %d" % (k, counts[k]) for k in sorted(counts) if k != "accepted" and counts[k]]
            rows.append(("commands", "%d accepted, last seq %d; refused: %s" % (
                counts["accepted"], self.gate.last_seq, ", ".join(refused) or "none")))
        return table(rows)

    def _manual(self, text, kind, lo, hi, what):
        c = self._need_control()
        if text is None:
            return False
        self._need_tech().require()
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

    def cmd_ev(self, target=None):
        self._manual(target, "ev_ma", 0, 32000, "ev")
        return table(self.control.ev_rows())

    def cmd_battery(self, target=None):
        self._manual(target, "battery_w", -50000, 50000, "battery")
        return table(self.control.battery_rows())

    def cmd_safe(self, what=None):
        c = self._need_control()
        if what == "off":
            self._need_tech().require()
            c.clear_safe()
            usbconsole.say("technician: fail-safe released")
            return "fail-safe released: the dispatcher decides again"
        c.request_safe()  # going safe needs no login
        usbconsole.say("console: fail-safe requested")
        return "fail-safe held: EV paused, battery idle, relays open once their dwell allows"

    def cmd_auth(self, what="status", arg=None):
        return self._need_tech().cmd_auth(what, arg)

    def cmd_log(self, n=20):
        ring = usbconsole.ring
        # Written line by line: a 100-line answer as one list would not fit the heap.
        usbconsole.write("log: last %d of %d lines kept (ring of %d, %d said since boot)\r\n" % (
            min(n, ring.kept), ring.kept, ring.size, ring.said))
        for t, text in ring.tail(n):
            usbconsole.write("%6d  %s\r\n" % (t, text.replace("\r", " ").replace("\n", " ")))

    def cmd_config(self, what, path=None, value=None):
        from gateway import settings

        if what == "get":
            if value is not None:
                raise ConsoleError("usage: config get [PATH]")
            return settings.show(path)
        if path is None or value is None:
            raise ConsoleError("usage: config set PATH VALUE (one word; \"\" for empty)")
        self._need_tech().require()
        line = settings.save(path, value)
        usbconsole.say("console: config %s saved for the next reboot" % line)
        return "saved: %s; takes effect at the next reboot" % line

    def cmd_selftest(self, what=None, confirm=None):
        from gateway import settings  # its unload() gives the checks' modules back

        before = list(sys.modules)
        from gateway import selftest

        try:
            if what is None:
                return selftest.rows(self)
            if self._clicks is None:
                self._clicks = selftest.RelayClick(self._need_control(), self.board, self.mono, usbconsole.say)
            if confirm is None:
                return self._clicks.plan()
            self._need_tech().require()
            return self._clicks.confirm()
        finally:
            if self._clicks is None:
                settings.unload(before)

    def cmd_reboot(self, delay_ms=100):
        asyncio.create_task(self._reboot(delay_ms))
        return "rebooting in %d ms" % delay_ms

    async def _reboot(self, delay_ms):
        await asyncio.sleep_ms(delay_ms)
        machine.reset()

    async def feed_watchdog(self, wdt):
        # Fed from the event loop, so a stalled loop resets the board.
        while True:
            wdt.feed()
            await asyncio.sleep_ms(self.config["watchdog_ms"] // 4)

    async def heartbeat(self):
        led_on = False
        while True:
            led_on = not led_on
            if self.board.has("status_led"):
                self.board.set_active("status_led", led_on)
            usbconsole.say("hb up %ds heap %s" % (self.mono.ms() // 1000, self.heap_line()))
            await asyncio.sleep(self.config["heartbeat_s"])

    async def healthy(self):
        await asyncio.sleep(self.config["healthy_after_s"])
        boot.mark_app_healthy()

    def on_task_error(self, loop, context):
        # A task died: the app as a whole has crashed. main() reports it
        # and the watchdog (no longer fed) resets the board.
        self.crash = context.get("exception")
        self.crashed.set()

    async def run(self):
        asyncio.get_event_loop().set_exception_handler(self.on_task_error)
        # Armed before any task runs: from here a hang or a crash resets the board.
        asyncio.create_task(self.feed_watchdog(machine.WDT(timeout=self.config["watchdog_ms"])))
        asyncio.create_task(self.heartbeat())
        asyncio.create_task(self.healthy())
        asyncio.create_task(usbconsole.serve(self.commands))
        if self.meters is not None:
            self.meters.start()
        if self.hub is not None:
            self.hub.start()
        if self.control is not None:
            asyncio.create_task(self.control.run())
        if self.ha is not None:
            asyncio.create_task(self.ha.run())
        await self.crashed.wait()
        raise self.crash or RuntimeError("app task failed")


def main():
    boot.mark_app_start()
    try:
        asyncio.run(App().run())
    except KeyboardInterrupt:
        boot.mark_app_interrupted()
        print("pgw: app stopped; the watchdog resets the board in %d ms "
              "(for a longer REPL session: import gateway.boot; gateway.boot.maintenance())"
              % boot.config["watchdog_ms"])
        raise
    except Exception as e:
        boot.board.failsafe()  # relays open, pilot at no-charge, before anything else
        print_exception(e)
        print("pgw: app crashed; outputs in the fail-safe; REPL available (the watchdog will reset the board)")
    finally:
        asyncio.new_event_loop()

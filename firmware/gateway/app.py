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


def kb(nbytes):
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


def _import_features(cfg):
    # The modules the config needs, imported before any of them builds its
    # state. Their names fill the qstr pool past a doubling, and the new
    # pool (about 9 KB in one block) must be asked for while the heap is
    # still in one piece, not halfway through setting up the meters.
    hub = cfg["mqtt"]["host"] and cfg["hub"]["key"]
    if hub:
        import gateway.net.hub  # noqa: F401
    if cfg.get("meters"):
        import gateway.meters.service  # noqa: F401
        if hub:
            import gateway.readings  # noqa: F401
    if cfg["control"]["grid_meter"]:
        import gateway.control  # noqa: F401
        if hub and cfg["household"]["trading"]:
            import gateway.trading  # noqa: F401


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
        from gateway.logring import LogRing

        usbconsole.ring = LogRing(self.config["log_lines"], self.mono.ms)  # from here say() keeps its lines
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
        _import_features(self.config)
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
        self.ota = None  # gateway.otadownload's OtaDownload, from the first announcement on
        if self.hub is not None and self.config["ota"]["key"]:
            self._listen_for_updates()
        self.ha = None
        if self.config["ha_discovery"] and self.hub is not None:
            # Imported only when on: Home Assistant discovery costs no heap by default.
            from gateway.net.homeassistant import HomeAssistant

            # the settled balance; None (HA: unknown) without trading
            self.ha = self.hub.ha = HomeAssistant(self.config, self.hub, self.meters, self.control, VERSION,
                                                  self._balance, usbconsole.say)

    def _listen_for_updates(self):
        # Subscribed from the start; the downloader (its reader, the slot
        # writer) is imported only when the hub announces a bundle.
        from trade import topics

        c, kid = self.config["community"], self.hub.key.kid
        self.hub.link.subscriptions.append(topics.hub(c, "ota"))
        self.hub.link.subscriptions.append(topics.device(c, kid, "ota") + "/+")
        self.hub.uplink.on_other = self._update_message

    def _update_message(self, topic, payload):
        try:
            if self.ota is None:
                if not topic.endswith(b"/hub/ota"):
                    return
                from gateway.otadownload import OtaDownload

                self.ota = OtaDownload(self, usbconsole.say)
                asyncio.create_task(self.ota.run())
            self.ota.on_message(topic, payload)
        except Exception as e:  # said, not swallowed by the MQTT link; the app runs on
            usbconsole.say("ota: %s: %s" % (type(e).__name__, e))

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
        return "%s free, %s used" % (kb(free), kb(used))

    def dispatch(self, line):
        # A console line -> its answer lines. The commands (gateway.commands)
        # are loaded for the line and dropped after it, with selftest's
        # checks; settings and the technician's login stay (they keep state).
        gc.collect()  # the module's tables want blocks of a few hundred bytes
        try:
            from gateway import commands

            return commands.dispatch(self, line)
        except MemoryError:  # the console answers, and the app goes on
            return ["ERR out of memory for the console's commands; try again"]
        finally:
            boot.forget_modules(("gateway.commands", "gateway.selftest"))

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
        asyncio.create_task(usbconsole.serve(self))
        if self.meters is not None:
            self.meters.start()
        if self.hub is not None:
            self.hub.start()
        if self.control is not None:
            asyncio.create_task(self.control.run())
        if self.ha is not None:
            asyncio.create_task(self.ha.run())
        if boot.ota_trial:
            # a new version on trial: committed once healthy, else reset and rolled back
            from gateway.ota import watch_trial

            asyncio.create_task(watch_trial(self, usbconsole.say))
            watch_trial = None  # the module goes once the trial is over
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

# The meter service: builds the lines and meters from the config, runs one
# task per meter, keeps each meter's latest readings and its health.
#
# Driver interface (one module per protocol family, gateway/meters/<m>.py,
# exporting `Driver`; picked by protocol in _DRIVERS and imported only
# when a meter needs it). A DLMS driver implements the same:
#
#   class Driver:
#       def __init__(self, cfg, service, health)
#           cfg: the meter's validated config (lib/deviceconfig.py);
#           service.serial_line(cfg) -> the shared Rs485Bus for its line,
#           service.profile(name) -> a loaded lib/meterprofile profile;
#           health.count(kind, detail) counts an error that does not fail
#           the poll. Raise MeterError("config", why) if it cannot run.
#       async def open(self)          connect, associate, discover (once)
#       async def poll(self) -> dict  {quantity: int}; raises on failure
#       async def close(self)         after any failure; open() comes next
#       def info(self) -> [(key, text)]   extra lines for `meters NAME`
#   A push listener (protocol dlms-push) instead has
#       async def run(self, on_reading)   forever: on_reading(values) for
#           each good frame; bad frames are counted with health.count and
#           skipped; raising ends the run, which restarts after a backoff.
#
# Failures raise MeterError(kind, detail) (gateway/meters/__init__.py),
# or asyncio.TimeoutError / OSError, counted as "timeout" / "conn". No
# exception leaves a meter's task: a failing meter is counted, logged when
# its state changes, retried and backed off, and the others keep running.
import gc
import sys
import time

import asyncio

from compat import const, print_exception, ticks_diff, ticks_ms
from gateway.meters import MeterError

_PROFILE_DIRS = const(("/rom/lib/meterprofiles/", "/lib/meterprofiles/"))  # ROMFS first, as sys.path
_DRIVERS = {
    "modbus-rtu": "modbus_meter",
    "modbus-tcp": "modbus_meter",
    "dlms-hdlc": "dlms_meter",
    "dlms-tcp": "dlms_meter",
    "dlms-push": "dlms_push",
}
_PARITY = {"N": None, "E": 0, "O": 1}
_BACKOFF_CAP_MS = const(60000)  # a dead meter is still tried once a minute
_RETRY_PAUSE_MS = const(50)
_STAGGER_MS = const(150)  # meters start apart, not all at once on one bus
_STALE_PERIODS = const(3)
_DETAIL_MAX = const(80)


def _kind(exc):
    if isinstance(exc, MeterError):
        return exc.kind
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "conn"
    if isinstance(exc, ValueError):  # a lib decoder's specific error
        return "frame"
    if isinstance(exc, MemoryError):
        return "memory"
    return "bug"


def _jitter(ms):
    # +-10 %: meters that failed together do not retry in lockstep.
    span = ms // 5 + 1
    return ms - span // 2 + (time.ticks_us() * 2654435761 >> 8) % span


class Health:
    # One meter's readings and health, read by the console.
    def __init__(self, cfg):
        self.name = cfg["name"]
        self.cfg = cfg
        self.driver = None
        self.problem = None  # why the meter does not run (config, driver)
        self.values = {}
        self.good_ticks = None  # ticks_ms of the last good reading
        self.good_time = 0  # and the wall clock then (time.time())
        self.polls = 0
        self.good = 0
        self.fails = 0  # polls in a row that failed after every retry
        self.errors = {}  # kind -> count
        self.last_error = ""

    def count(self, kind, detail=""):
        self.errors[kind] = self.errors.get(kind, 0) + 1
        text = str(detail)
        self.last_error = kind + (": " + text[:_DETAIL_MAX] if text and text != kind else "")

    def reading(self, values):
        self.values = values
        self.good_ticks = ticks_ms()
        self.good_time = int(time.time())
        self.good += 1

    def age_ms(self, now):
        return None if self.good_ticks is None else ticks_diff(now, self.good_ticks)

    def state(self, now):
        # off: not running; init: nothing yet; failing: the last poll failed
        # after every retry; stale: no good reading for 3 periods; ok.
        if self.problem:
            return "off"
        if self.fails:
            return "failing"
        age = self.age_ms(now)
        if age is None:
            return "init"
        if age > _STALE_PERIODS * self.cfg["period_s"] * 1000 + self.cfg["timeout_ms"]:
            return "stale"
        return "ok"

    def error_total(self):
        return sum(self.errors.values())


class MeterService:
    def __init__(self, meters, board, log):
        self.board = board
        self.log = log
        self.meters = []
        self.on_reading = None  # on_reading(health, values) after each good reading
        self._lines = {}  # UART id -> Rs485Bus
        self._profiles = {}
        for cfg in meters:
            h = Health(cfg)
            try:
                mod = _DRIVERS[cfg["protocol"]]
                try:
                    driver_mod = __import__("gateway.meters." + mod, None, None, ("Driver",))
                except ImportError as e:
                    raise MeterError("config", "no %s driver yet (%s)" % (cfg["protocol"], e))
                h.driver = driver_mod.Driver(cfg, self, h)
            except MeterError as e:
                h.problem = str(e)
            except Exception as e:  # one driver's bug must not stop the gateway
                h.problem = "%s: %s" % (type(e).__name__, e)
                print_exception(e)
            if h.problem:
                log("meter %s not started: %s" % (h.name, h.problem))
            self.meters.append(h)
            gc.collect()  # each driver's start-up garbage, before the next one loads
        # every profile is loaded: their checks are not needed again
        if sys.modules.pop("meterprofile_load", None) is not None:
            gc.collect()

    # ---- what drivers ask for ----

    def profile(self, name):
        p = self._profiles.get(name)
        if p is None:
            import json

            import meterprofile

            doc = None
            for d in _PROFILE_DIRS:
                try:
                    with open(d + name + ".json") as f:
                        doc = json.load(f)
                    break
                except OSError:
                    continue
                except ValueError:
                    raise MeterError("config", "profile %s is not valid JSON" % name)
            if doc is None:
                raise MeterError("config", "no profile %s in %s" % (name, " or ".join(_PROFILE_DIRS)))
            try:
                p = meterprofile.load(doc)
            except meterprofile.ProfileError as e:
                raise MeterError("config", str(e))
            self._profiles[name] = p
        return p

    def serial_line(self, cfg):
        # The shared bus for the meter's line, opened by the first meter on it.
        settings = (cfg["baudrate"], cfg["bits"], cfg["parity"], cfg["stop"])
        pins = {}
        de = None
        de_on = 1
        if "bus" in cfg:
            uid = self.board.buses.get("rs485_uart")
            if uid is None:
                raise MeterError("config", "board %s has no rs485_uart" % self.board.name)
            if self.board.has("rs485_tx") and self.board.has("rs485_rx"):
                pins = {"tx": self.board.gpio("rs485_tx"), "rx": self.board.gpio("rs485_rx")}
            if self.board.has("rs485_dir"):
                de = self.board.output("rs485_dir")
                de_on = 0 if self.board.pins["rs485_dir"].get("active_low") else 1
        else:
            uid = cfg["uart"]
        line = self._lines.get(uid)
        if line is not None:
            if line.settings != settings:
                raise MeterError("config", "UART %d already runs at %s for another meter" % (uid, line.describe()))
            return line
        from machine import UART

        from gateway.meters.bus import Rs485Bus

        uart = UART(uid, baudrate=settings[0], bits=settings[1], parity=_PARITY[settings[2]],
                    stop=settings[3], timeout=0, timeout_char=0, rxbuf=512, **pins)
        line = Rs485Bus(uart, settings, de, de_on)
        self._lines[uid] = line
        return line

    # ---- running ----

    def start(self):
        k = 0
        for h in self.meters:
            if h.driver is None:
                continue
            if h.cfg["protocol"] == "dlms-push":
                asyncio.create_task(self._listen(h))
            else:
                asyncio.create_task(self._poll(h, k * _STAGGER_MS))
                k += 1
        self.log("meters: %d configured, %d running" % (len(self.meters), sum(1 for h in self.meters if h.driver)))

    async def _close(self, h):
        try:
            await h.driver.close()
        except Exception as e:  # a close must never take the task down
            h.count(_kind(e), e)

    def _failed(self, h, exc):
        kind = _kind(exc)
        h.count(kind, exc)
        if kind == "bug" and h.errors["bug"] == 1:
            print_exception(exc)  # once: the counter tells the rest

    def _after_poll(self, h, ok):
        if ok:
            if h.good == 1:
                self.log("meter %s: first reading, %d values" % (h.name, len(h.values)))
            if h.fails:
                self.log("meter %s ok again after %d failed polls" % (h.name, h.fails))
            h.fails = 0
        else:
            h.fails += 1
            if h.fails == 1:
                self.log("meter %s failing: %s" % (h.name, h.last_error))

    def _delay(self, h):
        period = h.cfg["period_s"] * 1000
        if not h.fails:
            return period
        backoff = period << min(h.fails - 1, 12)
        return _jitter(min(backoff, max(period, _BACKOFF_CAP_MS)))

    async def _poll(self, h, stagger_ms):
        d = h.driver
        # A generous bound on one open or poll: the driver's own deadlines
        # act first; this only catches a driver that would hang.
        budget = 20 * h.cfg["timeout_ms"] + 10000
        opened = False
        await asyncio.sleep_ms(stagger_ms)
        while True:
            started = ticks_ms()
            h.polls += 1
            ok = False
            for attempt in range(h.cfg["retries"] + 1):
                if attempt:
                    await asyncio.sleep_ms(_RETRY_PAUSE_MS)
                try:
                    if not opened:
                        await asyncio.wait_for_ms(d.open(), budget)
                        opened = True
                    values = await asyncio.wait_for_ms(d.poll(), budget)
                    self._reading(h, values)
                    ok = True
                    break
                except Exception as e:  # any failure: classified by _kind, counted, retried
                    self._failed(h, e)
                    opened = False
                    await self._close(h)
            self._after_poll(h, ok)
            wait = self._delay(h) - ticks_diff(ticks_ms(), started)
            await asyncio.sleep_ms(max(wait, _RETRY_PAUSE_MS))

    def _reading(self, h, values):
        h.reading(values)
        if self.on_reading is not None:
            self.on_reading(h, values)

    async def _listen(self, h):
        def on_reading(values):
            self._reading(h, values)
            self._after_poll(h, True)

        while True:
            started = ticks_ms()
            try:
                await h.driver.run(on_reading)
            except Exception as e:  # classified by _kind and counted; the listener restarts
                self._failed(h, e)
            await self._close(h)
            self._after_poll(h, False)
            await asyncio.sleep_ms(max(self._delay(h) - ticks_diff(ticks_ms(), started), _RETRY_PAUSE_MS))

    # ---- console ----

    def latest(self, name):
        # For consumers: (readings {quantity: int}, age in ms, wall-clock
        # time of the reading), or None before the first good reading.
        h = self.find(name)
        if h is None or h.good_ticks is None:
            return None
        return h.values, h.age_ms(ticks_ms()), h.good_time

    def find(self, name):
        for h in self.meters:
            if h.name == name:
                return h
        return None

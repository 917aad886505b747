# Home Assistant MQTT discovery on the gateway (docs/home-assistant.md).
# Started by the app only when ha_discovery is true: off, this module is
# never imported and costs no heap.
#
# At every connection to the broker (a broker restarted without
# persistence has lost the retained configs) the six discovery configs are
# published retained, one at a time: built, sent, dropped. Then the state
# JSON goes out every _STATE_PERIOD_MS (not retained: after a restart of HA
# the next one is at most a period away, and none outlives the gateway).
#
# Memory: a config is about 500 bytes (HA's short keys), copied three times
# on its way to the socket, and the heap is fragmented (10 s after boot on
# the virtual board: 19.6 KB free, no block of 1.5 KB). A MemoryError inside
# the MQTT link drops the hub's link too, so nothing is sent before the
# boot's heap peak is over (the app counts as healthy), a message is built
# only when a probe finds a free block for it, and a failed announcement
# backs off.
import asyncio

import hadiscovery
from compat import const, ticks_add, ticks_diff, ticks_ms

_STATE_PERIOD_MS = const(10000)  # wall; divided by clock_rate on a virtual board
_STEP_MS = const(1000)  # how often the task looks for a new connection
_RETRY_MS = const(2000)  # after a failed announcement; doubles up to _RETRY_MAX_MS
_RETRY_MAX_MS = const(300000)
_CONFIG_ROOM = const(1024)  # one free block this big: a config (500 bytes, short keys) fits twice
_STATE_ROOM = const(512)


class HomeAssistant:
    # hub: the HubLink (its MQTT link, key and community); meters: the
    # MeterService or None; control: the Control or None; balance: a
    # callable -> the trade balance in micro-units, or None (no settlements).
    def __init__(self, config, hub, meters, control, version, balance=None, log=print):
        self.link = hub.link
        self.kid_hex = hub.key.kid.hex()
        self.community = hub.community
        self.prefix = config["ha_prefix"]
        self.currency = config["tariff"]["currency"]
        self.version = version
        self.meters = meters
        self.control = control
        self.balance = balance
        self.log = log
        c = config["control"]
        self.grid_name = c["grid_meter"]
        self.battery_name = c["battery_meter"]
        self.period_ms = max(_STATE_PERIOD_MS // config["clock_rate"], 500)
        self.settle_s = config["healthy_after_s"]
        self._grid = self._battery = None
        self.announced = 0  # the link's connection count the configs went out on
        self.announcements = 0
        self.failures = 0  # announcements given up: link down, low memory
        self.states = 0
        self.refused = 0  # state values out of range, published as null
        self.last_error = ""
        try:
            self.topic = hadiscovery.state_topic(self.kid_hex, self.prefix)
            self.problem = None
        except hadiscovery.DiscoveryError as e:
            self.topic = None
            self.problem = str(e)

    def describe(self):
        if self.problem:
            return "off: " + self.problem
        return "prefix %s, configs sent %d times (%d failed), %d states, %d values refused%s" % (
            self.prefix, self.announcements, self.failures, self.states, self.refused,
            (", last error " + self.last_error) if self.last_error else "")

    async def run(self):
        if self.problem:
            self.log("ha: not started: " + self.problem)
            return
        await asyncio.sleep(self.settle_s)
        link = self.link
        retry_ms = _RETRY_MS
        next_state = ticks_ms()
        while True:
            await link.up.wait()
            if self.announced != link.connects:
                connects = link.connects
                if not await self._announce():
                    if self.problem:
                        return
                    self.failures += 1
                    await asyncio.sleep_ms(retry_ms)
                    retry_ms = min(retry_ms * 2, _RETRY_MAX_MS)
                    continue
                retry_ms = _RETRY_MS
                self.announced = connects
                next_state = ticks_ms()  # a first state at once: HA has nothing yet
            if ticks_diff(ticks_ms(), next_state) >= 0:
                next_state = ticks_add(ticks_ms(), self.period_ms)
                await self._publish_state()
            await asyncio.sleep_ms(min(_STEP_MS, self.period_ms))

    async def _announce(self):
        # -> True once all configs are handed to the broker
        configs = hadiscovery.iter_configs(self.kid_hex, self.community, self.prefix, version=self.version,
                                           currency=self.currency, short=True)
        while True:
            if not _room(_CONFIG_ROOM):
                self.last_error = "low memory"
                return False
            try:
                topic, payload = next(configs)
            except StopIteration:
                break
            except MemoryError:
                self.last_error = "memory"
                return False
            except hadiscovery.DiscoveryError as e:  # a config the checks let through: never retried
                self.problem = str(e)
                self.log("ha: stopped: " + self.problem)
                return False
            sent = await self.link.publish(topic, payload, True)
            topic = payload = None  # garbage before the next probe
            if not sent:
                return False
        self.announcements += 1
        if self.announcements == 1:
            self.log("ha: discovery published under %s" % self.prefix)
        return True

    async def _publish_state(self):
        if not _room(_STATE_ROOM):
            self.last_error = "low memory"
            return
        try:
            payload = self._state()
        except Exception as e:  # a display feature must never take the gateway down
            self.last_error = "%s: %s" % (type(e).__name__, e)
            return
        if await self.link.publish(self.topic, payload, False):
            self.states += 1

    def _state(self):
        values = self.values()
        for _ in range(len(values) + 1):
            try:
                return hadiscovery.state(**values)
            except hadiscovery.DiscoveryError as e:
                if e.key is None:
                    raise
                values[e.key] = None  # an impossible value: unknown in HA
                self.refused += 1
                self.last_error = str(e)
        raise ValueError("state refused")

    # ---- where the values come from ----

    def _meter(self, name, quantity):
        # the named meter, else the first that reports `quantity`
        ms = self.meters
        if ms is None:
            return None
        if name:
            return ms.find(name)
        for h in ms.meters:
            if quantity in h.values:
                return h
        return None

    def _fresh(self, h):
        # a meter's values while its state is ok; a stale reading is unknown
        if h is None or h.state(ticks_ms()) != "ok":
            return None
        return h.values

    def values(self):
        # -> the keyword arguments of hadiscovery.state()
        if self._grid is None:
            self._grid = self._meter(self.grid_name, "power_w")
        if self._battery is None:
            self._battery = self._meter(self.battery_name, "battery_soc_permille")
        power = imp = exp = soc = ev = None
        g = self._fresh(self._grid)
        if g is not None:
            power = g.get("power_w")
            if power is None and "power_import_w" in g:
                power = g["power_import_w"] - g.get("power_export_w", 0)
            imp, exp = g.get("energy_import_wh"), g.get("energy_export_wh")
        b = self._fresh(self._battery)
        if b is not None and "battery_soc_permille" in b:
            soc = b["battery_soc_permille"] // 10  # the envelope's soc_pct, from the same meter
        c = self.control
        if c is not None and c.act is not None and (c.ev is not None or c.pwm is not None):
            ev = c.act.ev_ma  # what the dispatcher grants the EV; 0 while paused
        balance = None
        if self.balance is not None:
            try:
                balance = self.balance()
            except Exception as e:  # the app's callable: its failure leaves the balance unknown only
                self.last_error = "balance: %s: %s" % (type(e).__name__, e)
        return {"power_w": power, "import_wh": imp, "export_wh": exp, "soc_pct": soc, "ev_ma": ev,
                "balance": balance}


def _room(nbytes):
    # -> True when the heap has one free block of nbytes (allocating runs
    # a collection first if it must). The probe is garbage at once: what is
    # built next, before any await, fits there once a collection frees it.
    try:
        bytearray(nbytes)
    except MemoryError:
        return False
    return True

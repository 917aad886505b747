# The station interface: joins the configured network and rejoins on its
# own. With no SSID configured the gateway uses whatever network the board
# has (Ethernet, or the virtual board's host), and counts as up.
import asyncio
import network

from compat import const, ticks_diff, ticks_ms

_JOIN_TIMEOUT_MS = const(20000)
_CHECK_MS = const(500)


class Wifi:
    def __init__(self, ssid, password, hostname="", reconnect_s=10, log=print):
        self.ssid = ssid
        self.password = password
        self.hostname = hostname
        self.reconnect_ms = reconnect_s * 1000
        self.log = log
        self.up = asyncio.Event()
        self.state = "none" if not ssid else "down"
        self.joins = 0
        self.losses = 0
        self.since_ms = ticks_ms()
        self.wlan = None

    def _set(self, state):
        if state != self.state:
            self.state = state
            self.since_ms = ticks_ms()
        if state in ("up", "none"):
            self.up.set()
        else:
            self.up.clear()

    async def run(self):
        if not self.ssid:
            self._set("none")
            return
        if self.hostname:
            try:
                network.hostname(self.hostname)
            except (AttributeError, ValueError, OSError):
                pass  # older ports: the default name
        self.wlan = w = network.WLAN(network.STA_IF)
        w.active(True)
        while True:
            self._set("joining")
            try:
                w.connect(self.ssid, self.password)
            except OSError as e:
                self.log("wifi: %s" % e)
            start = ticks_ms()
            while not w.isconnected() and ticks_diff(ticks_ms(), start) < _JOIN_TIMEOUT_MS:
                await asyncio.sleep_ms(_CHECK_MS)
            if w.isconnected():
                self.joins += 1
                self._set("up")
                self.log("wifi: joined %s, address %s" % (self.ssid, w.ifconfig()[0]))
                while w.isconnected():
                    await asyncio.sleep_ms(_CHECK_MS)
                self.losses += 1
                self.log("wifi: lost %s" % self.ssid)
            else:
                self.log("wifi: could not join %s (status %s)" % (self.ssid, w.status()))
            self._set("down")
            try:
                w.disconnect()
            except OSError:
                pass
            await asyncio.sleep_ms(self.reconnect_ms)

    def describe(self):
        if self.state == "none":
            return "no wifi configured (board network)"
        age = ticks_diff(ticks_ms(), self.since_ms) // 1000
        text = "%s %s for %d s, %d joins, %d losses" % (self.state, self.ssid, age, self.joins, self.losses)
        if self.state == "up":
            try:
                text += ", rssi %d dBm" % self.wlan.status("rssi")
            except (ValueError, OSError, TypeError):
                pass
        return text

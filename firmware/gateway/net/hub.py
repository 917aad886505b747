# The gateway's side of the neighbourhood: WiFi, the MQTT session, the
# clock (NTP, the hub's ACKs as cross-check and fallback) and the uplink
# with its journal. Built from the config's wifi, mqtt, ntp and hub
# sections; the app starts it when mqtt.host is set.
import asyncio

from clocksync import Clock, ClockError
from compat import const
import cose
from gateway.boot import STATE_DIR
from gateway.net import ntp
from gateway.net.mqtt import MqttLink
from gateway.net.uplink import Uplink, open_journal
from gateway.net.wifi import Wifi
from trade import topics

_NTP_RETRY_MS = const(5000)


class HubLink:
    def __init__(self, config, key, mono, log=print):
        self.config = config
        self.key = key
        self.mono = mono
        self.log = log
        self.rate = config["clock_rate"]
        self.clock = Clock(rate=self.rate)
        self.community = config["community"]
        w = config["wifi"]
        self.wifi = Wifi(w["ssid"], w["password"], w["hostname"] or "pgw-" + key.kid.hex()[:6],
                         w["reconnect_s"], log)
        m = config["mqtt"]
        ca = None
        if m["tls"]:
            with open(m["ca"], "rb") as f:
                ca = f.read()
        kid_hex = key.kid.hex()
        self.link = MqttLink({"host": m["host"], "port": m["port"], "tls": m["tls"], "ca": ca,
                              "client_id": "pgw-" + kid_hex, "keepalive_s": m["keepalive_s"],
                              "ping_ms": m["ping_s"] * 1000, "dead_ms": m["dead_s"] * 1000,
                              "backoff_ms": m["backoff_min_ms"], "backoff_max_ms": m["backoff_max_ms"],
                              "will_topic": topics.device(self.community, key.kid, "status")},
                             None, log, network_up=self.wifi.up)
        hub_kid, hub_pub = cose.decode_key(config["hub"]["key"])
        self.journal = open_journal(STATE_DIR + "/journal", config["journal_kb"])
        self.uplink = Uplink(key, (hub_pub[0], hub_pub[1], hub_kid), self.community, self.journal,
                             STATE_DIR + "/seq", self.link, clock=self, log=log)
        self.ntp_ok = 0
        self.ntp_failures = 0
        self.ntp_error = ""

    # the uplink hands the ACKs' time to the clock through here
    def ack_time(self, hub_ts):
        try:
            self.clock.ack_time(hub_ts, self.mono.ms())
        except ClockError:
            pass  # an absurd time from a hub with a valid signature: ignored

    def now_ms(self):
        return self.clock.now_ms(self.mono.ms())

    def now_s(self):
        ms = self.now_ms()
        return None if ms is None else ms // 1000

    def unreachable_ms(self):
        # How long the hub has owed us an ACK, or the link has been down.
        return self.uplink.unreachable_ms()

    async def _ntp(self):
        n = self.config["ntp"]
        if not n["host"]:
            return
        period = max(n["period_s"] * 1000 // self.rate, 1000)
        while True:
            await self.wifi.up.wait()
            try:
                unix_ms, ticks = await ntp.query(n["host"], n["port"], rate=self.rate)
                step = self.clock.ntp(unix_ms // 1000, self.mono.at(ticks), unix_ms % 1000)
            except (OSError, ValueError) as e:  # no answer, a refused answer (SntpError, ClockError)
                self.ntp_failures += 1
                self.ntp_error = str(e)
                await asyncio.sleep_ms(_NTP_RETRY_MS)
                continue
            if self.ntp_ok == 0:
                self.log("clock: set from %s" % n["host"])
            elif step is not None and abs(step) > 1000 * self.rate:
                self.log("clock: stepped %+d ms" % step)
            self.ntp_ok += 1
            await asyncio.sleep_ms(period)

    def start(self):
        asyncio.create_task(self.wifi.run())
        asyncio.create_task(self._ntp())
        asyncio.create_task(self.uplink.run())
        # our public key, retained, for anyone checking our messages
        asyncio.create_task(self._announce())

    async def _announce(self):
        key = cose.encode_key(*self.key.public_key())
        topic = topics.device(self.community, self.key.kid, "key")
        while True:
            await self.link.up.wait()
            if await self.link.publish(topic, key, True):
                return
            await asyncio.sleep_ms(1000)

    def clock_line(self):
        return self.clock.describe(self.mono.ms())

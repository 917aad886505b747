# The MQTT link to the hub, on asyncio.
#
# umqtt.simple (micropython-lib, fetched at deploy) builds and parses the
# MQTT packets; the transport is ours: an asyncio stream, with TLS from the
# stream's SSLContext, so no call ever blocks the loop. umqtt's "socket" is
# a _Pipe: what umqtt writes is queued and sent by us; it reads only whole
# packets that our reader has already buffered. umqtt's own blocking waits
# (CONNACK, SUBACK) are cut short by _NeedData and answered here instead.
#
# Liveness: a PINGREQ every ping_ms; no PINGRESP within dead_ms means the
# link is dead (a blackholed network sends no reset), and we reconnect with
# capped exponential backoff and jitter. The last will marks the device
# offline on the broker when the link dies.

import asyncio
import os

from compat import const, ticks_diff, ticks_ms
from umqtt import simple

_MAX_PACKET = const(2048)  # longest packet taken from the hub; beyond: protocol error
_PINGRESP = const(0xD0)
_PUBLISH = const(0x30)


class MqttError(Exception):
    pass


class _NeedData(Exception):
    # umqtt asked for bytes that have not arrived: its blocking wait ends here
    pass


class _Pipe:
    def __init__(self):
        self.inbuf = bytearray()
        self.pos = 0
        self.out = bytearray()

    def write(self, data, n=None):
        if n is None:
            n = len(data)
        self.out.extend(memoryview(data)[:n])
        return n

    def read(self, n):
        if len(self.inbuf) - self.pos < n:
            raise _NeedData()
        data = bytes(memoryview(self.inbuf)[self.pos:self.pos + n])  # one copy, not two
        self.pos += n
        return data

    def feed(self, data):
        # drop what was read, keeping the buffer small (bytearray has no del)
        if self.pos == len(self.inbuf):
            self.inbuf = bytearray(data)
            self.pos = 0
            return
        if self.pos:
            self.inbuf = self.inbuf[self.pos:]
            self.pos = 0
        self.inbuf.extend(data)

    def skip(self, n):
        self.pos += n

    def packet(self):
        # length of the whole packet at the read position, or 0 if incomplete
        buf, i = self.inbuf, self.pos + 1
        n = shift = 0
        while True:
            if i >= len(buf):
                return 0
            b = buf[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MqttError("bad packet length")
        if n > _MAX_PACKET:
            raise MqttError("packet of %d bytes" % n)
        total = i - self.pos + n
        return total if len(buf) - self.pos >= total else 0

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        pass

    def close(self):
        pass


class _SocketShim:
    # umqtt.simple's module-level `socket`: hands it the current pipe
    def __init__(self):
        self.pipe = None

    def socket(self, *args):
        return self.pipe

    def getaddrinfo(self, host, port, *args):
        return [(2, 1, 0, "", ("0.0.0.0", port))]


_shim = _SocketShim()
simple.socket = _shim


def _jitter(ms):
    # full jitter in [ms/2, ms]: devices of a street do not reconnect in step
    r = os.urandom(2)
    return ms // 2 + (r[0] << 8 | r[1]) * (ms - ms // 2) // 65535


class MqttLink:
    """Keeps one MQTT session to the broker. cfg: host, port, tls (bool),
    ca (PEM bytes for TLS), client_id, keepalive_s, ping_ms, dead_ms,
    backoff_ms, backoff_max_ms, will_topic. on_message(topic, payload)."""

    def __init__(self, cfg, on_message, log=print, subscriptions=(), network_up=None):
        self.cfg = cfg
        self.network_up = network_up  # an Event set while the network is up, or None
        self.on_message = on_message
        self.log = log
        self.subscriptions = list(subscriptions)
        self.state = "down"
        self.connects = 0
        self.failures = 0
        self.rtt_ms = None
        self.sent = 0
        self.received = 0
        self.last_error = ""
        self.up = asyncio.Event()
        self._writer = None
        self._pipe = None
        self._client = None
        self._ping_at = None
        self._closing = False

    # ---- sending ----

    async def _flush(self):
        p = self._pipe
        if p.out:
            data = bytes(p.out)
            p.out = bytearray()
            self._writer.write(data)
            await self._writer.drain()

    async def publish(self, topic, payload, retain=False):
        """Send one message (QoS 0) -> True if handed to the broker's socket.
        End-to-end delivery is the hub's signed ACK, not MQTT's."""
        if self.state != "up":
            return False
        try:
            self._client.publish(topic, payload, retain)
            await self._flush()
        except Exception as e:  # a dying link: the reader notices and reconnects
            self._fail(e)
            return False
        self.sent += 1
        return True

    # ---- the session ----

    def _fail(self, e):
        self.last_error = "%s: %s" % (type(e).__name__, e)
        if self.state == "up":
            self.log("mqtt: link lost (%s)" % self.last_error)
        self.state = "down"
        self.up.clear()
        w = self._writer
        self._writer = None
        if w is not None:
            try:
                w.close()
            except Exception:
                pass

    async def _connect(self):
        cfg = self.cfg
        ctx = None
        if cfg.get("tls"):
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=cfg["ca"])
        timeout = cfg["dead_ms"] / 1000
        if ctx is None:
            conn = asyncio.open_connection(cfg["host"], cfg["port"])
        else:
            conn = asyncio.open_connection(cfg["host"], cfg["port"], ssl=ctx)
        reader, writer = await asyncio.wait_for(conn, timeout)
        self._writer = writer
        pipe = _Pipe()
        self._pipe = pipe
        _shim.pipe = pipe
        c = simple.MQTTClient(cfg["client_id"], cfg["host"], cfg["port"], keepalive=cfg["keepalive_s"])
        c.set_last_will(cfg["will_topic"], b"offline", retain=True)
        c.set_callback(self._deliver)
        self._client = c
        try:
            c.connect()
        except _NeedData:  # CONNECT is written; CONNACK is ours to wait for
            pass
        await self._flush()
        while pipe.packet() == 0:
            data = await asyncio.wait_for(reader.read(64), timeout)
            if not data:
                raise MqttError("closed before CONNACK")
            pipe.feed(data)
        ack = pipe.read(4)
        if ack[0] != 0x20 or ack[1] != 2:
            raise MqttError("no CONNACK")
        if ack[3]:
            raise MqttError("broker refused: code %d" % ack[3])
        for topic in self.subscriptions:
            try:
                c.subscribe(topic)
            except _NeedData:  # SUBACK comes through the reader
                pass
        c.publish(cfg["will_topic"], b"online", True)
        await self._flush()
        return reader

    def _deliver(self, topic, payload):
        self.received += 1
        try:
            self.on_message(topic, payload)
        except Exception as e:  # one bad message must not end the session
            self.last_error = "on_message: %s: %s" % (type(e).__name__, e)

    async def _read(self, reader):
        pipe, c = self._pipe, self._client
        while True:
            data = await reader.read(256)
            if not data:
                raise MqttError("closed by the broker")
            pipe.feed(data)
            while True:
                n = pipe.packet()
                if not n:
                    break
                start = pipe.pos
                op = pipe.inbuf[start]
                if op == _PINGRESP:
                    if self._ping_at is not None:
                        self.rtt_ms = ticks_diff(ticks_ms(), self._ping_at)
                        self._ping_at = None
                    pipe.skip(n)
                elif op & 0xF0 == _PUBLISH:
                    c.wait_msg()  # parses it and calls _deliver; QoS 1 writes its PUBACK
                    await self._flush()
                else:  # SUBACK, PUBACK, ...: nothing to do
                    pipe.skip(n)

    async def _keepalive(self):
        # A PINGREQ every ping_ms; an answer overdue by dead_ms ends the
        # session: a blackholed network sends no reset, only silence.
        cfg = self.cfg
        step = min(cfg["ping_ms"], cfg["dead_ms"]) // 4 or 1
        last = ticks_ms()
        while True:
            await asyncio.sleep_ms(step)
            if self.network_up is not None and not self.network_up.is_set():
                raise MqttError("network down")
            now = ticks_ms()
            if self._ping_at is not None:
                if ticks_diff(now, self._ping_at) >= cfg["dead_ms"]:
                    raise MqttError("no PINGRESP in %d ms" % cfg["dead_ms"])
            elif ticks_diff(now, last) >= cfg["ping_ms"]:
                last = self._ping_at = now
                self._client.ping()
                await self._flush()

    async def run(self):
        cfg = self.cfg
        backoff = cfg["backoff_ms"]
        while not self._closing:
            if self.network_up is not None and not self.network_up.is_set():
                self.state = "no network"
                await self.network_up.wait()
            self.state = "connecting"
            try:
                reader = await self._connect()
            except Exception as e:
                self.failures += 1
                self._fail(e)
                await asyncio.sleep_ms(_jitter(backoff))
                backoff = min(backoff * 2, cfg["backoff_max_ms"])
                continue
            self.state = "up"
            self.connects += 1
            self._ping_at = None
            backoff = cfg["backoff_ms"]
            self.up.set()
            self.log("mqtt: connected to %s:%d%s" % (cfg["host"], cfg["port"], " (TLS)" if cfg.get("tls") else ""))
            tasks = [asyncio.create_task(self._read(reader)), asyncio.create_task(self._keepalive())]
            try:
                await _first_failure(tasks)
            except Exception as e:
                self._fail(e)
            for t in tasks:
                t.cancel()
            await asyncio.sleep_ms(_jitter(backoff))

    def close(self):
        self._closing = True
        self._fail(MqttError("closed"))


async def _first_failure(tasks):
    # wait until one task ends (they only end by raising), re-raise its error
    done = asyncio.Event()
    err = []

    async def watch(t):
        try:
            await t
        except asyncio.CancelledError:
            return
        except Exception as e:
            err.append(e)
        done.set()

    watchers = [asyncio.create_task(watch(t)) for t in tasks]
    await done.wait()
    for w in watchers:
        w.cancel()
    raise err[0] if err else MqttError("session ended")

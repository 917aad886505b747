# A TCP connection for meters (Modbus TCP, the DLMS wrapper): opened on
# demand, reopened after a failure (the caller closes it; the next use
# connects again), reads with a deadline into a caller's buffer.
import asyncio

from gateway.meters import MeterError


class TcpLink:
    def __init__(self, host, port, timeout_ms):
        self.host = host
        self.port = port
        self.timeout_ms = timeout_ms
        self._r = None
        self._w = None
        self.connects = 0

    def describe(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def connected(self):
        return self._w is not None

    async def open(self):
        if self._w is not None:
            return
        try:
            self._r, self._w = await asyncio.wait_for_ms(
                asyncio.open_connection(self.host, self.port), self.timeout_ms)
        except asyncio.TimeoutError:
            raise MeterError("conn", "no connection to %s in %d ms" % (self.describe(), self.timeout_ms))
        except OSError as e:
            raise MeterError("conn", "connecting to %s: %s" % (self.describe(), e))
        self.connects += 1

    async def send(self, data):
        try:
            self._w.write(data)
            await self._w.drain()
        except OSError as e:
            await self.close()
            raise MeterError("conn", "sending to %s: %s" % (self.describe(), e))

    async def recv(self, mv, timeout_ms):
        # -> bytes read into mv (> 0), 0 on timeout; MeterError("conn") once closed.
        if timeout_ms <= 0:
            return 0
        try:
            n = await asyncio.wait_for_ms(self._r.readinto(mv), timeout_ms)
        except asyncio.TimeoutError:
            return 0
        except OSError as e:
            await self.close()
            raise MeterError("conn", "%s: %s" % (self.describe(), e))
        if not n:
            await self.close()
            raise MeterError("conn", "%s closed the connection" % self.describe())
        return n

    async def close(self):
        w = self._w
        self._r = self._w = None
        if w is not None:
            try:
                w.close()
                await w.wait_closed()
            except OSError:
                pass

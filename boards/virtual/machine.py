# Stand-in for MicroPython's `machine` module on the virtual board.
#
# It offers the subset of the ESP32/RP2040 API the firmware uses, and
# routes every pin, PWM, watchdog and reset through vboard_link to the
# supervisor, where the host observes and drives them. Constants use the
# ESP32 port's values.
import io
import os
import select
import socket
import time

import vboard_link as _link

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_CAUSES = {
    "PWRON_RESET": PWRON_RESET,
    "HARD_RESET": HARD_RESET,
    "WDT_RESET": WDT_RESET,
    "DEEPSLEEP_RESET": DEEPSLEEP_RESET,
    "SOFT_RESET": SOFT_RESET,
}


def reset_cause():
    return _CAUSES.get(os.getenv("PGW_VBOARD_RESET_CAUSE") or "", PWRON_RESET)


def unique_id():
    uid = os.getenv("PGW_VBOARD_UID") or "000000000000"
    return bytes(int(uid[i : i + 2], 16) for i in range(0, len(uid), 2))


def freq():
    return int(os.getenv("PGW_VBOARD_CPU_HZ") or "240000000")


def _halt(message):
    # The supervisor ends this process and starts the board again; nothing
    # after a reset request may run, as on hardware, not even a Ctrl-C.
    sent = False
    while True:
        try:
            if not sent:
                _link.send(message)
                sent = True
            time.sleep_ms(1000)
        except KeyboardInterrupt:
            pass


def reset():
    _halt("reset SOFT_RESET")


def soft_reset():
    _halt("softreboot")


def deepsleep(time_ms=0):
    _halt("reset DEEPSLEEP_RESET %d" % time_ms)


def lightsleep(time_ms=0):
    time.sleep_ms(time_ms)


def idle():
    time.sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def _key(pin):
    if isinstance(pin, Pin):
        return pin._key
    return str(pin)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self._key = str(id)
        self._id = id
        self._mode = self.IN
        self._pull = None
        self._out = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self.value(value)
        elif self._mode in (self.OUT, self.OPEN_DRAIN) and self._out is None:
            self.value(0)

    def value(self, v=None):
        if v is None:
            if self._mode in (self.OUT, self.OPEN_DRAIN) and self._out is not None:
                return self._out
            _link.poll()
            return _link.inputs.get(self._key, 1 if self._pull == self.PULL_UP else 0)
        v = 1 if v else 0
        if v != self._out:
            self._out = v
            _link.send("out %s %d" % (self._key, v))
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def __repr__(self):
        return "Pin(%r)" % (self._id,)


class Signal:
    def __init__(self, pin, invert=False):
        self._pin = pin
        self._invert = invert

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ self._invert
        self._pin.value((1 if v else 0) ^ self._invert)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class PWM:
    def __init__(self, pin, freq=0, duty_u16=None, duty_ns=None):
        self._key = _key(pin)
        self._freq = 0
        self._duty = 0
        self.init(freq=freq, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, freq=0, duty_u16=None, duty_ns=None):
        if freq:
            self._freq = freq
        if duty_u16 is not None:
            self._duty = duty_u16
        elif duty_ns is not None and self._freq:
            self._duty = duty_ns * self._freq * 65535 // 1000000000
        self._report()

    def _report(self):
        _link.send("pwm %s %d %d" % (self._key, self._freq, self._duty))

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        self._report()

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 must be 0..65535")
        self._duty = d
        self._report()

    def deinit(self):
        self._freq = 0
        self._duty = 0
        self._report()


class ADC:
    ATTN_0DB = 0
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self._key = _key(pin)

    def atten(self, a):
        pass

    def read_u16(self):
        _link.poll()
        return _link.inputs.get(self._key, 0)

    def read_uv(self):
        return self.read_u16() * 3300000 // 65535


class WDT:
    # The supervisor enforces the timeout: a hung interpreter cannot reset
    # itself, so the process is killed and the board boots with WDT_RESET.
    def __init__(self, id=0, timeout=5000):
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        _link.send("wdt %d" % timeout)

    def feed(self):
        _link.send("feed")


class RTC:
    _offset = 0  # seconds the host clock is set off by; survives until reset

    def datetime(self, dt=None):
        if dt is None:
            t = time.time() + RTC._offset
            tm = time.gmtime(t)  # (y, mo, d, h, mi, s, weekday, yearday[, isdst])
            return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0)
        y, mo, d, _wd, h, mi, s = dt[:7]
        RTC._offset = time.mktime((y, mo, d, h, mi, s, 0, 0)) - time.time()

    def init(self, dt):
        self.datetime(dt)


class UART(io.IOBase):
    # Bytes go through the supervisor to a host pty, where a meter
    # simulator opens them like a USB-RS485 adapter. The supervisor paces
    # them at this UART's baud rate; here write() returns at once, as into
    # a TX FIFO, and txdone()/flush() follow the same line timing.
    # read(n): waits up to `timeout` ms for the first byte, then at most
    # `timeout_char` ms between bytes (at least one character time plus
    # 1 ms, as the ESP32 port enforces), until n bytes; None if none came.
    def __init__(self, id, baudrate=9600, bits=8, parity=None, stop=1, **kw):
        self._id = id
        self._sock = None
        self.init(baudrate, bits, parity, stop, **kw)

    def init(self, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None,
             timeout=0, timeout_char=0, rxbuf=256, **kw):
        self.deinit()
        self._timeout = timeout
        frame_bits = 1 + bits + (0 if parity is None else 1) + stop
        self._char_us = (frame_bits * 1000000 + baudrate - 1) // baudrate
        self._timeout_char = max(timeout_char, 12000 // baudrate + 1)
        self._rxbuf = max(rxbuf, 32)
        self._rx = bytearray()
        self._tx_end = time.ticks_us()
        s = socket.socket()
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: no Nagle delay on small writes
        s.connect(socket.getaddrinfo("127.0.0.1", int(os.getenv("PGW_VBOARD_PORT")))[0][-1])
        par = "N" if parity is None else ("E" if parity == 0 else "O")
        hello = "uart %s %s %d %d %s %d\n" % (
            os.getenv("PGW_VBOARD_TOKEN", ""), self._id, baudrate, bits, par, stop)
        s.write(hello.encode())
        s.setblocking(False)
        self._sock = s
        self._poller = select.poll()
        self._poller.register(s, select.POLLIN)

    def deinit(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _pull(self):
        # Move what has arrived into the RX buffer (at most rxbuf bytes; the
        # rest waits in the socket, as a flow-controlled FIFO would).
        room = self._rxbuf - len(self._rx)
        while room > 0 and self._poller.poll(0):
            try:
                data = self._sock.recv(room)
            except OSError:
                return
            if not data:
                return
            self._rx += data
            room -= len(data)

    def _wait(self, ms):
        # True once a byte is buffered; waits up to ms (-1: forever).
        self._pull()
        if self._rx:
            return True
        if ms == 0 or not self._poller.poll(ms):
            return False
        self._pull()
        return bool(self._rx)

    def any(self):
        self._pull()
        return len(self._rx)

    def read(self, n=-1):
        if n == 0:
            return b""
        if not self._wait(self._timeout):
            return None
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self._rx and not self._wait(self._timeout_char):
                break
            k = len(self._rx) if n < 0 else min(len(self._rx), n - len(out))
            out += self._rx[:k]
            self._rx = self._rx[k:]
        return bytes(out)

    def readinto(self, buf, n=-1):
        data = self.read(len(buf) if n < 0 else min(n, len(buf)))
        if not data:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            c = self.read(1)
            if not c:
                break
            line += c
        return line or None

    def write(self, buf):
        self._sock.setblocking(True)
        try:
            self._sock.write(buf)
        finally:
            self._sock.setblocking(False)
        now = time.ticks_us()
        start = self._tx_end if time.ticks_diff(self._tx_end, now) > 0 else now
        self._tx_end = time.ticks_add(start, len(buf) * self._char_us)
        return len(buf)

    def flush(self):
        # Returns once every written byte has left the line.
        left = time.ticks_diff(self._tx_end, time.ticks_us())
        if left > 0:
            time.sleep_us(left)

    def txdone(self):
        return time.ticks_diff(self._tx_end, time.ticks_us()) <= 0

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL, so asyncio streams work on a UART
            ready = 0
            if arg & select.POLLIN:
                self._pull()
                if self._rx:
                    ready |= select.POLLIN
            return ready | (arg & select.POLLOUT)
        # Nothing else, MP_STREAM_GET_FILENO (10) included: answering 0 there
        # would make select poll fd 0 (stdin) in place of this UART.
        return -1


_ENODEV = 19


class I2C:
    # Transactions are answered by device models on the host; with none
    # attached every address NACKs, as an empty bus does.
    def __init__(self, id=0, scl=None, sda=None, freq=400000):
        self._id = id

    def _xfer(self, msg):
        reply = _link.request("i2c %s %s" % (self._id, msg), "i2c ")
        parts = reply.split()
        if parts[1] != "ok":
            raise OSError(_ENODEV)
        return bytes.fromhex(parts[2]) if len(parts) > 2 else b""

    def scan(self):
        return list(self._xfer("scan"))

    def readfrom(self, addr, nbytes, stop=True):
        return self._xfer("%d r %d" % (addr, nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf))
        buf[: len(data)] = data

    def writeto(self, addr, buf, stop=True):
        self._xfer("%d w %s" % (addr, bytes(buf).hex() or "-"))
        return 1

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        self.writeto(addr, bytes([memaddr]))
        return self.readfrom(addr, nbytes)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self.writeto(addr, bytes([memaddr]) + bytes(buf))


SoftI2C = I2C

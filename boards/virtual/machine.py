# Stand-in for MicroPython's `machine` module on the virtual board.
#
# It offers the subset of the ESP32/RP2040 API the firmware uses, and
# routes every pin, PWM, watchdog and reset through vboard_link to the
# supervisor, where the host observes and drives them. Constants use the
# ESP32 port's values.
import errno
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


def reset_cause():
    # The supervisor names the cause as the constant is named. The table is
    # built per call (once or twice a boot) rather than held for good.
    return {
        "PWRON_RESET": PWRON_RESET,
        "HARD_RESET": HARD_RESET,
        "WDT_RESET": WDT_RESET,
        "DEEPSLEEP_RESET": DEEPSLEEP_RESET,
        "SOFT_RESET": SOFT_RESET,
    }.get(os.getenv("PGW_VBOARD_RESET_CAUSE") or "", PWRON_RESET)


def unique_id():
    return bytes.fromhex(os.getenv("PGW_VBOARD_UID") or "000000000000")


def freq():
    return int(os.getenv("PGW_VBOARD_CPU_HZ") or 240000000)


def _halt(message):
    # The supervisor ends this process and starts the board again; nothing
    # after a reset request may run, as on hardware, not even a Ctrl-C.
    while True:
        try:
            if message:
                _link.send(message)
                message = None
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

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        if not 0 <= value <= 65535:
            raise ValueError("duty_u16 must be 0..65535")
        self._duty = value
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

    def atten(self, value):
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
        # RTC order: (year, month, day, weekday, hour, minute, second, subsecond);
        # gmtime/mktime: (year, month, day, hour, minute, second, weekday, yearday).
        if dt is None:
            t = time.gmtime(time.time() + RTC._offset)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        RTC._offset = time.mktime(tuple(dt[0:3]) + tuple(dt[4:7]) + (0, 0)) - time.time()

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
        # a character: start bit, data bits, parity bit if any, stop bits
        self._char_us = ((1 + bits + (parity is not None) + stop) * 1000000 + baudrate - 1) // baudrate
        self._timeout_char = max(timeout_char, 12000 // baudrate + 1)
        # The RX FIFO: one buffer made here, as a port's driver has, so that
        # polling and readinto() allocate nothing on the firmware's heap.
        self._rxb = bytearray(max(rxbuf, 32))
        self._rxv = memoryview(self._rxb)
        self._r = self._w = 0  # unread bytes are _rxb[_r:_w]
        self._tx_end = time.ticks_us()
        s = socket.socket()
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: no Nagle delay on small writes
        s.connect(socket.getaddrinfo("127.0.0.1", int(os.getenv("PGW_VBOARD_PORT")))[0][-1])
        s.write(("uart %s %s %d %d %s %d\n" % (
            os.getenv("PGW_VBOARD_TOKEN", ""), self._id, baudrate, bits,
            "N" if parity is None else ("E" if parity == 0 else "O"), stop)).encode())
        s.setblocking(False)
        self._sock = s
        self._poller = select.poll()
        self._poller.register(s, select.POLLIN)

    def deinit(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _pull(self):
        # Move what has arrived into the RX FIFO (as much as fits; the rest
        # waits in the socket, as a flow-controlled FIFO would).
        if self._r == self._w:
            self._r = self._w = 0
        elif self._w == len(self._rxb) and self._r:
            self._rxb[: self._w - self._r] = self._rxv[self._r : self._w]
            self._r, self._w = 0, self._w - self._r
        while self._w < len(self._rxb) and self._poller.poll(0):
            try:
                got = self._sock.readinto(self._rxv[self._w :])
            except OSError:
                return
            if not got:
                return
            self._w += got

    def _wait(self, timeout_ms):
        # True once a byte is buffered; waits up to timeout_ms (-1: forever).
        self._pull()
        if self._w > self._r:
            return True
        if timeout_ms == 0 or not self._poller.poll(timeout_ms):
            return False
        self._pull()
        return self._w > self._r

    def any(self):
        self._pull()
        return self._w - self._r

    def _take(self, buf, at, n):
        # Up to n buffered bytes into buf[at:], waiting timeout_char between them.
        got = 0
        while got < n:
            if self._w == self._r and not self._wait(self._timeout_char):
                break
            k = min(self._w - self._r, n - got)
            buf[at + got : at + got + k] = self._rxv[self._r : self._r + k]
            self._r += k
            got += k
        return got

    def read(self, n=-1):
        if n == 0:
            return b""
        if not self._wait(self._timeout):
            return None
        if n < 0:
            out = bytearray()
            while self._wait(self._timeout_char):
                out += self._rxv[self._r : self._w]
                self._r = self._w
            return bytes(out)
        out = bytearray(n)
        return bytes(out[: self._take(out, 0, n)])

    def readinto(self, buf, n=-1):
        n = len(buf) if n < 0 else min(n, len(buf))
        if not self._wait(self._timeout):
            return None
        return self._take(buf, 0, n)

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
        time.sleep_us(max(0, time.ticks_diff(self._tx_end, time.ticks_us())))

    def txdone(self):
        return time.ticks_diff(self._tx_end, time.ticks_us()) <= 0

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL, so asyncio streams work on a UART
            ready = 0
            if arg & select.POLLIN:
                self._pull()
                if self._w > self._r:
                    ready |= select.POLLIN
            return ready | (arg & select.POLLOUT)
        # Nothing else, MP_STREAM_GET_FILENO (10) included: answering 0 there
        # would make select poll fd 0 (stdin) in place of this UART.
        return -1


class I2C:
    # Transactions are answered by device models on the host; with none
    # attached every address NACKs, as an empty bus does.
    def __init__(self, id=0, scl=None, sda=None, freq=400000):
        self._id = id

    def _xfer(self, message):
        parts = _link.request("i2c %s %s" % (self._id, message), "i2c ").split()
        if parts[1] != "ok":
            raise OSError(errno.ENODEV)
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

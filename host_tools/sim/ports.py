"""Serial plumbing for the simulators: pty pairs, and a serial port by path.

A simulator serves a serial line by opening a device path, as it would open
/dev/ttyUSB0: the far end of a virtual board's UART (`<link>.rs485`,
`<link>.uart1`), or one end of a `PtyPair` made here for a standalone test.
A pty pair is two ptys whose masters a relay thread joins, so each side
opens an ordinary tty path (what `socat pty,raw pty,raw` gives).
"""

import errno
import os
import select
import threading
import tty


class PtyPair:
    """Two tty paths wired back to back: bytes written to one are read from the other.

    `a` and `b` are the paths. While a side is not open, what is written
    for it waits in the kernel's pty buffer (up to a few KB), then is dropped.
    """

    def __init__(self):
        self._masters = []
        self._slaves = []  # kept open so a side that closes and reopens keeps its settings
        paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._masters.append(master)
            self._slaves.append(slave)
            paths.append(os.ttyname(slave))
        self.a, self.b = paths
        self.relayed = 0
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="pty-pair", daemon=True)
        self._thread.start()

    def _relay(self):
        ma, mb = self._masters
        peer = {ma: mb, mb: ma}
        pending = {ma: b"", mb: b""}  # bytes read from key, waiting to go to its peer
        while True:
            want_write = [peer[fd] for fd, buf in pending.items() if buf]
            readable, writable, _ = select.select([ma, mb, self._stop_r], want_write, [], 1.0)
            if self._stop_r in readable:
                return
            for fd in (ma, mb):
                if fd in readable and len(pending[fd]) < 65536:
                    try:
                        data = os.read(fd, 4096)
                    except BlockingIOError:
                        data = b""
                    except OSError as e:
                        if e.errno != errno.EIO:  # EIO: the other side has no opener now
                            raise
                        data = b""
                    pending[fd] += data
            for src in (ma, mb):
                dst = peer[src]
                if pending[src] and dst in writable:
                    try:
                        n = os.write(dst, pending[src])
                    except BlockingIOError:
                        n = 0
                    self.relayed += n
                    pending[src] = pending[src][n:]

    def close(self):
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in self._masters + self._slaves + [self._stop_r, self._stop_w]:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_serial(path, baudrate=9600, timeout=0.05):
    """Open a serial device or pty by path, raw, with a short read timeout."""
    import serial

    try:
        return serial.Serial(path, baudrate=baudrate, timeout=timeout, exclusive=False)
    except serial.SerialException as e:
        raise OSError("cannot open %s: %s" % (path, e)) from e

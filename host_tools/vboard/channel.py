"""Host side of a virtual board's GPIO channel.

The supervisor publishes every output change, PWM setting, watchdog arm,
reset and boot as a time-stamped JSON event on a unix socket next to the
console link (`<link>.gpio`). Tests read what the board *did* from here,
not what the firmware says it did, and set inputs (a held button, an EV
pilot voltage) the way a finger or a car would.
"""

import json
import socket
import threading
import time
from pathlib import Path


class ChannelError(RuntimeError):
    pass


class GpioChannel:
    def __init__(self, link, timeout=10.0):
        self.path = Path(f"{link}.gpio")
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise ChannelError(f"no virtual board GPIO channel at {self.path}") from None
                time.sleep(0.05)
        self.events = []
        self.hello = None
        self._replies = []
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(lambda e: e.get("kind") == "hello", timeout=timeout, history=True)

    def _read(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += data
            lines = buf.split(b"\n")
            buf = lines.pop()
            with self._cond:
                for line in lines:
                    ev = json.loads(line)
                    if ev.get("kind") == "hello":
                        self.hello = ev
                        self.events.append(ev)
                    elif ev.get("kind") == "reply":
                        self._replies.append(ev)
                    else:
                        self.events.append(ev)
                self._cond.notify_all()

    def mark(self):
        """A position in the event list; pass it as `since` to wait for later events."""
        with self._cond:
            return len(self.events)

    def wait_for(self, predicate, timeout=10.0, since=0, history=False):
        """Return the first event at or after `since` that satisfies predicate."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = since
            while True:
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if predicate(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise ChannelError(f"timed out after {timeout}s waiting for a GPIO event; "
                                       f"last events: {self.events[-5:]}")
                self._cond.wait(left)

    def wait_kind(self, kind, timeout=10.0, since=0, **fields):
        return self.wait_for(
            lambda e: e.get("kind") == kind and all(e.get(k) == v for k, v in fields.items()),
            timeout=timeout, since=since)

    def outputs(self, role):
        """All (time, value) changes of an output role, oldest first."""
        with self._cond:
            return [(e["t"], e["value"]) for e in self.events
                    if e.get("kind") == "out" and e.get("role") == role]

    def level(self, role):
        changes = self.outputs(role)
        return changes[-1][1] if changes else None

    def _command(self, cmd, timeout=5.0):
        with self._cond:
            n = len(self._replies)
            self.sock.sendall((json.dumps(cmd) + "\n").encode())
            deadline = time.monotonic() + timeout
            while len(self._replies) <= n:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise ChannelError(f"no reply to {cmd}")
                self._cond.wait(left)
            reply = self._replies[n]
        if not reply.get("ok"):
            raise ChannelError(reply.get("error", "command failed"))
        return reply

    def set_input(self, role, value):
        self._command({"set": role, "value": int(value)})

    def wifi(self, up):
        self._command({"wifi": "up" if up else "down"})

    def power_cycle(self):
        self._command({"power": "cycle"})

    def close(self):
        self.sock.close()

"""A loopback TCP proxy whose link tests break on purpose.

Clients connect to ``proxy.port`` on 127.0.0.1 instead of the real server
(an MQTT broker, say); the proxy forwards each connection to the target and
lets a test make the link between them fail the ways a WiFi link does::

    with NetProxy("127.0.0.1", broker.port) as proxy:
        client = connect(proxy.port)
        proxy.blackhole()       # silence both ways, no reset: a dead link
        ...                     # the client's PINGREQ goes unanswered
        proxy.restore()
        proxy.reset_all()       # every connection closed abruptly (RST)

Link modes (``proxy.mode``):

- ``"up"``: bytes flow, after ``set_latency(ms)`` each way.
- ``"drop"`` (``blackhole()``): connections stay open but every byte, and a
  FIN, is read and thrown away, so both peers see silence. A side that closes
  during the outage is gone: after ``restore()`` the first bytes the other side
  sends are answered with a reset, as a peer that forgot the connection would.
  Connections accepted meanwhile are never forwarded (their SYN was lost).
- ``"hold"`` (``blackhole(hold=True)``): nothing is read or sent; bytes wait in
  the socket buffers and arrive, in order, after ``restore()``, like TCP
  retransmitting after a short outage. New connections wait too.

Every control call runs on the proxy's thread and has taken effect when it
returns. Tests synchronise on ``wait_until(predicate, timeout)``, which wakes
on every counter or mode change, never on sleeps.
"""

from __future__ import annotations

import errno
import math
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass

MODES = ("up", "drop", "hold")
_CHUNK = 65536
_MAX_QUEUED = 1 << 20  # bytes waiting one way before that side's reads pause
_MAX_LATENCY_MS = 600_000
_MAX_PERIODS = 10_000
_CONTROL_TIMEOUT = 10.0  # seconds for the proxy thread to carry out a call
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_EOF = None  # queued in place of bytes: shut down writing once what came before is sent


class NetProxyError(RuntimeError):
    """A bad argument or a closed proxy.

    ``reason``: ``"bad-target"``, ``"bad-latency"``, ``"bad-schedule"``,
    ``"closed"``, ``"stuck"`` (the proxy thread did not answer a control call).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Counters:
    """A snapshot of what the proxy has done (``proxy.counters()``)."""

    mode: str = "up"
    flapping: bool = False
    accepted: int = 0           # client connections accepted
    connected: int = 0          # connections made to the target
    refused: int = 0            # connections the target refused (client got a reset)
    open: int = 0               # client connections not yet fully closed
    resets: int = 0             # connections the proxy reset on purpose
    to_target: int = 0          # bytes delivered to the target
    to_client: int = 0          # bytes delivered to clients
    dropped_to_target: int = 0  # bytes from clients thrown away
    dropped_to_client: int = 0  # bytes from the target thrown away
    dropped_closes: int = 0     # FINs thrown away (that side closed during an outage)


# --- schedules for flap() ----------------------------------------------------


def parse_schedule(schedule) -> list[tuple[str, float]]:
    """``[(state, seconds), ...]`` with state "up" or "down".

    Takes such a list, or a string like ``"down:2 up:0.5 down:1.5"``.
    """
    if isinstance(schedule, str):
        items = []
        for word in schedule.replace(",", " ").split():
            state, sep, seconds = word.partition(":")
            if not sep:
                raise NetProxyError("bad-schedule", f"schedule item {word!r} is not STATE:SECONDS")
            items.append((state, seconds))
    else:
        try:
            items = [tuple(item) for item in schedule]
        except TypeError:
            raise NetProxyError("bad-schedule", "a schedule is a string or a list of "
                                "(state, seconds) pairs") from None
    if not items or len(items) > _MAX_PERIODS:
        raise NetProxyError("bad-schedule", f"a schedule has 1 to {_MAX_PERIODS} periods, "
                            f"not {len(items)}")
    periods = []
    for item in items:
        if len(item) != 2 or item[0] not in ("up", "down"):
            raise NetProxyError("bad-schedule", f"schedule item {item!r} is not "
                                "('up' or 'down', seconds)")
        try:
            seconds = float(item[1])
        except (TypeError, ValueError):
            seconds = math.nan
        if not (0 <= seconds < math.inf):
            raise NetProxyError("bad-schedule", f"period {item!r} needs a finite, "
                                "non-negative number of seconds")
        periods.append((item[0], seconds))
    return periods


def random_schedule(seed, periods: int = 10, up=(0.5, 5.0), down=(0.5, 5.0),
                    start: str = "down") -> list[tuple[str, float]]:
    """Alternating down/up periods with lengths drawn uniformly from the ranges,
    the same for the same seed (milliseconds resolution)."""
    if start not in ("up", "down") or not 1 <= periods <= _MAX_PERIODS:
        raise NetProxyError("bad-schedule", "start is 'up' or 'down', periods "
                            f"1..{_MAX_PERIODS}")
    for low, high in (up, down):
        if not 0 <= low <= high < math.inf:
            raise NetProxyError("bad-schedule", f"bad period range ({low}, {high})")
    rng = random.Random(seed)
    state, result = start, []
    for _ in range(periods):
        low, high = up if state == "up" else down
        result.append((state, round(rng.uniform(low, high), 3)))
        state = "up" if state == "down" else "down"
    return result


# --- the proxy ---------------------------------------------------------------


class _Side:
    """One socket of a proxied connection, and the bytes queued to send on it."""

    __slots__ = ("sock", "to_client", "queue", "queued", "read_eof", "write_shut", "mask")

    def __init__(self, sock, to_client):
        self.sock = sock
        self.to_client = to_client  # True: this socket leads to the client
        self.queue = deque()        # [due time, bytes or _EOF]
        self.queued = 0
        self.read_eof = False
        self.write_shut = False
        self.mask = 0


class _Link:
    """A client connection and, once made, its connection to the target.

    state: "pending" (hold mode: not forwarded yet), "connecting", "open",
    "orphan" (one side lost during an outage, or never forwarded).
    """

    __slots__ = ("client", "target", "state")

    def __init__(self, client, state):
        self.client = client
        self.target = None
        self.state = state

    def sides(self):
        return [s for s in (self.client, self.target) if s is not None and s.sock is not None]

    def peer(self, side):
        return self.target if side is self.client else self.client


class NetProxy:
    """Forward 127.0.0.1:``port`` to ``target_host``:``target_port``, with faults.

    ``listen_port`` 0 picks a free port. Use as a context manager, or call
    ``close()``.
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0):
        if not isinstance(target_port, int) or not 0 < target_port <= 65535:
            raise NetProxyError("bad-target", f"target port must be 1..65535, not "
                                f"{target_port!r}")
        try:
            family, _, _, _, address = socket.getaddrinfo(
                target_host, target_port, type=socket.SOCK_STREAM)[0]
        except (OSError, TypeError, ValueError, OverflowError) as exc:
            raise NetProxyError("bad-target", f"cannot resolve target "
                                f"{target_host}:{target_port}: {exc}") from None
        self.target = (target_host, target_port)
        self._target_family, self._target_address = family, address
        self._listener = socket.create_server((listen_host, listen_port))
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]

        self._cond = threading.Condition()
        self._counts = dict.fromkeys(Counters.__dataclass_fields__, 0)
        self._counts.update(mode="up", flapping=False)
        self._mode = "up"
        self._latency = 0.0
        self._links: list[_Link] = []
        self._flap_periods: deque = deque()
        self._flap_down = "drop"
        self._flap_until = None
        self._flap_done = threading.Event()
        self._flap_done.set()
        self.flap_log: list[tuple[str, float]] = []  # (mode, monotonic start) per period

        self._commands: deque = deque()
        self._closing = False
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, _READ, "listener")
        self._sel.register(self._wake_r, _READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"netproxy:{self.port}",
                                        daemon=True)
        self._thread.start()

    # --- controls (any thread) ----------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def latency_ms(self) -> float:
        return self._latency * 1000.0

    def blackhole(self, hold: bool = False) -> None:
        """Stop the link: drop everything (default), or hold it until restore()."""
        self._call(lambda: self._set_mode("hold" if hold else "drop", manual=True))

    def restore(self) -> None:
        """Bring the link back up (ends a flap schedule too)."""
        self._call(lambda: self._set_mode("up", manual=True))

    def reset_all(self) -> int:
        """Close every connection abruptly (RST to both peers); how many there were."""
        return self._call(self._reset_all)

    def set_latency(self, ms: float) -> None:
        """Delay each chunk ``ms`` milliseconds, each way, from now on."""
        try:
            seconds = float(ms) / 1000.0
        except (TypeError, ValueError):
            seconds = math.nan
        if not 0 <= seconds <= _MAX_LATENCY_MS / 1000.0:
            raise NetProxyError("bad-latency", f"latency must be 0..{_MAX_LATENCY_MS} ms, "
                                f"not {ms!r}")
        self._call(lambda: setattr(self, "_latency", seconds))

    def flap(self, schedule, hold: bool = False) -> list[tuple[str, float]]:
        """Run the link through up/down periods, then leave it up.

        ``schedule``: see :func:`parse_schedule` or :func:`random_schedule`.
        A down period drops (or with ``hold``, holds) as ``blackhole()``.
        Returns at once with the parsed schedule; ``wait_flap()`` waits for
        its end, and ``blackhole()``/``restore()`` cancel it.
        """
        periods = parse_schedule(schedule)
        self._call(lambda: self._start_flap(periods, "hold" if hold else "drop"))
        return periods

    def wait_flap(self, timeout: float) -> None:
        if not self._flap_done.wait(timeout):
            raise TimeoutError(f"the flap schedule did not end within {timeout} s")

    def counters(self) -> Counters:
        with self._cond:
            return Counters(**self._counts)

    def wait_until(self, predicate, timeout: float = 10.0) -> Counters:
        """Wait until ``predicate(counters)`` is true; the counters that made it so.

        Raises TimeoutError, with the last counters, when ``timeout`` passes.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = Counters(**self._counts)
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"not reached within {timeout} s: {snapshot}")
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stop the thread and close the listener and every connection."""
        if self._closed:
            return
        try:
            self._call(lambda: setattr(self, "_closing", True))
        except NetProxyError:
            pass
        self._thread.join(_CONTROL_TIMEOUT)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<NetProxy 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]} "
                f"mode={self._mode}>")

    def _call(self, action):
        if self._closing or self._closed:
            raise NetProxyError("closed", "the proxy is closed")
        done = threading.Event()
        result = []

        def run():
            try:
                result.append(action())
            finally:
                done.set()

        self._commands.append(run)
        self._wake()
        if not done.wait(_CONTROL_TIMEOUT):
            if not self._thread.is_alive():
                raise NetProxyError("closed", "the proxy is closed")
            raise NetProxyError("stuck", "the proxy thread did not carry out the call")
        return result[0] if result else None

    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake, or closing

    # --- the proxy thread -----------------------------------------------------

    def _count(self, **deltas):
        with self._cond:
            for name, delta in deltas.items():
                self._counts[name] += delta
            self._cond.notify_all()

    def _publish_state(self):
        with self._cond:
            self._counts["mode"] = self._mode
            self._counts["flapping"] = not self._flap_done.is_set()
            self._cond.notify_all()

    def _run(self):
        try:
            while True:
                while self._commands:
                    self._commands.popleft()()
                if self._closing:
                    break
                now = time.monotonic()
                self._step_flap(now)
                if self._mode != "hold":
                    for link in list(self._links):
                        for side in link.sides():
                            self._flush(link, side, now)
                self._reap()
                timeout = self._update_interest(now)
                for key, mask in self._sel.select(timeout):
                    self._dispatch(key.data, mask)
        finally:
            self._shutdown()

    def _dispatch(self, data, mask):
        if data == "listener":
            self._accept()
        elif data == "wake":
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        else:
            link, side = data
            if side.sock is None or link not in self._links:
                return
            if link.state == "connecting":
                self._connected(link)
                return
            if mask & _WRITE:
                self._flush(link, side, time.monotonic())
            if mask & _READ and side.sock is not None:
                self._receive(link, side)

    def _accept(self):
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of file descriptors; the client will retry
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state = {"up": "connecting", "hold": "pending", "drop": "orphan"}[self._mode]
            link = _Link(_Side(sock, True), state)
            self._links.append(link)
            self._count(accepted=1, open=1)
            if state == "connecting":
                self._connect(link)

    def _connect(self, link):
        link.state = "connecting"
        sock = socket.socket(self._target_family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self._target_address)
        link.target = _Side(sock, False)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self._refused(link)

    def _connected(self, link):
        sock = link.target.sock
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._refused(link)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.state = "open"
        self._count(connected=1)

    def _refused(self, link):
        self._count(refused=1)
        self._close_link(link, abort=True)

    def _receive(self, link, side):
        try:
            data = side.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            data = None
        dropped = "dropped_to_target" if side.to_client else "dropped_to_client"
        if not data:
            side.read_eof = True
            if link.state == "orphan" or self._mode == "drop":
                # A FIN or RST lost on a dead link: that side is gone for good.
                self._close_side(link, side, abort=data is None)
                link.state = "orphan"
                if self._mode == "drop":
                    self._count(dropped_closes=1)
            elif data is None:  # pass the reset on
                self._close_link(link, abort=True)
            else:
                self._enqueue(link.peer(side), _EOF)
            return
        if link.state == "orphan":
            if self._mode == "drop":
                self._count(**{dropped: len(data)})
            else:  # the link is back; the peer that knew this connection is not
                self._count(resets=1)
                self._close_link(link, abort=True)
            return
        if self._mode == "drop":
            self._count(**{dropped: len(data)})
            return
        self._enqueue(link.peer(side), data)

    def _enqueue(self, side, data):
        side.queue.append([time.monotonic() + self._latency, data])
        if data is not _EOF:
            side.queued += len(data)

    def _flush(self, link, side, now):
        while side.sock is not None and side.queue and side.queue[0][0] <= now:
            data = side.queue[0][1]
            if data is _EOF:
                side.queue.popleft()
                try:
                    side.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                side.write_shut = True
                continue
            try:
                sent = side.sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close_link(link, abort=True)
                return
            side.queued -= sent
            self._count(**{"to_client" if side.to_client else "to_target": sent})
            if sent < len(data):
                side.queue[0][1] = data[sent:]
                return
            side.queue.popleft()

    def _reap(self):
        for link in list(self._links):
            if link.state == "open" and all(s.read_eof and s.write_shut and not s.queue
                                            for s in (link.client, link.target)):
                self._close_link(link, abort=False)
            elif not link.sides():
                self._close_link(link, abort=False)

    def _update_interest(self, now):
        """Register what each socket waits for; the select timeout."""
        timeout = None if self._flap_until is None else max(0.0, self._flap_until - now)
        for link in self._links:
            for side in link.sides():
                mask = 0
                if link.state == "connecting":
                    mask = _WRITE if side is link.target else 0
                elif link.state != "pending" and self._mode != "hold":
                    peer = link.peer(side)
                    if not side.read_eof and (link.state == "orphan" or peer.queued < _MAX_QUEUED):
                        mask |= _READ
                    if side.queue:
                        wait = side.queue[0][0] - now
                        if wait <= 0:
                            mask |= _WRITE
                        elif timeout is None or wait < timeout:
                            timeout = wait
                if mask != side.mask:
                    if side.mask == 0:
                        self._sel.register(side.sock, mask, (link, side))
                    elif mask == 0:
                        self._sel.unregister(side.sock)
                    else:
                        self._sel.modify(side.sock, mask, (link, side))
                    side.mask = mask
        return timeout

    def _close_side(self, link, side, abort=False):
        if side.sock is None:
            return
        if side.mask:
            self._sel.unregister(side.sock)
            side.mask = 0
        if abort:
            try:  # linger 0: close sends RST
                side.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        side.sock.close()
        side.sock = None
        side.queue.clear()
        side.queued = 0

    def _close_link(self, link, abort):
        for side in (link.client, link.target):
            if side is not None:
                self._close_side(link, side, abort)
        if link in self._links:
            self._links.remove(link)
            self._count(open=-1)

    def _reset_all(self):
        links = list(self._links)
        for link in links:
            self._close_link(link, abort=True)
        if links:
            self._count(resets=len(links))
        return len(links)

    def _set_mode(self, mode, manual=False):
        if manual:
            self._flap_periods.clear()
            self._flap_until = None
            self._flap_done.set()
        previous, self._mode = self._mode, mode
        if mode == "drop" and previous != "drop":
            # What was in flight is lost with the link.
            for link in list(self._links):
                for side in link.sides():
                    lost = side.queued
                    side.queue.clear()
                    side.queued = 0
                    if lost:
                        self._count(**{"dropped_to_client" if side.to_client
                                       else "dropped_to_target": lost})
                if link.state == "pending":
                    link.state = "orphan"
        elif mode == "up":
            for link in list(self._links):
                if link.state == "pending":
                    self._connect(link)
        self._publish_state()

    def _start_flap(self, periods, down_mode):
        self._flap_periods = deque(periods)
        self._flap_down = down_mode
        self._flap_done.clear()
        self.flap_log = []
        self._flap_until = time.monotonic()
        self._step_flap(self._flap_until)  # the first period is on when flap() returns

    def _step_flap(self, now):
        while self._flap_until is not None and now >= self._flap_until:
            if not self._flap_periods:
                self._flap_until = None
                self._flap_done.set()
                self._set_mode("up")
                return
            state, seconds = self._flap_periods.popleft()
            mode = "up" if state == "up" else self._flap_down
            self.flap_log.append((mode, now))
            self._set_mode(mode)
            self._flap_until += seconds

    def _shutdown(self):
        for link in list(self._links):
            self._close_link(link, abort=False)
        self._flap_done.set()
        self._sel.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        while self._commands:  # let no caller wait for a call that will not run
            self._commands.popleft()()
        with self._cond:
            self._cond.notify_all()

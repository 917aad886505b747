# RelayGuard: what a contactor may do now, without I/O.
#
# A contactor that chatters wears out, welds, or makes the inverter or the
# vehicle restart again and again. Every requested switching therefore
# waits for a minimum dwell (min_on_ms closed before it may open, min_off_ms
# open before it may close) and for the rate limit (at most max_switches
# switchings in any window_ms). A request that has to wait is "deferred";
# the caller asks again at its next step (nothing is queued here).
#
# force_safe() opens at once, whatever the dwell and the rate: opening is
# the safe direction, and a fault (stale meter data, an overloaded fuse, a
# vehicle fault) must not wait a minute for a dwell timer. It also latches:
# closing requests are then "refused" until release(). A forced opening is
# recorded like any switching, so the next closing still waits min_off_ms
# and counts against the rate. Closing always respects dwell and rate, so a
# forced opening can push the count in a window one above max_switches, but
# never lets the relay close early.
#
# The construction counts as an opening at start_ms: the board opened every
# relay at boot, so the first closing after a (re)boot waits min_off_ms too.
#
# Time is a monotonic ms count (never wraps, never goes back) passed in by
# the caller; the firmware builds it by adding up ticks_diff().
from compat import const

_MAX_DWELL_MS = const(3600000)  # 1 h
_MAX_WINDOW_MS = const(86400000)  # 1 day
_MAX_SWITCHES = const(100)  # also the size of the history kept

# Why a request did not switch the relay (RelayGuard.reason).
_MIN_ON = const("min_on")  # deferred: closed for less than min_on_ms
_MIN_OFF = const("min_off")  # deferred: open for less than min_off_ms
RATE = "rate"  # deferred: max_switches already in the last window_ms
_LATCHED = const("latched")  # refused: force_safe() latched it open; release() first
_FORCED = const("forced")  # not a request: force_safe() opened or held it open


class RelayError(ValueError):
    # reason: "config", "not_int", "time" (negative or going back), "state"
    # (a request that is not True or False)
    def __init__(self, reason, message):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason


def _check_setting(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise RelayError("not_int", "%s must be an int, got %r" % (name, value))
    if not lo <= value <= hi:
        raise RelayError("config", "%s must be %d..%d, got %d" % (name, lo, hi, value))


class RelayGuard:
    def __init__(self, min_on_ms=60000, min_off_ms=60000, max_switches=10,
                 window_ms=3600000, start_ms=0):
        _check_setting(min_on_ms, "min_on_ms", 0, _MAX_DWELL_MS)
        _check_setting(min_off_ms, "min_off_ms", 0, _MAX_DWELL_MS)
        _check_setting(max_switches, "max_switches", 1, _MAX_SWITCHES)
        _check_setting(window_ms, "window_ms", 1, _MAX_WINDOW_MS)
        if isinstance(start_ms, bool) or not isinstance(start_ms, int):
            raise RelayError("not_int", "start_ms must be an int, got %r" % (start_ms,))
        if start_ms < 0:
            raise RelayError("time", "start_ms must be >= 0, got %d" % start_ms)
        self.min_on_ms = min_on_ms
        self.min_off_ms = min_off_ms
        self.max_switches = max_switches
        self.window_ms = window_ms
        self.closed = False  # what the relay should be now
        self.latched = False
        self.reason = None  # why the last call left the relay as it was
        self.switches = 0
        self.deferred = 0
        self.refused = 0
        self.forced = 0  # force_safe() calls that opened a closed relay
        self.clock_faults = 0  # force_safe() calls with a bad time (it opened anyway)
        self.changed_ms = start_ms  # when the relay last switched
        self._last_ms = start_ms
        self._history = [0] * max_switches  # ring of the last switching times
        self._recorded = 0  # entries of _history in use, up to max_switches
        self._oldest = 0  # index of the oldest entry once the ring is full

    def _check_now(self, now_ms):
        if isinstance(now_ms, bool) or not isinstance(now_ms, int):
            raise RelayError("not_int", "now_ms must be an int, got %r" % (now_ms,))
        if now_ms < 0 or now_ms < self._last_ms:
            raise RelayError("time", "now_ms must be >= 0 and never go back: %d after %d"
                             % (now_ms, self._last_ms))
        self._last_ms = now_ms

    def _rate_allows(self, now_ms):
        return (self._recorded < self.max_switches
                or now_ms - self._history[self._oldest] >= self.window_ms)

    def _switch(self, closed, now_ms):
        self.closed = closed
        self.changed_ms = now_ms
        self.switches += 1
        if self._recorded < self.max_switches:
            self._history[self._recorded] = now_ms
            self._recorded += 1
        else:
            self._history[self._oldest] = now_ms
            self._oldest = (self._oldest + 1) % self.max_switches

    def request(self, closed, now_ms):
        # Ask for the relay closed (True) or open (False) -> what it should be
        # now. When that differs, self.reason says why (MIN_ON, MIN_OFF, RATE,
        # LATCHED); it is None when the relay is as asked.
        if closed is not True and closed is not False:
            raise RelayError("state", "request True (closed) or False (open), got %r" % (closed,))
        self._check_now(now_ms)
        self.reason = None
        if closed == self.closed:
            return self.closed
        if closed and self.latched:
            self.refused += 1
            self.reason = _LATCHED
            return self.closed
        dwell = self.min_on_ms if self.closed else self.min_off_ms
        if now_ms - self.changed_ms < dwell:
            self.reason = _MIN_ON if self.closed else _MIN_OFF
        elif not self._rate_allows(now_ms):
            self.reason = RATE
        else:
            self._switch(closed, now_ms)
            return self.closed
        self.deferred += 1
        return self.closed

    def force_safe(self, now_ms):
        # Open now, whatever the dwell and rate, and latch open. Never raises:
        # with a bad now_ms it opens anyway and dates the switching at the
        # latest time it has seen.
        if isinstance(now_ms, bool) or not isinstance(now_ms, int) or now_ms < self._last_ms:
            self.clock_faults += 1
            now_ms = self._last_ms
        self._last_ms = now_ms
        self.latched = True
        self.reason = _FORCED
        if self.closed:
            self.forced += 1
            self._switch(False, now_ms)
        return False

    def release(self):
        # Lift the latch of force_safe(): closing may be requested again (and
        # still waits for min_off_ms and the rate).
        self.latched = False

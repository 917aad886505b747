# The device clock (docs/intervals.md): unix time as an offset against a
# local millisecond counter that the caller keeps (a non-wrapping count of
# ticks_ms; this module never reads a clock itself).
#
# Sources: NTP, the primary one; the ts of the hub's signed ACKs, a
# cross-check while NTP is fresh and the fallback once NTP has failed for
# `ack_after_s` or never worked. `rate` makes device time run that many times
# faster than the local counter (simulations; 1 on a device). Ages and
# limits are in device time; tolerances for the hub's time are about network
# latency, which is real time, so they are multiplied by `rate`.
#
# Nothing may be signed while `synced()` is false: before the first sync and
# once the last one is older than `max_age_s`. `now()` then returns None.

from compat import const

_EPOCH_2020 = const(1577836800)  # 2020-01-01T00:00:00Z: nothing earlier is a valid time
_UNIX_END = const(1 << 32)  # exclusive: 2106-02-07
_MAX_LOCAL_MS = const(1 << 48)  # 8900 years of a millisecond counter
_MAX_RATE = const(100000)
_DRIFT_SPAN_MS = const(3600000)  # device time between the two NTP syncs of a drift estimate

# ClockError reasons
_CONFIG = const("config")
_TIME = const("time")
_LOCAL = const("local")


class ClockError(ValueError):
    # reason: "config", "time" (absurd unix time), "local" (bad local counter)
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _setting(name, value, lo, hi):
    if not _is_int(value) or not lo <= value <= hi:
        raise ClockError(_CONFIG, "%s must be an int %d..%d, got %r" % (name, lo, hi, value))
    return value


def _age_text(ms):
    s = ms // 1000
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % (s // 60)
    if s < 172800:
        return "%d h" % (s // 3600)
    return "%d d" % (s // 86400)


class Clock:
    def __init__(self, rate=1, max_age_s=86400, ack_after_s=10800, tolerance_s=30, ack_step_s=2):
        self.rate = _setting("rate", rate, 1, _MAX_RATE)
        self.max_age_ms = 1000 * _setting("max_age_s", max_age_s, 1, 365 * 86400)
        self.ack_after_ms = 1000 * _setting("ack_after_s", ack_after_s, 0, max_age_s)
        # the hub's time may differ by this much before it counts (real time)
        self.tolerance_ms = 1000 * rate * _setting("tolerance_s", tolerance_s, 1, 3600)
        # in fallback, a smaller difference confirms the clock, a larger one steps it
        self.ack_step_ms = 1000 * rate * _setting("ack_step_s", ack_step_s, 1, 3600)
        self.source = None  # "ntp" or "ack": where the last sync came from
        self.synced_at_ms = None  # local ms of the last sync
        self.ntp_at_ms = None  # local ms of the last NTP sync
        self.last_step_ms = None  # the last sync's correction, device ms (+: clock was behind)
        self.drift_ppm = None  # + : the local counter runs fast
        self.ntp_syncs = 0
        self.ack_syncs = 0  # steps and confirmations from ACKs in fallback
        self.disagreements = 0  # ACKs beyond the tolerance while NTP was fresh
        self.hub_diff_ms = None  # the last ACK's ts minus the clock, device ms
        self._unix_ms = None  # device time at local ms _local_ms
        self._local_ms = None
        self._ref_unix_ms = None  # the earlier NTP sync of the drift estimate
        self._ref_local_ms = None

    def _local(self, local_ms):
        if not _is_int(local_ms) or not 0 <= local_ms < _MAX_LOCAL_MS:
            raise ClockError(_LOCAL, "local ms must be an int 0..2**48, got %r" % (local_ms,))
        if self._local_ms is not None and local_ms < self._local_ms:
            raise ClockError(_LOCAL, "local ms %d is before the last sync at %d" % (
                local_ms, self._local_ms))
        return local_ms

    def _since(self, local_ms, at_ms):
        # device ms from local ms at_ms to local_ms
        return (local_ms - at_ms) * self.rate

    def _estimate_ms(self, local_ms):
        if self._unix_ms is None:
            return None
        return self._unix_ms + self._since(local_ms, self._local_ms)

    def _set(self, unix_ms, local_ms, source):
        est = self._estimate_ms(local_ms)
        self.last_step_ms = None if est is None else unix_ms - est
        self._unix_ms = unix_ms
        self._local_ms = local_ms
        self.synced_at_ms = local_ms
        self.source = source

    def ntp(self, unix_s, local_ms, ms=0):
        # An NTP answer: unix seconds plus a millisecond part, received when
        # the local counter read local_ms. Sets the clock. Returns the step
        # in device ms (None for the first sync).
        if not _is_int(unix_s) or not _EPOCH_2020 <= unix_s < _UNIX_END:
            raise ClockError(_TIME, "NTP time %r is not 2020..2106" % (unix_s,))
        if not _is_int(ms) or not 0 <= ms <= 999:
            raise ClockError(_TIME, "millisecond part %r is not 0..999" % (ms,))
        self._local(local_ms)
        unix_ms = unix_s * 1000 + ms
        self._drift(unix_ms, local_ms)
        self._set(unix_ms, local_ms, "ntp")
        self.ntp_at_ms = local_ms
        self.ntp_syncs += 1
        return self.last_step_ms

    def _drift(self, unix_ms, local_ms):
        # From two NTP syncs at least _DRIFT_SPAN_MS of device time apart:
        # how much faster than real time the local counter ran.
        if self._ref_unix_ms is None:
            self._ref_unix_ms = unix_ms
            self._ref_local_ms = local_ms
            return
        counted = self._since(local_ms, self._ref_local_ms)
        if counted < _DRIFT_SPAN_MS:
            return
        real = unix_ms - self._ref_unix_ms
        if real > 0:
            num = (counted - real) * 1000000
            self.drift_ppm = (2 * num + real) // (2 * real)
        self._ref_unix_ms = unix_ms
        self._ref_local_ms = local_ms

    def _ntp_fresh(self, local_ms):
        return self.ntp_at_ms is not None and \
            self._since(local_ms, self.ntp_at_ms) <= self.ack_after_ms

    def ack_time(self, hub_ts, local_ms):
        # The ts (unix seconds) of a verified ACK from the hub, received at
        # local_ms. Returns what it did:
        #   "agree" / "disagree"  NTP is fresh: a cross-check only, the clock
        #                         is not touched; disagreements are counted
        #   "synced"              fallback: the clock was unsynchronised or
        #                         off by more than ack_step_s; set to hub_ts
        #   "confirmed"           fallback: within ack_step_s; the clock keeps
        #                         its time and counts as synced now
        if not _is_int(hub_ts) or not _EPOCH_2020 <= hub_ts < _UNIX_END:
            raise ClockError(_TIME, "hub time %r is not 2020..2106" % (hub_ts,))
        self._local(local_ms)
        hub_ms = hub_ts * 1000
        est = self._estimate_ms(local_ms)
        self.hub_diff_ms = None if est is None else hub_ms - est
        if self._ntp_fresh(local_ms):
            if abs(self.hub_diff_ms) > self.tolerance_ms:
                self.disagreements += 1
                return "disagree"
            return "agree"
        self.ack_syncs += 1
        if est is None or not self.synced(local_ms) or abs(self.hub_diff_ms) > self.ack_step_ms:
            self._set(hub_ms, local_ms, "ack")
            return "synced"
        self._unix_ms = est
        self._local_ms = local_ms
        self.synced_at_ms = local_ms
        self.source = "ack"
        return "confirmed"

    def synced(self, local_ms):
        self._local(local_ms)
        return self.synced_at_ms is not None and \
            self._since(local_ms, self.synced_at_ms) <= self.max_age_ms

    def now_ms(self, local_ms):
        # unix milliseconds, None unless synced
        if not self.synced(local_ms):
            return None
        return self._estimate_ms(local_ms)

    def now(self, local_ms):
        # unix seconds, None unless synced
        t = self.now_ms(local_ms)
        return None if t is None else t // 1000

    def estimate(self, local_ms):
        # unix seconds even when the last sync is too old (for logs, never
        # for signing); None before the first sync
        self._local(local_ms)
        t = self._estimate_ms(local_ms)
        return None if t is None else t // 1000

    def describe(self, local_ms):
        # one line for the console's `status`, e.g. "ntp 42 s ago, drift +12 ppm"
        self._local(local_ms)
        if self.source is None:
            return "unsynchronised: no NTP or hub time yet"
        age = self._since(local_ms, self.synced_at_ms)
        text = "%s %s ago" % (self.source, _age_text(age))
        if not self.synced(local_ms):
            text = "unsynchronised: " + text
        step = self.last_step_ms
        if step is not None:
            if -10000 < step < 10000:
                text += ", step %+d ms" % step
            else:
                text += ", step %+d s" % (step // 1000 if step > 0 else -(-step // 1000))
        if self.drift_ppm is not None:
            text += ", drift %+d ppm" % self.drift_ppm
        if self.disagreements:
            text += ", hub off %dx" % self.disagreements
        if self.rate != 1:
            text += ", rate %d" % self.rate
        return text

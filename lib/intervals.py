# The interval engine (docs/intervals.md): meter register samples in, one
# closed trading interval per meter out, as the READING of protocol.md.
#
# Intervals are aligned to the wall clock: boundaries at multiples of
# 60 * interval_min unix seconds; the interval ending at ts is
# [ts - 60 * interval_min, ts). The energy of an interval is the difference
# of the meter's registers at its two boundaries, each register value
# linearly interpolated between the last sample before the boundary and the
# first sample at or after it, in integers. Consecutive readings share their
# boundary value, so their energies add up exactly to the register difference.
#
# Time is unix seconds plus a separate millisecond part (0..999): unix
# milliseconds do not fit a small int on a 32-bit board (31 bits). Inside, the
# seconds are counted from 2020-01-01, which keeps them small until 2054.

from compat import const

_EPOCH_2020 = const(1577836800)  # 2020-01-01T00:00:00Z, a multiple of 86400
MAX_METERS = 8
_MAX_REGISTER = const(1 << 48)  # Wh; 281 TWh: anything above is garbage
_MAX_READING_MIN = const(1440)  # a READING's interval_min (lib/trade/messages.py)
_MAX_READING_WH = const(0xFFFFFFFF)  # a READING's import_wh / export_wh
LENGTHS_MIN = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)  # the divisors of 60

_UNIX_END = const(1 << 32)  # exclusive: 2106-02-07
_POWER_MIN = const(-(1 << 31))
_POWER_MAX = const((1 << 31) - 1)

# per-meter state: one preallocated list each, indexed by these
_HAS = const(0)  # 1 once a sample is held
_S = const(1)  # the last sample: seconds since EPOCH_2020
_MS = const(2)  # its millisecond part
_IMP = const(3)  # its import register, Wh
_EXP = const(4)  # its export register, Wh
_POW = const(5)  # its power, W
_BASE = const(6)  # 1 once a boundary value is held
_BASE_S = const(7)  # that boundary: seconds since EPOCH_2020
_BASE_IMP = const(8)  # import register interpolated at it
_BASE_EXP = const(9)  # export register interpolated at it
_FIELDS = const(10)

# why a meter's baseline was dropped (counted in stats)
_RESETS = const(("time", "register", "gap", "jump"))


class IntervalError(ValueError):
    # reason: "config", "meter", "time", "register", "power"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class IntervalReading:
    # One closed interval of one meter: [ts - 60 * interval_min, ts).
    def __init__(self, meter_index, ts, interval_min, import_wh, export_wh,
                 import_register_wh, export_register_wh, power_w):
        self.meter_index = meter_index
        self.ts = ts
        self.interval_min = interval_min
        self.import_wh = import_wh
        self.export_wh = export_wh
        self.import_register_wh = import_register_wh
        self.export_register_wh = export_register_wh
        self.power_w = power_w

    def fields(self, meter):
        # the READING fields of lib/trade/messages.py; meter: its serial (bytes)
        return {"interval_min": self.interval_min, "import_wh": self.import_wh,
                "export_wh": self.export_wh, "import_register_wh": self.import_register_wh,
                "export_register_wh": self.export_register_wh, "power_w": self.power_w,
                "meter": meter}

    def __repr__(self):
        return "<reading meter %d ts %d %d min +%d -%d Wh>" % (
            self.meter_index, self.ts, self.interval_min, self.import_wh, self.export_wh)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _share(delta, part, whole):
    # delta * part / whole, rounded half up; 0 < part <= whole, delta >= 0
    return (2 * delta * part + whole) // (2 * whole)


class IntervalEngine:
    def __init__(self, interval_min=15, meters=MAX_METERS):
        if not _is_int(interval_min) or interval_min not in LENGTHS_MIN:
            raise IntervalError("config", "interval_min must divide 60, got %r" % (interval_min,))
        if not _is_int(meters) or not 1 <= meters <= MAX_METERS:
            raise IntervalError("config", "meters must be 1..%d, got %r" % (MAX_METERS, meters))
        self.interval_min = interval_min
        self.meters = meters
        self._length_s = 60 * interval_min
        self._state = [[0] * _FIELDS for _ in range(meters)]
        self.stats = {"readings": 0, "baselines": 0, "invalid": 0,
                      "time": 0, "register": 0, "gap": 0, "jump": 0}

    def reset(self, meter_index=None):
        # forget one meter's samples and baseline (all meters if None); not counted
        if meter_index is None:
            states = self._state
        else:
            states = (self._state[self._meter(meter_index)],)
        for m in states:
            m[_HAS] = 0
            m[_BASE] = 0

    def baseline(self, meter_index):
        # -> (ts, import_register_wh, export_register_wh) of the boundary the
        # next reading starts at, or None while there is none
        m = self._state[self._meter(meter_index)]
        if not m[_BASE]:
            return None
        return (_EPOCH_2020 + m[_BASE_S], m[_BASE_IMP], m[_BASE_EXP])

    def restore(self, meter_index, ts, import_register_wh, export_register_wh):
        # Take back a baseline() kept across a reboot: the next sample's
        # reading starts at that boundary, interpolated from it, so readings
        # tile time across the downtime. Bad values raise and change nothing.
        m = self._state[self._meter(meter_index)]
        if not _is_int(ts) or not _EPOCH_2020 <= ts < _UNIX_END or ts % self._length_s:
            self._invalid("time", "boundary", ts)
        for v in (import_register_wh, export_register_wh):
            if not _is_int(v) or not 0 <= v <= _MAX_REGISTER:
                self._invalid("register", "register", v)
        s = ts - _EPOCH_2020
        m[_BASE] = 1
        m[_BASE_S] = s
        m[_BASE_IMP] = import_register_wh
        m[_BASE_EXP] = export_register_wh
        self._hold(m, s, 0, import_register_wh, export_register_wh, 0)

    def _meter(self, meter_index):
        if not _is_int(meter_index) or not 0 <= meter_index < self.meters:
            self.stats["invalid"] += 1
            raise IntervalError("meter", "meter_index must be 0..%d, got %r" % (
                self.meters - 1, meter_index))
        return meter_index

    def _invalid(self, reason, what, value):
        self.stats["invalid"] += 1
        raise IntervalError(reason, "bad %s %r" % (what, value))

    def sample(self, meter_index, t_s, import_register_wh, export_register_wh, power_w, ms=0):
        # One poll of a meter at unix time t_s + ms / 1000. Returns the
        # IntervalReading it closes, or None. A sample that crosses several
        # boundaries (the meter was offline) closes ONE reading over the
        # whole gap: interval_min is a multiple of the length, ts the last
        # boundary crossed. Garbage raises IntervalError and changes nothing.
        m = self._state[self._meter(meter_index)]
        if not _is_int(t_s) or not _EPOCH_2020 <= t_s < _UNIX_END:
            self._invalid("time", "time", t_s)
        if not _is_int(ms) or not 0 <= ms <= 999:
            self._invalid("time", "millisecond part", ms)
        # (no loop over a tuple: this path allocates nothing)
        if not _is_int(import_register_wh) or not 0 <= import_register_wh <= _MAX_REGISTER:
            self._invalid("register", "import register", import_register_wh)
        if not _is_int(export_register_wh) or not 0 <= export_register_wh <= _MAX_REGISTER:
            self._invalid("register", "export register", export_register_wh)
        if not _is_int(power_w) or not _POWER_MIN <= power_w <= _POWER_MAX:
            self._invalid("power", "power", power_w)
        s = t_s - _EPOCH_2020
        if not m[_HAS]:
            self._hold(m, s, ms, import_register_wh, export_register_wh, power_w)
            return None
        s0 = m[_S]
        ms0 = m[_MS]
        if s < s0 or (s == s0 and ms < ms0):
            return self._restart(m, "time", s, ms, import_register_wh, export_register_wh, power_w)
        imp0 = m[_IMP]
        exp0 = m[_EXP]
        if import_register_wh < imp0 or export_register_wh < exp0:
            return self._restart(m, "register", s, ms, import_register_wh, export_register_wh,
                                 power_w)
        length = self._length_s
        boundary = s - s % length  # the last boundary at or before this sample
        if boundary <= s0:  # no boundary in (previous sample, this sample]
            self._hold(m, s, ms, import_register_wh, export_register_wh, power_w)
            return None
        # register values at the boundary, between the two samples
        whole = (s - s0) * 1000 + ms - ms0
        part = (boundary - s0) * 1000 - ms0
        imp_b = imp0 + _share(import_register_wh - imp0, part, whole)
        exp_b = exp0 + _share(export_register_wh - exp0, part, whole)
        reading = None
        if m[_BASE]:
            span_s = boundary - m[_BASE_S]
            if span_s > 60 * _MAX_READING_MIN:
                return self._restart(m, "gap", s, ms, import_register_wh, export_register_wh,
                                     power_w)
            import_wh = imp_b - m[_BASE_IMP]
            export_wh = exp_b - m[_BASE_EXP]
            if import_wh > _MAX_READING_WH or export_wh > _MAX_READING_WH:
                return self._restart(m, "jump", s, ms, import_register_wh, export_register_wh,
                                     power_w)
            # power: the last sample at or before the boundary
            at_boundary = boundary == s and ms == 0
            reading = IntervalReading(
                meter_index, _EPOCH_2020 + boundary, span_s // 60, import_wh, export_wh,
                imp_b, exp_b, power_w if at_boundary else m[_POW])
            self.stats["readings"] += 1
        else:
            self.stats["baselines"] += 1
        m[_BASE] = 1
        m[_BASE_S] = boundary
        m[_BASE_IMP] = imp_b
        m[_BASE_EXP] = exp_b
        self._hold(m, s, ms, import_register_wh, export_register_wh, power_w)
        return reading

    def _hold(self, m, s, ms, imp, exp, power):
        m[_HAS] = 1
        m[_S] = s
        m[_MS] = ms
        m[_IMP] = imp
        m[_EXP] = exp
        m[_POW] = power

    def _restart(self, m, reason, s, ms, imp, exp, power):
        # drop the baseline: this sample starts over, as after boot
        self.stats[reason] += 1
        m[_BASE] = 0
        self._hold(m, s, ms, imp, exp, power)
        return None

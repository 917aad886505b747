# IEC 61851-1 control pilot, without I/O: charging current <-> PWM duty,
# and the vehicle's state from the pilot voltage.
#
# The EVSE offers a maximum current by the duty of a 1 kHz +-12 V square
# wave (Annex A, Table A.8 as the vehicle reads it):
#   duty < 3 %          no charging allowed
#   3 % .. 7 %          digital communication (5 % nominal): no current by PWM
#   7 % < duty < 8 %    no charging allowed
#   8 % <= duty < 10 %  6 A
#   10 % .. 85 %        I = duty% * 0.6 A          (6 A .. 51 A)
#   85 % < duty <= 96 % I = (duty% - 64) * 2.5 A   (52.5 A .. 80 A)
#   96 % < duty <= 97 % 80 A
#   duty > 97 %         no charging allowed; 100 % is a constant +12 V
#
# Pausing is a constant +12 V (duty_u16 65535, PAUSE_DUTY): "no charging
# allowed" to the vehicle, and the level firmware/gateway/board.py drives at
# boot. Currents below 6 A cannot be offered: duty_for_ma refuses them and
# the caller pauses instead.
#
# Duty is machine.PWM's duty_u16 (0..65535 = 0..100 %), currents are mA.
# duty_for_ma rounds down, so the current a vehicle reads back is never
# more than was allowed (at most 1 mA less below 51 A, 4 mA above). Between
# 51 A and 52.5 A no duty exists; 51 A (85 %) is offered. The arithmetic
# stays below 2**30, so it makes no bignums on 32-bit ports.
from compat import const

MIN_MA = const(6000)
_IEC_MAX_MA = const(80000)
_DEFAULT_MAX_MA = const(32000)  # the gateway's contactors are rated 32 A
PAUSE_DUTY = const(65535)  # constant +12 V: no charging allowed
DIGITAL_DUTY = const(3277)  # 5 %: digital communication (ISO 15118), not used here

_LOW_TOP_MA = const(51000)  # 85 %, top of the 0.6 A/% segment
_HIGH_BOTTOM_MA = const(52500)  # just above 85 % in the 2.5 A/% segment
_U16 = const(65535)

# Pilot states, from the high level of the pilot voltage (Table A.4).
STATE_A = "A"  # +12 V: no vehicle
STATE_B = "B"  # +9 V: vehicle connected, not ready
STATE_C = "C"  # +6 V: vehicle ready, charging
STATE_D = "D"  # +3 V: charging, ventilation required
STATE_E = "E"  # 0 V: pilot shorted to PE, or no supply
STATE_F = "F"  # -12 V: EVSE not available
UNKNOWN = "unknown"  # between the bands: a fault or a reading in transition

_BAND_MV = const(1000)  # +-1 V around each nominal level
_LEVELS = const(((12000, "A"), (9000, "B"), (6000, "C"), (3000, "D"), (0, "E"),
                 (-12000, "F")))  # (mV, STATE_A ... STATE_F)


class PilotError(ValueError):
    # reason: "not_int", "below_min" (pause instead: PAUSE_DUTY),
    # "negative", "max_range" (max_ma outside 6000..80000), "duty_range",
    # "config" (a monitor's hold), "time" (negative or backwards now_ms)
    def __init__(self, reason, message):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason


def _need_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise PilotError("not_int", "%s must be an int, got %r" % (name, value))


def duty_for_ma(ma, max_ma=_DEFAULT_MAX_MA):
    # The duty_u16 that offers ma (clamped to max_ma). Below 6 A: PilotError
    # "below_min"; the caller pauses with PAUSE_DUTY instead.
    _need_int(ma, "ma")
    _need_int(max_ma, "max_ma")
    if not MIN_MA <= max_ma <= _IEC_MAX_MA:
        raise PilotError("max_range", "max_ma must be %d..%d, got %d"
                         % (MIN_MA, _IEC_MAX_MA, max_ma))
    if ma < 0:
        raise PilotError("negative", "ma must not be negative, got %d" % ma)
    if ma < MIN_MA:
        raise PilotError("below_min", "%d mA is below 6 A: pause (PAUSE_DUTY) instead" % ma)
    if ma > max_ma:
        ma = max_ma
    if ma < _HIGH_BOTTOM_MA:
        if ma > _LOW_TOP_MA:
            ma = _LOW_TOP_MA
        # duty% = I/0.6 A -> duty_u16 = ma * 65535 / 60000 = ma * 4369 / 4000
        return ma * 4369 // 4000
    # duty% = I/2.5 A + 64 -> duty_u16 = (ma + 160000) * 65535 / 250000,
    # i.e. * 13107 / 50000, split so no product reaches 2**30.
    q, r = divmod(ma + 160000, 50000)
    return q * 13107 + r * 13107 // 50000


def ma_for_duty(duty_u16):
    # The current (mA) a vehicle may draw when offered duty_u16; 0 means no
    # charging allowed by PWM (including the digital-communication band).
    _need_int(duty_u16, "duty_u16")
    if not 0 <= duty_u16 <= _U16:
        raise PilotError("duty_range", "duty_u16 must be 0..65535, got %d" % duty_u16)
    pct100 = duty_u16 * 100  # compared with percent * 65535: exact
    if pct100 < 8 * _U16 or pct100 > 97 * _U16:
        return 0  # below 3 %, digital band, 7..8 % and above 97 %: no current
    if pct100 < 10 * _U16:
        return MIN_MA
    if pct100 <= 85 * _U16:
        return duty_u16 * 4000 // 4369
    if pct100 <= 96 * _U16:
        q, r = divmod(duty_u16, 13107)
        return q * 50000 + r * 50000 // 13107 - 160000
    return _IEC_MAX_MA


def is_digital(duty_u16):
    # 3 %..7 %: the vehicle must use digital communication for its current.
    _need_int(duty_u16, "duty_u16")
    return 3 * _U16 <= duty_u16 * 100 <= 7 * _U16


def state_for_mv(mv):
    # Pilot state from the high level of the pilot voltage in mV (after the
    # board's divider has been undone): within +-1 V of a nominal level, else
    # UNKNOWN. The bands do not overlap, so the order does not matter.
    _need_int(mv, "mv")
    for nominal, state in _LEVELS:
        if nominal - _BAND_MV <= mv <= nominal + _BAND_MV:
            return state
    return UNKNOWN


class PilotMonitor:
    # Debounces state_for_mv: a new state is reported once it has been read
    # in hold_samples consecutive samples spanning at least hold_ms. Until
    # then the previous report stands (UNKNOWN at start). Leaving C is
    # debounced like any change; keep hold short (e.g. 3 samples, 20 ms)
    # against the 100 ms the standard allows the EVSE to react.
    def __init__(self, hold_samples=3, hold_ms=20):
        _need_int(hold_samples, "hold_samples")
        _need_int(hold_ms, "hold_ms")
        if not 1 <= hold_samples <= 1000:
            raise PilotError("config", "hold_samples must be 1..1000, got %d" % hold_samples)
        if not 0 <= hold_ms <= 60000:
            raise PilotError("config", "hold_ms must be 0..60000, got %d" % hold_ms)
        self.hold_samples = hold_samples
        self.hold_ms = hold_ms
        self.state = UNKNOWN  # the reported (debounced) state
        self._candidate = None
        self._seen = 0  # consecutive samples of _candidate, capped at hold_samples
        self._since_ms = 0
        self._last_ms = -1

    def update(self, mv, now_ms):
        # One sample -> the reported state.
        _need_int(now_ms, "now_ms")
        if now_ms < 0 or now_ms < self._last_ms:
            raise PilotError("time", "now_ms must be >= 0 and never go back, got %d" % now_ms)
        sample = state_for_mv(mv)
        self._last_ms = now_ms
        if sample != self._candidate:
            self._candidate = sample
            self._seen = 1
            self._since_ms = now_ms
        elif self._seen < self.hold_samples:
            self._seen += 1
        if self._seen >= self.hold_samples and now_ms - self._since_ms >= self.hold_ms:
            self.state = sample
        return self.state

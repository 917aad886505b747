# DateTime of A-XDR (tag 25 and 12-octet octet-strings) and the calendar helpers,
# loaded by dlms.axdr on first use.
from dlms.axdr import BadValueError, EncodeError, NOT_SPECIFIED, YEAR_NOT_SPECIFIED


def _check(name, v, hi):
    if type(v) is not int or v < 0 or v > hi:
        raise EncodeError("%s %r out of range 0..%d" % (name, v, hi))
    return v


def _days_from_civil(y, m, d):
    # days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant's algorithm)
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _month_days(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _date_valid(y, m, d):
    return y != 0xFFFF and 1 <= m <= 12 and 1 <= d <= _month_days(y, m)


def _weekday(y, m, d):
    # 1 = Monday .. 7 = Sunday; 1970-01-01 was a Thursday
    if not _date_valid(y, m, d):
        return NOT_SPECIFIED
    return (_days_from_civil(y, m, d) + 3) % 7 + 1


class DateTime:
    # date-time (12 octets): date, time, deviation (int16 minutes, Blue Book: local
    # time to UTC, so UTC = local + deviation; None = 0x8000 not specified), clock
    # status (STATUS_* bits, 0xFF = not specified). Fields keep their wire values.
    def __init__(self, year=YEAR_NOT_SPECIFIED, month=NOT_SPECIFIED, day=NOT_SPECIFIED,
                 hour=NOT_SPECIFIED, minute=NOT_SPECIFIED, second=NOT_SPECIFIED,
                 hundredths=NOT_SPECIFIED, deviation=None, status=0, weekday=None):
        self.year = _check("year", year, 0xFFFF)
        self.month = _check("month", month, 0xFF)
        self.day = _check("day", day, 0xFF)
        self.weekday = _weekday(year, month, day) if weekday is None else _check("weekday", weekday, 0xFF)
        self.hour = _check("hour", hour, 0xFF)
        self.minute = _check("minute", minute, 0xFF)
        self.second = _check("second", second, 0xFF)
        self.hundredths = _check("hundredths", hundredths, 0xFF)
        if deviation == -0x8000:
            deviation = None
        if deviation is not None and (type(deviation) is not int or not -0x7FFF <= deviation <= 0x7FFF):
            raise EncodeError("deviation %r out of range" % (deviation,))
        self.deviation = deviation
        self.status = _check("status", status, 0xFF)

    @classmethod
    def from_octets(cls, b):
        # also for date-times carried in an octet-string (what most meters send)
        if len(b) != 12:
            raise BadValueError("date-time needs 12 octets, not %d" % len(b))
        dev = (b[9] << 8) | b[10]
        if dev & 0x8000:
            dev -= 0x10000
        return cls((b[0] << 8) | b[1], b[2], b[3], b[5], b[6], b[7], b[8], dev, b[11], b[4])

    def to_octets(self):
        dev = 0x8000 if self.deviation is None else self.deviation & 0xFFFF
        return bytes((self.year >> 8, self.year & 0xFF, self.month, self.day, self.weekday,
                      self.hour, self.minute, self.second, self.hundredths,
                      dev >> 8, dev & 0xFF, self.status))

    def local_seconds(self):
        # seconds from 1970-01-01 00:00 to this wall-clock time, ignoring the
        # deviation; None if a field is not specified or out of range
        if not _date_valid(self.year, self.month, self.day):
            return None
        if self.hour > 23 or self.minute > 59 or self.second > 59:
            return None
        return (_days_from_civil(self.year, self.month, self.day) * 86400
                + self.hour * 3600 + self.minute * 60 + self.second)

    def to_unix(self, sign=1):
        # UTC seconds since 1970 (hundredths dropped), None without a deviation.
        # sign=-1 for meters that send the deviation as UTC to local time.
        s = self.local_seconds()
        if s is None or self.deviation is None:
            return None
        return s + sign * self.deviation * 60

    @classmethod
    def from_unix(cls, seconds, deviation=None, status=0, sign=1, hundredths=NOT_SPECIFIED):
        # the local wall-clock time of UTC `seconds` at `deviation` (see to_unix)
        local = seconds - (sign * deviation * 60 if deviation is not None else 0)
        days = local // 86400
        rest = local - days * 86400
        y, m, d = _civil_from_days(days)
        return cls(y, m, d, rest // 3600, rest // 60 % 60, rest % 60, hundredths, deviation, status)

    def __eq__(self, other):
        return isinstance(other, DateTime) and other.to_octets() == self.to_octets()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.to_octets())

    def __repr__(self):
        return "DateTime(%d, %d, %d, %d, %d, %d, %d, deviation=%r, status=0x%02x, weekday=%d)" % (
            self.year, self.month, self.day, self.hour, self.minute, self.second,
            self.hundredths, self.deviation, self.status, self.weekday)

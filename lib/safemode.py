# Safe mode: when the app is not started, and the boot record behind it.
#
# main.py counts a start before the app runs; the app clears the count
# once it reports healthy. boot.py reads the count: after `limit`
# consecutive starts that never became healthy, or with the button held,
# the board boots into safe mode, which skips the app and leaves the REPL.
# A technician may also ask for one maintenance boot: no app and no
# watchdog, so the REPL can be used for as long as needed.
# The record is a few bytes of text so a technician can read it, and a
# damaged record is treated as empty rather than stopping the boot.
from compat import const

_SAFE_MODE_AFTER = const(3)

_REASON_BUTTON = const("button held at boot")
_REASON_CRASHES = const("app crashed before reporting healthy")
_REASON_MAINTENANCE = const("maintenance boot requested")
_FIELDS = const(("boots", "unhealthy", "maintenance"))


class BootRecord:
    def __init__(self, boots=0, unhealthy=0, maintenance=0):
        self.boots = boots  # times boot.py ran since the record was cleared
        self.unhealthy = unhealthy  # consecutive app starts not yet healthy
        self.maintenance = maintenance  # 1: the next boot is a maintenance boot

    def encode(self):
        text = "boots=%d unhealthy=%d" % (self.boots, self.unhealthy)
        if self.maintenance:
            text += " maintenance=1"
        return (text + "\n").encode()

    @classmethod
    def decode(cls, data):
        rec = cls()
        try:
            for field in data.decode().split():
                key, eq, value = field.partition("=")
                if key not in _FIELDS:
                    if eq and _is_name(key):
                        continue  # a field of a newer firmware: not ours to judge
                    raise ValueError(field)  # damaged
                n = int(value)
                if n < 0 or n > 0x7FFFFFFF:
                    raise ValueError(field)
                setattr(rec, key, n)
        except (ValueError, UnicodeError):
            return cls()
        return rec


def _is_name(key):
    for c in key:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c == "_"):
            return False
    return key != ""


def decide(record, button_held, limit=_SAFE_MODE_AFTER):
    # -> reason for safe mode, or None to start the app.
    if button_held:
        return _REASON_BUTTON
    if record.maintenance:
        return _REASON_MAINTENANCE
    if record.unhealthy >= limit:
        return _REASON_CRASHES
    return None

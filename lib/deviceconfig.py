# The device config (/config.json) and its schema, without I/O.
#
# Every field has a type, a default and limits. A config is accepted
# field by field: a bad field is reported with its reason and keeps its
# default, so one typo does not stop the gateway or half-apply a value.
# Unknown fields are reported too (a misspelt name would otherwise be
# silently ignored).
#
# `meters` (optional; absent means no meters, and validate() then leaves it
# out of the values) is a list of up to 8 meter objects, checked field by
# field. A meter with any bad field is rejected as a whole, with every
# reason ("meters[1] (house): unit must be 1..247, got 300"), and the other
# meters still run: a meter is never half-applied. An accepted meter comes
# back with every field that applies to its protocol, defaults filled in,
# keys as bytes. The checks live in lib/meterconfig.py, imported only when
# a config has meters (boards without meters do not pay its ~5 KB of heap).
#
#   field        protocols            value (default)
#   name         all                  [a-z0-9_]{1,16}, unique (required)
#   protocol     all                  modbus-rtu modbus-tcp dlms-hdlc dlms-tcp dlms-push (required)
#   period_s     all                  1..3600 (10): poll period; for push the expected interval
#   timeout_ms   all                  10..60000 (1000; 3000 over TCP): one request's answer
#   retries      all but dlms-push    0..5 (2): attempts after a failed poll, before backing off
#   bus          serial (*)           "rs485": the board's RS-485 UART (board.json buses.rs485_uart)
#   uart         serial (*)           0..9: a UART id of its own instead of bus (an optical probe,
#                                     a customer interface); default: bus "rs485"
#   baudrate     serial               300..921600 (9600); with mode_e the speed after the switch
#   bits, parity, stop  serial        7..8 (8), "N" "E" "O" ("N"), 1..2 (1)
#   host, port   modbus-tcp dlms-tcp  name or address (required), 1..65535 (502; 4059 for dlms-tcp)
#   unit         modbus-*             1..247 on RTU (required), 0..255 over TCP (1)
#   profile      modbus-*             a lib/meterprofiles/NAME.json, [a-z0-9_]{1,32} (required)
#   server       dlms-hdlc dlms-tcp   logical server address 0..16383 (1)
#   physical     dlms-hdlc            physical (lower HDLC) address 0..16383 (16)
#   client       dlms-hdlc dlms-tcp   client SAP 1..127 (16 none, 17 lls, 1 hls-gmac)
#   security     dlms-hdlc dlms-tcp   none lls hls-gmac (none)
#   password     dlms-hdlc dlms-tcp   LLS password, 1..32 printable characters (lls: required)
#   ek, ak       dlms-*               32 hex digits: encryption, authentication key (hls-gmac:
#                                     both required; push: ek to decrypt, ak if the meter
#                                     authenticates)
#   system_title dlms-*               16 hex digits: ours for HLS; for push the meter's, to check
#   mode_e       dlms-hdlc            IEC 62056-21 opening at 300 baud first (false)
#   registers    dlms-hdlc dlms-tcp   up to 32 OBIS codes, "1-0:1.8.0*255", "1-0:1.8.0" or
#                                     "1.0.1.8.0.255" ([]: the driver's default set)
#   framing      dlms-push            mbus hdlc raw (hdlc)
#   (*) serial = modbus-rtu dlms-hdlc dlms-push. Meters sharing a bus must agree on baudrate,
#   bits, parity and stop; RTU units on one bus must differ; a push meter needs its line alone.


class Field:
    def __init__(self, name, default, lo, hi, summary):
        self.name = name
        self.default = default
        self.lo = lo
        self.hi = hi
        self.summary = summary

    def check(self, value):
        # -> error text, or None when value is acceptable.
        if isinstance(value, bool) or not isinstance(value, int):
            return "%s must be a whole number" % self.name
        if not self.lo <= value <= self.hi:
            return "%s must be %d..%d, got %d" % (self.name, self.lo, self.hi, value)
        return None


SCHEMA = (
    Field("heartbeat_s", 10, 1, 3600, "seconds between heartbeat lines on the console"),
    Field("watchdog_ms", 8000, 1000, 60000, "hardware watchdog timeout; the app feeds it"),
    Field("safe_mode_after", 3, 1, 100, "consecutive unhealthy app starts before safe mode"),
    Field("healthy_after_s", 10, 1, 600, "seconds the app must run before it counts as healthy"),
)


def defaults():
    return {f.name: f.default for f in SCHEMA}


def validate(doc):
    # doc: a dict parsed from JSON. -> (values, errors)
    values = defaults()
    errors = []
    if not isinstance(doc, dict):
        return values, ["config must be a JSON object"]
    known = {}
    for f in SCHEMA:
        known[f.name] = f
    for name in sorted(doc):
        if name == "meters":
            from meterconfig import validate_meters

            values["meters"], errs = validate_meters(doc[name])
            errors.extend(errs)
            continue
        f = known.get(name)
        if f is None:
            errors.append("unknown field %r" % (name,))
            continue
        err = f.check(doc[name])
        if err:
            errors.append(err)
        else:
            values[name] = doc[name]
    return values, errors


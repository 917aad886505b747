# The `meters` list of the device config, checked meter by meter (sans-I/O).
# The schema is documented in lib/deviceconfig.py; deviceconfig.validate()
# calls validate_meters() when a config has meters.
from compat import const
from deviceconfig import Field


MAX_METERS = 8
_MAX_REGISTERS = const(32)
PROTOCOLS = ("modbus-rtu", "modbus-tcp", "dlms-hdlc", "dlms-tcp", "dlms-push")
_RTU = const(1)
_TCP = const(2)
_HDLC = const(4)
_DTCP = const(8)
_PUSH = const(16)
_ALL = const(31)
_SERIAL = const(_RTU | _HDLC | _PUSH)
_NET = const(_TCP | _DTCP)
_MODBUS = const(_RTU | _TCP)
_PULL = const(_HDLC | _DTCP)
_DLMS = const(_HDLC | _DTCP | _PUSH)
_REQ = object()  # no default: the field must be given
_WORD = const("abcdefghijklmnopqrstuvwxyz0123456789_")
_HOST = const("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:")

# name, kind, arguments, protocols, default (None: none, or set per protocol below)
METER_FIELDS = (
    ("name", "word", (_WORD, 16), _ALL, _REQ),
    ("protocol", "choice", PROTOCOLS, _ALL, _REQ),
    ("period_s", "int", (1, 3600), _ALL, 10),
    ("timeout_ms", "int", (10, 60000), _ALL, None),
    ("retries", "int", (0, 5), _ALL & ~_PUSH, 2),
    ("bus", "choice", ("rs485",), _SERIAL, None),
    ("uart", "int", (0, 9), _SERIAL, None),
    ("baudrate", "int", (300, 921600), _SERIAL, 9600),
    ("bits", "int", (7, 8), _SERIAL, 8),
    ("parity", "choice", ("N", "E", "O"), _SERIAL, "N"),
    ("stop", "int", (1, 2), _SERIAL, 1),
    ("host", "word", (_HOST, 63), _NET, _REQ),
    ("port", "int", (1, 65535), _NET, None),
    ("unit", "int", (0, 255), _MODBUS, None),
    ("profile", "word", (_WORD, 32), _MODBUS, _REQ),
    ("server", "int", (0, 16383), _PULL, 1),
    ("physical", "int", (0, 16383), _HDLC, 16),
    ("client", "int", (1, 127), _PULL, None),
    ("security", "choice", ("none", "lls", "hls-gmac"), _PULL, "none"),
    ("password", "text", 32, _PULL, None),
    ("ek", "hex", 16, _DLMS, None),
    ("ak", "hex", 16, _DLMS, None),
    ("system_title", "hex", 8, _DLMS, None),
    ("mode_e", "bool", None, _HDLC, False),
    ("registers", "obis", _MAX_REGISTERS, _PULL, None),
    ("framing", "choice", ("mbus", "hdlc", "raw"), _PUSH, "hdlc"),
)


def _check_meter_field(name, kind, arg, v):
    # -> (value, None) or (None, error text)
    if kind == "int":
        f = Field(name, 0, arg[0], arg[1], "")
        err = f.check(v)
        return (None, err) if err else (v, None)
    if kind == "choice":
        for c in arg:
            if v == c and isinstance(v, str):
                return c, None
        return None, "%s must be one of %s, got %r" % (name, ", ".join(arg), v)
    if kind == "word":
        chars, maxlen = arg
        if not isinstance(v, str) or not 1 <= len(v) <= maxlen or not all(c in chars for c in v):
            what = "[a-z0-9_]" if chars is _WORD else "letters, digits and . - _ :"
            return None, "%s must be 1..%d of %s, got %r" % (name, maxlen, what, v)
        return v, None
    if kind == "text":
        if not isinstance(v, str) or not 1 <= len(v) <= arg or not all(" " <= c <= "~" for c in v):
            return None, "%s must be 1..%d printable characters" % (name, arg)  # never echo a secret
        return v, None
    if kind == "hex":
        if isinstance(v, str) and len(v) == 2 * arg and all(c in "0123456789abcdefABCDEF" for c in v):
            return bytes.fromhex(v), None
        return None, "%s must be %d hex digits (%d bytes)" % (name, 2 * arg, arg)
    if kind == "bool":
        if v is True or v is False:
            return v, None
        return None, "%s must be true or false" % name
    # obis list
    if not isinstance(v, list) or len(v) > arg:
        return None, "%s must be a list of at most %d OBIS codes" % (name, arg)
    out = []
    for code in v:
        six = parse_obis(code)
        if six is None:
            return None, "%s: %r is not an OBIS code like 1-0:1.8.0*255" % (name, code)
        if six in out:
            return None, "%s: %s given twice" % (name, code)
        out.append(six)
    return [format_obis(o) for o in out], None


def parse_obis(text):
    # "A-B:C.D.E*F", "A-B:C.D.E" (F = 255) or "A.B.C.D.E.F" -> tuple of six ints, or None.
    if not isinstance(text, str) or len(text) > 32:
        return None
    if "-" in text or ":" in text:
        ab, sep, cdef = text.partition(":")
        a, dash, b = ab.partition("-")
        if not sep or not dash:
            return None
        cde, star, f = cdef.partition("*")
        parts = [a, b] + cde.split(".") + ([f] if star else ["255"])
    else:
        parts = text.split(".")
    if len(parts) != 6:
        return None
    out = []
    for p in parts:
        if not p or len(p) > 3 or not all("0" <= c <= "9" for c in p):
            return None
        n = int(p)
        if n > 255:
            return None
        out.append(n)
    return tuple(out)


def format_obis(six):
    return "%d-%d:%d.%d.%d*%d" % six


def _meter_errors(m, bit):
    # Rules between fields of one meter, before per-protocol defaults; -> error texts.
    errs = []
    if bit == _RTU and "unit" not in m:
        errs.append("unit is required on modbus-rtu")
    if bit & _SERIAL and "bus" in m and "uart" in m:
        errs.append("give bus or uart, not both")
    if bit & _PULL:
        sec = m["security"]
        if sec == "lls" and "password" not in m:
            errs.append("security lls needs a password")
        if sec != "lls" and "password" in m:
            errs.append("password is only used with security lls")
        if sec == "hls-gmac" and ("ek" not in m or "ak" not in m):
            errs.append("security hls-gmac needs ek and ak")
    if bit == _PUSH and "ak" in m and "ek" not in m:
        errs.append("ak without ek: a ciphered push needs ek")
    return errs


def _meter_defaults(m, bit):
    if m.get("timeout_ms") is None:
        m["timeout_ms"] = 3000 if bit & _NET else 1000
    if bit & _SERIAL and "uart" not in m and "bus" not in m:
        m["bus"] = "rs485"
    if bit & _NET and m.get("port") is None:
        m["port"] = 4059 if bit == _DTCP else 502
    if bit & _MODBUS and m.get("unit") is None:
        m["unit"] = 1
    if bit & _PULL:
        if m.get("client") is None:
            m["client"] = {"none": 16, "lls": 17, "hls-gmac": 1}[m["security"]]
        if m.get("registers") is None:
            m["registers"] = []


def _line_of(m):
    # The serial line a meter uses, as a key: ("bus", "rs485") or ("uart", 2); None over TCP.
    if "bus" in m:
        return ("bus", m["bus"])
    if "uart" in m:
        return ("uart", m["uart"])
    return None


def validate_meters(doc_meters):
    # -> (accepted meter dicts, errors)
    if not isinstance(doc_meters, list):
        return [], ["meters must be a list of meter objects"]
    accepted = []
    errors = []
    names = {}
    lines = {}  # line key -> first meter on it
    known = {}
    for f in METER_FIELDS:
        known[f[0]] = f
    for i, raw in enumerate(doc_meters):
        label = "meters[%d]" % i
        if isinstance(raw, dict) and isinstance(raw.get("name"), str) and len(raw["name"]) <= 16:
            label += " (%s)" % raw["name"]
        if i >= MAX_METERS:
            errors.append("%s: at most %d meters" % (label, MAX_METERS))
            continue
        if not isinstance(raw, dict):
            errors.append("%s: must be an object" % label)
            continue
        errs = []
        proto = raw.get("protocol")
        bit = 1 << PROTOCOLS.index(proto) if proto in PROTOCOLS else 0
        m = {}
        for key in sorted(raw):
            f = known.get(key)
            if f is None:
                errs.append("unknown field %r" % (key,))
            elif bit and not f[3] & bit:
                errs.append("%s does not apply to %s" % (key, proto))
        for name, kind, arg, mask, default in METER_FIELDS:
            if not mask & bit and name != "name" and name != "protocol":
                continue  # an unknown protocol: only name and protocol are worth a word
            if name not in raw:
                if default is _REQ:
                    errs.append("%s is required" % name)
                elif default is not None:
                    m[name] = default
                continue
            if name == "unit" and bit == _RTU:
                arg = (1, 247)  # 0 is broadcast, 248..255 reserved on a serial line
            v, err = _check_meter_field(name, kind, arg, raw[name])
            if err:
                errs.append(err)
            else:
                m[name] = v
        if not errs:
            errs = _meter_errors(m, bit)
        if not errs:
            _meter_defaults(m, bit)
        if "name" in m and m["name"] in names:
            errs.append("name %s is already used by meters[%d]" % (m["name"], names[m["name"]]))
        line = _line_of(m) if not errs else None
        if line is not None and line in lines:
            other = lines[line]
            if bit == _PUSH or other["protocol"] == "dlms-push":
                errs.append("a dlms-push meter needs its line alone; %s is on it" % other["name"])
            for k in ("baudrate", "bits", "parity", "stop"):
                if not errs and m[k] != other[k]:
                    errs.append("%s %s differs from %s of %s on the same line" % (k, m[k], other[k], other["name"]))
            for o in accepted:
                if not errs and bit == _RTU and o["protocol"] == "modbus-rtu" and _line_of(o) == line \
                        and o["unit"] == m["unit"]:
                    errs.append("unit %d is already used by %s on the same bus" % (m["unit"], o["name"]))
        if errs:
            for e in errs:
                errors.append("%s: %s" % (label, e))
            continue
        names[m["name"]] = i
        if line is not None and line not in lines:
            lines[line] = m
        accepted.append(m)
    return accepted, errors

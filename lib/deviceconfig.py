# The device config (/config.json) and its schema, without I/O.
#
# The config is a JSON object: top-level fields and sections (objects) of
# fields, each with a type, a default and limits (SCHEMA; docs/config.md
# has the table, checked against this module by tests/lib/test_deviceconfig.py).
# A config is accepted field by field: a bad field is reported with its
# reason and keeps its default, so one typo does not stop the gateway or
# half-apply a value. Unknown fields are reported too (a misspelt name would
# otherwise be silently ignored). Rules between two fields come last; when
# one fails, both fields go back to their defaults (which satisfy it).
#
# Two sections are checked elsewhere, and only when present (absent: not in
# the values, and their modules are not imported):
# - `limits`: the safety envelope's limits, checked by envelope.Limits so
#   the two never disagree. A bad limits section is rejected as a whole and
#   its value is None: the firmware must then hold the fail-safe, since a
#   default limit (a 35 A fuse) may be above the site's real one.
# - `meters`: a list of up to 8 meter objects, checked field by field. A
#   meter with any bad field is rejected as a whole, with every reason
#   ("meters[1] (house): unit must be 1..247, got 300"), and the other
#   meters still run: a meter is never half-applied. An accepted meter comes
#   back with every field that applies to its protocol, defaults filled in,
#   keys as bytes. The checks live in lib/meterconfig.py (~5 KB of heap).
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
from compat import const


class Field:
    # A whole-number field; lib/meterconfig.py checks its int fields with it.
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


class ConfigError(ValueError):
    # reason: "object" (the config or a section is not a JSON object),
    # "unknown" (no such field), "type", "range", "format" (a string's
    # form), "rule" (two fields disagree), "key" (hub.key, ota.key), "limits"
    # (envelope.Limits refused the section), "meters", "read_only" (meters
    # from the console). path: the field concerned, or None.
    def __init__(self, reason, message, path=None):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason
        self.message = message
        self.path = path


_AZ = const("abcdefghijklmnopqrstuvwxyz")
_DIGITS = const("0123456789")
_WORD = const("abcdefghijklmnopqrstuvwxyz0123456789-")  # _AZ + _DIGITS + "-"
_NAME = const("abcdefghijklmnopqrstuvwxyz0123456789_")  # a meter name: _AZ + _DIGITS + "_"
_HOST = _AZ + _AZ.upper() + _DIGITS + ".-_:"
_TOPIC = _AZ + _AZ.upper() + _DIGITS + "_-/"
_PATH = _AZ + _AZ.upper() + _DIGITS + "_.-/"
_HEX = const("0123456789abcdefABCDEF")
_MAX_KEY = const(256)  # bytes of hub.key: a P-256 COSE_Key with a kid takes 87
_MAX_SET_TEXT = const(600)  # longer console text is refused before it is parsed

SECTIONS = ("wifi", "mqtt", "ntp", "hub", "tariff", "household", "control", "ota")

# (path, kind, default, arg, summary). kind and arg:
#   int    (lo, hi)
#   ints   the allowed values
#   bool   None
#   text   (min length, max length, allowed characters, how to show them)
#   label  max length: a DNS label or ""
#   ssid   None: 0..32 bytes of UTF-8 without control characters
#   secret None: "", 8..63 printable ASCII or 64 hex digits (WPA2); never echoed
#   path   max length: an absolute path on the device
#   hhmm   None: "" or 00:00..23:59
#   key    max bytes: "" or the hex of an EC2 P-256 COSE_Key (value: bytes)
SCHEMA = (
    ("heartbeat_s", "int", 10, (1, 3600), "seconds between heartbeat lines on the console"),
    ("watchdog_ms", "int", 8000, (1000, 60000), "hardware watchdog timeout; the app feeds it"),
    ("safe_mode_after", "int", 3, (1, 100), "consecutive unhealthy app starts before safe mode"),
    ("healthy_after_s", "int", 10, (1, 600), "seconds the app must run before it counts as healthy"),
    ("community", "text", "demo", (1, 32, _WORD, "[a-z0-9-]"), "energy community: the topic level"),
    ("interval_min", "ints", 15, (1, 5, 10, 15, 30, 60), "trading interval, aligned to the clock"),
    ("clock_rate", "int", 1, (1, 3600), "simulated seconds per second: virtual boards only"),
    ("utc_offset_min", "int", 0, (-720, 840), "local time minus UTC, for household.ev_departure"),
    ("ha_discovery", "bool", False, None, "publish Home Assistant MQTT discovery"),
    ("ha_prefix", "text", "homeassistant", (1, 64, _TOPIC, "[A-Za-z0-9_/-]"), "discovery topic prefix"),
    ("journal_kb", "int", 64, (16, 1024), "flash for the store-and-forward journal"),
    ("log_lines", "int", 30, (10, 100), "log lines kept in RAM for the console (72 bytes each)"),
    ("wifi.ssid", "ssid", "", None, "network to join; \"\": no WiFi"),
    ("wifi.password", "secret", "", None, "WPA2 passphrase; \"\": an open network"),
    ("wifi.hostname", "label", "", 32, "DHCP host name; \"\": pgw-<kid>"),
    ("wifi.reconnect_s", "int", 10, (1, 3600), "seconds between attempts to join"),
    ("mqtt.host", "text", "", (0, 63, _HOST, "[A-Za-z0-9.:_-]"), "broker; \"\": no MQTT"),
    ("mqtt.port", "int", 1883, (1, 65535), "broker port (8883 is usual with TLS)"),
    ("mqtt.tls", "bool", False, None, "TLS, the broker checked against mqtt.ca"),
    ("mqtt.ca", "path", "/certs/ca.pem", 64, "the broker's CA certificate (PEM)"),
    ("mqtt.keepalive_s", "int", 60, (10, 3600), "MQTT keep-alive given to the broker"),
    ("mqtt.ping_s", "int", 1, (1, 60), "seconds between our pings"),
    ("mqtt.dead_s", "int", 3, (1, 60), "a ping unanswered this long: the link is dead"),
    ("mqtt.backoff_min_ms", "int", 500, (100, 60000), "first reconnect delay; doubles per failure"),
    ("mqtt.backoff_max_ms", "int", 1000, (1000, 600000), "longest reconnect delay"),
    ("mqtt.hub_offline_s", "int", 300, (30, 86400), "hub unheard this long: the fail-safe"),
    ("ntp.host", "text", "pool.ntp.org", (0, 63, _HOST, "[A-Za-z0-9.:_-]"), "time server; \"\": no NTP"),
    ("ntp.port", "int", 123, (1, 65535), "time server port"),
    ("ntp.period_s", "int", 3600, (60, 86400), "seconds between time queries"),
    ("hub.key", "key", b"", _MAX_KEY, "the hub's COSE_Key; \"\": no trading, no commands"),
    ("tariff.feed_in_price", "int", 80000, (0, 9999999), "paid per kWh exported, micro-units"),
    ("tariff.retail_price", "int", 300000, (1, 10000000), "paid per kWh imported, micro-units"),
    ("tariff.currency", "text", "EUR", (3, 3, _AZ.upper(), "[A-Z]"), "ISO 4217 currency code"),
    ("household.battery_capacity_wh", "int", 0, (0, 200000), "usable battery energy; 0: none"),
    ("household.ev_departure", "hhmm", "", None, "when the EV leaves, local time"),
    ("household.ev_target_wh", "int", 0, (0, 200000), "energy the EV needs by then; 0: none"),
    ("household.reserve_pct", "int", 20, (0, 100), "battery share never traded"),
    ("household.trading", "bool", True, None, "the agent trades and plans battery and EV; false: commands only"),
    ("control.grid_meter", "text", "", (0, 16, _NAME, "[a-z0-9_]"), "meter at the grid connection; \"\": no control"),
    ("control.battery_meter", "text", "", (0, 16, _NAME, "[a-z0-9_]"), "SunSpec hybrid inverter; \"\": no battery"),
    ("control.ev_meter", "text", "", (0, 16, _NAME, "[a-z0-9_]"), "Modbus wallbox; \"\": the board's pilot"),
    ("control.period_ms", "int", 2000, (500, 10000), "dispatcher step: targets into actions"),
    ("control.manual_s", "int", 3600, (60, 86400), "how long a technician's setpoint holds"),
    ("ota.trial_s", "int", 1800, (10, 86400), "seconds a new version has to get healthy, else rolled back"),
    ("ota.key", "key", b"", _MAX_KEY, "the COSE_Key of the release key that signs OTA manifests"),
)

# Envelope fields that are not config: the departure comes from household.
_NOT_LIMITS = const(("ev_departure_ms", "ev_target_wh"))


def _row(path, rows=SCHEMA):
    for r in rows:
        if r[0] == path:
            return r
    return None


def _limit_rows():
    # The limits section's rows, from envelope's own schema (imported only
    # when limits are used). hi None never occurs among the config fields.
    import envelope

    out = []
    for name, default, lo, hi in envelope._SCHEMA:
        if name not in _NOT_LIMITS:
            if lo is None:
                out.append(("limits." + name, "bool", default, None, ""))
            else:
                out.append(("limits." + name, "int", default, (lo, hi), ""))
    return out


def _put(values, path, value):
    section, dot, name = path.partition(".")
    if dot:
        values[section][name] = value
    else:
        values[path] = value


def defaults():
    # A new dict each time: callers may change it.
    values = {}
    for s in SECTIONS:
        values[s] = {}
    for r in SCHEMA:
        _put(values, r[0], r[2])
    return values


def _echo(v):
    # A value for an error message, bounded.
    if isinstance(v, str) and len(v) > 40:
        return "%d characters" % len(v)
    return repr(v)


def _check(row, v):
    # -> (value, None, None) or (None, reason, message)
    path, kind, _, arg, _ = row
    if kind == "int" or kind == "ints":
        if isinstance(v, bool) or not isinstance(v, int):
            return None, "type", "%s must be a whole number" % path
        if kind == "int" and not arg[0] <= v <= arg[1]:
            return None, "range", "%s must be %d..%d, got %d" % (path, arg[0], arg[1], v)
        if kind == "ints" and v not in arg:
            return None, "range", "%s must be one of %s, got %d" % (path, _ints(arg), v)
        return v, None, None
    if kind == "bool":
        if v is True or v is False:
            return v, None, None
        return None, "type", "%s must be true or false" % path
    if not isinstance(v, str):
        return None, "type", "%s must be a string" % path
    if kind == "key":
        return _check_key(path, v, arg)
    if _text_ok(kind, arg, v):
        return v, None, None
    if kind == "secret" or kind == "ssid":
        # never echo a password; an SSID may hold bytes a terminal would act on
        return None, "format", "%s must be %s" % (path, _limits(row))
    return None, "format", "%s must be %s, got %s" % (path, _limits(row), _echo(v))


def _all_in(text, chars):
    for c in text:
        if c not in chars:
            return False
    return True


def _text_ok(kind, arg, v):
    n = len(v)
    if kind == "text":
        return arg[0] <= n <= arg[1] and _all_in(v, arg[2])
    if kind == "label":
        return n == 0 or (n <= arg and _all_in(v, _WORD) and v[0] != "-" and v[-1] != "-")
    if kind == "ssid":
        for c in v:
            if c < " " or c == "\x7f":
                return False
        return len(v.encode()) <= 32
    if kind == "secret":
        if n == 64:
            return _all_in(v, _HEX)
        return n == 0 or (8 <= n <= 63 and all(" " <= c <= "~" for c in v))
    if kind == "path":
        return 2 <= n <= arg and v[0] == "/" and _all_in(v, _PATH) and ".." not in v
    # hhmm
    if n == 0:
        return True
    if n != 5 or v[2] != ":" or not _all_in(v[:2] + v[3:], _DIGITS):
        return False
    return int(v[:2]) <= 23 and int(v[3:]) <= 59


def _check_key(path, v, max_bytes):
    if not v:
        return b"", None, None
    if len(v) > 2 * max_bytes or len(v) % 2 or not _all_in(v, _HEX):
        return None, "format", "%s must be %s" % (path, _limits(_row(path)))
    import cose  # only for a config with a hub key

    try:
        cose.decode_key(bytes.fromhex(v))
    except cose.CoseError as e:
        return None, "key", "%s is not a usable %s key (%s)" % (path, "hub" if path == "hub.key" else "release", e)
    return bytes.fromhex(v), None, None


def _ints(arg):
    return ", ".join("%d" % n for n in arg)


def _limits(row):
    # A field's limits as text: the error messages' and docs/config.md's.
    kind, arg = row[1], row[3]
    if kind == "int":
        return "%d..%d" % arg
    if kind == "ints":
        return "one of " + _ints(arg)
    if kind == "bool":
        return "true or false"
    if kind == "text":
        if arg[0] == arg[1]:
            return "%d of %s" % (arg[0], arg[3])
        return "%d..%d of %s" % (arg[0], arg[1], arg[3])
    if kind == "label":
        return "\"\" or 1..%d of [a-z0-9-], no - at either end" % arg
    if kind == "ssid":
        return "0..32 bytes of UTF-8, no control characters"
    if kind == "secret":
        return "\"\", 8..63 printable ASCII characters or 64 hex digits"
    if kind == "path":
        return "an absolute path, 2..%d of [A-Za-z0-9_./-], no .." % arg
    if kind == "hhmm":
        return "\"\" or HH:MM, 00:00..23:59"
    return "\"\" or the hex of an EC2 P-256 COSE_Key, at most %d bytes" % arg


_TYPES = {"int": "int", "ints": "int", "bool": "bool", "secret": "secret", "key": "hex"}


def _show(row, value):
    # A value as the console shows it and set() reads it back.
    kind = row[1]
    if kind == "secret":
        return "***" if value else '""'
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int" or kind == "ints":
        return "%d" % value
    if kind == "key":
        return '"%s"' % value.hex()
    return '"%s"' % value


def schema_rows():
    # [(path, type, default, limits)] as docs/config.md's tables show them,
    # limits included (imports envelope), meters not (docs/meters.md).
    out = []
    for r in SCHEMA + tuple(_limit_rows()):
        out.append((r[0], _TYPES.get(r[1], "string"), _show(r, r[2]), _limits(r)))
    return out


def _check_limits(doc_limits, found):
    # -> the limits as a dict, or None when envelope.Limits refuses them.
    import envelope

    if not isinstance(doc_limits, dict):
        found.append(("object", "limits", "limits must be an object"))
        return None
    for name in sorted(doc_limits):
        if name in _NOT_LIMITS:
            found.append(("unknown", "limits." + name, "limits.%s is not a config field: "
                          "household.ev_departure and ev_target_wh set it" % name))
            return None
    try:
        lim = envelope.Limits(doc_limits)
    except envelope.EnvelopeError as e:
        path = "limits.%s" % e.field if e.field else "limits"
        text = str(e)
        if text.startswith(e.reason + ": "):
            text = text[len(e.reason) + 2:]
        if text.startswith("unknown field"):
            found.append(("unknown", path, "unknown field %r" % path))
        else:
            found.append(("limits", path, "limits." + text))
        return None
    out = {}
    for r in _limit_rows():
        out[r[0][7:]] = getattr(lim, r[0][7:])
    return out


def _check_rules(values, found):
    # Rules between two fields; each field is in one rule at most, so
    # putting both back to their defaults cannot break another rule.
    mqtt, tariff, home = values["mqtt"], values["tariff"], values["household"]
    broken = []
    if mqtt["backoff_min_ms"] > mqtt["backoff_max_ms"]:
        broken.append(("mqtt.backoff_min_ms", "mqtt.backoff_max_ms", "must not exceed"))
    if mqtt["ping_s"] >= mqtt["keepalive_s"]:
        broken.append(("mqtt.ping_s", "mqtt.keepalive_s", "must be below"))
    if tariff["feed_in_price"] >= tariff["retail_price"]:
        broken.append(("tariff.feed_in_price", "tariff.retail_price", "must be below"))
    if home["ev_target_wh"] and not home["ev_departure"]:
        broken.append(("household.ev_target_wh", "household.ev_departure", "needs"))
    names = [m["name"] for m in values.get("meters") or ()]
    for a in ("control.grid_meter", "control.battery_meter", "control.ev_meter"):
        if _get(values, a) and _get(values, a) not in names:
            found.append(("rule", a, "%s (%s) is not one of the meters (%s)" % (
                a, _get(values, a), " ".join(names) or "none")))
            _put(values, a, "")
    for a, b, verb in broken:
        found.append(("rule", a, "%s (%s) %s %s (%s)" % (
            a, _show(_row(a), _get(values, a)), verb, b, _show(_row(b), _get(values, b)))))
        _put(values, a, _row(a)[2])
        _put(values, b, _row(b)[2])


def _get(values, path):
    section, dot, name = path.partition(".")
    return values[section][name] if dot else values[path]


def _str_keys(d):
    # MicroPython's json takes numbers, true, false and null as keys, and
    # sorting mixed keys raises: make them text (no field has such a name).
    for k in d:
        if not isinstance(k, str):
            out = {}
            for k2 in d:
                out[k2 if isinstance(k2, str) else repr(k2)] = d[k2]
            return out
    return d


def _validate(doc):
    # -> (values, [(reason, path, message)]), messages in sorted field order,
    # rules last.
    values = defaults()
    found = []
    if not isinstance(doc, dict):
        return values, [("object", None, "config must be a JSON object")]
    doc = _str_keys(doc)
    for name in sorted(doc):
        v = doc[name]
        if isinstance(v, dict):
            v = _str_keys(v)
        if name == "meters":
            from meterconfig import validate_meters

            if isinstance(v, list):
                v = [_str_keys(m) if isinstance(m, dict) else m for m in v]
            values["meters"], errs = validate_meters(v)
            for e in errs:
                found.append(("meters", "meters", e))
        elif name == "limits":
            values["limits"] = _check_limits(v, found)
        elif name in SECTIONS:
            if not isinstance(v, dict):
                found.append(("object", name, "%s must be an object" % name))
                continue
            for key in sorted(v):
                _check_into(values, _row(name + "." + key), name + "." + key, v[key], found)
        else:
            _check_into(values, None if "." in name else _row(name), name, v, found)
    _check_rules(values, found)
    return values, found


def _check_into(values, row, path, v, found):
    if row is None:
        found.append(("unknown", path, "unknown field %r" % (path,)))
        return
    value, reason, message = _check(row, v)
    if reason:
        found.append((reason, path, message))
    else:
        _put(values, path, value)


def validate(doc):
    # doc: a dict parsed from JSON. -> (values, errors), errors as text.
    values, found = _validate(doc)
    return values, [f[2] for f in found]


def hostname(values, kid):
    # The DHCP host name: wifi.hostname, or pgw- and the device's kid in hex.
    return values["wifi"]["hostname"] or "pgw-" + kid.hex()


def get(values, path=""):
    # The console's `config get [path]`: "" every field, a section name its
    # fields, a field itself; one "path value" line each. Secrets show "***".
    if path == "meters" or (not path and "meters" in values):
        meters = values.get("meters") or []
        lines = ["meters %d: %s" % (len(meters), " ".join(m["name"] for m in meters) or "none")]
        if path:
            return lines[0]
    else:
        lines = []
    rows = SCHEMA
    if not path or path == "limits" or path.startswith("limits."):
        rows = SCHEMA + tuple(_limit_rows())
    for r in rows:
        p = r[0]
        if path and p != path and not p.startswith(path + "."):
            continue
        if p.startswith("limits."):
            lim = values.get("limits", {})
            if lim is None:
                lines.append("%s ? (the limits section is invalid: the fail-safe holds)" % p)
                continue
            value = lim.get(p[7:], r[2])
        else:
            value = _get(values, p)
        lines.append("%s %s" % (p, _show(r, value)))
    if not lines:
        raise ConfigError("unknown", "unknown field %s" % _echo(path), path)
    return "\n".join(lines)


def _parse(row, text):
    # Console text -> a JSON value of the field's type. Surrounding double
    # quotes are dropped, so "" is the empty string and get()'s output reads back.
    path, kind = row[0], row[1]
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    shown = "it" if kind == "secret" else _echo(text)
    if kind == "int" or kind == "ints":
        digits = text[1:] if text[:1] == "-" else text
        if not 1 <= len(digits) <= 12 or not _all_in(digits, _DIGITS):
            raise ConfigError("type", "%s takes a whole number, got %s" % (path, shown), path)
        return int(text)
    if kind == "bool":
        if text == "true" or text == "false":
            return text == "true"
        raise ConfigError("type", "%s takes true or false, got %s" % (path, shown), path)
    return text


def set(doc, path, text):
    # The console's `config set PATH TEXT` -> (new doc, its values). doc is
    # the current /config.json as parsed ({} when absent) and is not
    # changed. Raises ConfigError when the new doc would have an error that
    # doc did not have, or one on this field: nothing is half-applied.
    if not isinstance(doc, dict):
        raise ConfigError("object", "config must be a JSON object: fix /config.json first")
    if path == "meters" or path.startswith("meters.") or path.startswith("meters["):
        raise ConfigError("read_only", "meters are edited in /config.json as a whole, "
                          "not field by field (docs/meters.md)", "meters")
    if not isinstance(text, str) or len(text) > _MAX_SET_TEXT:
        raise ConfigError("type", "%s takes at most %d characters" % (path, _MAX_SET_TEXT), path)
    row = _row(path, _limit_rows()) if path.startswith("limits.") else _row(path)
    if row is None:
        if path in SECTIONS or path == "limits":
            raise ConfigError("unknown", "%s is a section: set one of its fields (config get %s)"
                              % (path, path), path)
        raise ConfigError("unknown", "unknown field %s" % _echo(path), path)
    value = _parse(row, text)
    new = dict(doc)
    section, dot, name = path.partition(".")
    if dot:
        part = new.get(section)
        part = dict(part) if isinstance(part, dict) else {}
        part[name] = value
        new[section] = part
    else:
        new[path] = value
    values, found = _validate(new)
    if found:
        before = [f[2] for f in _validate(doc)[1]]
        for reason, where, message in found:
            if where == path or message not in before:
                raise ConfigError(reason, message, where)
    return new, values

# lib/deviceconfig.py: /config.json checked field by field against SCHEMA,
# the console's `config get` / `config set`, and docs/config.md against
# the code. The documents are what json.loads gives for a /config.json.
import json

from fuzzing import Xorshift32, iterations
from mpcompat import raises

import cose
import deviceconfig
import envelope
import meterconfig
from deviceconfig import SCHEMA, SECTIONS, ConfigError, Field, defaults, get, validate
from deviceconfig import set as config_set

DEFAULTS = {
    "heartbeat_s": 10, "watchdog_ms": 8000, "safe_mode_after": 3, "healthy_after_s": 10,
    "community": "demo", "interval_min": 15, "clock_rate": 1, "utc_offset_min": 0,
    "ha_discovery": False, "ha_prefix": "homeassistant", "journal_kb": 64, "log_lines": 30,
    "wifi": {"ssid": "", "password": "", "hostname": "", "reconnect_s": 10},
    "mqtt": {"host": "", "port": 1883, "tls": False, "ca": "/certs/ca.pem", "keepalive_s": 60,
             "ping_s": 1, "dead_s": 3, "backoff_min_ms": 500, "backoff_max_ms": 1000,
             "hub_offline_s": 300},
    "ntp": {"host": "pool.ntp.org", "port": 123, "period_s": 3600},
    "hub": {"key": b""},
    "tariff": {"feed_in_price": 80000, "retail_price": 300000, "currency": "EUR"},
    "household": {"battery_capacity_wh": 0, "ev_departure": "", "ev_target_wh": 0, "reserve_pct": 20,
                  "trading": True},
    "control": {"grid_meter": "", "battery_meter": "", "ev_meter": "", "period_ms": 2000, "manual_s": 3600},
    "ota": {"trial_s": 1800, "key": b""},
}
REASONS = ("object", "unknown", "type", "range", "format", "rule", "key", "limits", "meters", "read_only")

# cose.encode_key of the public key of tests/lib/protocol_vectors.py's HUB_D
# (kid 7e8b83e510d0bc99), as docs/config.md's example uses it.
HUB_KEY = ("a6010202487e8b83e510d0bc99032620012158202b474dc1630ffba512cadfb2268667b8e25b56ca448b76"
           "e1e64a0e6a7fe43d1b225820e2da11f7656bc5cd2c0bb2d513caff893f259c4fcdc31abe4c71b0264fa89a2f")


def with_defaults(**changes):
    values = defaults()
    values.update(changes)
    return values


def doc_with(path, value):
    # {"mqtt": {"port": 1}} for "mqtt.port"
    section, dot, name = path.partition(".")
    return {section: {name: value}} if dot else {path: value}


def value_at(values, path):
    section, dot, name = path.partition(".")
    return values[section][name] if dot else values[path]


def test_schema_fields():
    old = [(r[0], r[2], r[3]) for r in SCHEMA[:4]]
    assert old == [("heartbeat_s", 10, (1, 3600)), ("watchdog_ms", 8000, (1000, 60000)),
                   ("safe_mode_after", 3, (1, 100)), ("healthy_after_s", 10, (1, 600))], old
    paths = [r[0] for r in SCHEMA]
    for i, r in enumerate(SCHEMA):
        assert len(r) == 5 and r[4], r
        assert r[0] not in paths[:i], r[0]
        section, dot, name = r[0].partition(".")
        assert not dot or section in SECTIONS, r[0]
        # every default passes its own check (hub.key's is "" in the file, b"" as a value)
        doc_default = "" if r[1] == "key" else r[2]
        assert deviceconfig._check(r, doc_default) == (r[2], None, None), r


def test_defaults():
    assert defaults() == DEFAULTS, defaults()


def test_defaults_is_a_new_dict_each_time():
    a = defaults()
    a["heartbeat_s"] = 99
    a["mqtt"]["port"] = 1
    assert defaults()["heartbeat_s"] == 10 and defaults()["mqtt"]["port"] == 1883, defaults()


def test_empty_doc_gives_defaults():
    values, errors = validate({})
    assert values == DEFAULTS, values
    assert errors == [], errors
    for empty in ({"wifi": {}}, {"mqtt": {}, "ntp": {}, "hub": {}, "tariff": {}, "household": {}}):
        values, errors = validate(empty)
        assert values == DEFAULTS and errors == [], (empty, values, errors)


def test_valid_override():
    doc = {"heartbeat_s": 60, "watchdog_ms": 1000, "mqtt": {"host": "broker.local", "port": 8883}}
    values, errors = validate(doc)
    assert errors == [], errors
    want = with_defaults(heartbeat_s=60, watchdog_ms=1000)
    want["mqtt"].update(host="broker.local", port=8883)
    assert values == want, values
    assert doc == {"heartbeat_s": 60, "watchdog_ms": 1000, "mqtt": {"host": "broker.local", "port": 8883}}, doc


# A rule partner that lets the other end of a field's range pass (see docs/config.md).
PARTNERS = {
    "mqtt.ping_s": ("mqtt.keepalive_s", 3600),
    "mqtt.keepalive_s": ("mqtt.ping_s", 1),
    "mqtt.backoff_min_ms": ("mqtt.backoff_max_ms", 600000),
    "mqtt.backoff_max_ms": ("mqtt.backoff_min_ms", 100),
    "tariff.feed_in_price": ("tariff.retail_price", 10000000),
    "tariff.retail_price": ("tariff.feed_in_price", 0),
    "household.ev_target_wh": ("household.ev_departure", "07:30"),
}


def test_every_int_field_at_its_limits():
    for r in SCHEMA:
        if r[1] == "int":
            ends = r[3]
        elif r[1] == "ints":
            ends = r[3]
        elif r[1] == "bool":
            ends = (True, False)
        else:
            continue
        for value in ends:
            doc = doc_with(r[0], value)
            if r[0] in PARTNERS:
                other, v = PARTNERS[r[0]]
                doc.setdefault(other.partition(".")[0], {})[other.partition(".")[2]] = v
            values, errors = validate(doc)
            assert errors == [], (r[0], value, errors)
            assert value_at(values, r[0]) == value, (r[0], value, values)


def test_unknown_field_is_reported_and_ignored():
    values, errors = validate({"heartbeat": 5})
    assert values == DEFAULTS, values
    assert errors == ["unknown field 'heartbeat'"], errors
    assert "heartbeat" not in values, values


def test_sections_unknown_fields_and_non_objects():
    vectors = (
        ({"mqtt": 5}, ["mqtt must be an object"]),
        ({"wifi": ["ssid"]}, ["wifi must be an object"]),
        ({"mqtt": {"prot": 1883}}, ["unknown field 'mqtt.prot'"]),
        ({"mqtt.port": 1883}, ["unknown field 'mqtt.port'"]),  # a path is not a top-level name
        ({"wlan": {"ssid": "x"}}, ["unknown field 'wlan'"]),
        ({"mqtt": {"port": {"n": 1}}}, ["mqtt.port must be a whole number"]),
        ({"heartbeat_s": {"s": 1}}, ["heartbeat_s must be a whole number"]),
    )
    for doc, want in vectors:
        values, errors = validate(doc)
        assert errors == want, (doc, errors)
        assert values == DEFAULTS, (doc, values)


def test_bool_is_not_a_whole_number():
    # True == 1 and isinstance(True, int) on CPython: it must still be refused.
    for value in (True, False):
        values, errors = validate({"safe_mode_after": value})
        assert errors == ["safe_mode_after must be a whole number"], (value, errors)
        assert values["safe_mode_after"] == 3, values
        assert values["safe_mode_after"] is not value, values
    values, errors = validate({"mqtt": {"tls": 1, "port": True}})
    assert errors == ["mqtt.port must be a whole number", "mqtt.tls must be true or false"], errors
    assert values == DEFAULTS, values


def test_float_is_not_a_whole_number():
    for value in (8000.0, 8000.5, 1e3):
        values, errors = validate({"watchdog_ms": value})
        assert errors == ["watchdog_ms must be a whole number"], (value, errors)
        assert values == DEFAULTS, values


def test_other_types_are_not_whole_numbers():
    for value in ("10", None, [10], {"s": 10}):
        values, errors = validate({"heartbeat_s": value})
        assert errors == ["heartbeat_s must be a whole number"], (value, errors)
        assert values == DEFAULTS, values


def test_out_of_range_messages():
    vectors = (
        ("heartbeat_s", 0, "heartbeat_s must be 1..3600, got 0"),
        ("heartbeat_s", 3601, "heartbeat_s must be 1..3600, got 3601"),
        ("watchdog_ms", 999, "watchdog_ms must be 1000..60000, got 999"),
        ("watchdog_ms", 60001, "watchdog_ms must be 1000..60000, got 60001"),
        ("safe_mode_after", 0, "safe_mode_after must be 1..100, got 0"),
        ("safe_mode_after", 101, "safe_mode_after must be 1..100, got 101"),
        ("healthy_after_s", -5, "healthy_after_s must be 1..600, got -5"),
        ("healthy_after_s", 10**20, "healthy_after_s must be 1..600, got 100000000000000000000"),
        ("interval_min", 7, "interval_min must be one of 1, 5, 10, 15, 30, 60, got 7"),
        ("interval_min", 0, "interval_min must be one of 1, 5, 10, 15, 30, 60, got 0"),
        ("clock_rate", 3601, "clock_rate must be 1..3600, got 3601"),
        ("utc_offset_min", -721, "utc_offset_min must be -720..840, got -721"),
        ("journal_kb", 15, "journal_kb must be 16..1024, got 15"),
        ("log_lines", 101, "log_lines must be 10..100, got 101"),
        ("mqtt.port", 0, "mqtt.port must be 1..65535, got 0"),
        ("mqtt.port", 65536, "mqtt.port must be 1..65535, got 65536"),
        ("mqtt.keepalive_s", 9, "mqtt.keepalive_s must be 10..3600, got 9"),
        ("mqtt.dead_s", 61, "mqtt.dead_s must be 1..60, got 61"),
        ("mqtt.hub_offline_s", 29, "mqtt.hub_offline_s must be 30..86400, got 29"),
        ("ntp.period_s", 59, "ntp.period_s must be 60..86400, got 59"),
        ("wifi.reconnect_s", 0, "wifi.reconnect_s must be 1..3600, got 0"),
        ("tariff.retail_price", 0, "tariff.retail_price must be 1..10000000, got 0"),
        ("household.reserve_pct", 101, "household.reserve_pct must be 0..100, got 101"),
        ("household.battery_capacity_wh", -1, "household.battery_capacity_wh must be 0..200000, got -1"),
    )
    for path, value, want in vectors:
        values, errors = validate(doc_with(path, value))
        assert errors == [want], (path, value, errors)
        assert values == DEFAULTS, values


STRINGS = (
    # path, accepted values, refused values
    ("community", ("demo", "a", "lindenweg-12", "x" * 32), ("", "Demo", "a b", "a/b", "a+", "x" * 33)),
    ("ha_prefix", ("homeassistant", "ha/discovery", "H_A-1"), ("", "ha#", "ha+", "h a", "x" * 65)),
    ("wifi.ssid", ("", "Lindenweg 12", "M\u00fcller", "x" * 32, "\u00fc" * 16, '"quoted"'),
     ("x" * 33, "\u00fc" * 17, "a\nb", "tab\t", "del\x7f")),
    ("wifi.hostname", ("", "pgw-7e8b83e510d0bc99", "a", "x" * 32), ("-pgw", "pgw-", "PGW", "pgw_1", "x" * 33)),
    ("mqtt.host", ("", "broker.local", "192.168.1.2", "fe80::1", "x" * 63), ("a b", "x" * 64, "h/1", "h\u00fc")),
    ("mqtt.ca", ("/certs/ca.pem", "/a", "/" + "x" * 63), ("", "/", "certs/ca.pem", "/certs/../x",
                                                          "/a b", "/" + "x" * 64)),
    ("ntp.host", ("", "pool.ntp.org", "10.0.0.1"), ("pool ntp", "x" * 64)),
    ("tariff.currency", ("EUR", "CHF"), ("eur", "EU", "EURO", "", "E1R")),
    ("household.ev_departure", ("", "00:00", "07:30", "23:59"), ("7:30", "24:00", "07:60", "0730", "07-30",
                                                                 "aa:bb", "07:3x", " 7:30")),
)


def test_string_fields():
    for path, good, bad in STRINGS:
        for value in good:
            values, errors = validate(doc_with(path, value))
            assert errors == [], (path, value, errors)
            assert value_at(values, path) == value, (path, value)
        for value in bad:
            values, errors = validate(doc_with(path, value))
            assert len(errors) == 1 and errors[0].startswith(path + " must be "), (path, value, errors)
            assert values == DEFAULTS, (path, value, values)
        for value in (5, None, True, ["x"]):
            values, errors = validate(doc_with(path, value))
            assert errors == [path + " must be a string"], (path, value, errors)


def test_string_messages():
    vectors = (
        ("community", "Demo", "community must be 1..32 of [a-z0-9-], got 'Demo'"),
        ("wifi.hostname", "pgw-", "wifi.hostname must be \"\" or 1..32 of [a-z0-9-], no - at either end, got 'pgw-'"),
        ("household.ev_departure", "24:00", "household.ev_departure must be \"\" or HH:MM, 00:00..23:59, got '24:00'"),
        ("tariff.currency", "eur", "tariff.currency must be 3 of [A-Z], got 'eur'"),
        ("community", "A" * 100, "community must be 1..32 of [a-z0-9-], got 100 characters"),
        ("wifi.ssid", "a\nb", "wifi.ssid must be 0..32 bytes of UTF-8, no control characters"),
    )
    for path, value, want in vectors:
        errors = validate(doc_with(path, value))[1]
        assert errors == [want], (path, errors)


def test_wifi_password_is_a_secret():
    for good in ("", "12345678", "correct horse battery", "~" * 63, "0123456789abcdefABCDEF" * 2 + "0" * 20):
        values, errors = validate({"wifi": {"password": good}})
        assert errors == [] and values["wifi"]["password"] == good, (good, errors)
    for bad in ("1234567", "x" * 64, "g" * 64, "x" * 65, "caf\u00e9caf\u00e9", "tab\there1"):
        values, errors = validate({"wifi": {"password": bad}})
        want = 'wifi.password must be "", 8..63 printable ASCII characters or 64 hex digits'
        assert errors == [want], (bad, errors)
        assert values["wifi"]["password"] == "", values
    values = validate({"wifi": {"password": "hunter2hunter2"}})[0]
    assert get(values, "wifi.password") == "wifi.password ***", get(values, "wifi.password")
    text = get(values)
    assert "hunter2" not in text and "wifi.password ***" in text, text
    assert get(defaults(), "wifi.password") == 'wifi.password ""'
    exc = raises(ConfigError, config_set, {}, "wifi.password", "hunter2")  # 7: too short
    assert exc.reason == "format" and "hunter2" not in str(exc), exc


def test_hub_key_is_decoded_and_checked():
    values, errors = validate({"hub": {"key": HUB_KEY}})
    assert errors == [] and values["hub"]["key"] == bytes.fromhex(HUB_KEY), errors
    kid, xy = cose.decode_key(values["hub"]["key"])
    assert kid.hex() == "7e8b83e510d0bc99", kid
    values, errors = validate({"hub": {"key": HUB_KEY.upper()}})
    assert errors == [] and values["hub"]["key"] == bytes.fromhex(HUB_KEY), errors
    assert validate({"hub": {"key": ""}}) == (DEFAULTS, []), validate({"hub": {"key": ""}})
    fmt = 'hub.key must be "" or the hex of an EC2 P-256 COSE_Key, at most 256 bytes'
    off_curve = HUB_KEY[:-2] + "%02x" % (int(HUB_KEY[-2:], 16) ^ 1)
    vectors = (
        (HUB_KEY[:-1], "format", fmt),
        (HUB_KEY + "zz", "format", fmt),
        ("00" * 257, "format", fmt),
        ("a0", "key", "hub.key is not a usable hub key (key: not an EC2 P-256 key)"),
        ("ff", "key", None),
        (HUB_KEY[:-4], "key", None),  # truncated CBOR
        (off_curve, "key", "hub.key is not a usable hub key (key: public key: point)"),
    )
    for text, reason, want in vectors:
        values, found = deviceconfig._validate({"hub": {"key": text}})
        assert len(found) == 1 and found[0][0] == reason and found[0][1] == "hub.key", (text, found)
        assert want is None or found[0][2] == want, (text, found)
        assert values == DEFAULTS, values
    assert validate({"hub": {"key": 5}})[1] == ["hub.key must be a string"]
    assert get(validate({"hub": {"key": HUB_KEY}})[0], "hub") == 'hub.key "%s"' % HUB_KEY


def test_rules_between_fields_put_both_back():
    vectors = (
        ({"mqtt": {"backoff_min_ms": 40000}}, ("mqtt", "backoff_min_ms", "backoff_max_ms"),
         "mqtt.backoff_min_ms (40000) must not exceed mqtt.backoff_max_ms (1000)"),
        ({"mqtt": {"keepalive_s": 10, "ping_s": 10}}, ("mqtt", "ping_s", "keepalive_s"),
         "mqtt.ping_s (10) must be below mqtt.keepalive_s (10)"),
        ({"tariff": {"feed_in_price": 300000}}, ("tariff", "feed_in_price", "retail_price"),
         "tariff.feed_in_price (300000) must be below tariff.retail_price (300000)"),
        ({"tariff": {"retail_price": 50000}}, ("tariff", "feed_in_price", "retail_price"),
         "tariff.feed_in_price (80000) must be below tariff.retail_price (50000)"),
        ({"household": {"ev_target_wh": 20000}}, ("household", "ev_target_wh", "ev_departure"),
         'household.ev_target_wh (20000) needs household.ev_departure ("")'),
    )
    for doc, (section, a, b), want in vectors:
        values, found = deviceconfig._validate(doc)
        assert [f[2] for f in found] == [want], (doc, found)
        assert found[0][0] == "rule" and found[0][1] == section + "." + a, found
        assert values == DEFAULTS, (doc, values)
    # the fields of a rule are in no other rule: putting both back is safe
    rule_fields = []
    for doc, (section, a, b), want in vectors:
        for f in (section + "." + a, section + "." + b):
            if f not in rule_fields:
                rule_fields.append(f)
    assert len(rule_fields) == 8, rule_fields
    assert validate({"household": {"ev_departure": "07:30"}})[1] == []  # a departure alone is fine


def test_rule_errors_come_after_field_errors():
    doc = {"zeta": 1, "tariff": {"feed_in_price": 400000}, "alpha": {}, "mqtt": {"port": 0}}
    errors = validate(doc)[1]
    assert errors == ["unknown field 'alpha'", "mqtt.port must be 1..65535, got 0", "unknown field 'zeta'",
                      "tariff.feed_in_price (400000) must be below tariff.retail_price (300000)"], errors


def test_non_dict_doc():
    for doc in ([], [["heartbeat_s", 5]], None, "heartbeat_s=5", 5, 5.0, True):
        values, errors = validate(doc)
        assert values == DEFAULTS, (doc, values)
        assert errors == ["config must be a JSON object"], (doc, errors)


def test_errors_in_sorted_field_order():
    doc = {
        "watchdog_ms": 1,
        "zeta": 1,
        "heartbeat_s": 0,
        "alpha": 2,
        "safe_mode_after": "3",
        "healthy_after_s": 601,
    }
    values, errors = validate(doc)
    want = [
        "unknown field 'alpha'",
        "healthy_after_s must be 1..600, got 601",
        "heartbeat_s must be 1..3600, got 0",
        "safe_mode_after must be a whole number",
        "watchdog_ms must be 1000..60000, got 1",
        "unknown field 'zeta'",
    ]
    assert errors == want, errors
    assert values == DEFAULTS, values


def test_bad_field_keeps_default_while_good_fields_apply():
    doc = {"heartbeat_s": 30, "watchdog_ms": 500, "safe_mode_after": 5, "healthy_after_s": True, "led": 1,
           "mqtt": {"host": "broker", "port": -1}}
    values, errors = validate(doc)
    want = with_defaults(heartbeat_s=30, safe_mode_after=5)
    want["mqtt"]["host"] = "broker"
    assert values == want, values
    assert errors == [
        "healthy_after_s must be a whole number",
        "unknown field 'led'",
        "mqtt.port must be 1..65535, got -1",
        "watchdog_ms must be 1000..60000, got 500",
    ], errors


def test_every_error_has_a_reason_and_path():
    doc = {"x": 1, "mqtt": 2, "wifi": {"ssid": 5, "password": "short"}, "ntp": {"port": 0},
           "hub": {"key": "a0"}, "limits": {"fuse_a": 5}, "meters": [{"name": "m"}],
           "tariff": {"retail_price": 1}, "interval_min": 2}
    values, found = deviceconfig._validate(doc)
    assert [f[2] for f in found] == validate(doc)[1]
    reasons = [f[0] for f in found]
    for r in ("unknown", "object", "type", "format", "range", "key", "limits", "meters", "rule"):
        assert r in reasons, (r, found)
    for reason, path, message in found:
        assert reason in REASONS and isinstance(path, str) and isinstance(message, str), (reason, path)


def test_field_check():
    f = Field("x", 2, 1, 5, "a test field")
    assert f.check(1) is None, f.check(1)
    assert f.check(5) is None, f.check(5)
    assert f.check(6) == "x must be 1..5, got 6", f.check(6)
    assert f.check(0) == "x must be 1..5, got 0", f.check(0)
    assert f.check(True) == "x must be a whole number", f.check(True)
    assert f.check(2.0) == "x must be a whole number", f.check(2.0)
    assert deviceconfig.Field is Field and meterconfig.Field is Field


def test_hostname():
    kid = bytes.fromhex("7e8b83e510d0bc99")
    assert deviceconfig.hostname(defaults(), kid) == "pgw-7e8b83e510d0bc99"
    values = validate({"wifi": {"hostname": "garage-gw"}})[0]
    assert deviceconfig.hostname(values, kid) == "garage-gw"


# ---- limits: envelope.Limits decides ----

LIMIT_NAMES = [f[0] for f in envelope._SCHEMA if f[0] not in ("ev_departure_ms", "ev_target_wh")]


def test_limits_absent_default_and_given():
    values, errors = validate({})
    assert "limits" not in values and errors == [], values
    values, errors = validate({"limits": {}})
    lim = envelope.Limits()
    assert errors == [] and sorted(values["limits"]) == sorted(LIMIT_NAMES), values["limits"]
    for name in LIMIT_NAMES:
        assert values["limits"][name] == getattr(lim, name), name
    values, errors = validate({"limits": {"fuse_a": 25, "allow_battery_to_ev": True}})
    assert errors == [] and values["limits"]["fuse_a"] == 25 and values["limits"]["allow_battery_to_ev"] is True
    assert values["limits"]["ev_max_a"] == 16, values["limits"]


def test_bad_limits_are_refused_whole():
    vectors = (
        ({"fuse_a": 5}, "limits", "limits.fuse_a", "limits.fuse_a must be 6..200, got 5"),
        ({"fuse_a": 25, "soc_min_pct": 95}, "limits", "limits.soc_min_pct",
         "limits.soc_min_pct must be below soc_max_pct"),
        ({"fuse_a": "25"}, "limits", "limits.fuse_a", "limits.fuse_a must be an int, got '25'"),
        ({"fuse": 25}, "unknown", "limits.fuse", "unknown field 'limits.fuse'"),
        ({"ev_target_wh": 1000}, "unknown", "limits.ev_target_wh", None),
        ({"ev_departure_ms": 0}, "unknown", "limits.ev_departure_ms", None),
        ([25], "object", "limits", "limits must be an object"),
    )
    for doc_limits, reason, path, want in vectors:
        values, found = deviceconfig._validate({"limits": doc_limits, "heartbeat_s": 20})
        assert values["limits"] is None and values["heartbeat_s"] == 20, (doc_limits, values)
        assert len(found) == 1 and found[0][:2] == (reason, path), (doc_limits, found)
        assert want is None or found[0][2] == want, (doc_limits, found)
        assert "ev_target_wh" not in doc_limits or "household" in found[0][2], found


def test_limits_accepted_exactly_when_the_envelope_accepts():
    # Random limit sets around the edges: deviceconfig and envelope.Limits never disagree.
    rng = Xorshift32(0x5AFE)
    fields = [f for f in envelope._SCHEMA if f[0] in LIMIT_NAMES]
    accepted = refused = 0
    for _ in range(iterations(300)):
        doc = {}
        for _ in range(1 + rng.below(4)):
            name, default, lo, hi = fields[rng.below(len(fields))]
            if lo is None:
                doc[name] = (True, False, 1, None)[rng.below(4)]
            else:
                doc[name] = (lo, hi, lo - 1, hi + 1, default, (lo + hi) // 2, "1")[rng.below(7)]
        try:
            envelope.Limits(doc)
            ok = True
        except envelope.EnvelopeError:
            ok = False
        values, errors = validate({"limits": doc})
        assert ok == (errors == []), (doc, errors)
        assert ok == (values["limits"] is not None), doc
        accepted += ok
        refused += not ok
    assert accepted > 20 and refused > 20, (accepted, refused)


# ---- meters ----

RTU_GRID = {"name": "grid", "protocol": "modbus-rtu", "unit": 1, "profile": "sdm630"}
RTU_INV = {"name": "inverter", "protocol": "modbus-rtu", "unit": 2, "profile": "sunspec_inverter",
           "period_s": 5}
TCP_BAT = {"name": "battery", "protocol": "modbus-tcp", "host": "192.168.1.40", "profile": "sungrow_sh"}
KEY_E = "000102030405060708090A0B0C0D0E0F"  # the DLMS simulator's default EK (host_tools/sim/dlms_meter.py)
KEY_A = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
HDLC = {"name": "utility", "protocol": "dlms-hdlc", "security": "hls-gmac", "ek": KEY_E, "ak": KEY_A,
        "registers": ["1-0:1.8.0*255", "1-0:2.8.0", "1.0.16.7.0.255"]}
DTCP = {"name": "lan_meter", "protocol": "dlms-tcp", "host": "meter.local", "security": "lls",
        "password": "12345678"}
PUSH = {"name": "ci", "protocol": "dlms-push", "uart": 2, "baudrate": 115200, "framing": "mbus", "ek": KEY_E}


def meters_of(*meters):
    values, errors = validate({"meters": list(meters)})
    return values.get("meters"), errors


def test_control_names_must_be_meters():
    doc = {"meters": [{"name": "grid", "protocol": "modbus-tcp", "host": "h", "profile": "sdm630"}],
           "control": {"grid_meter": "grid", "battery_meter": "inverter"}}
    values, errors = validate(doc)
    assert values["control"]["grid_meter"] == "grid", values["control"]
    assert values["control"]["battery_meter"] == "", values["control"]
    assert errors == ["control.battery_meter (inverter) is not one of the meters (grid)"], errors
    values, errors = validate({"control": {"ev_meter": "Wall-box"}})
    assert values["control"]["ev_meter"] == "" and len(errors) == 1 and "control.ev_meter" in errors[0], errors


def test_no_meters_field_means_no_meters_value():
    values, errors = validate({"heartbeat_s": 5})
    assert "meters" not in values and errors == [], (values, errors)
    values, errors = validate({"meters": []})
    assert values["meters"] == [] and errors == [], (values, errors)


def test_modbus_meters_get_their_defaults():
    got, errors = meters_of(RTU_GRID, RTU_INV, TCP_BAT)
    assert errors == [], errors
    want_grid = {"name": "grid", "protocol": "modbus-rtu", "period_s": 10, "timeout_ms": 1000,
                 "retries": 2, "bus": "rs485", "baudrate": 9600, "bits": 8, "parity": "N", "stop": 1,
                 "unit": 1, "profile": "sdm630"}
    assert got[0] == want_grid, got[0]
    assert got[1]["period_s"] == 5 and got[1]["unit"] == 2, got[1]
    want_bat = {"name": "battery", "protocol": "modbus-tcp", "period_s": 10, "timeout_ms": 3000,
                "retries": 2, "host": "192.168.1.40", "port": 502, "unit": 1, "profile": "sungrow_sh"}
    assert got[2] == want_bat, got[2]


def test_dlms_meters_validated_now_keys_become_bytes():
    got, errors = meters_of(HDLC, DTCP, PUSH)
    assert errors == [], errors
    hdlc, dtcp, push = got
    assert hdlc["ek"] == bytes(range(16)) and hdlc["ak"] == bytes(range(0xD0, 0xE0)), hdlc
    assert hdlc["client"] == 1 and hdlc["server"] == 1 and hdlc["physical"] == 16, hdlc
    assert hdlc["registers"] == ["1-0:1.8.0*255", "1-0:2.8.0*255", "1-0:16.7.0*255"], hdlc
    assert hdlc["mode_e"] is False and hdlc["bus"] == "rs485", hdlc
    assert dtcp["client"] == 17 and dtcp["port"] == 4059 and dtcp["password"] == "12345678", dtcp
    assert dtcp["registers"] == [], dtcp
    assert push["uart"] == 2 and push["framing"] == "mbus" and "bus" not in push, push
    assert "retries" not in push and push["timeout_ms"] == 1000, push


def test_bad_meter_is_rejected_whole_others_run():
    bad = dict(RTU_INV, unit=300, period_s=0)
    got, errors = meters_of(RTU_GRID, bad, TCP_BAT)
    assert [m["name"] for m in got] == ["grid", "battery"], got
    assert errors == [
        "meters[1] (inverter): period_s must be 1..3600, got 0",
        "meters[1] (inverter): unit must be 1..247, got 300",
    ], errors


def test_field_errors_name_meter_and_field():
    vectors = (
        (dict(RTU_GRID, name="Grid"), "meters[0] (Grid): name must be 1..16 of [a-z0-9_], got 'Grid'"),
        (dict(RTU_GRID, name="a" * 17), "meters[0]: name must be 1..16 of [a-z0-9_], got '" + "a" * 17 + "'"),
        ({"protocol": "modbus-tcp", "host": "h", "profile": "p"}, "meters[0]: name is required"),
        (dict(RTU_GRID, protocol="modbus"), "meters[0] (grid): protocol must be one of modbus-rtu, "
                                            "modbus-tcp, dlms-hdlc, dlms-tcp, dlms-push, got 'modbus'"),
        (dict(RTU_GRID, unit=0), "meters[0] (grid): unit must be 1..247, got 0"),
        (dict(RTU_GRID, retries=6), "meters[0] (grid): retries must be 0..5, got 6"),
        (dict(RTU_GRID, timeout_ms=True), "meters[0] (grid): timeout_ms must be a whole number"),
        (dict(RTU_GRID, parity="even"), "meters[0] (grid): parity must be one of N, E, O, got 'even'"),
        (dict(RTU_GRID, baudrate=200), "meters[0] (grid): baudrate must be 300..921600, got 200"),
        (dict(RTU_GRID, bus="rs232"), "meters[0] (grid): bus must be one of rs485, got 'rs232'"),
        (dict(RTU_GRID, profile="SDM 630"), "meters[0] (grid): profile must be 1..32 of [a-z0-9_], got 'SDM 630'"),
        ({"name": "grid", "protocol": "modbus-rtu", "profile": "sdm630"}, "meters[0] (grid): unit is required on modbus-rtu"),
        (dict(TCP_BAT, host="a b"), "meters[0] (battery): host must be 1..63 of letters, digits and . - _ :, got 'a b'"),
        (dict(TCP_BAT, port=0), "meters[0] (battery): port must be 1..65535, got 0"),
        (dict(TCP_BAT, unit=256), "meters[0] (battery): unit must be 0..255, got 256"),
        ({"name": "b", "protocol": "modbus-tcp", "profile": "p"}, "meters[0] (b): host is required"),
        (dict(TCP_BAT, baudrate=9600), "meters[0] (battery): baudrate does not apply to modbus-tcp"),
        (dict(RTU_GRID, colour="red"), "meters[0] (grid): unknown field 'colour'"),
        (dict(RTU_GRID, bus="rs485", uart=2), "meters[0] (grid): give bus or uart, not both"),
        (dict(HDLC, ek="0011"), "meters[0] (utility): ek must be 32 hex digits (16 bytes)"),
        (dict(HDLC, ak=None), "meters[0] (utility): ak must be 32 hex digits (16 bytes)"),
        (dict(HDLC, system_title="4142434445464748XX"), "meters[0] (utility): system_title must be 16 hex digits (8 bytes)"),
        (dict(HDLC, security="hls"), "meters[0] (utility): security must be one of none, lls, hls-gmac, got 'hls'"),
        (dict(HDLC, mode_e=1), "meters[0] (utility): mode_e must be true or false"),
        (dict(HDLC, registers=["1-0:1.8.0", "1-0:1.8.0*255"]), "meters[0] (utility): registers: 1-0:1.8.0*255 given twice"),
        (dict(HDLC, registers=["1-0:1.8"]), "meters[0] (utility): registers: '1-0:1.8' is not an OBIS code like 1-0:1.8.0*255"),
        (dict(HDLC, registers=["1-0:1.8.256"]), "meters[0] (utility): registers: '1-0:1.8.256' is not an OBIS code like 1-0:1.8.0*255"),
        (dict(HDLC, registers="1-0:1.8.0"), "meters[0] (utility): registers must be a list of at most 32 OBIS codes"),
        (dict(HDLC, framing="mbus"), "meters[0] (utility): framing does not apply to dlms-hdlc"),
        (dict(HDLC, physical=16384), "meters[0] (utility): physical must be 0..16383, got 16384"),
        (dict(HDLC, client=0), "meters[0] (utility): client must be 1..127, got 0"),
        ({k: v for k, v in HDLC.items() if k != "ak"}, "meters[0] (utility): security hls-gmac needs ek and ak"),
        ({k: v for k, v in DTCP.items() if k != "password"}, "meters[0] (lan_meter): security lls needs a password"),
        (dict(DTCP, security="none"), "meters[0] (lan_meter): password is only used with security lls"),
        (dict(DTCP, password="\x01secret"), "meters[0] (lan_meter): password must be 1..32 printable characters"),
        (dict(DTCP, physical=17), "meters[0] (lan_meter): physical does not apply to dlms-tcp"),
        (dict(PUSH, retries=1), "meters[0] (ci): retries does not apply to dlms-push"),
        (dict(PUSH, registers=[]), "meters[0] (ci): registers does not apply to dlms-push"),
        (dict(PUSH, framing="p1"), "meters[0] (ci): framing must be one of mbus, hdlc, raw, got 'p1'"),
        ({k: v for k, v in dict(PUSH, ak=KEY_A).items() if k != "ek"}, "meters[0] (ci): ak without ek: a ciphered push needs ek"),
    )
    for meter, want in vectors:
        got, errors = meters_of(meter)
        assert got == [], (meter, got)
        assert errors == [want], (want, errors)


def test_secrets_never_appear_in_errors():
    got, errors = meters_of(dict(DTCP, password="top\x7fsecret"), dict(HDLC, ek="zz" + KEY_E[2:]))
    text = " ".join(errors)
    assert "secret" not in text and KEY_E[2:] not in text, errors


def test_push_without_keys_takes_plain_frames():
    got, errors = meters_of({"name": "p1", "protocol": "dlms-push", "uart": 2})
    assert errors == [] and "ek" not in got[0] and got[0]["framing"] == "hdlc", (got, errors)


def test_names_unique_and_bus_rules():
    got, errors = meters_of(
        RTU_GRID,
        dict(RTU_INV, name="grid"),  # name taken
        dict(RTU_INV, unit=1),  # unit taken on the bus
        dict(RTU_INV, name="slow", baudrate=19200, unit=3),  # the bus runs at 9600
        dict(RTU_INV, name="inv2", unit=4, uart=2),  # another line: 19200 is fine there
        dict(HDLC, name="dl", bus="rs485"),  # DLMS on the same bus at the same speed: allowed
        dict(PUSH, uart=2, name="ci"),  # a push shares no line
    )
    assert [m["name"] for m in got] == ["grid", "inv2", "dl"], got
    assert errors == [
        "meters[1] (grid): name grid is already used by meters[0]",
        "meters[2] (inverter): unit 1 is already used by grid on the same bus",
        "meters[3] (slow): baudrate 19200 differs from 9600 of grid on the same line",
        "meters[6] (ci): a dlms-push meter needs its line alone; inv2 is on it",
    ], errors


def test_meters_must_be_a_list_of_objects_and_at_most_eight():
    values, errors = validate({"meters": {"grid": RTU_GRID}})
    assert values["meters"] == [] and errors == ["meters must be a list of meter objects"], errors
    got, errors = meters_of(RTU_GRID, "grid", 5)
    assert len(got) == 1 and errors == ["meters[1]: must be an object", "meters[2]: must be an object"], errors
    many = [dict(TCP_BAT, name="m%d" % i) for i in range(10)]
    got, errors = meters_of(*many)
    assert [m["name"] for m in got] == ["m%d" % i for i in range(8)], got
    assert errors == ["meters[8] (m8): at most 8 meters", "meters[9] (m9): at most 8 meters"], errors


def test_meter_errors_sit_with_other_field_errors_in_sorted_order():
    values, errors = validate({"watchdog_ms": 1, "meters": [dict(RTU_GRID, unit=0)], "alpha": 1})
    assert errors == ["unknown field 'alpha'", "meters[0] (grid): unit must be 1..247, got 0",
                      "watchdog_ms must be 1000..60000, got 1"], errors
    assert values["meters"] == [] and values["watchdog_ms"] == 8000, values


def test_meter_doc_not_modified():
    meter = dict(HDLC)
    meters_of(meter)
    assert meter == HDLC and isinstance(meter["ek"], str), meter


def test_obis_parse_and_format():
    vectors = (
        ("1-0:1.8.0*255", (1, 0, 1, 8, 0, 255)),
        ("1-0:1.8.0", (1, 0, 1, 8, 0, 255)),
        ("0-0:96.1.0*255", (0, 0, 96, 1, 0, 255)),
        ("1.0.32.7.0.255", (1, 0, 32, 7, 0, 255)),
        ("1-0:1.8.0*", None), ("1-0:1.8.0*256", None), ("1:0-1.8.0", None), ("1-0:1.8", None),
        ("1.0.1.8.0", None), ("1-0:1.8.x", None), ("", None), (18, None), ("1-0:1.8.0*0255", None),
    )
    for text, want in vectors:
        got = meterconfig.parse_obis(text)
        assert got == want, (text, got)
        if want is not None:
            assert meterconfig.parse_obis(meterconfig.format_obis(got)) == got, text


# ---- config get / config set ----


def test_get_a_field_a_section_and_everything():
    values = validate({"mqtt": {"host": "broker.local", "tls": True}, "community": "lindenweg"})[0]
    assert get(values, "mqtt.port") == "mqtt.port 1883"
    assert get(values, "mqtt.tls") == "mqtt.tls true"
    assert get(values, "community") == 'community "lindenweg"'
    assert get(values, "ntp").split("\n") == ['ntp.host "pool.ntp.org"', "ntp.port 123", "ntp.period_s 3600"]
    lines = get(values).split("\n")
    assert lines[0] == "heartbeat_s 10" and 'mqtt.host "broker.local"' in lines, lines
    assert len(lines) == len(deviceconfig.schema_rows()), lines  # no meters: no meters line
    assert "limits.fuse_a 35" in lines, lines  # absent limits: the envelope's defaults
    assert get(values, "limits.fuse_a") == "limits.fuse_a 35"
    for path in ("mqtt.prot", "mq", "wifi.", "x", "meters.grid", "limits.fuse", "limits.ev_target_wh"):
        exc = raises(ConfigError, get, values, path)
        assert exc.reason == "unknown" and exc.path == path, (path, exc)


def test_get_limits_and_meters():
    values = validate({"limits": {"fuse_a": 25}})[0]
    assert get(values, "limits.fuse_a") == "limits.fuse_a 25"
    assert get(values, "limits").split("\n")[2] == "limits.fuse_a 25", get(values, "limits")
    values = validate({"limits": {"fuse_a": 5}})[0]
    assert values["limits"] is None
    assert get(values, "limits.fuse_a") == "limits.fuse_a ? (the limits section is invalid: the fail-safe holds)"
    assert get(defaults(), "meters") == "meters 0: none"
    values = validate({"meters": [RTU_GRID, TCP_BAT]})[0]
    assert get(values, "meters") == "meters 2: grid battery"
    assert get(values).split("\n")[0] == "meters 2: grid battery"


def test_set_a_field():
    doc = {"mqtt": {"host": "broker.local"}, "heartbeat_s": 20}
    new, values = config_set(doc, "mqtt.port", "8883")
    assert new == {"mqtt": {"host": "broker.local", "port": 8883}, "heartbeat_s": 20}, new
    assert doc == {"mqtt": {"host": "broker.local"}, "heartbeat_s": 20}, doc  # not changed
    assert values["mqtt"]["port"] == 8883 and values["heartbeat_s"] == 20, values
    assert values == validate(new)[0]
    vectors = (
        ("heartbeat_s", "60", 60), ("utc_offset_min", "-300", -300), ("ha_discovery", "true", True),
        ("mqtt.tls", "false", False), ("mqtt.tls", '"true"', True), ("community", "lindenweg", "lindenweg"),
        ("wifi.ssid", '"Lindenweg 12"', "Lindenweg 12"), ("wifi.ssid", "Lindenweg 12", "Lindenweg 12"),
        ("wifi.ssid", '""', ""), ("wifi.ssid", "", ""), ("wifi.ssid", '"a"b"', 'a"b'),
        ("wifi.password", "correct horse battery", "correct horse battery"),
        ("household.ev_departure", "07:30", "07:30"), ("interval_min", "60", 60),
        ("hub.key", HUB_KEY, HUB_KEY), ("limits.fuse_a", "25", 25), ("limits.allow_battery_to_ev", "true", True),
    )
    for path, text, want in vectors:
        new, values = config_set({}, path, text)
        assert new == doc_with(path, want), (path, text, new)
        if path == "hub.key":
            want = bytes.fromhex(want)
        assert value_at(values, path) == want, (path, values)


def test_get_reads_back_through_set():
    doc = {"community": "lindenweg", "wifi": {"ssid": 'My "home"', "hostname": "gw-1"},
           "mqtt": {"host": "h", "tls": True, "port": 8883}, "hub": {"key": HUB_KEY},
           "household": {"ev_departure": "06:45", "ev_target_wh": 12000}, "limits": {"fuse_a": 20}}
    values = validate(doc)[0]
    rebuilt = {}
    for line in get(values).split("\n"):
        path, _, text = line.partition(" ")
        if path == "wifi.password":
            continue
        rebuilt, _ = config_set(rebuilt, path, text)
    assert validate(rebuilt) == (values, []), rebuilt


def test_refused_sets_change_nothing():
    doc = {"mqtt": {"host": "broker.local"}}
    vectors = (
        ("mqtt.port", "0", "range", "mqtt.port must be 1..65535, got 0"),
        ("mqtt.port", "abc", "type", "mqtt.port takes a whole number, got 'abc'"),
        ("mqtt.port", "", "type", "mqtt.port takes a whole number, got ''"),
        ("mqtt.port", "1883.0", "type", None),
        ("mqtt.port", "1" * 13, "type", None),
        ("mqtt.port", "+5", "type", None),
        ("mqtt.tls", "yes", "type", "mqtt.tls takes true or false, got 'yes'"),
        ("mqtt.tls", "True", "type", None),
        ("interval_min", "7", "range", "interval_min must be one of 1, 5, 10, 15, 30, 60, got 7"),
        ("community", "Lindenweg", "format", "community must be 1..32 of [a-z0-9-], got 'Lindenweg'"),
        ("mqtt.ping_s", "60", "rule", "mqtt.ping_s (60) must be below mqtt.keepalive_s (60)"),
        ("tariff.feed_in_price", "400000", "rule",
         "tariff.feed_in_price (400000) must be below tariff.retail_price (300000)"),
        ("household.ev_target_wh", "20000", "rule", 'household.ev_target_wh (20000) needs household.ev_departure ("")'),
        ("hub.key", "a0", "key", None),
        ("limits.fuse_a", "5", "limits", "limits.fuse_a must be 6..200, got 5"),
        ("limits.soc_min_pct", "95", "limits", "limits.soc_min_pct must be below soc_max_pct"),
        ("limits.ev_target_wh", "1", "unknown", None),
        ("mqtt.prot", "1", "unknown", "unknown field 'mqtt.prot'"),
        ("mqtt", "1", "unknown", "mqtt is a section: set one of its fields (config get mqtt)"),
        ("limits", "1", "unknown", None),
        ("heartbeat", "1", "unknown", None),
        ("", "1", "unknown", None),
        ("meters", "[]", "read_only", None),
        ("meters.grid.unit", "2", "read_only", None),
        ("meters[0].unit", "2", "read_only", None),
        ("mqtt.host", "x" * 601, "type", "mqtt.host takes at most 600 characters"),
    )
    for path, text, reason, want in vectors:
        exc = raises(ConfigError, config_set, doc, path, text)
        assert exc.reason == reason, (path, text, exc)
        assert want is None or exc.message == want, (path, text, exc.message)
        assert str(exc) == "%s: %s" % (reason, exc.message) and isinstance(exc, ValueError), exc
        assert doc == {"mqtt": {"host": "broker.local"}}, doc
    exc = raises(ConfigError, config_set, doc, "meters", "[]")
    assert "docs/meters.md" in exc.message and exc.path == "meters", exc
    exc = raises(ConfigError, config_set, doc, "mqtt.ping_s", "60")
    assert exc.path == "mqtt.ping_s", exc.path
    for bad_doc in ([], None, "x"):
        exc = raises(ConfigError, config_set, bad_doc, "heartbeat_s", "5")
        assert exc.reason == "object", exc


def test_set_is_not_blocked_by_old_errors_elsewhere():
    doc = {"mqtt": {"port": 0}, "colour": "red", "meters": [dict(RTU_GRID, unit=0)]}
    new, values = config_set(doc, "heartbeat_s", "30")
    assert new["heartbeat_s"] == 30 and values["heartbeat_s"] == 30, new
    assert validate(new)[1] == validate(doc)[1] and len(validate(new)[1]) == 3, validate(new)
    new, values = config_set(new, "mqtt.port", "8883")  # fixing an error
    assert values["mqtt"]["port"] == 8883 and len(validate(new)[1]) == 2, validate(new)
    # a set that leaves its own field in error is refused, even with the same message
    doc = {"wifi": {"password": "short"}}
    exc = raises(ConfigError, config_set, doc, "wifi.password", "short2")
    assert exc.reason == "format" and exc.path == "wifi.password", exc
    # a section that is not an object is replaced by the field set
    new, values = config_set({"mqtt": 5}, "mqtt.port", "8883")
    assert new == {"mqtt": {"port": 8883}} and validate(new)[1] == [], new


def test_set_text_never_crashes():
    # Console lines of every kind against every field: ConfigError or a valid set.
    rng = Xorshift32(0xC0F16)
    alphabet = 'az09-_.:/" \t\\\x00\u00fc{}[],+'
    texts = ("", '""', "0", "-1", "true", "false", "null", "1e3", "0x10", "07:30", HUB_KEY, "x" * 70)
    rows = [r[0] for r in SCHEMA] + ["limits.fuse_a", "limits.failsafe_open_ev", "meters", "nope.x"]
    for i in range(iterations(400)):
        path = rows[rng.below(len(rows))]
        if i % 2:
            text = texts[rng.below(len(texts))]
        else:
            text = "".join(alphabet[rng.below(len(alphabet))] for _ in range(rng.below(12)))
        try:
            new, values = config_set({"mqtt": {"host": "h"}}, path, text)
        except ConfigError as e:
            assert e.reason in REASONS, (path, text, e)
            continue
        assert validate(new) == (values, []), (path, text, new)


def test_validate_never_crashes_on_mutated_docs():
    rng = Xorshift32(0xD0C)
    base = json.dumps({"community": "lindenweg", "mqtt": {"host": "h", "port": 8883, "tls": True},
                       "wifi": {"ssid": "s", "password": "12345678"}, "hub": {"key": HUB_KEY},
                       "tariff": {"feed_in_price": 1, "retail_price": 2},
                       "household": {"ev_departure": "07:30", "ev_target_wh": 5},
                       "limits": {"fuse_a": 25}, "interval_min": 15})
    parsed = 0
    for _ in range(iterations(300)):
        text = list(base)
        for _ in range(1 + rng.below(3)):
            p = rng.below(len(text))
            text[p] = '0129azAZ"{}[],:.-tfn '[rng.below(21)]
        try:
            doc = json.loads("".join(text))
        except ValueError:
            continue
        parsed += 1
        values, errors = validate(doc)
        for e in errors:
            assert isinstance(e, str) and len(e) < 200, e
        assert sorted(k for k in values if k not in ("limits", "meters")) == sorted(DEFAULTS), values
    assert parsed > 30, parsed


def test_ota_release_key_is_checked_like_the_hub_key():
    # the release key that signs OTA manifests (pgw provision --ota-key writes it)
    values, errors = validate({"ota": {"key": HUB_KEY}, "hub": {"key": HUB_KEY}})
    assert errors == [] and values["ota"]["key"] == bytes.fromhex(HUB_KEY), errors
    values, errors = validate({"ota": {"key": "a0"}})
    assert errors == ["ota.key is not a usable release key (key: not an EC2 P-256 key)"], errors
    assert values["ota"]["key"] == b"", values["ota"]
    exc = raises(ConfigError, config_set, {}, "ota.key", HUB_KEY[:-1])
    assert exc.reason == "format" and exc.path == "ota.key", exc
    assert get(values, "ota.key") == 'ota.key ""'


# ---- docs/config.md cannot drift ----


def _doc_path():
    # tests/lib/test_deviceconfig.py -> docs/config.md
    here = __file__.replace("\\", "/")
    root = here.rsplit("/", 3)[0] if here.count("/") >= 3 else "."
    return root + "/docs/config.md"


def _doc():
    # -> (table rows as lists of cells, {heading: [json blocks]}, {heading: [other code blocks]})
    rows = []
    jsons = {}
    blocks = {}
    heading = ""
    block = None
    in_fields = False  # inside a "| field | type | default | limits | meaning |" table
    with open(_doc_path()) as f:
        for line in f:
            line = line.rstrip("\n")
            if block is not None:
                if line.startswith("```"):
                    kind, lines = block
                    (jsons if kind == "json" else blocks).setdefault(heading, []).append("\n".join(lines))
                    block = None
                else:
                    block[1].append(line)
            elif line.startswith("```"):
                block = (line[3:], [])
            elif line.startswith("## "):
                heading = line[3:]
            elif line.startswith("| field | type | default | limits |"):
                in_fields = True
            elif not line.startswith("|"):
                in_fields = False
            elif in_fields and line.startswith("| `"):
                rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows, jsons, blocks


def _unquote(cell):
    return cell[1:-1] if cell.startswith("`") and cell.endswith("`") else cell


def test_docs_tables_match_the_schema():
    rows = _doc()[0]
    got = []
    for cells in rows:
        assert len(cells) == 5, cells
        got.append((_unquote(cells[0]), cells[1], _unquote(cells[2]), _unquote(cells[3])))
    want = [tuple(r) for r in deviceconfig.schema_rows()]
    for row in want:
        assert row in got, ("not in docs/config.md, or different there", row)
    for row in got:
        assert row in want, ("in docs/config.md but not in the schema", row)
    assert len(got) == len(want), len(got)


def test_docs_example_is_valid():
    jsons = _doc()[1]
    example = json.loads(jsons["Worked example"][0])
    values, errors = validate(example)
    assert errors == [], errors
    assert values["hub"]["key"] == bytes.fromhex(HUB_KEY), values["hub"]
    assert [m["name"] for m in values["meters"]] == ["grid", "hybrid"], values["meters"]
    assert values["limits"]["fuse_a"] == 25 and values["household"]["ev_target_wh"] == 20000, values


def test_docs_console_session_replays():
    rows, jsons, blocks = _doc()
    doc = json.loads(jsons["At the console"][0])
    session = blocks["At the console"][0].split("\n")
    i = 0
    commands = 0
    while i < len(session):
        line = session[i]
        assert line.startswith("pgw> config "), line
        j = i + 1
        while j < len(session) and not session[j].startswith("pgw> "):
            j += 1
        shown = session[i + 1:j]
        words = line[len("pgw> config "):]
        verb, _, rest = words.partition(" ")
        if verb == "get":
            want = get(validate(doc)[0], rest)
        else:
            path, _, text = rest.partition(" ")
            try:
                doc, values = config_set(doc, path, text)
                # as firmware/gateway/settings.py answers
                want = "saved: %s; takes effect at the next reboot" % get(values, path)
            except ConfigError as e:
                want = "ERR " + str(e)
        assert shown == want.split("\n"), (line, shown, want)
        commands += 1
        i = j
    assert commands >= 10, commands
    assert doc["mqtt"] == {"host": "hub.lindenweg.example", "port": 8883, "tls": True}, doc


def test_keys_that_are_not_strings():
    # MicroPython's json.loads accepts {1: 2}, {null: 1}, {true: 1}: no crash, unknown fields.
    values, errors = validate({1: 2, "heartbeat_s": 5, None: 1})
    assert values["heartbeat_s"] == 5 and sorted(errors) == ["unknown field '1'", "unknown field 'None'"], errors
    values, errors = validate({"mqtt": {"port": 8883, True: 1}, "limits": {"fuse_a": 25, 2: 1}})
    assert values["mqtt"]["port"] == 8883 and values["limits"] is None, values
    assert errors == ["unknown field 'limits.2'", "unknown field 'mqtt.True'"], errors
    values, errors = validate({"meters": [dict(RTU_GRID), {"name": "x", 1: 2, "protocol": "modbus-tcp"}]})
    assert [m["name"] for m in values["meters"]] == ["grid"] and len(errors) > 0, (values, errors)
    assert "meters[1] (x): unknown field '1'" in errors, errors

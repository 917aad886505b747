# lib/deviceconfig.py: /config.json checked field by field against SCHEMA.
# The documents are what json.loads gives for a /config.json.
import deviceconfig
import meterconfig
from deviceconfig import SCHEMA, Field, defaults, validate

DEFAULTS = {"heartbeat_s": 10, "watchdog_ms": 8000, "safe_mode_after": 3, "healthy_after_s": 10}


def with_defaults(**changes):
    values = dict(DEFAULTS)
    values.update(changes)
    return values


def test_schema_fields():
    got = sorted((f.name, f.default, f.lo, f.hi) for f in SCHEMA)
    want = [
        ("healthy_after_s", 10, 1, 600),
        ("heartbeat_s", 10, 1, 3600),
        ("safe_mode_after", 3, 1, 100),
        ("watchdog_ms", 8000, 1000, 60000),
    ]
    assert got == want, got
    for f in SCHEMA:
        assert f.summary, f.name
        assert f.check(f.default) is None, (f.name, f.check(f.default))


def test_defaults():
    assert defaults() == DEFAULTS, defaults()


def test_defaults_is_a_new_dict_each_time():
    a = defaults()
    a["heartbeat_s"] = 99
    assert defaults()["heartbeat_s"] == 10, defaults()


def test_empty_doc_gives_defaults():
    values, errors = validate({})
    assert values == DEFAULTS, values
    assert errors == [], errors


def test_valid_override():
    doc = {"heartbeat_s": 60, "watchdog_ms": 1000}
    values, errors = validate(doc)
    assert errors == [], errors
    assert values == with_defaults(heartbeat_s=60, watchdog_ms=1000), values
    assert doc == {"heartbeat_s": 60, "watchdog_ms": 1000}, doc  # not modified


def test_every_field_at_its_limits():
    for f in SCHEMA:
        for value in (f.lo, f.hi):
            values, errors = validate({f.name: value})
            assert errors == [], (f.name, value, errors)
            assert values[f.name] == value, (f.name, value, values)


def test_unknown_field_is_reported_and_ignored():
    values, errors = validate({"heartbeat": 5})
    assert values == DEFAULTS, values
    assert errors == ["unknown field 'heartbeat'"], errors
    assert "heartbeat" not in values, values


def test_bool_is_not_a_whole_number():
    # True == 1 and isinstance(True, int) on CPython: it must still be refused.
    for value in (True, False):
        values, errors = validate({"safe_mode_after": value})
        assert errors == ["safe_mode_after must be a whole number"], (value, errors)
        assert values["safe_mode_after"] == 3, values
        assert values["safe_mode_after"] is not value, values


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
    )
    for name, value, want in vectors:
        values, errors = validate({name: value})
        assert errors == [want], (name, value, errors)
        assert values == DEFAULTS, values


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
    doc = {"heartbeat_s": 30, "watchdog_ms": 500, "safe_mode_after": 5, "healthy_after_s": True, "led": 1}
    values, errors = validate(doc)
    assert values == with_defaults(heartbeat_s=30, safe_mode_after=5), values
    want = [
        "healthy_after_s must be a whole number",
        "unknown field 'led'",
        "watchdog_ms must be 1000..60000, got 500",
    ]
    assert errors == want, errors


def test_field_check():
    f = Field("x", 2, 1, 5, "a test field")
    assert f.check(1) is None, f.check(1)
    assert f.check(5) is None, f.check(5)
    assert f.check(6) == "x must be 1..5, got 6", f.check(6)
    assert f.check(0) == "x must be 1..5, got 0", f.check(0)
    assert f.check(True) == "x must be a whole number", f.check(True)
    assert f.check(2.0) == "x must be a whole number", f.check(2.0)
    assert deviceconfig.Field is Field


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

"""firmware/gateway/config.py's checked-config cache, on CPython with files
in a temporary directory, and once on the MicroPython unix port: a clean
config is checked once and kept in /state/config.checked with a digest of
/config.json and the firmware version; later loads take it with json alone
(deviceconfig is not imported) and give a config equal to the checked one,
types included; anything wrong with the file means checking again. On a
virtual board: tests/e2e/test_checked_config_on_board.py."""

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import deviceconfig  # noqa: E402
import meterconfig  # noqa: E402
from gateway import config  # noqa: E402

# cose.encode_key of the public key of tests/lib/protocol_vectors.py's HUB_D,
# as tests/lib/test_deviceconfig.py has it.
HUB_KEY = ("a6010202487e8b83e510d0bc99032620012158202b474dc1630ffba512cadfb2268667b8e25b56ca448b76"
           "e1e64a0e6a7fe43d1b225820e2da11f7656bc5cd2c0bb2d513caff893f259c4fcdc31abe4c71b0264fa89a2f")
EK, AK, TITLE = "000102030405060708090a0b0c0d0e0f", "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf", "4d4d4d0000bc614e"

# Every kind of value the schema gives: every top-level field is in the
# result (defaults filled in), non-ASCII and JSON-escaped text, the hub key
# (bytes), limits, and a meter of each protocol with every field that
# applies to it (bus and uart are one or the other: both are used).
FULL = {
    "heartbeat_s": 5, "community": "elm-street", "ha_discovery": True, "interval_min": 5,
    "wifi": {"ssid": "Caf\u00e9 Lindenweg \u2603", "password": "a \"quoted\" \\ pass", "hostname": "pgw-home"},
    "mqtt": {"host": "broker.local", "tls": True, "ca": "/certs/my-ca.pem"},
    "hub": {"key": HUB_KEY},
    "ota": {"key": HUB_KEY},  # the release key (pgw provision --ota-key)
    "household": {"ev_departure": "07:30", "ev_target_wh": 12000, "battery_capacity_wh": 10000},
    "control": {"grid_meter": "grid", "battery_meter": "battery", "ev_meter": "pv"},
    "limits": {"fuse_a": 25, "allow_battery_to_ev": True, "relay_min_on_ms": 1000},
    "meters": [
        {"name": "grid", "protocol": "modbus-rtu", "bus": "rs485", "unit": 1, "profile": "sdm630",
         "period_s": 5, "timeout_ms": 500, "retries": 1, "baudrate": 19200, "bits": 8, "parity": "E",
         "stop": 1},
        {"name": "pv", "protocol": "modbus-rtu", "uart": 3, "unit": 2, "profile": "sdm630"},
        {"name": "battery", "protocol": "modbus-tcp", "host": "192.168.1.9", "port": 1502, "unit": 0,
         "profile": "sunspec"},
        {"name": "main", "protocol": "dlms-hdlc", "uart": 4, "security": "hls-gmac", "ek": EK, "ak": AK,
         "system_title": TITLE, "mode_e": True, "registers": ["1-0:1.8.0*255", "1.0.2.8.0.255"],
         "server": 1, "physical": 17, "client": 1},
        {"name": "sub", "protocol": "dlms-tcp", "host": "meter.local", "security": "lls",
         "password": "p\"w\\d 1", "registers": ["1-0:1.8.0"], "ek": EK, "ak": AK, "system_title": TITLE},
        {"name": "han", "protocol": "dlms-push", "uart": 5, "framing": "mbus", "ek": EK, "ak": AK,
         "system_title": TITLE},
    ],
}


def same(a, b):
    """== with the types too (True == 1 and 1 == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def leaves(v, path=""):
    """(path, value) of every value that is not a dict or a list."""
    if isinstance(v, dict):
        for k in v:
            yield from leaves(v[k], "%s.%s" % (path, k) if path else k)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from leaves(x, "%s[%d]" % (path, i))
    else:
        yield path, v


@pytest.fixture
def files(tmp_path, monkeypatch):
    """(config path, cache path); gateway.boot importable (it writes the
    cache) with a stand-in `machine`, taken away again afterwards."""
    before = set(sys.modules)
    machine = types.ModuleType("machine")
    machine.Pin = machine.PWM = object
    monkeypatch.setitem(sys.modules, "machine", machine)
    yield tmp_path / "config.json", tmp_path / "state" / "config.checked"
    for name in set(sys.modules) - before:
        if name.startswith("gateway.") and name != "gateway.config" or name == "safemode":
            del sys.modules[name]


def load(files):
    return config.load(str(files[0]), str(files[1]))


def load_without_schema(files, monkeypatch):
    """config.load() with deviceconfig and meterconfig unimportable."""
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "deviceconfig", None)
        m.setitem(sys.modules, "meterconfig", None)
        return load(files)


def checked(doc):
    return deviceconfig.validate(json.loads(json.dumps(doc)))


def test_the_full_config_covers_every_value_type_and_meter_field():
    values, errors = checked(FULL)
    assert errors == [], errors
    kinds = {}
    for path, v in leaves(values):
        kinds.setdefault(type(v).__name__, []).append(path)
    assert sorted(kinds) == ["bool", "bytes", "int", "str"], kinds
    keys = ["hub.key", "ota.key"] + ["meters[%d].%s" % (i, f) for i in (3, 4, 5) for f in ("ek", "ak", "system_title")]
    assert sorted(kinds["bytes"]) == sorted(keys), kinds
    assert len(values["meters"]) == len(FULL["meters"]), values["meters"]
    for m in values["meters"]:
        bit = 1 << meterconfig.PROTOCOLS.index(m["protocol"])
        want = {f[0] for f in meterconfig.METER_FIELDS if f[3] & bit}
        serial = "bus" in want
        want -= {"bus", "uart"}
        if m.get("security") != "lls":
            want.discard("password")  # lls only
        assert want <= set(m) and (("bus" in m) != ("uart" in m)) == serial, (m, want - set(m))
    assert {m["protocol"] for m in values["meters"]} == set(meterconfig.PROTOCOLS)
    assert set(k for m in values["meters"] for k in m) == {f[0] for f in meterconfig.METER_FIELDS}
    assert set(values["limits"]) == {r[0][7:] for r in deviceconfig._limit_rows()}, values["limits"]


def test_a_clean_config_is_checked_once_then_read_from_the_cache(files, monkeypatch):
    for doc in (FULL, {}, {"mqtt": {"host": "h"}}):
        files[0].write_text(json.dumps(doc, indent=1))
        want = checked(doc)
        got = load(files)
        assert same(got, want), (got, want)
        assert files[1].exists()
        got = load_without_schema(files, monkeypatch)
        assert same(got, want), (got, want)


def test_no_config_file_is_cached_as_the_defaults(files, monkeypatch):
    assert same(load(files), (deviceconfig.defaults(), []))
    assert same(load_without_schema(files, monkeypatch), (deviceconfig.defaults(), []))
    files[0].write_text("{}")  # now present: checked again, even with the same values
    with pytest.raises(ImportError):
        load_without_schema(files, monkeypatch)


def test_a_changed_config_is_checked_again(files, monkeypatch):
    files[0].write_text(json.dumps({"heartbeat_s": 5}))
    load(files)
    files[0].write_text(json.dumps({"heartbeat_s": 6}))
    with pytest.raises(ImportError):  # the cache is not used
        load_without_schema(files, monkeypatch)
    values, errors = load(files)
    assert values["heartbeat_s"] == 6 and errors == []
    files[0].write_text(json.dumps({"heartbeat_s": 6}) + " ")  # the same values, other bytes
    with pytest.raises(ImportError):
        load_without_schema(files, monkeypatch)
    load(files)
    assert load_without_schema(files, monkeypatch)[0]["heartbeat_s"] == 6


def test_another_firmware_version_checks_again(files, monkeypatch):
    files[0].write_text(json.dumps({"heartbeat_s": 5}))
    load(files)
    monkeypatch.setattr(config, "VERSION", config.VERSION + "-next")
    with pytest.raises(ImportError):
        load_without_schema(files, monkeypatch)
    assert load(files)[0]["heartbeat_s"] == 5
    assert load_without_schema(files, monkeypatch)[0]["heartbeat_s"] == 5


def test_a_bad_cache_file_means_checking_again(files, monkeypatch):
    files[0].write_text(json.dumps(FULL))
    want = checked(FULL)
    load(files)
    good = files[1].read_bytes()
    body = good[65:]

    def forged(text):
        # a body that reads back wrong, under a digest that matches it
        b = text.encode()
        return config._digest(files[0].read_bytes(), b) + b"\n" + b

    bad = [b"", b"\n", good[:64], good[:65], good[:len(good) // 2], good[:-1], good + b" ",
           b"x" * 100000, bytes(range(256)) * 4, good[:10] + b"0" + good[11:],
           good.replace(b'"heartbeat_s": 5', b'"heartbeat_s": 6'),
           config._digest(b"{}", body) + b"\n" + body,  # another config's
           forged("[1, 2]"), forged('{"hub": {"key": {"#hex": "zz"}}}'), forged('{"a": {"#hex": 5}}'),
           forged("{"), forged("[" * 5000 + "]" * 5000), forged("null")]
    for data in bad:
        files[1].write_bytes(data)
        got = load(files)
        assert same(got, want), data[:80]
        assert files[1].read_bytes() == good, data[:80]  # written again
    files[1].unlink()
    files[1].mkdir()  # not even a file
    assert same(load(files), want)


def test_a_config_with_errors_is_never_cached(files, monkeypatch):
    for text in ('{"heartbeat_s": 0}', '{"nope": 1}', '{"meters": [{"name": "x"}]}',
                 '{"limits": {"fuse_a": 1}}', "{", "[]", "", '{"community": "\xff"}'):
        files[0].write_bytes(text.encode("latin-1"))
        want = checked(json.loads(text)) if text.startswith("{\"") and text.isascii() else None
        for _ in range(2):
            values, errors = load(files)
            assert errors, text
            if want is not None:
                assert same((values, errors), want), text
            assert not files[1].exists(), text


def test_an_oversized_config_is_refused_not_read(files):
    files[0].write_text('{"heartbeat_s": 5' + " " * 16384 + "}")
    values, errors = load(files)
    assert errors == ["%s is over 16384 bytes; using defaults" % files[0]], errors
    assert same(values, deviceconfig.defaults()) and not files[1].exists()


def test_a_value_json_cannot_carry_exactly_is_not_cached(files, monkeypatch):
    for odd in ((1, 2), 1.5, {1: "x"}):
        def validate(doc, odd=odd):
            values = deviceconfig.defaults()
            values["odd"] = odd
            return values, []

        monkeypatch.setattr(deviceconfig, "validate", validate)
        files[0].write_text("{}")
        assert load(files)[0]["odd"] == odd
        assert not files[1].exists(), odd


MP_SCRIPT = """
import sys, json, micropython
sys.path[:0] = %(paths)r
from gateway import config
got = config.load(%(conf)r, %(cache)r)
print("@@schema", "deviceconfig" in sys.modules, "meterconfig" in sys.modules, len(got[1]))
micropython.qstr_info()
import deviceconfig
want = deviceconfig.validate(json.load(open(%(conf)r)))
%(same)s
print("@@same", same(got, want))
"""


def test_on_micropython_the_second_load_imports_no_schema(tmp_path):
    standin = tmp_path / "standin"
    standin.mkdir()
    (standin / "machine.py").write_text("Pin = PWM = object\n")
    conf, cache = tmp_path / "config.json", tmp_path / "state" / "config.checked"
    conf.write_text(json.dumps(FULL))
    script = MP_SCRIPT % {"same": inspect.getsource(same), "paths": [str(ROOT / "lib"), str(ROOT / "firmware"), str(standin)],
                          "conf": str(conf), "cache": str(cache)}
    mp = Path(sys.executable).parent / "micropython"

    def run():
        p = subprocess.run([str(mp), "-X", "heapsize=512wK", "-c", script], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        lines = p.stdout.splitlines()
        qstrs = [int(line.split("n_qstr=")[1].split(",")[0]) for line in lines if line.startswith("qstr pool")]
        return [line for line in lines if line.startswith("@@")], qstrs[0]

    checking, cached = ["@@schema True True 0", "@@same True"], ["@@schema False False 0", "@@same True"]
    first = run()
    assert first[0] == checking, first
    good = cache.read_bytes()
    second = run()
    assert second[0] == cached, second
    assert second[1] < first[1] - 100, (first, second)  # the schema's qstrs (compiled from source here)
    src = conf.read_bytes()
    for data in (good[:len(good) // 2], good[:64] + b"\n" + b"\xff" * 40,
                 config._digest(src, b"[]") + b"\n[]",  # a digest CPython computes is MicroPython's
                 config._digest(src, b'{"a": {"#hex": "0g"}}') + b'\n{"a": {"#hex": "0g"}}',
                 config._digest(src, b'{"a": {"#hex": 5}}') + b'\n{"a": {"#hex": 5}}',
                 config._digest(src, b"[" * 3000) + b"\n" + b"[" * 3000):
        cache.write_bytes(data)
        assert run()[0] == checking, data[:80]
        assert cache.read_bytes() == good, data[:80]

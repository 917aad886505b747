# lib/dlms/obis.py: OBIS codes (IEC 62056-61) in their text forms and as the
# 6-octet logical name, and the readable name table. Runs on both interpreters.
from fuzzing import Xorshift32, iterations
from mpcompat import raises

from dlms import obis
from dlms.obis import Obis, ObisError

# 1-0:32.7.0 (voltage L1) as a logical name, from the Aidon 6540 push frame in
# toreamun/amshan-homeassistant issue #47 (see test_axdr.py)
VOLTAGE_L1_LN = bytes.fromhex("0100200700ff")


def test_parse_all_forms():
    vectors = (
        ("1-0:1.8.0*255", (1, 0, 1, 8, 0, 255)),
        ("1-0:1.8.0", (1, 0, 1, 8, 0, 255)),  # F left out: 255
        ("1-0:1.8.0*101", (1, 0, 1, 8, 0, 101)),  # billing period
        ("1-0:1.8.0&101", (1, 0, 1, 8, 0, 101)),  # IEC 62056-61 '&' separator
        ("1-0:1.8.0.255", (1, 0, 1, 8, 0, 255)),  # as dlms-cosem writes it
        ("0-0:96.3.10*255", (0, 0, 96, 3, 10, 255)),
        ("1.0.1.8.0.255", (1, 0, 1, 8, 0, 255)),  # Gurux's dotted form
        ("0.0.1.0.0.255", (0, 0, 1, 0, 0, 255)),
        ("0100010800FF", (1, 0, 1, 8, 0, 255)),  # hex
        ("0000600100ff", (0, 0, 96, 1, 0, 255)),
        ("1.8.0", (1, 0, 1, 8, 0, 255)),  # D0 / meter-manual short form
        ("2.8.1*255", (1, 0, 2, 8, 1, 255)),
        ("  1-0:32.7.0  ", (1, 0, 32, 7, 0, 255)),
        ("255-255:255.255.255*255", (255, 255, 255, 255, 255, 255)),
        ("000-0:001.008.000", (0, 0, 1, 8, 0, 255)),
    )
    for text, want in vectors:
        o = Obis.parse(text)
        got = (o.a, o.b, o.c, o.d, o.e, o.f)
        assert got == want, (text, got)
    o = Obis.parse("96.1.0", 0, 0)
    assert str(o) == "0-0:96.1.0*255", o
    o = Obis.parse("1.8.0", b=1)
    assert str(o) == "1-1:1.8.0*255", o


def test_parse_rejects_bad_text():
    bad = ("", "1-0:1.8.256", "1-0:1.8", "1-0:1.8.0*", "1-0:1.8.0*-1", "a-b:c.d.e",
           "1.0.1.8.0", "1.0.1.8.0.255.1", "1--0:1.8.0", "1-0-0:1.8.0", "+1.8.0", "1.8.0*255*1",
           "1.8.0*2555", "0100010800F", "0100010800GG", "1-0:1.8.0.255*3", "1 . 8 . 0",
           "1.0.1.8.0.255*1", "1-0:1.8.0.1.2", "1-0:1.8.0x", "1.8.0.", ":1.8.0", "1-:1.8.0",
           "1234-0:1.8.0", "1-0:1.8.0" + " " * 40 + "x", "\u0661.8.0", "01000108 0FF")
    for text in bad:
        exc = raises(ObisError, Obis.parse, text)
        assert isinstance(exc, ValueError), text
    raises(ObisError, Obis.parse, 5)
    raises(ObisError, Obis.parse, b"1.8.0")


def test_format_and_bytes():
    o = Obis(1, 0, 32, 7, 0)
    assert str(o) == "1-0:32.7.0*255", str(o)
    assert repr(o) == "Obis('1-0:32.7.0*255')", repr(o)
    assert o.dotted() == "1.0.32.7.0.255", o.dotted()
    assert o.hex() == "0100200700FF", o.hex()
    assert o.to_bytes() == VOLTAGE_L1_LN
    assert Obis.from_bytes(VOLTAGE_L1_LN) == o
    assert Obis.from_bytes(bytearray(VOLTAGE_L1_LN)) == o
    assert Obis.parse(str(o)) == o and Obis.parse(o.dotted()) == o and Obis.parse(o.hex()) == o


def test_constructor_and_from_bytes_are_strict():
    for args in ((1, 0, 1, 8, 0, 256), (1, 0, 1, 8, -1), (1, 0, 1, 8, "0"), (1, 0, 1, 8, 0.0),
                 (True, 0, 1, 8, 0)):
        raises(ObisError, Obis, *args)
    for b in (b"", bytes(5), bytes(7), "0100200700ff", None):
        raises(ObisError, Obis.from_bytes, b)


def test_equality_hash_order():
    a = Obis.parse("1-0:1.8.0")
    b = Obis(1, 0, 1, 8, 0, 255)
    c = Obis.parse("1-0:2.8.0")
    assert a == b and not (a != b) and hash(a) == hash(b)
    assert a != c and not (a == c)
    assert a != "1-0:1.8.0*255" and a != a.to_bytes(), "only an Obis equals an Obis"
    assert len({a, b, c}) == 2
    assert sorted([c, a]) == [a, c]
    assert {a: "import"}[b] == "import"


def test_names_of_the_common_codes():
    want = (
        ("1-0:1.8.0", "Active energy import (+A) total"),
        ("1-0:1.8.1", "Active energy import (+A) tariff 1"),
        ("1-0:1.8.2", "Active energy import (+A) tariff 2"),
        ("1-0:2.8.0", "Active energy export (-A) total"),
        ("1-0:2.8.1", "Active energy export (-A) tariff 1"),
        ("1-0:2.8.2", "Active energy export (-A) tariff 2"),
        ("1-0:3.8.0", "Reactive energy import (+R) total"),
        ("1-0:4.8.0", "Reactive energy export (-R) total"),
        ("1-0:1.7.0", "Active power import (+P)"),
        ("1-0:2.7.0", "Active power export (-P)"),
        ("1-0:16.7.0", "Active power net (+P - -P)"),
        ("1-0:32.7.0", "Voltage L1"),
        ("1-0:52.7.0", "Voltage L2"),
        ("1-0:72.7.0", "Voltage L3"),
        ("1-0:31.7.0", "Current L1"),
        ("1-0:51.7.0", "Current L2"),
        ("1-0:71.7.0", "Current L3"),
        ("1-0:14.7.0", "Frequency"),
        ("1-0:13.7.0", "Power factor"),
        ("0-0:1.0.0.255", "Clock"),
        ("0-0:42.0.0.255", "Logical device name"),
        ("1-0:99.1.0.255", "Load profile 1"),
        ("0-0:96.1.0.255", "Serial number (device ID 1)"),
        ("0-0:96.3.10.255", "Disconnect control"),
    )
    for text, name in want:
        got = obis.name(Obis.parse(text))
        assert got == name, (text, got)
        assert obis.name(text) == name, text
    assert obis.name(VOLTAGE_L1_LN) == "Voltage L1"
    assert obis.name(bytearray(VOLTAGE_L1_LN)) == "Voltage L1"


def test_names_of_other_channels_and_billing_periods():
    assert obis.name("1-0:1.8.0*101") == "Active energy import (+A) total, billing period 101"
    assert obis.name("1-2:32.7.0") == "Voltage L1, channel 2"
    assert obis.name("1-1:2.8.0*3") == "Active energy export (-A) total, channel 1, billing period 3"
    for text in ("1-0:1.8.3", "0-0:1.0.1.255", "7-0:1.8.0", "1-0:99.97.0", "0-0:0.0.0.0"):
        assert obis.name(text) is None, text
    raises(ObisError, obis.name, bytes(5))


def test_name_table_is_small_and_consistent():
    codes = obis.codes()
    assert len(codes) == 34, len(codes)
    assert len(set(codes)) == len(codes), "no duplicate keys"
    for o in codes:
        assert o.f == 255 and obis.name(o), o
    # stored as one bytes object and one string, under 1 KB of data
    assert obis.table_size() == 951, obis.table_size()


def test_fuzz_parse_mutated_text():
    seeds = ("1-0:1.8.0*255", "1.0.1.8.0.255", "0100010800FF", "1.8.0", "0-0:96.3.10&12")
    alphabet = "0123456789-:.*&aFx 9\u0661"
    rng = Xorshift32(0x1234567)
    for i in range(iterations(2000)):
        text = seeds[i % len(seeds)]
        for _ in range(1 + i % 3):
            at = rng.below(len(text) + 1)
            state = rng.next()
            ch = alphabet[state % len(alphabet)]
            kind = (state >> 8) % 3
            if kind == 0:
                text = text[:at] + ch + text[at + 1:]
            elif kind == 1:
                text = text[:at] + ch + text[at:]
            else:
                text = text[:at] + text[at + 1:]
        try:
            o = Obis.parse(text)
        except ObisError:
            continue
        # whatever parses formats back to something that parses to the same code
        assert Obis.parse(str(o)) == o and Obis.from_bytes(o.to_bytes()) == o, text
        for v in o.to_bytes():
            assert 0 <= v <= 255, text

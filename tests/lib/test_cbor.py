# CBOR codec (lib/cbor.py): RFC 8949 vectors, deterministic encoding, one
# crafted input per decoder refusal, and a seeded mutation fuzz loop.
from fuzzing import Xorshift32, iterations, mutate
from mpcompat import raises

from cbor import CborError, Tag, dumps, loads


def h(text):
    return bytes.fromhex(text)


def reason(func, *args, **kwargs):
    return raises(CborError, func, *args, **kwargs).reason


# RFC 8949 Appendix A, the examples in our subset (no floats, no indefinite
# lengths, no simple values beyond false/true/null): value, encoding.
# Tags 2 and 3 (bignums) stay Tag objects: the codec does not interpret tags.
RFC8949_A = (
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (Tag(2, h("010000000000000000")), "c249010000000000000000"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (Tag(3, h("010000000000000000")), "c349010000000000000000"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (Tag(0, "2013-03-21T20:04:00Z"), "c074323031332d30332d32315432303a30343a30305a"),
    (Tag(1, 1363896240), "c11a514b67b0"),
    (Tag(23, h("01020304")), "d74401020304"),
    (Tag(24, h("6449455446")), "d818456449455446"),
    (Tag(32, "http://www.example.com"), "d82076687474703a2f2f7777772e6578616d706c652e636f6d"),
    (b"", "40"),
    (h("01020304"), "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ("\"\\", "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    (h("f0908591").decode(), "64f0908591"),  # "\ud800\udd51": U+10151
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
     "a56161614161626142616361436164614461656145"),
)

# A COSE_Sign1-like message (RFC 9052 section 4.2): tag 18, protected header
# bstr {1: -7} (ES256), unprotected {4: kid}, payload, 64-byte signature.
COSE_SIGN1 = Tag(18, [h("a10126"), {4: b"kid"}, b"\xa2\x01\x19\x04\xd2\x02\x38\x63", bytes(64)])

# maps in maps, every key kind, nested tags
MAP_HEAVY = {
    1: "meter-1", -1: [1, -2, {"x": b"y"}], "k": {2: Tag(1, 5), 3: None, 4: True},
    "long key": {-24: 0, -25: 2**40, 23: -2**64, 24: [False, ""], 1000: {}},
    10: [[], {}, Tag(96, [b"", {}])], 2**64 - 1: "max", -2**64: "min",
}


def test_rfc8949_appendix_a_decode():
    for value, enc in RFC8949_A:
        got = loads(h(enc), canonical=True)
        assert got == value, (enc, got)
        assert type(got) is type(value), (enc, got)


def test_rfc8949_appendix_a_encode():
    for value, enc in RFC8949_A:
        got = dumps(value)
        assert got == h(enc), (value, got.hex())


def test_input_types():
    enc = h("a26161016162820203")
    for data in (enc, bytearray(enc), memoryview(enc), memoryview(b"\x00" + enc)[1:]):
        assert loads(data) == {"a": 1, "b": [2, 3]}, type(data)
    raises(TypeError, loads, "a0")


def test_encode_other_input_kinds():
    assert dumps((1, (2,))) == h("82018102")
    assert dumps(bytearray(b"\x01\x02")) == h("420102")
    assert dumps(memoryview(b"\x00\x01\x02")[1:]) == h("420102")
    assert dumps(Tag(2**64 - 1, 0)) == h("dbffffffffffffffff00")


def test_shortest_heads_at_every_boundary():
    # RFC 8949 section 4.2.1: the argument in the fewest bytes
    for n, head in ((23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"),
                    (65535, "19ffff"), (65536, "1a00010000"),
                    (2**32 - 1, "1affffffff"), (2**32, "1b0000000100000000")):
        assert dumps(n) == h(head), (n, dumps(n).hex())
        assert dumps(-1 - n) == bytes((h(head)[0] | 0x20,)) + h(head)[1:], n
        assert loads(h(head), canonical=True) == n, n
    assert dumps(b"x" * 24)[:2] == h("5818")
    assert dumps("x" * 256)[:3] == h("790100")
    assert dumps(b"x" * 255)[:2] == h("58ff")
    # lengths, tag numbers and ints share one head writer: no 64 KB string
    assert dumps(Tag(65536, 0)) == h("da0001000000")
    assert dumps(Tag(2**32, 0)) == h("db000000010000000000")


def test_deterministic_map_key_order():
    # RFC 8949 section 4.2.1: keys sorted bytewise by their encodings, so
    # 10 (0a) < 100 (1864) < -1 (20) < "z" (617a) < "aa" (626161). RFC 7049's
    # length-first "canonical" order would put -1 before 100.
    m = {"aa": 5, -1: 3, "z": 4, 100: 2, 10: 1}
    want = h("a5" "0a01" "186402" "2003" "617a04" "62616105")
    assert dumps(m) == want, dumps(m).hex()
    assert dumps({10: 1, 100: 2, -1: 3, "z": 4, "aa": 5}) == want
    assert loads(want, canonical=True) == m
    length_first = h("a5" "0a01" "2003" "186402" "617a04" "62616105")
    assert loads(length_first) == m
    assert reason(loads, length_first, canonical=True) == "non-canonical"


def test_nested_maps_are_sorted_too():
    got = dumps([{"b": {2: 0, 1: 0}, "a": 0}])
    assert got == h("81" "a2" "616100" "6162" "a2" "0100" "0200"), got.hex()


def test_cose_sign1_round_trip():
    enc = dumps(COSE_SIGN1)
    assert enc[:3] == h("d28443"), enc.hex()  # tag 18, array of 4, bstr of 3
    assert loads(enc, canonical=True) == COSE_SIGN1
    assert dumps(loads(enc)) == enc


def test_map_heavy_round_trip():
    enc = dumps(MAP_HEAVY)
    assert loads(enc, canonical=True) == MAP_HEAVY
    assert dumps(loads(enc)) == enc


def test_tag_class():
    assert Tag(1, [2]) == Tag(1, [2])
    assert not (Tag(1, [2]) != Tag(1, [2]))
    assert Tag(1, 2) != Tag(2, 2)
    assert Tag(1, 2) != Tag(1, 3)
    assert Tag(1, 2) != 2
    assert repr(Tag(18, b"\x01")) == "Tag(18, %r)" % (b"\x01",), repr(Tag(18, b"\x01"))


# -- encoder refusals ----------------------------------------------------------


def test_encode_int_range():
    assert reason(dumps, 2**64) == "int range"
    assert reason(dumps, -2**64 - 1) == "int range"
    assert reason(dumps, [0, {1: 2**70}]) == "int range"
    assert reason(dumps, {2**64: 0}) == "int range"
    assert reason(dumps, Tag(-1, 0)) == "int range"
    assert reason(dumps, Tag(2**64, 0)) == "int range"


def test_encode_key_type():
    for key in (b"k", True, False, None, (1,)):
        assert reason(dumps, {key: 1}) == "key type", key


def test_encode_type():
    for value in (1.5, 0.0, set(), object(), [1, 2.5], {1: 1.0}, Tag("x", 0), Tag(True, 0)):
        assert reason(dumps, value) == "type", value


def test_encode_lone_surrogate():
    # CPython cannot encode it; MicroPython would write bytes loads() refuses
    assert reason(dumps, "a\ud800") == "utf8"


def test_encode_depth():
    v = 0
    for _ in range(16):
        v = [v]
    assert loads(dumps(v)) == v  # 16 levels: what loads accepts by default
    assert reason(dumps, [v]) == "depth"
    assert reason(dumps, Tag(1, v)) == "depth"
    assert reason(dumps, {1: v}) == "depth"
    assert len(dumps([v], max_depth=17)) == 18
    cyclic = [1]
    cyclic.append(cyclic)
    assert reason(dumps, cyclic) == "depth"


# -- decoder refusals, one crafted input each ----------------------------------


def test_truncated():
    for enc in ("", "18", "19ff", "1a000000", "1b00000000000000", "38", "44010203",
                "7801", "6261", "82", "8201", "a1", "a101", "c1", "d8", "d812",
                "d28443a10126"):
        assert reason(loads, h(enc)) == "truncated", enc


def test_huge_declared_length_is_truncated_before_allocating():
    # 2**64-1 bytes or items would be a MemoryError or OverflowError if the
    # decoder tried to allocate first
    for major in ("5b", "7b", "9b", "bb"):
        data = h(major + "ff" * 8)
        exc = raises(CborError, loads, data)
        assert exc.reason == "truncated", (major, exc)
        assert "at byte 0" in str(exc), exc
    # declared longer than what is left by one byte / one item
    assert reason(loads, h("4401020304")[:-1]) == "truncated"
    assert reason(loads, h("830102")) == "truncated"
    assert reason(loads, h("a2010203")) == "truncated"


def test_indefinite():
    for enc in ("5f4101ff", "7f6161ff", "9fff", "bfff", "ff", "1f", "3f", "df", "8201ff"):
        assert reason(loads, h(enc)) == "indefinite", enc


def test_reserved():
    for enc in ("1c", "1d", "1e", "3c", "5d", "7e", "9c", "bd", "de", "fc", "fd", "fe", "81fe"):
        assert reason(loads, h(enc)) == "reserved", enc


def test_depth():
    deep = b"\x81" * 10000 + b"\x00"
    exc = raises(CborError, loads, deep)
    assert exc.reason == "depth", exc
    assert exc.offset == 16, exc  # the 17th array head
    assert loads(b"\x81" * 16 + b"\x00") is not None
    assert loads(b"\x81" * 17 + b"\x00", max_depth=17) is not None
    assert reason(loads, b"\xa1\x01" * 17 + b"\x00") == "depth"
    assert reason(loads, b"\xc1" * 17 + b"\x00") == "depth"
    assert reason(loads, b"\x81" * 16 + b"\x80") == "depth"  # empty ones count
    assert reason(loads, b"\x80", max_depth=0) == "depth"
    assert loads(b"\x00", max_depth=0) == 0


def test_items():
    # 1 array + 1023 ints = 1024 items: the default limit exactly
    assert len(loads(h("9903ff") + b"\x00" * 1023)) == 1023
    assert reason(loads, h("990400") + b"\x00" * 1024) == "items"
    assert reason(loads, h("83010203"), max_items=3) == "items"
    assert loads(h("83010203"), max_items=4) == [1, 2, 3]
    assert reason(loads, h("a201020304"), max_items=4) == "items"  # 1 map + 2 keys + 2 values
    assert reason(loads, h("c1c100"), max_items=2) == "items"
    # counted across containers, not per container
    nested = h("84820102820304820506820708")  # 1 + 4 + 8 items
    assert reason(loads, nested, max_items=12) == "items"
    assert loads(nested, max_items=13) == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_float():
    # RFC 8949 Appendix A: 0.0, 100000.0, 1.1, and 1(1363896240.5)
    for enc in ("f90000", "fa47c35000", "fb3ff199999999999a", "c1fb41d452d9ec200000", "81f97c00"):
        assert reason(loads, h(enc)) == "float", enc


def test_simple():
    # undefined, simple(16), simple(255), and simple(24) that RFC 8949 calls
    # not well-formed
    for enc in ("f7", "f0", "e0", "f3", "f8ff", "f818", "f820", "8201f7"):
        assert reason(loads, h(enc)) == "simple", enc


def test_key_type():
    # bytes, true, false, null, array, map, tag, undefined, float
    for enc in ("a14000", "a1f500", "a1f400", "a1f600", "a18000", "a1a000",
                "a1c10100", "a1f700", "a1f90000"):
        assert reason(loads, h(enc)) == "key type", enc
    assert loads(h("a3600061610120f6")) == {"": 0, "a": 1, -1: None}


def test_duplicate_key():
    for enc in ("a201000100", "a2616100616101", "a23bffffffffffffffff003bffffffffffffffff01",
                "a20100180101"):  # 01 and non-canonical 18 01 are both 1
        assert reason(loads, h(enc)) == "duplicate key", enc
        assert reason(loads, h(enc), canonical=True) in ("duplicate key", "non-canonical"), enc
    # int 1 and text "1" are different keys
    assert loads(h("a20100613101")) == {1: 0, "1": 1}


def test_utf8():
    # overlong "/", lone surrogate U+D800, U+110000, truncated sequence,
    # lone continuation, invalid lead bytes
    for enc in ("61ff", "62c0af", "63e08080", "63eda080", "64f4908080", "62e282", "6180", "61c3",
                "65f888808080", "64f0808080"):
        exc = raises(CborError, loads, h(enc))
        assert exc.reason == "utf8", enc
    # the edges that are valid: U+007F, U+0080, U+D7FF, U+E000, U+FFFF, U+10000, U+10FFFF
    for enc in ("617f", "62c280", "63ed9fbf", "63ee8080", "63efbfbf", "64f0908080", "64f48fbfbf"):
        s = loads(h(enc))
        assert dumps(s) == h(enc), enc


def test_non_canonical():
    for enc in ("1817", "1900ff", "1a0000ffff", "1b00000000ffffffff", "3817", "5800",
                "780161", "9800", "b800", "d80100", "990000", "a2186400" "0a00", "a2616200616100",
                "a220000001"):
        assert reason(loads, h(enc), canonical=True) == "non-canonical", enc
        loads(h(enc))  # well-formed otherwise
    assert loads(h("1817")) == 23


def test_trailing():
    for enc in ("0000", "8000", "a000ff", "6161ff", "c10000"):
        exc = raises(CborError, loads, h(enc))
        assert exc.reason == "trailing", enc
    assert raises(CborError, loads, h("0000")).offset == 1


def test_error_is_value_error_with_offset():
    exc = raises(ValueError, loads, h("8301021c"))
    assert isinstance(exc, CborError)
    assert exc.reason == "reserved" and exc.offset == 3, exc
    assert "reserved" in str(exc) and "3" in str(exc), str(exc)


def test_fuzz_mutations():
    # every outcome is a value or a CborError; what decodes re-encodes to
    # something that decodes to the same value, and canonical input
    # re-encodes byte for byte
    seeds = (dumps(COSE_SIGN1), dumps(MAP_HEAVY))
    extras = (h("1bffffffffffffffff"), h("9b"), h("bf"), h("c1"), h("7f"), h("f7"), h("a1"))
    rng = Xorshift32(0xC0B0C0B0)
    n = iterations(2000)
    decoded = 0
    for i in range(n):
        data = mutate(rng, seeds[i & 1], extras[rng.below(len(extras))])
        try:
            loads(data, max_depth=2, max_items=20)  # the limits' paths too
        except CborError:
            pass
        try:
            value = loads(data)
        except CborError:
            continue
        decoded += 1
        enc = dumps(value, max_depth=64)
        assert loads(enc, canonical=True) == value, data.hex()
        try:
            loads(data, canonical=True)
        except CborError as exc:
            assert exc.reason == "non-canonical", (data.hex(), exc)
        else:
            assert enc == data, data.hex()
    assert decoded >= n // 50, decoded  # the loop reaches past the first bytes

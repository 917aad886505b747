"""Cross-checks of lib/cbor.py against cbor2 (CPython only), and hypothesis
fuzzing of its decoder.

Map order: cbor2 6.2.1's `canonical=True` sorts map keys length-first, then
bytewise (RFC 7049 section 3.9 "canonical CBOR"), while we write RFC 8949
section 4.2.1 core deterministic encoding: bytewise lexicographic order of the
key encodings. The two differ as soon as a shorter key encoding sorts after a
longer one bytewise: 100 (18 64) before -1 (20) for us, after it for cbor2.
So the reference encoding is cbor2's *non-canonical* dumps (which keeps dict
insertion order and, like ours, always writes shortest heads and definite
lengths) of the value with every map's keys re-inserted in bytewise order of
cbor2's own encoding of each key. Where both orders agree for every map, our
output must also equal cbor2's canonical output as it is.
"""

import os
import sys
from collections.abc import Mapping

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for sub in ("tests/lib", "lib"):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import cbor  # noqa: E402
from cbor import CborError, Tag  # noqa: E402

CHECKS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEEP = 64  # hypothesis may nest tags beyond the default 16 levels

REASONS = {"truncated", "indefinite", "reserved", "depth", "items", "float", "simple",
           "key type", "duplicate key", "utf8", "non-canonical", "trailing"}

U64 = 2**64 - 1
BOUNDARIES = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, U64]
ints = st.one_of(st.integers(-U64 - 1, U64), st.sampled_from(BOUNDARIES + [-1 - n for n in BOUNDARIES]))
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
keys = st.one_of(ints, texts)
# tag numbers cbor2 leaves as CBORTag (it interprets 0-5, 25, 28-30, 35-37,
# 55799 and others), COSE's among them
tag_numbers = st.one_of(st.sampled_from([16, 17, 18, 24, 61, 96, 97, 98]), st.integers(65536, U64))
scalars = st.one_of(ints, st.binary(max_size=40), texts, st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(keys, inner, max_size=6),
        st.builds(Tag, tag_numbers, inner),
    ),
    max_leaves=40,
)


def key_bytes(k):
    return cbor2.dumps(k)


def to_cbor2(v, bytewise=False):
    # our value as cbor2 wants it; bytewise: dicts re-inserted in the order
    # of RFC 8949 section 4.2.1
    if isinstance(v, Tag):
        return cbor2.CBORTag(v.tag, to_cbor2(v.value, bytewise))
    if isinstance(v, list):
        return [to_cbor2(x, bytewise) for x in v]
    if isinstance(v, dict):
        ks = sorted(v, key=key_bytes) if bytewise else list(v)
        return {k: to_cbor2(v[k], bytewise) for k in ks}
    return v


def from_cbor2(v):
    # cbor2 returns tuples and frozen dicts inside tags
    if isinstance(v, cbor2.CBORTag):
        return Tag(v.tag, from_cbor2(v.value))
    if isinstance(v, (list, tuple)):
        return [from_cbor2(x) for x in v]
    if isinstance(v, Mapping):
        return {k: from_cbor2(x) for k, x in v.items()}
    return v


def same(a, b):
    # == with types: 1 == True and [] == () must not pass
    if type(a) is not type(b):
        return False
    if isinstance(a, Tag):
        return a.tag == b.tag and same(a.value, b.value)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def orders_agree(v):
    # does length-first order equal bytewise order in every map of v?
    if isinstance(v, Tag):
        return orders_agree(v.value)
    if isinstance(v, list):
        return all(orders_agree(x) for x in v)
    if isinstance(v, dict):
        enc = [key_bytes(k) for k in v]
        return sorted(enc) == sorted(enc, key=lambda e: (len(e), e)) and all(
            orders_agree(x) for x in v.values())
    return True


def has_tag(v):
    if isinstance(v, Tag):
        return True
    if isinstance(v, list):
        return any(has_tag(x) for x in v)
    if isinstance(v, dict):
        return any(has_tag(x) for x in v.values())
    return False


def test_cbor2_canonical_is_length_first():
    # the RFC 8949 section 4.2.1 example keys, in our subset
    m = {10: 1, 100: 2, -1: 3, "z": 4, "aa": 5}
    assert cbor2.dumps(m, canonical=True).hex() == "a5" "0a01" "2003" "186402" "617a04" "62616105"
    ours = cbor.dumps(m)
    assert ours.hex() == "a5" "0a01" "186402" "2003" "617a04" "62616105"
    assert ours == cbor2.dumps(to_cbor2(m, bytewise=True))
    assert cbor2.loads(ours) == m
    assert cbor.loads(cbor2.dumps(m, canonical=True)) == m
    exc = None
    try:
        cbor.loads(cbor2.dumps(m, canonical=True), canonical=True)
    except CborError as e:
        exc = e
    assert exc is not None and exc.reason == "non-canonical", exc


@CHECKS
@given(values)
def test_dumps_matches_cbor2(v):
    ours = cbor.dumps(v, max_depth=DEEP)
    assert ours == cbor2.dumps(to_cbor2(v, bytewise=True)), ours.hex()
    if orders_agree(v):
        assert ours == cbor2.dumps(to_cbor2(v), canonical=True), ours.hex()
    assert same(from_cbor2(cbor2.loads(ours)), v)
    assert same(cbor.loads(ours, max_depth=DEEP, canonical=True), v)


@CHECKS
@given(values)
def test_loads_reads_cbor2(v):
    # cbor2's dicts in hypothesis's insertion order, and its canonical form
    for enc in (cbor2.dumps(to_cbor2(v)), cbor2.dumps(to_cbor2(v), canonical=True)):
        assert same(cbor.loads(enc, max_depth=DEEP), v), enc.hex()


@CHECKS
@given(st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3))
def test_dumps_refuses_surrogates(s):
    try:
        cbor.dumps(["x", {1: s}])
    except CborError as exc:
        assert exc.reason == "utf8"
    else:
        raise AssertionError("encoded a lone surrogate")


def check_decoding(data):
    # a value or a CborError with a known reason; a value re-encodes, cbor2
    # reads the same bytes as the same value (cbor2 interprets some tags, so
    # only tag-free values), and canonical input re-encodes byte for byte
    try:
        v = cbor.loads(data, max_depth=DEEP)
    except CborError as exc:
        assert exc.reason in REASONS, exc
        return None
    enc = cbor.dumps(v, max_depth=DEEP)
    assert same(cbor.loads(enc, max_depth=DEEP, canonical=True), v)
    if not has_tag(v):
        assert same(from_cbor2(cbor2.loads(data)), v), data.hex()
    try:
        cbor.loads(data, max_depth=DEEP, canonical=True)
    except CborError as exc:
        assert exc.reason == "non-canonical", exc
    else:
        assert enc == data, data.hex()
    return v


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_loads_arbitrary_bytes(data):
    check_decoding(data)


@CHECKS
@given(values, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 2)),
                        min_size=1, max_size=4))
def test_loads_mutated_encodings(v, edits):
    # replace, insert or delete bytes of a valid encoding
    data = bytearray(cbor.dumps(v, max_depth=DEEP))
    for pos, byte, op in edits:
        pos %= len(data) + 1
        if op == 0 and pos < len(data):
            data[pos] = byte
        elif op == 1:
            data[pos:pos] = bytes((byte,))
        else:
            del data[pos:pos + 1]
    check_decoding(bytes(data))

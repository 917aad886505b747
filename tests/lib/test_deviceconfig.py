# lib/deviceconfig.py: /config.json checked field by field against SCHEMA.
# The documents are what json.loads gives for a /config.json.
import deviceconfig
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

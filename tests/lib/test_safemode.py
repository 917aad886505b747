# lib/safemode.py: the boot record's text form and the safe-mode decision.
# Vectors are the record as firmware/gateway/boot.py writes it to
# /state/boot.txt ("boots=%d unhealthy=%d\n").
from safemode import BootRecord, decide

# decide()'s answers, spelt out: safemode's names for them are const()
REASON_BUTTON = "button held at boot"
REASON_CRASHES = "app crashed before reporting healthy"


def fields(rec):
    return (rec.boots, rec.unhealthy)


def test_fresh_record_is_zero():
    assert fields(BootRecord()) == (0, 0), fields(BootRecord())


def test_encode():
    got = BootRecord(7, 2).encode()
    assert got == b"boots=7 unhealthy=2\n", got
    assert isinstance(got, bytes), type(got)
    got = BootRecord().encode()
    assert got == b"boots=0 unhealthy=0\n", got


def test_encode_decode_round_trip():
    for boots, unhealthy in ((0, 0), (1, 0), (7, 2), (12345, 99), (0x7FFFFFFF, 0x7FFFFFFF)):
        rec = BootRecord.decode(BootRecord(boots, unhealthy).encode())
        assert isinstance(rec, BootRecord), rec
        assert fields(rec) == (boots, unhealthy), (boots, unhealthy, fields(rec))


def test_decode_accepts_other_layouts():
    vectors = (
        (b"boots=7 unhealthy=2", (7, 2)),  # no trailing newline
        (b"unhealthy=2 boots=7\n", (7, 2)),  # other order
        (b"  boots=7\r\n\tunhealthy=2  \n", (7, 2)),  # edited by hand
        (b"boots=7\n", (7, 0)),  # a missing field stays 0
        (b"unhealthy=4\n", (0, 4)),
        (b"boots=1 boots=5 unhealthy=1\n", (5, 1)),  # the last one wins
        (b"boots=0007 unhealthy=0\n", (7, 0)),
    )
    for data, want in vectors:
        got = fields(BootRecord.decode(data))
        assert got == want, (data, got)


def test_decode_ignores_unknown_keys():
    vectors = (
        (b"boots=3 unhealthy=1 resets=9\n", (3, 1)),
        (b"version=2 boots=3 unhealthy=1\n", (3, 1)),
        (b"BOOTS=8 boots=3 unhealthy=1\n", (3, 1)),  # keys are case-sensitive
        (b"fw=1.2 boots=3 unhealthy=2\n", (3, 2)),  # a newer field, not a number
    )
    for data, want in vectors:
        got = fields(BootRecord.decode(data))
        assert got == want, (data, got)


def test_decode_of_garbage_is_a_fresh_record():
    vectors = (
        b"",
        b"\n",
        b"   ",
        b"garbage",
        b"boots=x unhealthy=1\n",
        b"boots= unhealthy=1\n",
        b"boots unhealthy=1\n",
        b"boots=1.5 unhealthy=1\n",
        b"boots=0x10 unhealthy=1\n",
        b"boots=1 unhealthy=2\n\x00\x00\x00",  # zero-filled tail
        b"\x00" * 64,
        b"boots=1,unhealthy=2\n",
    )
    for data in vectors:
        rec = BootRecord.decode(data)
        assert isinstance(rec, BootRecord), (data, rec)
        assert fields(rec) == (0, 0), (data, fields(rec))


def test_decode_of_negative_counts_is_a_fresh_record():
    for data in (b"boots=-1 unhealthy=0\n", b"boots=5 unhealthy=-3\n", b"boots=-0x1 unhealthy=1\n"):
        got = fields(BootRecord.decode(data))
        assert got == (0, 0), (data, got)


def test_decode_of_huge_counts_is_a_fresh_record():
    assert fields(BootRecord.decode(b"boots=2147483647 unhealthy=1\n")) == (0x7FFFFFFF, 1)
    vectors = (
        b"boots=2147483648 unhealthy=1\n",
        b"boots=1 unhealthy=4294967296\n",
        b"boots=" + b"9" * 40 + b" unhealthy=1\n",
    )
    for data in vectors:
        got = fields(BootRecord.decode(data))
        assert got == (0, 0), (data, got)


def test_decode_of_non_utf8_is_a_fresh_record():
    vectors = (
        b"\xff\xfe",
        b"boots=1 unhealthy=\xff\n",
        b"\xc3boots=1 unhealthy=2\n",  # a lone lead byte
        b"boots=1 unhealthy=2\n\x80",
    )
    for data in vectors:
        got = fields(BootRecord.decode(data))
        assert got == (0, 0), (data, got)


def test_decode_gives_a_new_record_each_time():
    a = BootRecord.decode(b"")
    b = BootRecord.decode(b"garbage")
    a.boots = 5
    assert b.boots == 0, b.boots
    assert BootRecord.decode(b"").boots == 0


def test_safe_mode_after_is_three():
    assert decide(BootRecord(10, 2), False) is None
    assert decide(BootRecord(10, 3), False) == REASON_CRASHES


def test_button_wins():
    for unhealthy in (0, 1, 2, 3, 99):
        got = decide(BootRecord(10, unhealthy), True)
        assert got == REASON_BUTTON, (unhealthy, got)
    assert decide(BootRecord(), True, 1000) == REASON_BUTTON


def test_crashes_at_or_above_the_default_limit():
    for unhealthy in (3, 4, 100):
        got = decide(BootRecord(10, unhealthy), False)
        assert got == REASON_CRASHES, (unhealthy, got)


def test_below_the_limit_starts_the_app():
    for unhealthy in (0, 1, 2):
        got = decide(BootRecord(10, unhealthy), False)
        assert got is None, (unhealthy, got)


def test_custom_limit():
    assert decide(BootRecord(0, 9), False, 10) is None
    assert decide(BootRecord(0, 10), False, 10) == REASON_CRASHES
    assert decide(BootRecord(0, 0), False, 1) is None
    assert decide(BootRecord(0, 1), False, 1) == REASON_CRASHES
    assert decide(BootRecord(0, 5), False, limit=6) is None


def test_three_unhealthy_starts_then_safe_mode():
    # firmware/gateway/boot.py: load, boots += 1, save, decide; then main.py
    # counts the app start (unhealthy += 1) before the app runs.
    stored = b""
    reasons = []
    for _ in range(5):
        rec = BootRecord.decode(stored)
        rec.boots += 1
        reason = decide(rec, False)
        reasons.append(reason)
        if reason is None:
            rec.unhealthy += 1  # the app starts and never becomes healthy
        stored = rec.encode()
    want = [None, None, None, REASON_CRASHES, REASON_CRASHES]
    assert reasons == want, reasons
    assert stored == b"boots=5 unhealthy=3\n", stored


def test_healthy_app_clears_the_count():
    rec = BootRecord.decode(b"boots=9 unhealthy=2\n")
    assert decide(rec, False) is None
    rec.unhealthy = 0  # boot.mark_app_healthy
    rec = BootRecord.decode(rec.encode())
    assert fields(rec) == (9, 0), fields(rec)

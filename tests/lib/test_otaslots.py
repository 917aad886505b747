# lib/otaslots.py: the A/B slot record's text form and its decisions.
# Vectors are the record as boot.py, main.py and firmware/gateway/ota.py
# write it to /state/ota.txt.
from fuzzing import Xorshift32, iterations, mutate
from mpcompat import raises

from otaslots import SEQ_MAX, TRIAL_STARTS, SlotError, SlotRecord

FRESH = b"slot=0 seq=0\n"


def rec(text):
    return SlotRecord.decode(text)


def test_fresh_record_is_slot_0_seq_0():
    assert SlotRecord().encode() == FRESH
    assert rec(b"") == SlotRecord()
    assert rec(None) == SlotRecord()


def test_encode_vectors():
    vectors = (
        (SlotRecord(1, 7), b"slot=1 seq=7\n"),
        (SlotRecord(1, 7, 1, 0, 0, 6), b"slot=1 seq=7 trial=1 tries=0 prev_slot=0 prev_seq=6\n"),
        (SlotRecord(0, 6, stage=7), b"slot=0 seq=6 stage=7 ready=0\n"),
        (SlotRecord(0, 6, stage=7, ready=1, failed=5), b"slot=0 seq=6 stage=7 ready=1 failed=5\n"),
    )
    for r, text in vectors:
        assert r.encode() == text, (r.encode(), text)
        assert rec(text) == r, (text, rec(text))
        assert isinstance(r.encode(), bytes)


def test_decode_accepts_hand_edits_and_newer_fields():
    vectors = (
        (b"seq=7 slot=1", SlotRecord(1, 7)),  # other order, no newline
        (b"  slot=1\r\n\tseq=7  \n", SlotRecord(1, 7)),
        (b"slot=1 seq=7 zone=3 next_thing=9\n", SlotRecord(1, 7)),  # a newer firmware's fields
        (b"slot=0 seq=0007\n", SlotRecord(0, 7)),
        (b"slot=0 seq=4294967295\n", SlotRecord(0, SEQ_MAX)),
    )
    for text, want in vectors:
        assert rec(text) == want, (text, rec(text))


def test_damaged_record_reads_as_fresh():
    damaged = (
        b"slot=1",  # no seq
        b"seq=7",  # no slot
        b"slot=2 seq=7",  # no such slot
        b"slot=1 seq=4294967296",  # above a uint32
        b"slot=1 seq=-7",
        b"slot=1 seq=+7",
        b"slot=1 seq=7x",
        b"slot=1 seq=",
        b"slot=1 seq=12345678901",
        b"slot=1 seq=7 seq=8",  # twice
        b"slot=1 seq=7 trial=2 tries=0 prev_slot=0 prev_seq=6",
        b"slot=1 seq=7 trial=1 tries=0 prev_slot=1 prev_seq=6",  # rolls back to itself
        b"slot=1 seq=7 trial=1 tries=0 prev_slot=0 prev_seq=6 stage=8 ready=0",  # staged in a trial
        b"slot=1 seq=7 tries=1",  # tries outside a trial
        b"slot=1 seq=7 ready=1",  # ready without a stage
        b"slot=1 seq=7 garbage",  # not key=value
        b"slot=1 seq=7 -x=1",
        b"slot=1 seq=\xff7",
        b"slot=1 seq=\xd9\xa7",  # an Arabic-Indic 7: int() on CPython would take it
        b"slot=1 seq=7 " + b" " * 200,  # too long to be one
    )
    for text in damaged:
        assert rec(text) == SlotRecord(), (text, rec(text))


def test_fuzzed_records_never_raise_and_always_read_sound():
    rng = Xorshift32(0x07A51075)
    seeds = (FRESH, b"slot=1 seq=7 trial=1 tries=0 prev_slot=0 prev_seq=6\n",
             b"slot=0 seq=6 stage=7 ready=1 failed=5\n")
    for i in range(iterations(2000)):
        got = rec(mutate(rng, seeds[i % len(seeds)], b"=1 "))
        assert isinstance(got, SlotRecord)
        assert rec(got.encode()) == got, got  # whatever is read writes back the same


def test_anti_rollback_accepts_only_newer_seqs():
    r = SlotRecord(1, 7, failed=9)
    assert not r.accepts(7) and r.refusal(7) == "older"
    assert not r.accepts(3) and r.refusal(3) == "older"
    assert r.accepts(8)
    assert not r.accepts(9) and r.refusal(9) == "failed"  # rolled back: publish a newer one
    assert r.accepts(10)
    for bad in (0, -1, SEQ_MAX + 1, True, "8", None, 8.0):
        assert r.refusal(bad) == "seq", bad
    assert SlotRecord().accepts(1)  # after a deploy any signed seq
    trial = SlotRecord(1, 7, 1, 1, 0, 6)
    assert trial.refusal(8) == "trial"  # the other slot is what a rollback needs


def test_install_switch_commit():
    r = SlotRecord(0, 6)
    staging = r.begin(7)
    assert staging.encode() == b"slot=0 seq=6 stage=7 ready=0\n"
    assert staging.other() == 1
    assert raises(SlotError, staging.switch).reason == "not_ready"
    assert raises(SlotError, staging.staged, 8).reason == "stage"
    ready = staging.staged(7)
    assert ready.encode() == b"slot=0 seq=6 stage=7 ready=1\n"
    trial = ready.switch()
    assert trial.encode() == b"slot=1 seq=7 trial=1 tries=0 prev_slot=0 prev_seq=6\n"
    assert trial.at_boot() == (1, None)  # the first boot of a trial just boots it
    started = trial.started()
    assert started.tries == 1 and started.trial == 1
    assert raises(SlotError, started.begin, 8).reason == "trial"
    committed = started.commit()
    assert committed.encode() == b"slot=1 seq=7\n"
    assert committed.at_boot() == (1, None)
    assert committed.started() is committed
    assert raises(SlotError, committed.commit).reason == "not_trial"
    # the next version goes back into slot 0
    assert committed.begin(8).staged(8).switch().encode() == \
        b"slot=0 seq=8 trial=1 tries=0 prev_slot=1 prev_seq=7\n"
    # a failed seq is kept while it is above the committed one
    assert SlotRecord(1, 7, 1, 1, 0, 6, failed=9).commit().encode() == b"slot=1 seq=7 failed=9\n"
    assert SlotRecord(1, 7, 1, 1, 0, 6, failed=5).commit().encode() == b"slot=1 seq=7\n"


def test_begin_refusals_carry_reasons():
    r = SlotRecord(1, 7, failed=9)
    for seq, reason in ((7, "older"), (9, "failed"), (0, "seq")):
        e = raises(SlotError, r.begin, seq)
        assert e.reason == reason, (seq, e.reason)
        assert reason in str(e)
    assert raises(SlotError, SlotRecord(1, 7, 1, 0, 0, 6).begin, 8).reason == "trial"
    # a newer begin replaces a staged version, checked or not
    assert SlotRecord(0, 6, stage=7, ready=1).begin(8).encode() == b"slot=0 seq=6 stage=8 ready=0\n"


def test_a_started_trial_rolls_back_at_the_next_boot():
    trial = SlotRecord(1, 7, 1, 0, 0, 6, failed=3)
    r = trial
    for _ in range(TRIAL_STARTS):
        assert r.at_boot() == (1, None)
        r = r.started()
    slot, write = r.at_boot()
    assert slot == 0
    assert write.encode() == b"slot=0 seq=6 failed=7\n"
    assert not write.accepts(7) and write.accepts(8)
    assert write.at_boot() == (0, None)  # and stays there


def test_unmountable_slots_fall_back():
    trial = SlotRecord(1, 7, 1, 0, 0, 6)
    assert trial.unmountable(1) == (0, SlotRecord(0, 6, failed=7))
    assert SlotRecord(1, 7).unmountable(1) == (0, None)  # the committed slot: try slot 0, record kept
    assert SlotRecord(1, 7).unmountable(0) == (None, None)  # nothing left: no /rom, boot.py says so
    back = SlotRecord(1, 7, 1, 0, 0, 6).unmountable(1)[1]
    assert back.unmountable(0) == (None, None)
    trial0 = SlotRecord(0, 8, 1, 0, 1, 7)
    assert trial0.unmountable(0) == (1, SlotRecord(1, 7, failed=8))


def test_records_are_copies():
    r = SlotRecord(0, 6)
    r.begin(7)
    assert r == SlotRecord(0, 6)
    assert r != SlotRecord(0, 7)
    assert "seq=6" in repr(r)

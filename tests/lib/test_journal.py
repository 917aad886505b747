# lib/journal.py: the store-and-forward journal, on real files under /tmp
# (both interpreters), and on littlefs with power cut mid-write
# (MicroPython's VfsLfs2 on a RAM block device).
#
# Measurements (not a test), for docs/journal.md: see _measure() at the end.
import binascii
import gc
import os
import sys

import journal
from compat import heap32
from fuzzing import Xorshift32, iterations, noise
from journal import ORDER, READING, WITNESS, Journal, JournalError, JournalFull
from mpcompat import SkipTest, raises
from trade import messages

MICROPYTHON = sys.implementation.name == "micropython"


# -- helpers

def _tmpdir(name):
    path = "/tmp/pgw-journal-%s-%s" % (name, binascii.hexlify(os.urandom(4)).decode())
    os.mkdir(path)
    return path


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        os.remove(path + "/" + name)
    os.rmdir(path)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _snapshot(path):
    # {name: bytes} of a journal directory
    return dict((name, _read(path + "/" + name)) for name in os.listdir(path))


def _restore(path, files):
    _rmtree(path)
    os.mkdir(path)
    for name in files:
        _write(path + "/" + name, files[name])


def _segments(path):
    names = [n for n in os.listdir(path) if n.endswith(".jnl")]
    names.sort()
    return names


def _bytes_on_disk(path):
    return sum(os.stat(path + "/" + n)[6] for n in _segments(path))


def _readings(rng, intervals, seq, ts):
    # 15-minute READING payloads of 3 meters, as lib/trade encodes them:
    # household load with an evening peak, PV on two of the roofs, registers
    # that add up, an ORDER's seq skipped every hour.
    regs = [[12345678, 8765432], [23456789, 345678], [4567890, 12345]]
    pv = (1500, 800, 0)
    serials = (b"12345678", b"ABCD0042", b"77190055")
    for i in range(intervals):
        hour = (ts // 3600) % 24
        sun = (hour - 6) * (20 - hour) if 6 <= hour < 20 else 0
        for m in range(3):
            load = 40 + rng.below(160) + (200 if 17 <= hour <= 21 else 0)
            gen = pv[m] * sun * (50 + rng.below(51)) // 4900  # Wh in 15 minutes
            net = load - gen
            imp = (net if net > 0 else 0) + rng.below(10)
            exp = -net if net < 0 else 0
            regs[m][0] += imp
            regs[m][1] += exp
            fields = {"interval_min": 15, "import_wh": imp, "export_wh": exp,
                      "import_register_wh": regs[m][0], "export_register_wh": regs[m][1],
                      "power_w": net * 4 + rng.below(200) - 100, "meter": serials[m]}
            yield seq, messages.encode(messages.READING, seq, ts, fields)
            seq += 1
        if i % 4 == 0:
            seq += 1
        ts += 900


def _pending(j, after_seq=None):
    return list(j.pending(after_seq))


def _seqs(j):
    return [r[0] for r in j.pending()]


def _layout(path, name):
    # [(seq, start, end, parent seq or None)] of a segment's readable
    # records, read with the journal's own scanner
    base = int(name[:16], 16)
    scan = journal._Scan(path + "/" + name, base, False)
    out = []
    while True:
        start = scan.pos
        r = scan.next()
        if r is None:
            return out
        b = scan.buf
        i = start - scan.at
        parent = None
        if b[i] & 0x80:
            v = journal._get(b, i + 1, i + 24)
            parent = r[0] - journal._get(b, v[1], i + 24)[0]
        out.append((r[0], start, scan.pos, parent))


def _descendants(layout, seq):
    # records whose chain of references passes through seq
    lost = set([seq])
    for s, _, _, parent in layout:
        if parent in lost:
            lost.add(s)
    lost.discard(seq)
    return lost


# -- the format's pieces

# CRC-32 check value: 0xCBF43926 for "123456789" (CRC RevEng catalogue,
# CRC-32/ISO-HDLC, the zlib/binascii CRC).
def test_crc32_check_value():
    assert journal.crc32(b"123456789") == 0xCBF43926, hex(journal.crc32(b"123456789"))
    assert journal._crc32_soft(b"123456789") == 0xCBF43926
    rng = Xorshift32(11)
    for n in (0, 1, 7, 64, 300):
        data = noise(rng, n)
        assert journal._crc32_soft(data) == journal.crc32(data), n


def test_varint_round_trip():
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2 ** 32, 2 ** 64 - 1):
        out = bytearray()
        journal._put(out, n)
        assert len(out) == journal._vlen(n), (n, len(out))
        assert journal._get(out, 0, len(out)) == (n, len(out)), n
        assert journal._get(out, 0, len(out) - 1) is None or len(out) == 1, n
    assert journal._get(b"\x80" * 11, 0, 11) is None


def test_split_finds_shifted_fields():
    ref = b"\x8b\x01\x01\x19\x04\x12\x18\x2a\x48ABCDEFGH"
    data = b"\x8b\x01\x01\x19\x04\x13\x19\x01\x2c\x48ABCDEFGH"  # a field one byte longer
    cost, split = journal._split(ref, data)
    assert cost <= 4, (cost, split)
    assert journal._split(b"ab", b"abcdefgh") is None
    assert journal._split(b"abc", b"abc") == (0, 0)


# -- appending, reading back, acknowledging

def test_round_trip_and_reopen():
    d = _tmpdir("roundtrip")
    try:
        j = Journal(d, segment_bytes=512, max_bytes=8192)
        st = j.open()
        assert st["records"] == 0 and st["oldest"] is None and st["newest"] is None, st
        rng = Xorshift32(5)
        want = []
        seq = 0
        sizes = (1, 2, 40, 41, 39, 128, 129, 300, 40, 12, 44, 20, 40)
        for i in range(60):
            n = sizes[i % len(sizes)]
            data = bytes(b"\x8b\x01\x01" + bytes([i & 0xFF]) * 4 + noise(rng, 3) + b"meter-0042" * 40)[:n]
            kind = (READING, ORDER, WITNESS, 0, 15)[i % 5]
            j.append(seq, kind, data)
            want.append((seq, kind, data))
            seq += 1 + rng.below(3)
        assert _pending(j) == want
        assert _pending(j, want[29][0]) == want[30:]
        assert _pending(j, -5) == want
        assert _pending(j, want[-1][0]) == []
        st = j.stats()
        assert st["records"] == 60 and st["oldest"] == 0 and st["newest"] == want[-1][0], st
        assert st["bytes"] == _bytes_on_disk(d), (st, _bytes_on_disk(d))
        assert st["segments"] == len(_segments(d)) > 1, st
        j.close()
        assert raises(JournalError, j.stats).reason == "closed"
        st2 = j.open()
        assert st2 == st, (st2, st)
        assert _pending(j) == want
    finally:
        _rmtree(d)


def test_sequence_numbers_up_to_2_64():
    d = _tmpdir("bigseq")
    try:
        j = Journal(d, segment_bytes=256, max_bytes=4096)
        j.open()
        top = 0xFFFFFFFFFFFFFFFF
        want = []
        for k in range(30, -1, -1):
            want.append((top - k, READING, b"\x8b\x01\x01\x1b" + (top - k).to_bytes(8, "big") + b"abc"))
        for r in want:
            j.append(*r)
        assert _pending(j) == want
        exc = raises(JournalError, j.append, top, READING, b"x")
        assert exc.reason == "seq", exc
        j.close()
        j.open()
        assert _pending(j) == want
        assert j.ack(top) and j.ack(top - 30)
        assert _seqs(j) == [r[0] for r in want[1:-1]]
        assert raises(JournalError, j.append, top, READING, b"x").reason == "seq"
    finally:
        _rmtree(d)


def test_bad_arguments_have_reasons():
    assert raises(JournalError, Journal, "/tmp/x", segment_bytes=10).reason == "config"
    assert raises(JournalError, Journal, "/tmp/x", segment_bytes=1024, max_bytes=1500).reason == "config"
    d = _tmpdir("args")
    try:
        j = Journal(d, segment_bytes=256, max_bytes=1024)
        assert raises(JournalError, j.append, 1, READING, b"x").reason == "closed"
        j.open()
        j.append(10, READING, b"abc")
        for seq in (10, 9, -1, 2 ** 64, "11", 11.0, True, None):
            exc = raises(JournalError, j.append, seq, READING, b"abc")
            assert exc.reason == "seq", (seq, exc)
        for kind in (-1, 16, "1", None, True):
            exc = raises(JournalError, j.append, 11, kind, b"abc")
            assert exc.reason == "kind", (kind, exc)
        for data in (b"", "text", None, 5, b"x" * 1025, b"x" * 245):
            exc = raises(JournalError, j.append, 11, READING, data)
            assert exc.reason == "size", (data, exc)
        j.append(11, READING, bytearray(b"x" * 244))  # 4 + 1 + 1 + 2 + 244 + 4 = 256
        j.append(12, READING, memoryview(b"y"))
        for seq in (-1, "12", 2 ** 64, None):
            assert raises(JournalError, j.ack, seq).reason == "seq", seq
        assert raises(JournalError, j.pending, "3").reason == "seq"
        assert [r[0] for r in j.pending()] == [10, 11, 12]
        assert issubclass(JournalFull, JournalError)
    finally:
        _rmtree(d)


def test_rotation_and_compaction():
    d = _tmpdir("rotate")
    try:
        j = Journal(d, segment_bytes=256, max_bytes=8192)
        j.open()
        rng = Xorshift32(3)
        seqs = []
        for seq, payload in _readings(rng, 40, 500, 1750000000):
            j.append(seq, READING, payload)
            seqs.append(seq)
        names = _segments(d)
        assert len(names) > 5, names
        for name in names:
            assert os.stat(d + "/" + name)[6] <= 256, name
        # acknowledging the first segment's records deletes it, and only it
        first = _layout(d, names[0])
        for s, _, _, _ in first:
            assert j.ack(s), s
        assert _segments(d) == names[1:], (_segments(d), names)
        assert j.stats()["oldest"] == seqs[len(first)], j.stats()
        for s in seqs[len(first):]:
            assert j.ack(s), s
        st = j.stats()
        assert st["records"] == 0 and st["oldest"] is None and st["acked"] == seqs[-1], st
        assert _segments(d) == names[-1:], _segments(d)  # the open segment stays
        assert st["bytes"] == _bytes_on_disk(d), st
        assert _pending(j) == []
        # an open segment of acknowledged records takes more until it is a
        # quarter full; then the next record starts a new one
        seq = seqs[-1]
        while os.stat(d + "/" + _segments(d)[-1])[6] < 256 // 4:
            seq += 1
            j.append(seq, READING, b"z" * 30)
            assert j.ack(seq)
        name = _segments(d)[-1]
        j.append(seq + 1, READING, b"z" * 30)
        assert len(_segments(d)) == 1 and _segments(d)[0] != name, _segments(d)
        j.close()
        st = j.open()
        assert st["records"] == 1 and st["acked"] == seq, st
        assert raises(JournalError, j.append, seq + 1, READING, b"late").reason == "seq"
    finally:
        _rmtree(d)


def test_reopen_appends_to_the_same_segment():
    d = _tmpdir("reopen")
    try:
        j = Journal(d)
        j.open()
        rng = Xorshift32(8)
        gen = _readings(rng, 20, 100, 1750000000)
        want = []
        for _ in range(30):
            want.append(next(gen))
            j.append(want[-1][0], READING, want[-1][1])
        size = _bytes_on_disk(d)
        j.close()
        j.open()
        seq, payload = next(gen)
        j.append(seq, READING, payload)
        want.append((seq, payload))
        assert len(_segments(d)) == 1, _segments(d)
        grew = _bytes_on_disk(d) - size
        assert grew < len(payload), (grew, len(payload))  # still delta-encoded
        assert [(s, p) for s, k, p in j.pending()] == want
    finally:
        _rmtree(d)


def test_out_of_order_acks():
    d = _tmpdir("acks")
    try:
        j = Journal(d, segment_bytes=256, max_bytes=4096)
        j.open()
        seqs = [3, 4, 5, 7, 8, 11, 12, 13, 20, 21]  # gaps: numbers used elsewhere
        for s in seqs:
            j.append(s, READING, b"reading %d" % s)
        assert j.ack(8) and j.ack(5) and j.ack(12)
        assert not j.ack(8), "twice"
        assert not j.ack(6) and not j.ack(9) and not j.ack(22) and not j.ack(2), "not records"
        assert _seqs(j) == [3, 4, 7, 11, 13, 20, 21]
        st = j.stats()
        assert st["records"] == 7 and st["ahead"] == 3 and st["oldest"] == 3 and st["acked"] is None, st
        j.close()
        j.open()
        assert _seqs(j) == [3, 4, 7, 11, 13, 20, 21]
        assert j.ack(4) and j.ack(3)
        st = j.stats()
        # "acked": every record up to it is acknowledged (6 is no record)
        assert st["acked"] == 6 and st["oldest"] == 7 and st["ahead"] == 2, st
        assert j.ack(7)
        st = j.stats()
        assert st["acked"] == 10 and st["oldest"] == 11 and st["ahead"] == 1, st
        assert j.ack(11)
        st = j.stats()
        assert st["acked"] == 12 and st["oldest"] == 13 and st["ahead"] == 0, st
        assert not j.ack(12) and not j.ack(5)
        assert _pending(j, 15) == [(20, READING, b"reading 20"), (21, READING, b"reading 21")]
    finally:
        _rmtree(d)


def test_acks_beyond_the_hubs_window_give_up_older_records():
    # The hub takes a seq only within 64 below the highest it accepted
    # (docs/protocol.md section 6): once it acknowledged seq s, records at
    # or below s - 64 can never be delivered, and are abandoned.
    d = _tmpdir("window")
    try:
        j = Journal(d, segment_bytes=1024, max_bytes=8192)
        j.open()
        for s in range(100):
            j.append(s, READING, b"r%03d" % s)
        for s in range(2, 64):
            assert j.ack(s), s
        st = j.stats()
        assert st["abandoned"] == 0 and st["oldest"] == 0 and st["ahead"] == 62, st
        assert j.ack(64)  # the hub took 64: 0 is too old for it now
        st = j.stats()
        assert st["abandoned"] == 1 and st["oldest"] == 1 and st["ahead"] == 63, st
        assert _seqs(j)[:3] == [1, 65, 66], _seqs(j)[:3]
        assert j.ack(65)  # and now 1
        st = j.stats()
        assert st["abandoned"] == 2 and st["acked"] == 65 and st["oldest"] == 66 and st["ahead"] == 0, st
        assert st["records"] == 34, st
        j.close()
        st = j.open()
        assert st["abandoned"] == 2 and st["records"] == 34 and st["oldest"] == 66, st
        assert j.ack(99)
        st = j.stats()
        assert st["records"] == 33 and st["ahead"] == 1 and st["abandoned"] == 2, st
    finally:
        _rmtree(d)


def test_pending_while_acks_delete_segments():
    d = _tmpdir("iterate")
    try:
        j = Journal(d, segment_bytes=256, max_bytes=8192)
        j.open()
        rng = Xorshift32(21)
        want = []
        for seq, payload in _readings(rng, 30, 1, 1750000000):
            j.append(seq, READING, payload)
            want.append(seq)
        got = []
        for seq, kind, payload in j.pending():
            got.append(seq)
            assert j.ack(seq), seq
            if seq == want[10]:  # and one the iterator has not reached yet
                assert j.ack(want[40])
        want.remove(want[40])
        assert got == want, (got, want)
        assert j.stats()["records"] == 0
        assert len(_segments(d)) == 1, _segments(d)
    finally:
        _rmtree(d)


def _model_run(seed, ops):
    # Random appends, ACKs (the oldest pending, or any seq near a record)
    # and reopens, checked after each step against what the journal must
    # hold: every record not acknowledged and not at or below the highest
    # acknowledged seq - 64 (too old for the hub: abandoned).
    rng = Xorshift32(seed)
    d = _tmpdir("model")
    try:
        j = Journal(d, segment_bytes=256, max_bytes=1 << 20)
        j.open()
        records = {}
        acked = set()
        top = -1
        seq = rng.below(1000)
        readings = _readings(Xorshift32(seed), 10 ** 6, 0, 1750000000)
        for _ in range(ops):
            op = rng.below(10)
            if op < 5:
                seq += 1 + rng.below(3)
                records[seq] = next(readings)[1]
                j.append(seq, READING, records[seq])
            elif op < 9 and records:
                keys = sorted(records)
                if rng.below(2):
                    s = [k for k in keys if k not in acked and k > top - 64][:1] or keys[:1]
                    s = s[0]
                else:
                    s = keys[rng.below(len(keys))] + rng.below(3) - 1
                want = s in records and s not in acked and s > top - 64
                assert j.ack(s) == want, (seed, s, want)
                if want:
                    acked.add(s)
                    top = s if s > top else top
            else:
                j.close()
                j.open()
            keep = [k for k in sorted(records) if k not in acked and k > top - 64]
            assert _pending(j) == [(k, READING, records[k]) for k in keep], seed
            st = j.stats()
            gone = len([k for k in records if k not in acked and k <= top - 64])
            assert st["records"] == len(keep) and st["abandoned"] == gone, (seed, st)
            assert st["oldest"] == (keep[0] if keep else None) and st["ahead"] <= 63, (seed, st)
            assert st["bytes"] == _bytes_on_disk(d), (seed, st)
    finally:
        _rmtree(d)


def test_fuzz_against_a_model():
    for seed in range(1, 1 + max(2, iterations(2) // 500)):
        _model_run(seed, 300)


# -- capacity and the policy when full

def test_seven_days_of_three_meters_fit_64_kb():
    # A day online (each reading acknowledged), then 7 days without the hub:
    # 2016 READINGs must all be kept, in the default 64 KB.
    d = _tmpdir("capacity")
    try:
        j = Journal(d)
        j.open()
        rng = Xorshift32(2025)
        seq = 1000
        for seq, payload in _readings(rng, 96, 1000, 1750000000):
            j.append(seq, READING, payload)
            assert j.ack(seq)
        first = seq + 10
        count = 0
        payload_bytes = 0
        for seq, payload in _readings(rng, 7 * 96, first, 1750000000 + 86400):
            j.append(seq, READING, payload)
            count += 1
            payload_bytes += len(payload)
        st = j.stats()
        assert count == 2016, count
        assert st["records"] == 2016 and st["dropped"] == 0 and st["oldest"] == first, st
        assert st["bytes"] <= 65536 and st["bytes"] == _bytes_on_disk(d), st
        print("7 days x 3 meters: %d readings, %d payload bytes, %d journal bytes (%.1f per reading)" % (
            count, payload_bytes, st["bytes"], st["bytes"] / count))
        # every payload comes back byte for byte, after a reboot too
        rng = Xorshift32(2025)
        for _ in _readings(rng, 96, 1000, 1750000000):
            pass
        j.close()
        j.open()
        it = j.pending()
        for seq, payload in _readings(rng, 7 * 96, first, 1750000000 + 86400):
            got = next(it)
            assert got == (seq, READING, payload), (got, seq)
        assert next(it, None) is None
    finally:
        _rmtree(d)


def test_when_full_readings_push_out_the_oldest():
    d = _tmpdir("full")
    try:
        j = Journal(d, segment_bytes=512, max_bytes=2048)
        j.open()
        rng = Xorshift32(9)
        seqs = []
        for seq, payload in _readings(rng, 60, 1, 1750000000):
            j.append(seq, READING, payload)
            seqs.append(seq)
            assert _bytes_on_disk(d) <= 2048
        st = j.stats()
        assert st["dropped"] > 0 and st["records"] + st["dropped"] == len(seqs), st
        assert st["bytes"] <= 2048 and st["newest"] == seqs[-1], st
        kept = _seqs(j)
        assert kept == seqs[-len(kept):], kept
        assert st["oldest"] == kept[0] and st["acked"] == kept[0] - 1, st
        # the newest are kept; the dropped count survives a reboot
        j.close()
        st2 = j.open()
        assert st2["dropped"] == st["dropped"] and _seqs(j) == kept, st2
    finally:
        _rmtree(d)


def test_when_full_orders_and_witnesses_are_refused():
    d = _tmpdir("refuse")
    try:
        j = Journal(d, segment_bytes=512, max_bytes=2048)
        j.open()
        seq = 0
        while j.stats()["free"] > 100:
            seq += 1
            j.append(seq, ORDER, b"order %d" % seq + bytes(60))
        kept = _seqs(j)
        for kind in (ORDER, WITNESS):
            seq += 1
            exc = raises(JournalFull, j.append, seq, kind, b"o" * 100)
            assert exc.reason == "full", exc
        st = j.stats()
        assert st["refused"] == 2 and st["dropped"] == 0 and _seqs(j) == kept, st
        # a reading still gets in, at the cost of the oldest segment
        seq += 1
        j.append(seq, READING, b"r" * 100)
        st = j.stats()
        assert st["dropped"] > 0 and _seqs(j)[-1] == seq, st
        # once the hub acknowledges, orders are taken again
        for s in _seqs(j):
            j.ack(s)
        seq += 1
        j.append(seq, ORDER, b"o" * 100)
        assert _seqs(j) == [seq]
        j.close()
        assert j.open()["refused"] == 2
        # a journal told to refuse nothing drops the oldest for any kind
        j = Journal(d, segment_bytes=512, max_bytes=2048, refuse_when_full=())
        j.open()
        rng = Xorshift32(1)
        for _ in range(30):
            seq += 1
            j.append(seq, ORDER, noise(rng, 100))
        assert j.stats()["dropped"] > 0
    finally:
        _rmtree(d)


# -- crashes: torn writes, garbage, bit flips

def _build(d, rng, records, acks):
    # a journal with `records` readings of which some are acknowledged
    # -> (journal, seqs, acknowledged seqs, the next reading)
    j = Journal(d, segment_bytes=512, max_bytes=16384)
    j.open()
    seqs = []
    for seq, payload in _readings(rng, records // 3 + 1, 10, 1750000000):
        if len(seqs) == records:
            break
        j.append(seq, READING, payload)
        seqs.append(seq)
    acked = []
    for _ in range(acks):
        s = seqs[rng.below(len(seqs))]
        if j.ack(s):
            acked.append(s)
    return j, seqs, acked, (seq, READING, payload)


def _check_after_cut(d, before, last, acked):
    # Reopen after a torn last write: everything before it is there, the torn
    # record whole or absent, nothing acknowledged comes back, appends go on.
    j = Journal(d, segment_bytes=512, max_bytes=16384)
    st = j.open()
    got = _pending(j)
    if got and got[-1] == last:
        got = got[:-1]
    assert got == before, ([r[0] for r in got], [r[0] for r in before])
    for s in acked:
        assert s not in [r[0] for r in got], s
    assert st["corrupt"] == 0 and st["lost"] == 0, st
    nxt = last[0] + 1
    j.append(nxt, READING, last[2])
    assert _pending(j)[-1] == (nxt, READING, last[2])
    j.close()
    j.open()
    assert _pending(j)[-1] == (nxt, READING, last[2])
    return st


def _last_write_cuts(name, records, all_cuts):
    d = _tmpdir(name)
    copy = d + "-copy"
    try:
        j, seqs, acked, last = _build(d, Xorshift32(records), records, 4)
        before = _pending(j)
        old = _snapshot(d)
        j.append(*last)
        new = _snapshot(d)
        seg = [n for n in new if n.endswith(".jnl") and new[n] != old.get(n)]
        assert len(seg) == 1, seg
        seg = seg[0]
        start = len(old.get(seg, b""))
        end = len(new[seg])
        cuts = list(range(start, end + 1))
        if not all_cuts:
            r = Xorshift32(records * 7919)
            cuts = [start + r.below(end - start + 1) for _ in range(8)]
        torn = 0
        for cut in cuts:
            files = dict(new)
            files[seg] = new[seg][:cut]
            _restore(copy, files)
            st = _check_after_cut(copy, before, last, acked)
            torn += st["torn"]
        # garbage after the last write: ignored, and appends go to a new segment
        r = Xorshift32(records + 1)
        for _ in range(4):
            files = dict(new)
            files[seg] = new[seg] + noise(r, 1 + r.below(40))
            _restore(copy, files)
            st = _check_after_cut(copy, before, last, acked)
            assert st["torn"] == 1, st
            assert len(_segments(copy)) == len([n for n in new if n.endswith(".jnl")]) + 1
        return start, end, torn
    finally:
        _rmtree(d)
        _rmtree(copy)


def test_torn_append_at_every_byte():
    start, end, torn = _last_write_cuts("cut-delta", 14, True)
    assert start > 4 and end - start < 30, (start, end)  # a delta record into an open segment
    assert torn == end - start - 1, torn  # every cut but none and all of it


def _opens_a_segment(records):
    d = _tmpdir("probe")
    try:
        j, seqs, acked, last = _build(d, Xorshift32(records), records, 4)
        count = len(_segments(d))
        j.append(*last)
        return len(_segments(d)) > count
    finally:
        _rmtree(d)


def test_torn_first_record_of_a_segment_at_every_byte():
    records = 15
    while not _opens_a_segment(records):
        records += 1
    start, end, torn = _last_write_cuts("cut-new", records, True)
    assert start == 0 and end > 40, (records, start, end)
    assert torn == end - 1, torn  # a file of 1 .. end - 1 bytes


def test_fuzz_torn_appends():
    # random journals, cut at random points of their last write (make fuzz
    # tries 5000 of them)
    rng = Xorshift32(4242)
    for _ in range(max(6, iterations(6) // 20)):
        _last_write_cuts("cut-rand", 3 + rng.below(60), False)


def test_fuzz_bit_flip_in_a_middle_record():
    # Policy: a record whose CRC fails is skipped and counted ("corrupt"),
    # and so are the records delta-encoded on it ("lost", at most 15);
    # every other record is kept. A flip in a segment's last record looks
    # like a torn tail ("torn").
    d = _tmpdir("flip")
    copy = d + "-copy"
    try:
        rng = Xorshift32(77)
        j, seqs, acked, _ = _build(d, rng, 80, 0)
        want = _pending(j)
        files = _snapshot(d)
        names = _segments(d)
        for _ in range(max(12, iterations(12) // 20)):
            name = names[rng.below(len(names))]
            layout = _layout(d, name)
            k = rng.below(len(layout) - 1)
            seq, start, end, _ = layout[k]
            pos = start + rng.below(end - start)
            data = bytearray(files[name])
            data[pos] ^= 1 << rng.below(8)
            damaged = dict(files)
            damaged[name] = bytes(data)
            _restore(copy, damaged)
            j = Journal(copy, segment_bytes=512, max_bytes=16384)
            st = j.open()
            gone = _descendants(layout, seq)
            assert len(gone) <= 15, len(gone)
            gone.add(seq)
            assert _pending(j) == [r for r in want if r[0] not in gone], (seq, sorted(gone))
            assert st["corrupt"] == 1 and st["lost"] == len(gone) - 1 and st["torn"] == 0, st
            assert st["records"] == len(want) - len(gone), st
            j.append(seqs[-1] + 1, READING, b"after")
            assert _pending(j)[-1] == (seqs[-1] + 1, READING, b"after")
        # a damaged magic: counted, and the records behind it still read
        damaged = dict(files)
        damaged[names[0]] = b"PGX" + files[names[0]][3:]
        _restore(copy, damaged)
        st = Journal(copy, segment_bytes=512, max_bytes=16384).open()
        assert st["corrupt"] == 1 and st["records"] == len(want), st
        # the last record of a segment: a torn tail
        name = names[0]
        layout = _layout(d, name)
        seq, start, end, _ = layout[-1]
        damaged = dict(files)
        damaged[name] = files[name][:start] + bytes([files[name][start] ^ 0x04]) + files[name][start + 1:]
        _restore(copy, damaged)
        j = Journal(copy, segment_bytes=512, max_bytes=16384)
        st = j.open()
        assert st["torn"] == 1 and st["corrupt"] == 0, st
        assert _pending(j) == [r for r in want if r[0] != seq]
    finally:
        _rmtree(d)
        _rmtree(copy)


def test_state_file_cut_short():
    # acked is replaced by writing acked.new and renaming it over: a crash
    # before the rename leaves acked.new, which is ignored while acked is good.
    d = _tmpdir("state")
    copy = d + "-copy"
    try:
        j, seqs, acked, _ = _build(d, Xorshift32(5), 30, 0)
        for s in seqs[:5]:
            j.ack(s)
        old = _snapshot(d)
        j.ack(seqs[5])
        new = _snapshot(d)
        assert old["acked"] != new["acked"]
        for cut in range(len(new["acked"]) + 1):
            files = dict(old)
            files["acked.new"] = new["acked"][:cut]
            _restore(copy, files)
            st = Journal(copy, segment_bytes=512, max_bytes=16384).open()
            assert st["acked"] == seqs[4] and not st["state_lost"], (cut, st)
            assert "acked.new" not in os.listdir(copy)
        # FAT's remove-then-rename cut between the two: acked.new is used
        files = dict(old)
        del files["acked"]
        files["acked.new"] = new["acked"]
        _restore(copy, files)
        st = Journal(copy, segment_bytes=512, max_bytes=16384).open()
        assert st["acked"] == seqs[5] and not st["state_lost"], st
        assert "acked" in os.listdir(copy) and "acked.new" not in os.listdir(copy)
        # a damaged state file: everything is pending again, and it says so
        files = dict(new)
        files["acked"] = new["acked"][:-1] + bytes([new["acked"][-1] ^ 1])
        _restore(copy, files)
        j = Journal(copy, segment_bytes=512, max_bytes=16384)
        st = j.open()
        assert st["state_lost"] and st["acked"] is None and st["records"] == 30, st
        assert _seqs(j) == seqs
    finally:
        _rmtree(d)
        _rmtree(copy)


def test_foreign_and_empty_files():
    d = _tmpdir("foreign")
    try:
        j, seqs, _, _ = _build(d, Xorshift32(6), 10, 0)
        want = _pending(j)
        j.close()
        _write(d + "/notes.txt", b"hello")
        _write(d + "/00000000000000FF.jnl", b"PGJ\x01junk")  # not a name we write
        _write(d + "/%016x.jnl" % (seqs[-1] + 5), b"")  # created, never written
        _write(d + "/%016x.jnl" % (seqs[-1] + 9), b"PG")
        st = j.open()
        assert _pending(j) == want
        assert st["torn"] == 1 and st["corrupt"] == 0, st
        assert "notes.txt" in os.listdir(d) and "00000000000000FF.jnl" in os.listdir(d)
        assert len(_segments(d)) == 2, _segments(d)  # the empty ones are gone
        j.append(seqs[-1] + 5, READING, b"again")
        assert _pending(j)[-1] == (seqs[-1] + 5, READING, b"again")
    finally:
        _rmtree(d)


# -- memory

def _pending_heap(d, records):
    # peak heap above the start while pending() streams `records` readings
    # (0 where gc.mem_alloc is missing: CPython)
    _rmtree(d)
    j = Journal(d)
    j.open()
    rng = Xorshift32(31)
    for seq, payload in _readings(rng, (records + 2) // 3, 1, 1750000000):
        j.append(seq, READING, payload)
    j.close()
    j.open()
    mem_alloc = getattr(gc, "mem_alloc", lambda: 0)
    gc.collect()
    base = mem_alloc()
    peak = 0
    n = 0
    for r in j.pending():
        n += 1
        if n % 64 == 0:
            gc.collect()
            used = mem_alloc() - base
            peak = used if used > peak else peak
    assert n == records, (n, records)
    return peak


def test_pending_streams_in_bounded_heap():
    # The heap is checked on MicroPython only (CPython has no gc.mem_alloc).
    d = _tmpdir("heap")
    try:
        small = heap32(_pending_heap(d, 300))
        full = heap32(_pending_heap(d, 2016))
        if MICROPYTHON:
            print("pending() heap above idle: %d B for 300 records, %d B for 2016 (32-bit equivalent)" % (
                small, full))
            assert full - small < 512, (small, full)
            assert full < 4096, full
    finally:
        _rmtree(d)


# -- littlefs with the power cut mid-write (MicroPython only)

class _Flash:
    # The chip: bytes that outlive a power cut.
    def __init__(self, blocks, size=512):
        self.size = size
        self.data = bytearray(blocks * size)  # littlefs needs no erased state to start


class _PowerOn:
    # What VfsLfs2 talks to between a power-on and a power cut: after
    # `budget` block programs/erases the one in progress is half done and
    # raises; from then on nothing reaches the chip (and nothing raises or
    # allocates: littlefs may still be called from the finalizer of a file
    # the cut left open, with the heap locked).
    def __init__(self, flash, budget=None):
        self.flash = flash
        self.budget = budget
        self.writes = 0
        self.dead = False

    def _spend(self):
        self.writes += 1
        if self.budget is not None and self.writes > self.budget:
            self.dead = True
            return False
        return True

    def readblocks(self, block, buf, off=0):
        a = block * self.flash.size + off
        if not self.dead:
            buf[:] = self.flash.data[a:a + len(buf)]
        else:  # byte by byte: a slice would allocate, and the heap may be locked
            data = self.flash.data
            for i in range(len(buf)):
                buf[i] = data[a + i]

    def writeblocks(self, block, buf, off=None):
        if self.dead:
            return
        a = block * self.flash.size + (off or 0)
        if not self._spend():
            half = len(buf) // 2
            self.flash.data[a:a + half] = buf[:half]
            raise OSError(5)
        self.flash.data[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.flash.data) // self.flash.size
        if op == 5:
            return self.flash.size
        if op == 6:
            if self.dead:
                return 0
            if not self._spend():
                raise OSError(5)
            a = arg * self.flash.size
            self.flash.data[a:a + self.flash.size] = b"\xff" * self.flash.size
        return 0


def _umount(path):
    try:
        os.umount(path)
    except OSError:
        pass  # the power is still off for it


def _workload(j, log):
    # appends and acks as a gateway makes them; log[0]: appended seqs
    # (returned), log[1]: acknowledged (returned True), log[2]: the call in
    # progress when the power went
    for seq in range(1, 41):
        log[2] = ("append", seq)
        payload = b"\x8b\x01\x01\x18" + bytes([seq]) + b"\x1a\x68\x4e\xe1\x80\x0f" + bytes([seq % 7]) * 6
        j.append(seq, READING, payload)
        log[0].append(seq)
        if seq % 3 == 0:
            for s in (seq - 2, seq):
                log[2] = ("ack", s)
                if j.ack(s):
                    log[1].append(s)
    log[2] = None


def test_littlefs_power_cut_anywhere():
    # The workload runs with the power cut after 0, 1, 2, ... block writes,
    # each time; after each cut littlefs is mounted again and the journal must
    # hold every record appended and not acknowledged, nothing acknowledged,
    # the call in progress either way, and take appends.
    if not MICROPYTHON or not hasattr(os, "VfsLfs2"):
        raise SkipTest("needs MicroPython's littlefs (os.VfsLfs2)")
    flash = _Flash(32)
    os.VfsLfs2.mkfs(_PowerOn(flash))
    clean = bytes(flash.data)
    power = _PowerOn(flash)
    os.mount(os.VfsLfs2(power), "/pgw-lfs")
    try:
        j = Journal("/pgw-lfs/j", segment_bytes=256, max_bytes=8192)
        j.open()
        _workload(j, [[], [], None])
    finally:
        _umount("/pgw-lfs")
    total = power.writes
    cuts = 0
    for budget in range(total):
        flash.data[:] = clean
        log = [[], [], None]
        os.mount(os.VfsLfs2(_PowerOn(flash, budget)), "/pgw-lfs")
        try:
            j = Journal("/pgw-lfs/j", segment_bytes=256, max_bytes=8192)
            j.open()
            _workload(j, log)
        except OSError:
            cuts += 1
        finally:
            _umount("/pgw-lfs")
        # files the cut left open are finalized now, into nothing (the
        # "OSError: 28" lines MicroPython prints come from there)
        gc.collect()
        os.mount(os.VfsLfs2(_PowerOn(flash)), "/pgw-lfs")
        try:
            j = Journal("/pgw-lfs/j", segment_bytes=256, max_bytes=8192)
            st = j.open()
            got = _seqs(j)
            busy = log[2][1] if log[2] is not None else None  # either way
            must = [s for s in log[0] if s not in log[1] and s != busy]
            may = list(must)
            if busy is not None and (log[2][0] == "append" or busy in log[0]):
                may.append(busy)
            for s in must:
                assert s in got, (budget, s, got, log)
            for s in got:
                assert s in may, (budget, s, got, log)
            assert st["corrupt"] == 0 and st["lost"] == 0 and st["torn"] == 0, (budget, st)
            nxt = (st["newest"] or 0) + 100
            j.append(nxt, READING, b"after the cut")
            assert _seqs(j)[-1] == nxt
        finally:
            _umount("/pgw-lfs")
    print("littlefs: the power cut at %d points of %d block writes" % (cuts, total))
    assert cuts == total, (cuts, total)


# -- measurements for docs/journal.md, not a test:
#   MICROPYPATH=lib:tests/lib .venv/bin/micropython -X heapsize=512wK tests/lib/test_journal.py

def _measure_one(d, fill):
    import time

    def ms(t0):
        return time.ticks_diff(time.ticks_us(), t0) / 1000

    gc.collect()
    readings = _readings(Xorshift32(2025), 10 * 96, 1000, 1750000000)
    j = Journal(d)
    j.open()
    spent = 0
    for _ in range(fill):
        seq, payload = next(readings)
        t0 = time.ticks_us()
        j.append(seq, READING, payload)
        spent += time.ticks_diff(time.ticks_us(), t0)
    append_ms = spent / 1000 / fill
    st = j.stats()
    j.close()
    j = None
    gc.collect()
    base = gc.mem_alloc()
    t0 = time.ticks_us()
    j = Journal(d)
    j.open()
    open_ms = ms(t0)
    gc.collect()
    held = heap32(gc.mem_alloc() - base)
    t0 = time.ticks_us()
    n = 0
    for _ in j.pending():
        n += 1
    pending_ms = ms(t0)
    spent = 0
    for _ in range(50):
        seq, payload = next(readings)
        t0 = time.ticks_us()
        j.append(seq, READING, payload)
        spent += time.ticks_diff(time.ticks_us(), t0)
    full_ms = spent / 1000 / 50
    t0 = time.ticks_us()
    for r in j.pending():
        if r[0] >= 1050:
            break
        j.ack(r[0])
    ack_ms = ms(t0) / 50
    print("  %d readings, %d bytes in %d segments, dropped %d" % (
        st["records"], st["bytes"], st["segments"], st["dropped"]))
    print("  append: %.3f ms per record filling it, %.3f ms when full; ack (in order): %.3f ms" % (
        append_ms, full_ms, ack_ms))
    print("  open(): %.1f ms; pending() of all %d records: %.1f ms" % (open_ms, n, pending_ms))
    print("  heap held by the open Journal: %d B (32-bit equivalent)" % held)


def _measure():
    fill = 2550  # about 60 KB of readings
    d = "/tmp/pgw-journal-measure"
    _rmtree(d)
    print("unix port, files in /tmp:")
    _measure_one(d, fill)
    _rmtree(d)
    if hasattr(os, "VfsLfs2"):
        flash = _Flash(96, 4096)  # 384 KB of 4 KB blocks, as on an ESP32
        os.VfsLfs2.mkfs(_PowerOn(flash))
        os.mount(os.VfsLfs2(_PowerOn(flash)), "/pgw-lfs")
        print("littlefs (VfsLfs2) on a RAM block device of 4 KB blocks:")
        try:
            _measure_one("/pgw-lfs/j", fill)
        finally:
            os.umount("/pgw-lfs")


if __name__ == "__main__":
    _measure()

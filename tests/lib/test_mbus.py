# M-Bus long frames and the DLMS transport layer (lib/mbus.py).
from fuzzing import Xorshift32, iterations
from mpcompat import raises
from push_vectors import NOE_FRAME1_LEN, NOE_FRAMES, h

import mbus
from mbus import FrameError, LongFrame, SegmentError


def noe():
    whole = h(NOE_FRAMES)
    return whole[:NOE_FRAME1_LEN], whole[NOE_FRAME1_LEN:]


def test_netz_noe_example_frames_parse():
    # Netz NOE customer-interface example: SND_UD (0x53) to broadcast 0xFF,
    # CI 0x00 (segment 0, more follow) then 0x11 (segment 1, last),
    # STSAP 0x01, DTSAP 0x67; checksums as published.
    f1, f2 = noe()
    a = LongFrame.from_bytes(f1)
    b = LongFrame.from_bytes(f2)
    assert (a.c, a.a, a.ci, len(a.data)) == (0x53, 0xFF, 0x00, 247), a
    assert (b.c, b.a, b.ci, len(b.data)) == (0x53, 0xFF, 0x11, 17), b
    assert a.data[:4] == h("0167DB08") and b.data[:2] == h("0167")
    assert a.to_bytes() == f1 and b.to_bytes() == f2, "re-encodes byte for byte"


def test_reassemble_netz_noe_apdu():
    f1, f2 = noe()
    r = mbus.Reassembler()
    assert r.push(LongFrame.from_bytes(f1)) == [] and r.busy
    out = r.push(LongFrame.from_bytes(f2))
    assert len(out) == 1 and not r.busy, out
    apdu = out[0]
    # general-glo-ciphering, system title "KFMgP" + 00 00 09, 0x81 F8 = 248 bytes follow
    assert apdu[:13] == h("DB084B464D675000000981F820") and len(apdu) == 260, apdu[:16]
    assert (r.stsap, r.dtsap) == (0x01, 0x67)


def test_encode_and_segment_round_trip():
    apdu = bytes(range(256)) * 3
    frames = mbus.segment(apdu)
    assert len(frames) == 4 and [f[6] for f in frames] == [0x00, 0x01, 0x02, 0x13], [hex(f[6]) for f in frames]
    assert [len(f) for f in frames] == [261, 261, 261, 6 + 3 + 2 + 18], [len(f) for f in frames]
    r = mbus.Reassembler()
    out = []
    for f in frames:
        out += r.push(LongFrame.from_bytes(f))
    assert out == [apdu]
    # a short APDU is one frame with CI 0x10
    one = mbus.segment(b"\x0f\x00")
    assert len(one) == 1 and one[0][6] == 0x10
    assert mbus.encode(0x53, 0xFF, 0x10, b"\x01\x67\x0f") == h("68060668" "53FF1001670F" "D9" "16")
    raises(mbus.MbusError, mbus.encode, 0x53, 0xFF, 0x10, bytes(253))
    raises(mbus.MbusError, mbus.segment, b"x", 1, 0x67, 0x53, 0xFF, 251)


def test_from_bytes_errors():
    f1, _ = noe()
    bad = bytearray(f1)
    bad[100] ^= 1
    assert raises(FrameError, LongFrame.from_bytes, bytes(bad)).reason == "bad_checksum"
    bad = bytearray(f1)
    bad[-1] = 0x17
    assert raises(FrameError, LongFrame.from_bytes, bytes(bad)).reason == "bad_stop"
    assert raises(FrameError, LongFrame.from_bytes, f1[:-1]).reason == "truncated"
    assert raises(FrameError, LongFrame.from_bytes, f1 + b"\x00").reason == "garbage"
    assert raises(FrameError, LongFrame.from_bytes, h("6802026853FF5216")).reason == "bad_length"
    assert raises(FrameError, LongFrame.from_bytes, b"\x68\x03").reason == "truncated"


def test_framer_any_chunking():
    data = h(NOE_FRAMES)
    for step in (1, 2, 7, 64, 255, 256, 1000):
        fr = mbus.Framer()
        got = []
        for i in range(0, len(data), step):
            got += fr.feed(data[i:i + step])
        assert [x.ci for x in got] == [0x00, 0x11], (step, got)
        assert fr.frames == 2 and fr.errors == 0 and not fr.partial


def test_framer_garbage_and_resync():
    f1, f2 = noe()
    fr = mbus.Framer()
    out = fr.feed(b"\x00\xe5\x68\x68\x16garbage" + f1 + b"\x10\x5b\xfe\x59\x16" + f2)
    kinds = [x.reason if isinstance(x, FrameError) else "frame" for x in out]
    assert kinds == ["garbage", "frame", "garbage", "frame"], kinds
    assert out[0].detail == 12 and out[2].detail == 5, (out[0].detail, out[2].detail)
    assert fr.garbage_bytes == 17


def test_framer_bad_frame_then_good_one():
    f1, f2 = noe()
    bad = bytearray(f1)
    bad[50] ^= 0xFF
    fr = mbus.Framer()
    out = fr.feed(bytes(bad) + f2)
    kinds = [x.reason if isinstance(x, FrameError) else x.ci for x in out]
    assert kinds == ["bad_checksum", 0x11], kinds  # one report, then resynchronised
    # a frame cut short: its length swallows the next frame's start, which is found again
    out = mbus.Framer().feed(f1[:100] + f1 + f2)
    kinds = [x.reason if isinstance(x, FrameError) else x.ci for x in out]
    assert kinds[-2:] == [0x00, 0x11] and kinds[0] in ("bad_stop", "bad_checksum"), kinds


def test_framer_buffer_is_bounded():
    fr = mbus.Framer()
    out = fr.feed(b"\x68\xff\xff\x68" + b"\x68" * 3000)
    assert fr._n <= mbus.MAX_FRAME + 64, fr._n
    # a run of 0x68 looks like frames of L = 0x68: one report per such span
    assert len(out) < 40, len(out)
    assert fr.feed(h(NOE_FRAMES))[-1].ci == 0x11


def test_flush_reports_a_started_frame():
    f1, _ = noe()
    fr = mbus.Framer()
    assert fr.feed(f1[:40]) == [] and fr.partial
    out = fr.flush()
    assert len(out) == 1 and out[0].reason == "truncated", out
    assert fr.flush() == []
    assert fr.feed(f1)[0].ci == 0


def _lf(ci, payload=b"xy"):
    return LongFrame(0x53, 0xFF, ci, b"\x01\x67" + payload)


def test_reassembler_sequence_errors():
    r = mbus.Reassembler()
    out = r.push(_lf(0x11))  # a last segment without its start
    assert [e.reason for e in out] == ["sequence"], out
    assert r.push(_lf(0x12)) == [] and r.dropped_segments == 1, "rest dropped quietly"
    assert r.push(_lf(0x10, b"ok")) == [b"ok"]
    # a segment missing in the middle
    assert r.push(_lf(0x00, b"a")) == []
    out = r.push(_lf(0x12, b"c"))
    assert [e.reason for e in out] == ["sequence"] and out[0].detail == 2 and not r.busy
    # a new segment 0 while one is open: the open APDU is lost, the new one kept
    assert r.push(_lf(0x00, b"a")) == []
    out = r.push(_lf(0x00, b"b"))
    assert [e.reason for e in out] == ["incomplete"], out
    assert r.push(_lf(0x11, b"c")) == [b"bc"]
    # CI outside the DLMS range, and a frame without STSAP/DTSAP
    assert r.push(LongFrame(0x53, 0xFF, 0x72, b"\x01\x67x"))[0].reason == "not_dlms"
    assert r.push(LongFrame(0x53, 0xFF, 0x10, b"\x01"))[0].reason == "truncated"


def test_reassembler_sequence_wraps_after_15():
    r = mbus.Reassembler(max_apdu=100)
    out = []
    for i in range(20):
        ci = (i & 0x0F) | (0x10 if i == 19 else 0)
        out += r.push(_lf(ci, bytes((i,))))
    assert out == [bytes(range(20))], out


def test_reassembler_is_bounded():
    r = mbus.Reassembler(max_apdu=300)
    assert r.push(_lf(0x00, bytes(200))) == []
    out = r.push(_lf(0x01, bytes(200)))
    assert [e.reason for e in out] == ["oversized"] and not r.busy, out
    assert r.push(_lf(0x12, bytes(10))) == [], "rest of that APDU dropped"
    assert r.push(_lf(0x10, bytes(300))) == [bytes(300)]


def test_fuzz_framer_and_reassembler():
    # Mutated streams of frames in random chunks: only LongFrames, FrameErrors,
    # APDUs and SegmentErrors come out, and the buffers stay bounded.
    seed = h(NOE_FRAMES) + b"".join(mbus.segment(bytes(range(200)) * 2, max_segment=120))
    rng = Xorshift32(0x9E3779B9)
    fr = mbus.Framer()
    r = mbus.Reassembler(max_apdu=600)
    for i in range(iterations(300) // 5 + 1):
        buf = bytearray(seed)
        for _ in range(1 + i % 4):
            at = rng.below(len(buf))
            state = rng.next()
            op = state % 4
            if op == 0:
                buf[at] ^= (state >> 8) & 0xFF or 1
            elif op == 1:
                buf[at:at + (state >> 8) % 40] = b""
            elif op == 2:
                buf[at:at] = bytes(((state >> 8) & 0xFF,)) * ((state >> 16) % 5 + 1)
            else:
                buf[at] = (0x68, 0x16, 0x00, 0x10, 0x11, 0xFF)[(state >> 8) % 6]
        off = 0
        while off < len(buf):
            k = 1 + rng.below(97)
            for x in fr.feed(bytes(buf[off:off + k])):
                if isinstance(x, FrameError):
                    continue
                assert isinstance(x, LongFrame), x
                for y in r.push(x):
                    assert isinstance(y, (bytes, SegmentError)), y
            off += k
            assert fr._n <= mbus.MAX_FRAME + 64
    fr.flush()
    r.reset()

# lib/modbus/tcp.py: MBAP framing and a session with several outstanding transactions.
from fuzzing import Xorshift32, iterations, mutate, noise
from mpcompat import raises

import modbus
from compat import ticks_add
from modbus import pdu, tcp


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def adu(tid, unit, data):
    # MBAP per Modbus Messaging on TCP/IP Implementation Guide V1.0b, 3.1.3:
    # tid, protocol 0, length = unit + PDU, unit, PDU.
    body = h(data)
    n = len(body) + 1
    return bytes((tid >> 8, tid & 0xFF, 0, 0, n >> 8, n & 0xFF, unit)) + body


def test_encode_matches_the_mbap_layout():
    # Section 6.3 of the Application Protocol (read 108-110) as transaction 1 to unit 17.
    assert tcp.encode(1, 17, h("03 006B 0003")) == h("0001 0000 0006 11 03006B0003")
    raises(ValueError, tcp.encode, 0x10000, 1, b"\x03")
    raises(ValueError, tcp.encode, 1, 256, b"\x03")
    raises(ValueError, tcp.encode, 1, 1, bytes(254))


def test_decode_read_more_and_bad_header():
    frame = adu(7, 1, "03 02 0001")
    for cut in range(len(frame)):
        assert tcp.decode(frame[:cut]) == (0, 0, 0, None), cut
    assert tcp.decode(frame + b"\x00") == (len(frame), 7, 1, h("03 02 0001"))
    exc = raises(modbus.FrameError, tcp.decode, h("0007 0001 0006 01 03"))
    assert exc.reason == "bad_mbap", exc.reason
    raises(modbus.FrameError, tcp.decode, h("0007 0000 0001 01"))
    raises(modbus.FrameError, tcp.decode, h("0007 0000 00FF 01"))


def test_several_outstanding_answered_out_of_order():
    s = tcp.TcpClientSession()
    t1, a1 = s.request(1, pdu.read_holding_registers(40000, 2), 0)
    t2, a2 = s.request(2, pdu.read_input_registers(0, 1), 0)
    t3, a3 = s.request(1, pdu.write_single_register(5, 9), 0)
    assert (t1, t2, t3) == (1, 2, 3) and s.outstanding == 3
    assert a1 == adu(1, 1, "03 9C40 0002") and a2 == adu(2, 2, "04 0000 0001"), (a1, a2)
    assert a3 == adu(3, 1, "06 0005 0009"), a3
    stream = adu(t3, 1, "06 0005 0009") + adu(t1, 1, "03 04 5375 6E53") + adu(t2, 2, "84 02")
    got = []
    for i in range(0, len(stream), 5):  # arbitrary TCP segmentation
        got += s.feed(stream[i:i + 5])
    assert got[0] == (t3, 9) and got[1] == (t1, [0x5375, 0x6E53]), got
    assert got[2][0] == t2 and isinstance(got[2][1], modbus.ModbusException) and got[2][1].code == 2, got
    assert s.outstanding == 0


def test_unknown_tid_is_dropped_and_counted():
    s = tcp.TcpClientSession()
    tid, _ = s.request(1, pdu.read_holding_registers(0, 1), 0)
    got = s.feed(adu(999, 1, "03 02 0001") + adu(tid, 1, "03 02 0002"))
    assert got == [(tid, [2])], got
    assert s.unmatched == 1


def test_unit_mismatch_and_bad_response():
    s = tcp.TcpClientSession()
    tid, _ = s.request(1, pdu.read_holding_registers(0, 1), 0)
    got = s.feed(adu(tid, 2, "03 02 0001"))
    assert isinstance(got[0][1], modbus.ResponseMismatch), got
    tid, _ = s.request(1, pdu.read_holding_registers(0, 2), 0)
    got = s.feed(adu(tid, 1, "03 02 0001"))
    assert isinstance(got[0][1], modbus.FrameError) and got[0][1].reason == "bad_length", got


def test_lost_framing_is_reported_with_tid_none():
    s = tcp.TcpClientSession()
    tid, _ = s.request(1, pdu.read_holding_registers(0, 1), 0)
    got = s.feed(h("0001 0005 0005 01 03 02 00 01") + adu(tid, 1, "03 02 0001"))
    assert len(got) == 1 and got[0][0] is None and got[0][1].reason == "bad_mbap", got
    assert s.framing_errors == 1 and s.outstanding == 1
    s.clear()  # the adapter reconnects
    assert s.outstanding == 0


def test_stale_transactions_expire_and_the_session_is_bounded():
    s = tcp.TcpClientSession(max_outstanding=2, timeout_ms=1000)
    start = ticks_add(0, -500)  # across the ticks wrap
    s.tick(start)
    t1, _ = s.request(1, pdu.read_coils(0, 8))
    t2, _ = s.request(1, pdu.read_coils(8, 8), ticks_add(start, 600))
    raises(modbus.SessionBusy, s.request, 1, pdu.read_coils(0, 1))
    got = s.tick(ticks_add(start, 1000))
    assert [g[0] for g in got] == [t1] and isinstance(got[0][1], modbus.ResponseTimeout), got
    assert s.feed(adu(t1, 1, "01 01 FF")) == []  # too late: dropped
    assert s.unmatched == 1
    assert s.feed(adu(t2, 1, "01 01 0F")) == [(t2, [True] * 4 + [False] * 4)]
    assert s.timeouts == 1


def test_transaction_ids_wrap_and_skip_open_ones():
    s = tcp.TcpClientSession(max_outstanding=3)
    s._next = 0xFFFF
    a, _ = s.request(1, pdu.read_coils(0, 1))
    b, _ = s.request(1, pdu.read_coils(0, 1))
    assert (a, b) == (0xFFFF, 1), (a, b)
    s._next = 1  # 1 is still open
    c, _ = s.request(1, pdu.read_coils(0, 1))
    assert c == 2, c


def test_large_burst_in_one_feed():
    s = tcp.TcpClientSession(max_outstanding=8)
    tids = [s.request(1, pdu.read_holding_registers(i * 125, 125), 0)[0] for i in range(8)]
    body = "03 FA" + "0102" * 125
    stream = b"".join(adu(t, 1, body) for t in tids)
    got = s.feed(stream)
    assert [g[0] for g in got] == tids and all(g[1] == [0x0102] * 125 for g in got), len(got)


def test_fuzz_session_never_raises_and_stays_bounded():
    rng = Xorshift32(0x7C9A11)
    n = iterations(600)
    ok = 0
    for _ in range(n):
        s = tcp.TcpClientSession(max_outstanding=4, timeout_ms=10)
        reqs = (pdu.read_holding_registers(0, 2), pdu.write_single_coil(3, True), pdu.read_coils(0, 9))
        tids = [s.request(1, r, 0)[0] for r in reqs]
        seeds = (adu(tids[0], 1, "03 04 0001 0002"), adu(tids[1], 1, "05 0003 FF00"),
                 adu(tids[2], 1, "01 02 FF 01"), adu(tids[0], 1, "83 04"))
        stream = b""
        for _ in range(1 + rng.below(4)):
            seed = seeds[rng.below(len(seeds))]
            stream += mutate(rng, seed, seeds[0]) if rng.below(2) else seed
        if not rng.below(10):
            stream = noise(rng, rng.below(700))
        pos = 0
        results = []
        while pos < len(stream):
            size = 1 + rng.below(40)
            results += s.feed(stream[pos:pos + size])
            pos += size
            assert len(s._buf) <= 2 * 260  # two of the largest ADU
        results += s.tick(20)
        assert s.outstanding == 0
        for tid, value in results:
            assert tid is None or tid in tids, (tid, tids)
            if not isinstance(value, modbus.ModbusError):
                ok += 1
    assert ok > 0, ok

# lib/modbus/rtu.py: RTU frames, timing, and the client session on a shared RS-485 bus.
from fuzzing import Xorshift32, iterations, mutate, noise
from mpcompat import raises

import modbus
from compat import ticks_add
from crc16 import crc16_modbus
from modbus import pdu, rtu


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


# Read Holding Registers 40108-40110 of unit 17, the example of the MODBUS
# Application Protocol V1.1b3 section 6.3 framed for RTU; CRC 0x8776 goes on
# the wire low byte first (Modbus over Serial Line V1.02, 6.2.2 and appendix B).
REQ_17 = h("11 03 006B 0003 7687")
# The answer of section 6.3 (555, 0, 100) from unit 17, CRC by the appendix B algorithm.
RESP_17_REGS = h("11 03 06 022B 0000 0064")


def framed(data):
    crc = crc16_modbus(data)
    return data + bytes((crc & 0xFF, crc >> 8))


RESP_17 = framed(RESP_17_REGS)


def test_crc16_modbus_check_value():
    # CRC RevEng catalogue, CRC-16/MODBUS: check = 0x4b37 for "123456789".
    assert crc16_modbus(b"123456789") == 0x4B37, hex(crc16_modbus(b"123456789"))


def test_encode_request_frame():
    got = rtu.encode(17, pdu.read_holding_registers(107, 3).pdu)
    assert got == REQ_17, got
    assert rtu.check_crc(REQ_17)
    assert not rtu.check_crc(REQ_17[:-1] + b"\x88")
    raises(ValueError, rtu.encode, 248, b"\x03")


def test_timing_from_baud_rate():
    # t3.5 = 3.5 * 11 bits / baud, fixed 1750 us above 19200 baud (Serial Line V1.02, 2.5.1.1).
    cases = ((1200, 32084), (9600, 4011), (19200, 2006), (38400, 1750), (115200, 1750))
    for baud, want in cases:
        assert rtu.silence_us(baud) == want, (baud, rtu.silence_us(baud))
    assert rtu.inter_char_us(9600) == 1719, rtu.inter_char_us(9600)
    assert rtu.inter_char_us(57600) == 750
    assert rtu.char_us(9600) == 1146, rtu.char_us(9600)
    assert rtu.tx_time_us(8, 9600) == 9167, rtu.tx_time_us(8, 9600)
    assert rtu.TURNAROUND_MS >= 100 and rtu.RESPONSE_TIMEOUT_MS >= 100


def session(unit=17, req=None, **kw):
    s = rtu.RtuClientSession(**kw)
    frame = s.request(unit, req or pdu.read_holding_registers(107, 3), 0)
    return s, frame


def test_response_is_delimited_by_length_in_any_chunking():
    for cut in range(1, len(RESP_17)):
        s, frame = session()
        assert frame == REQ_17, frame
        first = s.feed(RESP_17[:cut])
        assert first == [], (cut, first)
        got = s.feed(RESP_17[cut:])
        assert got == [(17, [555, 0, 100])], (cut, got)
        assert not s.pending


def test_byte_by_byte():
    s, _ = session()
    out = []
    for b in RESP_17:
        out += s.feed(bytes((b,)))
    assert out == [(17, [555, 0, 100])], out


def test_garbage_before_the_answer_is_skipped():
    for junk in (h("00"), h("11"), h("11 03"), h("11 03 06"), h("FF FF 11 03 06 02"), h("11 03 06") * 3):
        s, _ = session()
        got = s.feed(junk + RESP_17)
        assert got == [(17, [555, 0, 100])], (junk, got)
        assert s.framer.garbage_bytes == len(junk), (junk, s.framer.garbage_bytes)


def test_false_start_does_not_hide_a_complete_answer():
    # "11 03 06" at the front claims a frame whose end is not there yet; the real
    # answer right behind it is complete and is taken without waiting.
    s, _ = session()
    got = s.feed(h("11 03 06 01") + RESP_17)
    assert got == [(17, [555, 0, 100])], got


def test_bad_crc_then_good_answer():
    bad = RESP_17[:-1] + bytes((RESP_17[-1] ^ 0x40,))
    s, _ = session()
    assert s.feed(bad) == []
    assert s.framer.crc_errors >= 1, s.framer.crc_errors
    assert s.feed(RESP_17) == [(17, [555, 0, 100])]


def test_bad_crc_alone_times_out_with_the_reason():
    bad = RESP_17[:-2] + b"\x00\x00"
    s, _ = session(timeout_ms=500)
    assert s.feed(bad) == []
    assert s.tick(499) == []
    got = s.tick(500)
    assert len(got) == 1 and got[0][0] == 17, got
    err = got[0][1]
    assert isinstance(err, modbus.ResponseTimeout), err
    assert isinstance(err.last, modbus.FrameError) and err.last.reason == "bad_crc", err.last
    assert not s.pending


def test_silent_device_times_out_and_ticks_wrap():
    s = rtu.RtuClientSession(timeout_ms=1000)
    start = ticks_add(0, -300)  # 300 ms before the ticks counter wraps
    s.request(5, pdu.read_input_registers(0, 2), start)
    assert s.tick(ticks_add(start, 999)) == []
    got = s.tick(ticks_add(start, 1000))
    assert len(got) == 1 and isinstance(got[0][1], modbus.ResponseTimeout) and got[0][1].last is None, got


def test_other_units_on_the_bus_are_ignored():
    # A late answer from unit 2, then unit 17's answer: only 17's counts.
    other = framed(h("02 03 06 0001 0002 0003"))
    s, _ = session()
    assert s.feed(other) == []
    assert s.feed(RESP_17) == [(17, [555, 0, 100])]
    # While idle, complete frames are delimited and dropped, not returned.
    assert s.feed(other + RESP_17) == []
    assert s.ignored_frames == 2, s.ignored_frames


def test_two_devices_one_bus():
    s = rtu.RtuClientSession()
    meter = framed(h("01 04 04 4366 1999"))  # unit 1, input registers
    inverter = framed(h("02 03 04 5375 6E53"))  # unit 2, SunS marker
    s.request(1, pdu.read_input_registers(0, 2), 0)
    assert s.feed(meter) == [(1, [0x4366, 0x1999])]
    s.request(2, pdu.read_holding_registers(40000, 2), 10)
    assert s.feed(meter + inverter) == [(2, [0x5375, 0x6E53])]


def test_exception_response_is_returned_as_modbus_exception():
    s, _ = session()
    got = s.feed(framed(h("11 83 02")))
    assert len(got) == 1 and isinstance(got[0][1], modbus.ModbusException), got
    assert got[0][1].code == 2 and got[0][1].function == 3, got[0][1]


def test_echoed_write_and_mismatch():
    req = pdu.write_single_register(1, 3)
    s, frame = session(1, req)
    assert s.feed(frame) == [(1, 3)]  # the device echoes the request
    s.request(1, req, 0)
    got = s.feed(framed(h("01 06 0001 0004")))
    assert isinstance(got[0][1], modbus.ResponseMismatch), got


def test_local_echo_is_stripped():
    # Adapters that hear their own transmission: the request comes back first.
    req = pdu.read_holding_registers(107, 3)
    s, frame = session(req=req, local_echo=True)
    assert s.feed(frame[:3]) == []
    assert s.feed(frame[3:] + RESP_17) == [(17, [555, 0, 100])]
    # For fc 6 the echo and the answer are identical: only the second one counts.
    w = pdu.write_single_register(1, 3)
    s, frame = session(1, w, local_echo=True)
    assert s.feed(frame) == []
    assert s.feed(frame) == [(1, 3)]
    # Without an echo the answer is still found.
    s, frame = session(req=req, local_echo=True)
    assert s.feed(RESP_17) == [(17, [555, 0, 100])]


def test_silence_ends_a_partial_frame():
    s, _ = session(timeout_ms=100)
    s.feed(RESP_17[:5])
    s.silence()
    assert s.truncated == 1
    assert s.feed(RESP_17) == [(17, [555, 0, 100])]
    s, _ = session(timeout_ms=100)
    s.feed(RESP_17[:5])
    s.silence()
    got = s.tick(100)
    assert got[0][1].last.reason == "truncated", got


def test_one_request_at_a_time_and_broadcast():
    s, _ = session()
    raises(modbus.SessionBusy, s.request, 1, pdu.read_coils(0, 1), 0)
    s.cancel()
    frame = s.request(0, pdu.write_single_register(1, 2), 0)
    assert frame[0] == 0 and not s.pending
    raises(ValueError, s.request, 0, pdu.read_coils(0, 1), 0)


def test_all_functions_through_the_framer():
    cases = (
        (pdu.read_coils(19, 19), "01 03 CD 6B 05"),
        (pdu.read_discrete_inputs(196, 22), "02 03 AC DB 35"),
        (pdu.read_input_registers(8, 1), "04 02 000A"),
        (pdu.write_single_coil(172, True), "05 00AC FF00"),
        (pdu.write_multiple_coils(19, [True] * 10), "0F 0013 000A"),
        (pdu.write_multiple_registers(1, [10, 258]), "10 0001 0002"),
        (pdu.read_write_registers(3, 6, 14, [255, 255, 255]), "17 0C 00FE 0ACD 0001 0003 000D 00FF"),
    )
    for req, resp in cases:
        s, _ = session(9, req)
        frame = framed(bytes((9,)) + h(resp))
        got = s.feed(h("09") + frame)
        assert len(got) == 1 and not isinstance(got[0][1], Exception), (req, got)
        # The generic (no request) framer delimits the same frame.
        f = rtu.RtuFramer()
        assert f.decode(frame) == (len(frame), 9, h(resp)), (req, f.decode(frame))


def test_framer_reports_read_more_and_garbage():
    f = rtu.RtuFramer()
    assert f.decode(b"") == (0, None, None)
    assert f.decode(h("11")) == (0, None, None)
    assert f.decode(h("11 03 06 02")) == (0, None, None)
    used, unit, frame = f.decode(h("00 F8 99"))  # unit 0 / 248+ / unknown fc: nothing can start
    assert (unit, frame) == (None, None) and used >= 2, used


def check_session_invariants(s):
    assert len(s._buf) <= 2 * rtu.MAX_FRAME, len(s._buf)


def test_fuzz_session_never_raises_and_stays_bounded():
    rng = Xorshift32(0x27A1CE)
    n = iterations(600)
    seeds = (RESP_17, framed(h("11 83 02")), framed(h("02 03 04 5375 6E53")), REQ_17,
             framed(h("11 03 06") + noise(Xorshift32(3), 6)))
    answered = 0
    for _ in range(n):
        s = rtu.RtuClientSession(timeout_ms=50, local_echo=bool(rng.below(2)))
        s.request(17, pdu.read_holding_registers(107, 3), 0)
        stream = b""
        for _ in range(1 + rng.below(3)):
            seed = seeds[rng.below(len(seeds))]
            stream += mutate(rng, seed, RESP_17) if rng.below(3) else seed
        if not rng.below(8):
            stream = noise(rng, rng.below(600))
        pos = 0
        results = []
        while pos < len(stream):
            size = 1 + rng.below(20)
            results += s.feed(stream[pos:pos + size])
            pos += size
            check_session_invariants(s)
            if not rng.below(10):
                s.silence()
        results += s.tick(60)
        assert len(results) <= 1, results
        for unit, value in results:
            assert unit == 17, results
            if not isinstance(value, modbus.ModbusError):
                assert isinstance(value, list) and len(value) == 3, value
                answered += 1
        assert not s.pending
    assert answered > 0, answered

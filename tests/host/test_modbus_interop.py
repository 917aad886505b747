"""lib/modbus against pymodbus 3.16, byte for byte, and hypothesis fuzz of the decoders.

pymodbus's PDU classes and its FramerRTU / FramerSocket build the requests we
must equal and the responses we must decode, for every function code we speak
(1, 2, 3, 4, 5, 6, 15, 16, 23) and every exception code; its server-side decoder
parses what we send. Hypothesis then feeds our PDU, RTU, TCP, SunSpec and
profile decoders arbitrary input: only ModbusError subclasses may come out,
and buffers stay bounded. The shipped profiles in lib/meterprofiles are loaded
and checked here (lib tests read no files).
"""

import json
import struct
import sys
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "lib"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import meterprofile  # noqa: E402
import quantities  # noqa: E402
from crc16 import crc16_modbus  # noqa: E402
from modbus import ModbusError, ModbusException, exception_name, pdu, rtu, sunspec, tcp  # noqa: E402

pymodbus = pytest.importorskip("pymodbus")
from pymodbus.framer import FramerRTU, FramerSocket  # noqa: E402
from pymodbus.pdu import DecodePDU, ExceptionResponse  # noqa: E402
from pymodbus.pdu.bit_message import (  # noqa: E402
    ReadCoilsRequest, ReadCoilsResponse, ReadDiscreteInputsRequest, ReadDiscreteInputsResponse,
    WriteMultipleCoilsRequest, WriteMultipleCoilsResponse, WriteSingleCoilRequest, WriteSingleCoilResponse)
from pymodbus.pdu.register_message import (  # noqa: E402
    ReadHoldingRegistersRequest, ReadHoldingRegistersResponse, ReadInputRegistersRequest,
    ReadInputRegistersResponse, ReadWriteMultipleRegistersRequest, ReadWriteMultipleRegistersResponse,
    WriteMultipleRegistersRequest, WriteMultipleRegistersResponse, WriteSingleRegisterRequest,
    WriteSingleRegisterResponse)

UNIT = 17
BITS = [True, False, True, True, False, False, True, True, True, True, False, True, False]
REGS = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x1234]


def cases():
    # (our request, pymodbus request, pymodbus response, value we must decode)
    u = {"dev_id": UNIT}
    return [
        (pdu.read_coils(19, 13), ReadCoilsRequest(address=19, count=13, **u),
         ReadCoilsResponse(bits=BITS, **u), BITS),
        (pdu.read_discrete_inputs(196, 13), ReadDiscreteInputsRequest(address=196, count=13, **u),
         ReadDiscreteInputsResponse(bits=BITS, **u), BITS),
        (pdu.read_holding_registers(40000, 6), ReadHoldingRegistersRequest(address=40000, count=6, **u),
         ReadHoldingRegistersResponse(registers=REGS, **u), REGS),
        (pdu.read_input_registers(0, 6), ReadInputRegistersRequest(address=0, count=6, **u),
         ReadInputRegistersResponse(registers=REGS, **u), REGS),
        (pdu.write_single_coil(172, True), WriteSingleCoilRequest(address=172, bits=[True], **u),
         WriteSingleCoilResponse(address=172, bits=[True], **u), True),
        (pdu.write_single_coil(3, False), WriteSingleCoilRequest(address=3, bits=[False], **u),
         WriteSingleCoilResponse(address=3, bits=[False], **u), False),
        (pdu.write_single_register(261, 160), WriteSingleRegisterRequest(address=261, registers=[160], **u),
         WriteSingleRegisterResponse(address=261, registers=[160], **u), 160),
        (pdu.write_multiple_coils(19, BITS), WriteMultipleCoilsRequest(address=19, bits=BITS, **u),
         WriteMultipleCoilsResponse(address=19, count=len(BITS), **u), len(BITS)),
        (pdu.write_multiple_registers(1, REGS), WriteMultipleRegistersRequest(address=1, registers=REGS, **u),
         WriteMultipleRegistersResponse(address=1, count=len(REGS), **u), len(REGS)),
        (pdu.read_write_registers(3, 6, 14, [0xFF, 0xFF, 0xFF]),
         ReadWriteMultipleRegistersRequest(read_address=3, read_count=6, write_address=14,
                                           write_registers=[0xFF, 0xFF, 0xFF], **u),
         ReadWriteMultipleRegistersResponse(registers=REGS, **u), REGS),
    ]


CASES = cases()
IDS = ["fc%d-%d" % (c[0].function, i) for i, c in enumerate(CASES)]


def rtu_framer(server):
    return FramerRTU(DecodePDU(server))


def socket_framer(server):
    return FramerSocket(DecodePDU(server))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rtu_request_frames_equal_pymodbus(case):
    ours, theirs, _, _ = case
    assert rtu.encode(UNIT, ours.pdu) == rtu_framer(False).buildFrame(theirs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tcp_request_adus_equal_pymodbus(case):
    ours, theirs, _, _ = case
    session = tcp.TcpClientSession()
    session._next = 0x1234
    tid, adu = session.request(UNIT, ours)
    theirs.transaction_id = tid
    assert adu == socket_framer(False).buildFrame(theirs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pymodbus_server_parses_our_requests(case):
    ours, theirs, _, _ = case
    frame = rtu.encode(UNIT, ours.pdu)
    used, pm = rtu_framer(True).handleFrame(frame, 0, 0)
    assert used == len(frame) and pm is not None
    assert type(pm) is type(theirs) and pm.dev_id == UNIT
    assert pm.encode() == theirs.encode()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_we_decode_pymodbus_responses_rtu_and_tcp(case):
    ours, _, response, value = case
    frame = rtu_framer(True).buildFrame(response)
    s = rtu.RtuClientSession()
    s.request(UNIT, ours, 0)
    assert s.feed(b"\x00\xff" + frame) == [(UNIT, value)]
    t = tcp.TcpClientSession()
    tid, _ = t.request(UNIT, ours)
    response.transaction_id = tid
    assert t.feed(socket_framer(True).buildFrame(response)) == [(tid, value)]


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6, 8, 10, 11])
@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_exception_responses_from_pymodbus(case, code):
    ours = case[0]
    frame = rtu_framer(True).buildFrame(ExceptionResponse(ours.function, code, device_id=UNIT))
    s = rtu.RtuClientSession()
    s.request(UNIT, ours, 0)
    ((unit, exc),) = s.feed(frame)
    assert unit == UNIT
    assert isinstance(exc, ModbusException) and exc.code == code and exc.function == ours.function
    assert exc.name == exception_name(code) and exc.name != "unknown exception"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_crc_equals_pymodbus(data):
    crc = crc16_modbus(data)
    assert bytes((crc & 0xFF, crc >> 8)) == FramerRTU.compute_CRC(data).to_bytes(2, "big")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 247), st.integers(0, 0xFFFF - 124), st.integers(1, 125),
       st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123))
def test_random_requests_equal_pymodbus(unit, address, count, values):
    pairs = [
        (pdu.read_holding_registers(address, count),
         ReadHoldingRegistersRequest(address=address, count=count, dev_id=unit)),
        (pdu.read_input_registers(address, count),
         ReadInputRegistersRequest(address=address, count=count, dev_id=unit)),
    ]
    if address + len(values) <= 0x10000:
        pairs.append((pdu.write_multiple_registers(address, values),
                      WriteMultipleRegistersRequest(address=address, registers=values, dev_id=unit)))
    for ours, theirs in pairs:
        assert rtu.encode(unit, ours.pdu) == rtu_framer(False).buildFrame(theirs)


# ---- hypothesis fuzz -------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.sampled_from(range(len(CASES))), st.binary(max_size=40))
def test_fuzz_decode_response(i, data):
    try:
        pdu.decode_response(CASES[i][0], data)
    except ModbusError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=80), max_size=12), st.booleans())
def test_fuzz_rtu_session(chunks, echo):
    s = rtu.RtuClientSession(timeout_ms=10, local_echo=echo)
    s.request(UNIT, CASES[2][0], 0)
    good = rtu_framer(True).buildFrame(CASES[2][2])
    results = []
    for c in chunks + [good]:
        results += s.feed(c)
        assert len(s._buf) <= 2 * rtu.MAX_FRAME
    results += s.tick(100)
    assert len(results) == 1 and results[0][0] == UNIT


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_rtu_framer(data):
    f = rtu.RtuFramer()
    view = memoryview(data)
    while True:
        used, unit, frame = f.decode(view)
        assert frame is None or 1 <= unit <= 247
        assert 0 <= used <= len(view)
        if frame is not None:
            assert rtu.check_crc(view[:used][-(len(frame) + 3):])
        if not used:
            break
        view = view[used:]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=10))
def test_fuzz_tcp_session(chunks):
    s = tcp.TcpClientSession()
    tids = [s.request(1, c[0])[0] for c in CASES[:5]]
    for c in chunks:
        for tid, value in s.feed(c):
            assert tid is None or tid in tids
            assert isinstance(value, (ModbusError, list, int, bool))
        assert len(s._buf) <= 2 * 260  # two of the largest ADU
    s.tick(10 ** 6)
    assert s.outstanding == 0


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sunspec.model_ids()), st.lists(st.integers(0, 0xFFFF), max_size=130))
def test_fuzz_sunspec_decode(model_id, data):
    regs = [model_id, len(data)] + data if data and data[0] & 1 else [model_id] + data
    try:
        v = sunspec.decode_model(model_id, regs)
    except sunspec.SunSpecError:
        return
    assert isinstance(v, dict)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.integers(0, 0xFFFF), max_size=5)), max_size=30))
def test_fuzz_sunspec_discovery(answers):
    d = sunspec.Discovery(max_models=10)
    for a in answers:
        if d.next_read() is None:
            break
        if a is None:
            d.failed("timeout")
        else:
            d.answer(a)
    assert len(d.models) <= 10


def shipped():
    return sorted((ROOT / "lib" / "meterprofiles").glob("*.json"))


@pytest.mark.parametrize("path", shipped(), ids=[p.stem for p in shipped()])
def test_shipped_profiles_load(path):
    doc = json.loads(path.read_text())
    p = meterprofile.load(doc)
    assert p.name == path.stem
    for q in p.quantities():
        assert quantities.unit(q)
    if p.type == "registers":
        for r in p.reads():
            assert r.count <= p.max_registers and len(r.requests()) == 1


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_shipped_register_profiles(data):
    for path in shipped():
        p = meterprofile.load(json.loads(path.read_text()))
        if p.type != "registers":
            continue
        for r in p.reads():
            regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=r.count, max_size=r.count))
            for q, v in p.decode(r, regs).items():
                assert isinstance(v, int) and quantities.unit(q)


def test_sdm630_profile_reads_a_pymodbus_encoded_block():
    p = meterprofile.load(json.loads((ROOT / "lib/meterprofiles/sdm630.json").read_text()))
    reads = p.reads()
    assert [(r.fc, r.start, r.count) for r in reads] == [(4, 0, 80), (4, 224, 2), (4, 346, 12)]
    values = [0.0] * 40
    values[0], values[3], values[26], values[35], values[36] = 229.9, 7.5, -3000.25, 50.02, 4711.5
    regs = []
    for x in values:
        regs += struct.unpack(">HH", struct.pack(">f", x))
    frame = rtu_framer(True).buildFrame(ReadInputRegistersResponse(registers=regs, dev_id=1))
    s = rtu.RtuClientSession()
    s.request(1, reads[0].requests()[0], 0)
    ((_, got),) = s.feed(frame)
    r = p.decode(reads[0], got)
    assert r["voltage_l1_mv"] == 229900 and r["current_l1_ma"] == 7500 and r["power_w"] == -3000
    assert r["frequency_mhz"] == 50020 and r["energy_import_wh"] == 4711500


def test_heidelberg_profile_states_and_setpoint():
    p = meterprofile.load(json.loads((ROOT / "lib/meterprofiles/heidelberg_ec.json").read_text()))
    block = [r for r in p.reads() if r.start == 5][0]
    regs = [7, 160, 158, 0, 254, 231, 229, 0, 0, 7360, 0, 1234, 0, 56789]
    got = p.decode(block, regs)
    assert got == {"ev_state": 3, "current_l1_ma": 16000, "current_l2_ma": 15800, "current_l3_ma": 0,
                   "temperature_mdegc": 25400, "voltage_l1_mv": 231000, "voltage_l2_mv": 229000,
                   "voltage_l3_mv": 0, "power_w": 7360, "energy_import_wh": 56789}
    assert p.setpoint("ev_current_setpoint_ma", 6000).pdu == bytes.fromhex("060105003c")


@settings(max_examples=500, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.integers(-6, 6))
def test_float_scaling_is_exact(x, k):
    bits = struct.unpack(">I", struct.pack(">f", x))[0]
    want = Fraction(x) * Fraction(10) ** k
    q = abs(want)
    r = int(q + Fraction(1, 2))  # half away from zero
    r = -r if want < 0 else r
    got = quantities.float_bits_scaled(bits, False, k)
    if abs(r) >= 1 << 63:
        assert got is None
    else:
        assert got == r, (x, k, got, r)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40), st.integers(-8, 8))
def test_integer_scaling_is_exact(raw, k):
    want = Fraction(raw) * Fraction(10) ** k
    r = int(abs(want) + Fraction(1, 2))
    assert quantities.scale_int(raw, k) == (-r if want < 0 else r)

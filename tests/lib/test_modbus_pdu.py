# lib/modbus/pdu.py: request encoding and response decoding for fc 1-6, 15, 16, 23.
# Vectors: MODBUS Application Protocol Specification V1.1b3 (modbus.org, 2012),
# the request/response examples of section 6 (one per function) and 7 (exceptions).
from fuzzing import Xorshift32, iterations, mutate, noise
from mpcompat import raises

import modbus
from modbus import pdu


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


# (request, spec request PDU, spec response PDU, decoded value)
SPEC = (
    # 6.1 Read Coils 20-38
    (pdu.read_coils(19, 19), "01 0013 0013", "01 03 CD 6B 05",
     [True, False, True, True, False, False, True, True,
      True, True, False, True, False, True, True, False,
      True, False, True]),
    # 6.2 Read Discrete Inputs 197-218
    (pdu.read_discrete_inputs(196, 22), "02 00C4 0016", "02 03 AC DB 35",
     [False, False, True, True, False, True, False, True,
      True, True, False, True, True, False, True, True,
      True, False, True, False, True, True]),
    # 6.3 Read Holding Registers 108-110
    (pdu.read_holding_registers(107, 3), "03 006B 0003", "03 06 022B 0000 0064", [555, 0, 100]),
    # 6.4 Read Input Register 9
    (pdu.read_input_registers(8, 1), "04 0008 0001", "04 02 000A", [10]),
    # 6.5 Write Single Coil 173 ON
    (pdu.write_single_coil(172, True), "05 00AC FF00", "05 00AC FF00", True),
    # 6.6 Write Single Register 2 = 3
    (pdu.write_single_register(1, 3), "06 0001 0003", "06 0001 0003", 3),
    # 6.11 Write Multiple Coils 20-29
    (pdu.write_multiple_coils(19, [True, False, True, True, False, False, True, True, True, False]),
     "0F 0013 000A 02 CD 01", "0F 0013 000A", 10),
    # 6.12 Write Multiple Registers 2-3
    (pdu.write_multiple_registers(1, [0x000A, 0x0102]), "10 0001 0002 04 000A 0102", "10 0001 0002", 2),
    # 6.17 Read/Write Multiple Registers: read 4-9, write 15-17
    (pdu.read_write_registers(3, 6, 14, [0xFF, 0xFF, 0xFF]),
     "17 0003 0006 000E 0003 06 00FF 00FF 00FF", "17 0C 00FE 0ACD 0001 0003 000D 00FF",
     [0xFE, 0xACD, 1, 3, 0xD, 0xFF]),
)


def test_requests_match_the_specification():
    for req, want, _, _ in SPEC:
        assert req.pdu == h(want), (req, req.pdu, want)


def test_responses_decode_as_the_specification_says():
    for req, _, resp, value in SPEC:
        got = pdu.decode_response(req, h(resp))
        assert got == value, (req, got, value)


def test_response_length_is_known_from_the_request():
    for req, _, resp, _ in SPEC:
        assert req.response_length() == len(h(resp)), (req, req.response_length())


def test_exception_response_carries_code_and_name():
    # Section 7: "81 02", Read Coils answered with illegal data address.
    exc = raises(modbus.ModbusException, pdu.decode_response, pdu.read_coils(0, 1), h("81 02"))
    assert exc.function == 1 and exc.code == 2, (exc.function, exc.code)
    assert exc.name == "illegal data address", exc.name
    assert "illegal data address" in str(exc), str(exc)
    assert isinstance(exc, modbus.ModbusError), "ModbusException is a ModbusError"


def test_every_exception_code_has_its_name():
    names = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
             4: "server device failure", 5: "acknowledge", 6: "server device busy",
             7: "negative acknowledge", 8: "memory parity error",
             10: "gateway path unavailable", 11: "gateway target device failed to respond"}
    req = pdu.read_holding_registers(0, 1)
    for code in names:
        exc = raises(modbus.ModbusException, pdu.decode_response, req, bytes((0x83, code)))
        assert exc.code == code and exc.name == names[code], (code, exc.name)
    exc = raises(modbus.ModbusException, pdu.decode_response, req, h("83 42"))
    assert exc.code == 0x42 and exc.name == "unknown exception", exc.name


def test_malformed_responses_raise_frame_errors():
    req = pdu.read_holding_registers(107, 3)
    cases = (
        ("", "truncated"),
        ("03", "truncated"),
        ("03 04 022B 0000", "bad_length"),         # byte count for 2 registers
        ("03 06 022B 0000", "bad_length"),         # data shorter than byte count
        ("03 06 022B 0000 0064 00", "bad_length"),  # trailing byte
        ("83 02 00", "bad_length"),                # exception response too long
    )
    for data, reason in cases:
        exc = raises(modbus.FrameError, pdu.decode_response, req, h(data))
        assert exc.reason == reason, (data, exc.reason, reason)
    exc = raises(modbus.FrameError, pdu.decode_response, pdu.write_single_coil(1, True), h("05 0001 1234"))
    assert exc.reason == "bad_value", exc.reason


def test_answers_to_other_requests_are_mismatches():
    cases = (
        (pdu.read_holding_registers(0, 1), "04 02 0001"),           # other function
        (pdu.read_holding_registers(0, 1), "84 02"),                # exception to another function
        (pdu.write_single_register(1, 3), "06 0002 0003"),          # other address
        (pdu.write_single_register(1, 3), "06 0001 0004"),          # other value
        (pdu.write_single_coil(1, True), "05 0001 0000"),           # coil echoed off
        (pdu.write_multiple_registers(1, [1, 2]), "10 0001 0003"),  # other quantity
        (pdu.write_multiple_coils(5, [True]), "0F 0006 0001"),      # other address
    )
    for req, data in cases:
        raises(modbus.ResponseMismatch, pdu.decode_response, req, h(data))


def test_request_limits_of_the_specification():
    # Quantities: 2000 bits, 125 registers read, 1968 coils, 123 registers written,
    # 121 registers written by fc 23; and no range past register 65535.
    assert pdu.read_coils(0, 2000).pdu == h("01 0000 07D0")
    assert pdu.read_input_registers(65410, 125).pdu == h("04 FF82 007D")
    assert len(pdu.write_multiple_coils(0, [True] * 1968).pdu) == 6 + 246
    assert len(pdu.write_multiple_registers(0, [0] * 123).pdu) == 6 + 246
    bad = (
        (pdu.read_coils, 0, 2001), (pdu.read_coils, 0, 0),
        (pdu.read_holding_registers, 0, 126), (pdu.read_holding_registers, 65535, 2),
        (pdu.read_holding_registers, -1, 1), (pdu.read_input_registers, 0, 0),
        (pdu.write_multiple_coils, 0, [False] * 1969), (pdu.write_multiple_coils, 0, []),
        (pdu.write_multiple_registers, 0, [0] * 124), (pdu.write_multiple_registers, 0, [70000]),
        (pdu.write_single_register, 0, -1), (pdu.write_single_register, 65536, 0),
        (pdu.read_registers, 5, 0, 1),
    )
    for args in bad:
        raises(ValueError, args[0], *args[1:])
    raises(ValueError, pdu.read_write_registers, 0, 1, 0, [0] * 122)


def test_coil_bits_pack_lsb_first():
    # Section 6.11: coils 20..29 = 1,0,1,1,0,0,1,1 / 1,0 -> CD 01
    bits = [True, False, True, True, False, False, True, True, True, False]
    assert pdu.pack_bits(bits) == h("CD 01"), pdu.pack_bits(bits)
    assert pdu.unpack_bits(h("CD 01"), 10) == bits


def test_response_pdu_length_without_request():
    cases = (("03 06", 8), ("03", 0), ("", 0), ("03 05", -1), ("01 00", -1), ("01 03", 5),
             ("05", 5), ("10", 5), ("83", 2), ("17 0C", 14), ("07", -1), ("87", -1), ("2B", -1))
    for data, want in cases:
        got = pdu.response_pdu_length(h(data))
        assert got == want, (data, got, want)


def test_fuzz_decode_response_raises_only_modbus_errors():
    rng = Xorshift32(0x0DB05EED)
    n = iterations(2000)
    counts = {"ok": 0, "err": 0}
    for _ in range(n):
        req, _, resp, _ = SPEC[rng.below(len(SPEC))]
        data = mutate(rng, h(resp)) if rng.below(6) else noise(rng, rng.below(12))
        try:
            pdu.decode_response(req, data)
            counts["ok"] += 1
        except modbus.ModbusError:
            counts["err"] += 1
        pdu.response_pdu_length(data)
    assert counts["err"] > n // 4, counts

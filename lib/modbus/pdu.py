# Modbus PDUs (function code + data): client requests and their responses.
#
# A Request carries its encoded PDU and what is needed to check the answer:
# decode_response(request, pdu) returns the values, or raises
#   ModbusException   the device sent an exception response (fc | 0x80, code)
#   FrameError        the PDU is malformed (length, byte count)
#   ResponseMismatch  well formed, but not the answer to this request (function,
#                     echoed address/quantity/value)
# Layouts (Modbus Application Protocol v1.1b3, section 6), big-endian:
#   fc 1/2/3/4 request:  fc | address:2 | quantity:2
#   fc 1/2 response:     fc | byte count | bits, LSB first (coil `address` = bit 0)
#   fc 3/4/23 response:  fc | byte count | registers:2 each
#   fc 5/6 request and response: fc | address:2 | value:2 (coil: FF00 on, 0000 off)
#   fc 15/16 request:    fc | address:2 | quantity:2 | byte count | data
#   fc 15/16 response:   fc | address:2 | quantity:2
#   fc 23 request:       fc | read addr:2 | read qty:2 | write addr:2 | write qty:2 | byte count | data
#   exception response:  fc | 0x80 | code
from compat import const
from modbus import FrameError, ModbusException, ResponseMismatch

# Function codes: 1 read coils, 2 read discrete inputs, 3 read holding
# registers, 4 read input registers, 5 write single coil, 6 write single
# register, 15 write multiple coils, 16 write multiple registers, 23
# read/write multiple registers.

# Quantity limits of the specification (they keep every PDU within 253 bytes).
_MAX_READ_BITS = const(2000)
_MAX_READ_REGISTERS = const(125)
_MAX_WRITE_COILS = const(1968)
_MAX_WRITE_REGISTERS = const(123)
_MAX_RW_WRITE_REGISTERS = const(121)
_MAX_PDU = const(253)


class Request:
    # function, address, count (bits or registers read or written), pdu (bytes);
    # for fc 23 also write_address and write_count; values: what was written.
    def __init__(self, function, address, count, pdu, write_address=0, write_count=0, values=None):
        self.function = function
        self.address = address
        self.count = count
        self.pdu = pdu
        self.write_address = write_address
        self.write_count = write_count
        self.values = values

    def response_length(self):
        # Length of the normal response PDU; an exception response is 2.
        f = self.function
        if f == 1 or f == 2:
            return 2 + (self.count + 7) // 8
        if f == 3 or f == 4 or f == 23:
            return 2 + 2 * self.count
        return 5

    def __repr__(self):
        return "Request(fc=%d, address=%d, count=%d)" % (self.function, self.address, self.count)


def _check_range(address, count, limit, what):
    if not isinstance(count, int) or not 1 <= count <= limit:
        raise ValueError("%s: count must be 1..%d, got %r" % (what, limit, count))
    if not isinstance(address, int) or not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise ValueError("%s: address %r + %d is outside 0..65535" % (what, address, count))


def _u16(v, what):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFF:
        raise ValueError("%s: register value must be 0..65535, got %r" % (what, v))
    return v


def _read(function, address, count, limit, what):
    _check_range(address, count, limit, what)
    pdu = bytes((function, address >> 8, address & 0xFF, count >> 8, count & 0xFF))
    return Request(function, address, count, pdu)


def read_coils(address, count):
    return _read(1, address, count, _MAX_READ_BITS, "read coils")


def read_discrete_inputs(address, count):
    return _read(2, address, count, _MAX_READ_BITS, "read discrete inputs")


def read_holding_registers(address, count):
    return _read(3, address, count, _MAX_READ_REGISTERS, "read holding registers")


def read_input_registers(address, count):
    return _read(4, address, count, _MAX_READ_REGISTERS, "read input registers")


def read_registers(function, address, count):
    # fc 3 or 4 chosen by data (profiles name the function code).
    if function == 3:
        return read_holding_registers(address, count)
    if function == 4:
        return read_input_registers(address, count)
    raise ValueError("read registers: function must be 3 or 4, got %r" % (function,))


def write_single_coil(address, on):
    _check_range(address, 1, 1, "write single coil")
    value = 0xFF00 if on else 0x0000
    pdu = bytes((5, address >> 8, address & 0xFF, value >> 8, 0))
    return Request(5, address, 1, pdu, values=bool(on))


def write_single_register(address, value):
    _check_range(address, 1, 1, "write single register")
    _u16(value, "write single register")
    pdu = bytes((6, address >> 8, address & 0xFF, value >> 8, value & 0xFF))
    return Request(6, address, 1, pdu, values=value)


def pack_bits(bits):
    # LSB first: bits[0] is bit 0 of the first byte; unused high bits are 0.
    out = bytearray((len(bits) + 7) // 8)
    for i in range(len(bits)):
        if bits[i]:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def unpack_bits(data, count):
    return [bool(data[i >> 3] & (1 << (i & 7))) for i in range(count)]


def write_multiple_coils(address, bits):
    count = len(bits)
    _check_range(address, count, _MAX_WRITE_COILS, "write multiple coils")
    packed = pack_bits(bits)
    head = bytes((15, address >> 8, address & 0xFF, count >> 8, count & 0xFF, len(packed)))
    return Request(15, address, count, head + packed, values=[bool(b) for b in bits])


def _pack_registers(values, what):
    out = bytearray(2 * len(values))
    for i in range(len(values)):
        v = _u16(values[i], what)
        out[2 * i] = v >> 8
        out[2 * i + 1] = v & 0xFF
    return bytes(out)


def write_multiple_registers(address, values):
    count = len(values)
    _check_range(address, count, _MAX_WRITE_REGISTERS, "write multiple registers")
    data = _pack_registers(values, "write multiple registers")
    head = bytes((16, address >> 8, address & 0xFF, count >> 8, count & 0xFF, 2 * count))
    return Request(16, address, count, head + data, values=list(values))


def read_write_registers(read_address, read_count, write_address, values):
    # fc 23: the device writes first, then reads (spec 6.17).
    wcount = len(values)
    _check_range(read_address, read_count, _MAX_READ_REGISTERS, "read/write registers (read)")
    _check_range(write_address, wcount, _MAX_RW_WRITE_REGISTERS, "read/write registers (write)")
    data = _pack_registers(values, "read/write registers")
    head = bytes((23, read_address >> 8, read_address & 0xFF, read_count >> 8, read_count & 0xFF,
                  write_address >> 8, write_address & 0xFF, wcount >> 8, wcount & 0xFF, 2 * wcount))
    return Request(23, read_address, read_count, head + data, write_address, wcount, list(values))


def registers_from_bytes(data, pos, count):
    # count big-endian 16-bit registers from data[pos:] as a list of ints;
    # sized once: a growing list on a fragmented heap needs ever larger blocks
    regs = [0] * count
    for i in range(count):
        regs[i] = (data[pos + 2 * i] << 8) | data[pos + 2 * i + 1]
    return regs


def decode_response(request, pdu):
    # -> list of bools (fc 1, 2), list of ints (fc 3, 4, 23), bool (fc 5),
    #    int (fc 6: the value; fc 15, 16: the quantity written)
    n = len(pdu)
    if n < 2:
        raise FrameError("truncated", "response PDU of %d bytes" % n)
    fc = pdu[0]
    f = request.function
    if fc == (f | 0x80):
        if n != 2:
            raise FrameError("bad_length", "exception response of %d bytes" % n)
        raise ModbusException(f, pdu[1])
    if fc != f:
        raise ResponseMismatch("function %d answered with function %d" % (f, fc))
    want = request.response_length()
    if f <= 4 or f == 23:
        if pdu[1] != want - 2:
            raise FrameError("bad_length", "byte count %d, expected %d" % (pdu[1], want - 2))
        if n != want:
            raise FrameError("bad_length", "response of %d bytes, expected %d" % (n, want))
        if f <= 2:
            return unpack_bits(pdu[2:], request.count)
        return registers_from_bytes(pdu, 2, request.count)
    if n != want:
        raise FrameError("bad_length", "response of %d bytes, expected %d" % (n, want))
    address = (pdu[1] << 8) | pdu[2]
    value = (pdu[3] << 8) | pdu[4]
    if address != request.address:
        raise ResponseMismatch("echoed address %d, requested %d" % (address, request.address))
    if f == 5:
        if value == 0xFF00:
            on = True
        elif value == 0:
            on = False
        else:
            raise FrameError("bad_value", "coil value 0x%04x" % value)
        if on != request.values:
            raise ResponseMismatch("coil echoed %r, written %r" % (on, request.values))
        return on
    if f == 6:
        if value != request.values:
            raise ResponseMismatch("register echoed %d, written %d" % (value, request.values))
        return value
    if value != request.count:
        raise ResponseMismatch("echoed quantity %d, written %d" % (value, request.count))
    return value


def response_pdu_length(data, pos=0):
    # Length of the response PDU starting at data[pos], for delimiting frames
    # without knowing the request: -1 unknown function, 0 need more bytes.
    if len(data) <= pos:
        return 0
    fc = data[pos]
    if fc & 0x80:
        return 2 if (fc & 0x7F) in b"\x01\x02\x03\x04\x05\x06\x0f\x10\x17" else -1
    if fc in b"\x05\x06\x0f\x10":
        return 5
    if fc in b"\x01\x02\x03\x04\x17":
        if len(data) <= pos + 1:
            return 0
        bc = data[pos + 1]
        if bc == 0 or (fc >= 3 and bc & 1):
            return -1
        return 2 + bc
    return -1

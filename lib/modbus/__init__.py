# Modbus client protocol, sans-I/O: the errors shared by pdu, rtu, tcp and sunspec.
#
# ModbusError is the base of everything this package raises on bad input:
#   FrameError      a frame that cannot be a valid answer (CRC, length, MBAP)
#   ResponseMismatch a well-formed answer that does not match its request
#   ModbusException the device answered with an exception response (fc | 0x80)
#   ResponseTimeout no usable answer before the deadline
#   SessionBusy     the session's bound on outstanding requests is reached


class ModbusError(ValueError):
    pass


class FrameError(ModbusError):
    # reason: "bad_crc", "truncated", "garbage", "oversized", "bad_mbap",
    # "bad_length", "unknown_function" (a word a counter can be keyed by)
    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


class ResponseMismatch(ModbusError):
    pass


class ResponseTimeout(ModbusError):
    # last: the most specific problem seen while waiting (a FrameError), or None
    def __init__(self, detail="no response", last=None):
        super().__init__(detail)
        self.last = last


class SessionBusy(ModbusError):
    pass


# Exception codes of the Modbus Application Protocol v1.1b3, section 7.
ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04
ACKNOWLEDGE = 0x05
SERVER_DEVICE_BUSY = 0x06
NEGATIVE_ACKNOWLEDGE = 0x07  # pre-v1.1 (program commands); still seen on old devices
MEMORY_PARITY_ERROR = 0x08
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_NO_RESPONSE = 0x0B

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x07: "negative acknowledge",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


def exception_name(code):
    return EXCEPTION_NAMES.get(code, "unknown exception")


class ModbusException(ModbusError):
    # An exception response: .function (the request's function code),
    # .code (the exception code) and .name (its name in the specification).
    def __init__(self, function, code):
        self.function = function
        self.code = code
        self.name = exception_name(code)
        super().__init__("exception %d (%s) to function %d" % (code, self.name, function))


class StreamBuffer:
    # Fixed-size receive buffer (no allocation per byte or frame): append()
    # keeps the newest bytes when full and returns how many it dropped;
    # view() is what the framers decode; consume(n) drops n bytes from the front.
    def __init__(self, size):
        self._b = bytearray(size)
        self._mv = memoryview(self._b)
        self.n = 0

    def __len__(self):
        return self.n

    def view(self):
        return self._mv[:self.n]

    def clear(self):
        self.n = 0

    def consume(self, k):
        n = self.n
        if k >= n:
            self.n = 0
        else:
            self._mv[:n - k] = self._mv[k:n]
            self.n = n - k

    def append(self, data):
        size = len(self._b)
        m = len(data)
        dropped = 0
        if m >= size:
            dropped = self.n + m - size
            self._mv[:] = memoryview(data)[m - size:]
            self.n = size
            return dropped
        if self.n + m > size:
            dropped = self.n + m - size
            self.consume(dropped)
        self._mv[self.n:self.n + m] = data
        self.n += m
        return dropped

# Modbus client protocol, sans-I/O: the errors shared by pdu, rtu, tcp and sunspec.
#
# ModbusError is the base of everything this package raises on bad input:
#   FrameError      a frame that cannot be a valid answer (CRC, length, MBAP)
#   ResponseMismatch a well-formed answer that does not match its request
#   ModbusException the device answered with an exception response (fc | 0x80)
#   ResponseTimeout no usable answer before the deadline
#   SessionBusy     the session's bound on outstanding requests is reached


from compat import const

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


# Exception codes of the Modbus Application Protocol v1.1b3, section 7, and
# their names: code n is the n-th name (none for 9), one string rather than a
# dict of strings. 7 is pre-v1.1 (program commands), still seen on old devices.
_NAMES = const(("|illegal function|illegal data address|illegal data value|server device failure"
          "|acknowledge|server device busy|negative acknowledge|memory parity error|"
          "|gateway path unavailable|gateway target device failed to respond"))


def exception_name(code):
    names = _NAMES.split("|")
    return names[code] if type(code) is int and 0 < code < len(names) and names[code] else "unknown exception"


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

# The client's second transport (dlms.client.WrapperTransport): APDUs in
# IEC 62056-47 wrapper frames over a TCP connection the adapter owns. Kept
# apart from dlms.client so that an HDLC-only gateway never loads it.
from compat import const, ticks_add, ticks_diff

from dlms import wrapper
from dlms.client import _Transport

_WAIT_NONE = const(0)  # dlms.client's wait states
_WAIT_RESPONSE = const(2)


class WrapperTransport(_Transport):
    # open/close only start and end the wait; client/server: wPorts.
    def __init__(self, client=0x10, server=1, max_len=wrapper.MAX_APDU_LEN,
                 response_timeout_ms=10000):
        super().__init__()
        self.client = client
        self.server = server
        self.framer = wrapper.Framer(max_len, server, client)
        self.response_timeout_ms = response_timeout_ms
        self._deadline = None
        self._armed = False

    def open(self, now_ms=None):
        self.framer.reset()
        self._start(_WAIT_NONE)
        return []

    def close(self, now_ms=None):
        self._start(_WAIT_NONE)
        return []

    def send(self, apdu, now_ms=None):
        self._start(_WAIT_RESPONSE)
        self._armed = True
        self._deadline = None if now_ms is None else ticks_add(now_ms, self.response_timeout_ms)
        return [wrapper.encode(self.client, self.server, apdu)]

    def receive_data(self, data, now_ms=None):
        for item in self.framer.feed(data):
            if isinstance(item, wrapper.WrapperError):
                self.errors += 1
                self._fail("wrapper", item.reason)
            elif self._wait == _WAIT_RESPONSE:
                self._done(item.apdu)
            else:
                self.stray += 1
        return []

    def tick(self, now_ms):
        if self._wait == _WAIT_RESPONSE and self._armed:
            if self._deadline is None:
                self._deadline = ticks_add(now_ms, self.response_timeout_ms)
            elif ticks_diff(now_ms, self._deadline) >= 0:
                self._fail("timeout")
        return []

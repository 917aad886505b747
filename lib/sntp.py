# SNTP (RFC 4330) client packets, without I/O: the 48-byte request and the
# checks on the answer. micropython-lib's ntptime does the same exchange but
# is not published on the package index and fixes port 123; the firmware's
# adapter (gateway/net/ntp.py) owns the socket and the port.
#
# Times are unix milliseconds here (NTP counts from 1900; the era rollover
# of 2036 is handled by taking the era nearest to 2020..2156).

from compat import const
import struct

_NTP_UNIX = const(2208988800)  # seconds from 1900-01-01 to 1970-01-01
_ERA = const(1 << 32)
_MIN_UNIX = const(1577836800)  # 2020-01-01: anything earlier is a broken server


class SntpError(ValueError):
    # reason: "size", "mode", "unsynchronised", "stratum", "origin", "time"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


def _to_ntp(unix_ms):
    s = unix_ms // 1000 + _NTP_UNIX
    frac = (unix_ms % 1000) * _ERA // 1000
    return s % _ERA, frac


def _from_ntp(sec, frac):
    unix = sec - _NTP_UNIX
    if unix < _MIN_UNIX - _ERA // 2:  # era 1 (after 2036-02-07)
        unix += _ERA
    return unix * 1000 + (frac * 1000 + _ERA // 2) // _ERA


def request(nonce_ms):
    """The client's request: version 4, mode 3. nonce_ms goes in the
    transmit timestamp and must come back as the answer's origin: a reply
    to someone else's request (or a spoof that did not see ours) fails."""
    sec, frac = _to_ntp(nonce_ms)
    return struct.pack("!B39xII", 0x23, sec, frac)


def parse(reply, nonce_ms):
    """The server's answer -> (receive, transmit): the server's clock, unix
    ms, when our request came in and when its answer left. The time at our
    receive instant is about transmit + half our round trip."""
    if len(reply) < 48:
        raise SntpError("size", "%d bytes, an answer has 48" % len(reply))
    li_vn_mode, stratum = reply[0], reply[1]
    if li_vn_mode & 7 != 4:
        raise SntpError("mode", "mode %d, not a server's answer (4)" % (li_vn_mode & 7))
    if li_vn_mode >> 6 == 3:
        raise SntpError("unsynchronised", "the server's clock is not synchronised")
    if not 1 <= stratum <= 15:  # 0: kiss-o'-death or unspecified
        raise SntpError("stratum", "stratum %d" % stratum)
    o_sec, o_frac, r_sec, r_frac, t_sec, t_frac = struct.unpack_from("!IIIIII", reply, 24)
    if (o_sec, o_frac) != _to_ntp(nonce_ms):
        raise SntpError("origin", "the answer is not to our request")
    if t_sec == 0:
        raise SntpError("time", "no transmit time")
    received = _from_ntp(r_sec, r_frac)
    sent = _from_ntp(t_sec, t_frac)
    if sent < _MIN_UNIX * 1000 or sent < received:
        raise SntpError("time", "server times out of order or before 2020")
    return received, sent


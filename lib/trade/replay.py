# Replay protection for the trade protocol (docs/protocol.md, "Replay").
#
# Every sender numbers its messages with a monotonic sequence number. A
# receiver remembers, per sender, the highest number it accepted and which
# of the _WINDOW numbers below it it has seen (a bitmap, as IPsec's
# anti-replay window): a number above the highest is taken, one inside the
# window is taken once, one below the window is refused. Messages may thus
# arrive out of order (store-and-forward after an outage) but never twice.
#
# Freshness is separate: a message whose timestamp is further than
# max_skew_s from the receiver's clock is refused where the protocol says
# timing matters (commands, orders); readings may be late but not from the
# future.
from compat import const

_WINDOW = const(64)


class ReplayError(ValueError):
    # reason: "replayed", "too old", "stale", "future"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class ReplayWindow:
    """Per-sender sequence windows. max_senders bounds the memory; when a
    new sender would exceed it, ReplayError("too old") is raised for it
    rather than forgetting a known sender (forgetting would reopen replays)."""

    def __init__(self, max_senders=64):
        self.max_senders = max_senders
        self._state = {}  # kid -> [highest, bitmap]; bit i: highest - i seen

    def check(self, kid, seq):
        """Raise ReplayError if seq from kid must be refused; does not record it."""
        st = self._state.get(kid)
        if st is None:
            if len(self._state) >= self.max_senders:
                raise ReplayError("too old", "no room for another sender")
            return
        top, seen = st
        if seq > top:
            return
        back = top - seq
        if back >= _WINDOW:
            raise ReplayError("too old", "seq %d is below the window (highest %d)" % (seq, top))
        if seen >> back & 1:
            raise ReplayError("replayed", "seq %d already seen" % seq)

    def accept(self, kid, seq):
        """check(), then record seq as seen."""
        self.check(kid, seq)
        st = self._state.get(kid)
        if st is None:
            self._state[kid] = [seq, 1]
            return
        top, seen = st
        if seq > top:
            shift = seq - top
            seen = (seen << shift | 1) & ((1 << _WINDOW) - 1) if shift < _WINDOW else 1
            st[0] = seq
        else:
            seen |= 1 << (top - seq)
        st[1] = seen

    def highest(self, kid):
        st = self._state.get(kid)
        return None if st is None else st[0]

    def restore(self, kid, highest):
        """Start from a persisted highest number (after a reboot): everything
        at or below it is refused, as the bitmap was not saved."""
        self._state[kid] = [highest, (1 << _WINDOW) - 1]


def check_time(ts, now, max_skew_s=300, late_ok=False):
    """Freshness of a message timestamp against the receiver's clock."""
    if ts > now + max_skew_s:
        raise ReplayError("future", "timestamp %d is %d s ahead" % (ts, ts - now))
    if not late_ok and ts < now - max_skew_s:
        raise ReplayError("stale", "timestamp %d is %d s old" % (ts, now - ts))

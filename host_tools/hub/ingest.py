"""What the hub does with each message a device publishes: check it, store
it once, acknowledge it (docs/protocol.md, "Delivery").

Ingestion is idempotent on (device, seq): a message seen before is not
stored again but is acknowledged again, because the device resends until
an ACK reaches it. What fails a check is counted by reason and dropped
without an answer.

An ORDER whose interval's gate has closed (its interval_start <= now, or the
interval already cleared) is acknowledged but not stored: counted
`late_order`. Without the ACK the device's journal would resend it forever;
with it the device drops an order no market will ever see."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import NamedTuple

import cbor2

from host_tools.hub.cose_es256 import Rejected, decode_cose_key, loads_exact, verify1
from host_tools.hub.store import CLOSED

VERSION = 1
READING, ORDER, WITNESS, ACK = 1, 2, 6, 8
TOPIC_TYPES = {"reading": READING, "order": ORDER, "witness": WITNESS}
MAX_SKEW_S = 300  # docs/protocol.md section 6


def device_topic(community, kid, leaf):
    return f"pgw/1/{community}/dev/{kid.hex()}/{leaf}"


class DeviceMessage(NamedTuple):
    """A message that passed the checks, ready to be stored."""
    kid: bytes
    seq: int
    mtype: int
    ts: int
    data: bytes  # the COSE_Sign1 as received: what is stored
    body: bytes  # its signed payload: what tells a duplicate from a conflict
    gate_closed: bool  # an ORDER whose interval had started by the hub's clock


class Ingest:
    """clock() -> the hub's unix time (a simulation may run it faster)."""

    def __init__(self, store, key, community, clock=time.time, max_skew_s=MAX_SKEW_S):
        # max_skew_s: on a clock running N times fast, a second on the wire is N
        # seconds of its time; a simulation widens the window (docs/demo.md)
        self.max_skew_s = max_skew_s
        self.store = store
        self.key = key
        self.community = community
        self.clock = clock
        self.counts = Counter()
        self._counting = threading.Lock()  # check() may run in several threads at once
        self._keys = {}
        self.revoked = set()  # kids an installer revoked (registry.py): their messages are refused
        for kid, cose_key, _ in store.devices():
            self._keys[bytes(kid)] = decode_cose_key(bytes(cose_key))[1]

    def register(self, cose_key: bytes, name=None) -> bytes:
        kid, pub = decode_cose_key(cose_key)
        self.store.add_device(kid, cose_key, name)
        self._keys[kid] = pub
        return kid

    def _key_of(self, kid):
        if kid in self.revoked:
            raise Rejected("revoked", kid.hex())
        return self._keys.get(kid)

    def subscriptions(self):
        return [f"pgw/1/{self.community}/dev/+/{leaf}" for leaf in TOPIC_TYPES]

    def handle(self, topic: str, payload: bytes):
        """-> list of (topic, payload) to publish (the ACK), maybe empty."""
        return self.handle_batch([(topic, payload)])

    def handle_batch(self, messages):
        """[(topic, payload)] -> the ACKs to publish, in the order given:
        every message checked, the good ones stored with one commit."""
        return self.commit([m for m in (self.check(t, p) for t, p in messages) if m is not None])

    def check(self, topic: str, payload: bytes):
        """Steps 1-4 of docs/hub.md, no database -> a DeviceMessage, or None
        when refused (counted by reason). Safe in another thread than commit()."""
        try:
            return self._check(topic, payload)
        except Rejected as e:
            with self._counting:
                self.counts["rejected_" + e.reason] += 1
            return None

    def _check(self, topic, payload):
        parts = topic.split("/")
        if len(parts) != 6 or parts[:2] != ["pgw", "1"] or parts[2] != self.community or parts[3] != "dev":
            raise Rejected("topic", topic)
        want = TOPIC_TYPES.get(parts[5])
        if want is None:
            raise Rejected("topic", topic)
        kid, body = verify1(payload, self._key_of)
        if kid.hex() != parts[4]:
            raise Rejected("topic", "signed by %s, sent on %s's topic" % (kid.hex(), parts[4]))
        try:
            p = loads_exact(body)
        except Exception:
            raise Rejected("cbor", "payload") from None
        if (not isinstance(p, (list, tuple)) or len(p) < 4 or p[0] != VERSION
                or not all(type(x) is int and x >= 0 for x in p[1:4])):
            raise Rejected("format", "not [version, type, seq, ts, ...]")
        mtype, seq, ts = p[1], p[2], p[3]
        if mtype != want:
            raise Rejected("type", f"type {mtype} on the {parts[5]} topic")
        now = self.clock()
        if ts > now + self.max_skew_s:
            raise Rejected("time", f"ts {ts} is ahead of the hub's {int(now)}")
        # No lower bound (docs/protocol.md section 6): a journal replays days
        # of messages after an outage, and (device, seq) already makes a
        # replay a duplicate. An ORDER whose gate has closed is ACKed and
        # not stored (late_order), so the device's journal lets go of it.
        gate_closed = False
        if mtype == ORDER:
            start = p[4] if len(p) > 4 else None
            # docs/trading.md: the gate closes at the start. Read before the
            # insert; the rounds' `cleared` mark, checked under the lock, decides
            gate_closed = type(start) is int and start <= now
        return DeviceMessage(kid, seq, mtype, ts, payload, body, gate_closed)

    def commit(self, messages):
        """Checked DeviceMessages -> the ACKs to publish, in the order given.
        All are inserted in one transaction; the ACKs' hub seqs are taken
        and the ACKs signed only after that one commit, so an ACK never
        leaves for a message that is not durably stored."""
        if not messages:
            return []
        outcomes = []  # counted after the commit: a rolled-back batch counts nothing
        with self.store.transaction():
            results = self.store.insert_messages(
                [(m.kid, m.seq, m.mtype, m.ts, m.data, m.gate_closed) for m in messages])
            for msg, stored in zip(messages, results):
                if stored is CLOSED:
                    outcomes.append("late_order")
                elif stored is True:
                    outcomes.append("accepted")
                elif cbor2.loads(stored).value[2] == msg.body:
                    # the same message; its signature may differ (a secure element's
                    # nonces are random), the content may not
                    outcomes.append("duplicate")
                else:
                    # the same seq with other content: never ours to pick; no ACK
                    outcomes.append("rejected_conflict")
        received = time.time()
        with self._counting:
            self.counts.update(outcomes)
            for msg, outcome in zip(messages, outcomes):
                if outcome == "accepted":
                    self.store.last_arrival[msg.kid] = received
        acks = sum(o != "rejected_conflict" for o in outcomes)
        first_seq = self.store.take_seqs(acks) if acks else 0
        now = int(self.clock())
        out = []
        for msg, outcome in zip(messages, outcomes):
            if outcome != "rejected_conflict":
                out.append((device_topic(self.community, msg.kid, "in"), self._ack(first_seq, now, msg.kid, msg.seq)))
                first_seq += 1
        return out

    def ack(self, kid, seq):
        """A signed ACK with a hub seq of its own (one commit)."""
        return self._ack(self.store.take_seqs(), int(self.clock()), kid, seq)

    def _ack(self, hub_seq, now, kid, seq):
        return self.key.sign1(cbor2.dumps([VERSION, ACK, hub_seq, now, kid, seq]))

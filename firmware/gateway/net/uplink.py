# End-to-end delivery to the hub (docs/protocol.md "Delivery", docs/journal.md):
# every message the gateway signs goes into the journal first, is published
# from there, and leaves the journal only when the hub's signed ACK for its
# seq arrives. After a reconnect, or when ACKs stop coming, the backlog is
# sent again oldest first; the hub is idempotent on (device, seq).
#
# The journal keeps payloads only; a message is signed when it is sent.
# RFC 6979 nonces make that the same bytes every time with a software key.
import os

import asyncio

import cose
from compat import const, ticks_diff, ticks_ms
from journal import Journal, JournalError
from trade import messages, topics

_RESERVE = const(64)  # seqs reserved on flash at a time: one small write per 64 messages
_TAG_SIGN1 = const(b"\xd2")  # CBOR tag 18, the first byte of every signed message
_LEAF = {messages.READING: "reading", messages.ORDER: "order", messages.WITNESS: "witness"}


class SeqReservation:
    """Sequence numbers that never repeat, even when the journal is lost:
    the file holds a bound above every seq ever used, written (new file,
    then rename) before a seq beyond the previous bound is handed out."""

    def __init__(self, path, floor=0):
        self.path = path
        bound = 0
        try:
            with open(path) as f:
                bound = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pass  # no file yet, or a torn one: the journal's floor still holds
        self.next = max(bound, floor, 1)
        self._reserve()

    def _reserve(self):
        self.bound = self.next + _RESERVE
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write("%d\n" % self.bound)
        os.rename(tmp, self.path)

    def take(self):
        if self.next >= self.bound:
            self._reserve()
        seq = self.next
        self.next += 1
        return seq


class Uplink:
    """key: the device's key provider (kid, sign_digest). hub_key: (x, y, kid)
    of the hub. link: a gateway.net.mqtt.MqttLink (not yet running). clock:
    anything with ack_time(hub_ts), given the time of each verified ACK.
    on_inbound(message, raw): hub messages other than ACKs (TRADE,
    SETTLEMENT, COMMAND) and unsigned witness requests (message None).
    on_signed(seq, kind, signed): each message as it is first signed."""

    def __init__(self, key, hub_key, community, journal, seq_path, link, clock=None, log=print,
                 on_inbound=None, resend_ms=30000):
        self.key = key
        self.hub_x, self.hub_y, self.hub_kid = hub_key
        self.journal = journal
        self.link = link
        self.clock = clock
        self.log = log
        self.on_inbound = on_inbound
        self.on_signed = None
        self.on_other = None  # on_other(topic, payload): messages on the link's other topics
        self.resend_ms = resend_ms
        st = journal.stats()
        floor = max(st["newest"] or 0, st["acked"] or 0) + 1
        self.seqs = SeqReservation(seq_path, floor)
        self.in_topic = topics.device(community, key.kid, "in")
        self._in_topic = self.in_topic.encode()  # as umqtt hands topics over
        self._topics = {}
        for kind, leaf in _LEAF.items():
            self._topics[kind] = topics.device(community, key.kid, leaf)
        link.on_message = self._on_message
        link.subscriptions.append(self.in_topic)
        self._wake = asyncio.Event()
        self._sent_upto = None  # the highest seq published in this session
        self._signed_upto = 0  # the highest seq handed to on_signed
        self._session = -1
        self._oldest = None  # the oldest unacknowledged seq, and since when it is
        self._oldest_ms = ticks_ms()
        self._reached = ticks_ms()  # the hub last verified as there: an ACK, or nothing owed
        self.published = 0
        self.resends = 0
        self.acks = 0
        self.duplicate_acks = 0
        self.rejected = 0

    def submit(self, mtype, ts, fields):
        """Journal a new message for the hub -> its seq. Raises JournalFull
        (ORDER and WITNESS are refused when the journal is full) or
        ProtocolError (a field out of range)."""
        seq = self.seqs.take()
        payload = messages.encode(mtype, seq, ts, fields)
        self.journal.append(seq, mtype, payload)
        self._wake.set()
        return seq

    # ---- from the hub ----

    def hub_lookup(self, kid):
        return (self.hub_x, self.hub_y) if kid == self.hub_kid else None

    def _on_message(self, topic, payload):
        if topic != self._in_topic:
            if self.on_other is not None:  # e.g. OTA announcements and chunks
                self.on_other(topic, payload)
            return
        if payload[:1] != _TAG_SIGN1:
            # not a COSE_Sign1: a witness request (lib/trade/witness.py checks it)
            if self.on_inbound is not None:
                self.on_inbound(None, payload)
            return
        try:
            m = messages.open_signed(payload, self.hub_lookup)
        except (messages.ProtocolError, cose.CoseError) as e:
            self.rejected += 1
            # the reasons lib/trade/commands.py gives, for one vocabulary in the log
            why = getattr(e, "reason", "")
            why = "unknown_key" if why == "kid" else "signature" if why == "signature" else "malformed"
            self.log("uplink: refused a message from the hub: %s (%s)" % (why, e))
            return
        if m.type != messages.ACK:
            if self.on_inbound is not None:
                self.on_inbound(m, payload)
            return
        if m["device"] != self.key.kid:
            self.rejected += 1
            return
        self._reached = ticks_ms()
        if self.clock is not None:
            self.clock.ack_time(m.ts)
        try:
            fresh = self.journal.ack(m["acked_seq"])
        except JournalError as e:
            self.rejected += 1
            self.log("uplink: ACK %d: %s" % (m["acked_seq"], e))
            return
        if fresh:
            self.acks += 1
        else:
            self.duplicate_acks += 1

    # ---- to the hub ----

    async def run(self):
        asyncio.create_task(self.link.run())
        while True:
            await self.link.up.wait()
            if self.link.connects != self._session:
                # a new session: everything unacknowledged goes again, in order
                self._session = self.link.connects
                self._sent_upto = None
                self._oldest_ms = ticks_ms()
            else:
                self._check_oldest()
            if not self.journal.depth():
                self._reached = ticks_ms()  # connected and nothing owed: as good as an ACK
            self._wake.clear()
            await self._send_pending()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), 1000)
            except asyncio.TimeoutError:
                pass

    def _check_oldest(self):
        # The oldest unacknowledged message was sent and no ACK came for it
        # in resend_ms (the hub was away, or its ACK was lost): everything
        # from it goes again. ACKs of newer messages do not count: they
        # prove the link, not that the old one arrived.
        st = self.journal.stats()
        now = ticks_ms()
        if not st["records"] or st["oldest"] != self._oldest:
            self._oldest = st["oldest"] if st["records"] else None
            self._oldest_ms = now
        elif (self._sent_upto is not None and self._sent_upto >= self._oldest
              and ticks_diff(now, self._oldest_ms) >= self.resend_ms):
            self._sent_upto = None
            self._oldest_ms = now
            self.resends += 1
            self.log("uplink: no ACK for seq %d in %d ms, sending the backlog again" % (
                self._oldest, self.resend_ms))

    async def _send_pending(self):
        newest = self.journal.stats()["newest"]
        for seq, kind, data in self.journal.pending(self._sent_upto):
            if newest is None or seq > newest:
                break  # appended meanwhile: the next round takes it
            topic = self._topics.get(kind)
            if topic is None:
                continue
            signed = cose.sign1(data, self.key.kid, self.key)
            if seq > self._signed_upto:
                self._signed_upto = seq
                if self.on_signed is not None:
                    self.on_signed(seq, kind, signed)
            if not await self.link.publish(topic, signed):
                return  # link lost: the next session starts from the oldest again
            self._sent_upto = seq
            self.published += 1
            await asyncio.sleep_ms(0)  # let the ACKs in between

    def unreachable_ms(self):
        return ticks_diff(ticks_ms(), self._reached)

    def stats(self):
        st = self.journal.stats()
        st["published"] = self.published
        st["acks"] = self.acks
        st["duplicate_acks"] = self.duplicate_acks
        st["rejected"] = self.rejected
        st["resends"] = self.resends
        st["next_seq"] = self.seqs.next
        return st


def open_journal(directory, max_kb):
    # 8 segments: compaction frees an eighth at a time
    j = Journal(directory, segment_bytes=max_kb * 1024 // 8, max_bytes=max_kb * 1024)
    j.open()
    return j

# The A/B code slots: which ROM segment holds the version that runs, the
# trial of a new one, its commit or rollback, and the anti-rollback floor
# (docs/ota.md "Slots, trial boot and rollback"). Sans-I/O: the record is
# bytes in and out; boot.py, main.py and gateway/ota.py read and write it
# (/state/ota.txt, write-new-then-rename) and mount the segments.
#
# Rules:
# - A new version is written into the other slot while the record still
#   names the running one (stage=SEQ), marked ready once checked (ready=1),
#   and only then switched to: slot=other trial=1 tries=0, the old slot
#   kept as prev_slot/prev_seq. Each step is one atomic record write.
# - main.py counts a trial start (tries) before the app runs. A boot that
#   finds a trial already started and not committed rolls back: the
#   previous slot, and failed=SEQ. So a crash, a hang caught by the
#   watchdog, a power cut or the app's own trial deadline all roll back.
# - Anti-rollback: a version is accepted only with a sequence number above
#   the running one's (seq), and never the one that was rolled back.
# - A damaged record reads as the fresh one: slot 0, which `pgw deploy`
#   writes, seq 0, no trial. Fields of a newer firmware are ignored.
#
# This module imports nothing: boot.py loads its copy on the filesystem
# (never replaced by an update), where no other lib module is.

SLOTS = 2
SEQ_MAX = 0xFFFFFFFF  # a bundle's sequence number is a uint32 (docs/ota.md)
TRIAL_STARTS = 1  # app starts a trial gets; the next boot without a commit rolls back
RECORD_MAX = 160  # bytes: a longer record is damaged (the longest encodes in about 100)

_FIELDS = ("slot", "seq", "trial", "tries", "prev_slot", "prev_seq", "stage", "ready", "failed")
_DIGITS = "0123456789"


class SlotError(ValueError):
    # reason: "seq" (not 1..SEQ_MAX), "older" (not above the running seq),
    # "failed" (the seq that was rolled back), "trial" (a trial runs: the
    # other slot is what it rolls back to), "stage" (not the version being
    # staged), "not_ready" (switch before the staged version was checked),
    # "not_trial" (commit outside a trial); gateway/ota.py adds its own.
    def __init__(self, reason, message):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason


class SlotRecord:
    def __init__(self, slot=0, seq=0, trial=0, tries=0, prev_slot=0, prev_seq=0, stage=0, ready=0,
                 failed=0):
        self.slot = slot  # the segment to boot
        self.seq = seq  # its version's sequence number; 0: installed by `pgw deploy`
        self.trial = trial  # 1: slot runs on trial, not yet committed
        self.tries = tries  # app starts of the trial so far
        self.prev_slot = prev_slot  # during a trial: the slot and seq to roll back to
        self.prev_seq = prev_seq
        self.stage = stage  # seq being written into the other slot; 0: none
        self.ready = ready  # 1: that staged version is complete and checked
        self.failed = failed  # the last seq rolled back; 0: none

    def _copy(self, **changes):
        rec = SlotRecord(self.slot, self.seq, self.trial, self.tries, self.prev_slot, self.prev_seq,
                         self.stage, self.ready, self.failed)
        for key in changes:
            setattr(rec, key, changes[key])
        return rec

    def __eq__(self, other):
        return isinstance(other, SlotRecord) and self.encode() == other.encode()

    def __ne__(self, other):  # MicroPython does not derive it from __eq__
        return not self.__eq__(other)

    def __repr__(self):
        return "SlotRecord(%s)" % self.encode().decode().strip()

    # ---- text form ----

    def encode(self):
        text = "slot=%d seq=%d" % (self.slot, self.seq)
        if self.trial:
            text += " trial=1 tries=%d prev_slot=%d prev_seq=%d" % (self.tries, self.prev_slot, self.prev_seq)
        if self.stage:
            text += " stage=%d ready=%d" % (self.stage, self.ready)
        if self.failed:
            text += " failed=%d" % self.failed
        return (text + "\n").encode()

    @classmethod
    def decode(cls, data):
        # -> the record; a damaged one (any field not as encode() writes it,
        # or fields that contradict each other) reads as SlotRecord().
        if data is None or len(data) > RECORD_MAX:
            return cls()
        rec = cls()
        seen = []
        try:
            for field in bytes(data).decode().split():
                key, eq, value = field.partition("=")
                if key not in _FIELDS:
                    if eq and _is_name(key):
                        continue  # a field of a newer firmware: not ours to judge
                    return cls()
                if key in seen or not 1 <= len(value) <= 10:
                    return cls()
                for c in value:
                    if c not in _DIGITS:
                        return cls()
                seen.append(key)
                setattr(rec, key, int(value))
        except UnicodeError:
            return cls()
        return rec if "slot" in seen and "seq" in seen and rec._sound() else cls()

    def _sound(self):
        for n in (self.seq, self.prev_seq, self.stage, self.failed):
            if n > SEQ_MAX:
                return False
        if not (self.slot < SLOTS and self.prev_slot < SLOTS and self.trial <= 1 and self.ready <= 1):
            return False
        if self.trial and (self.prev_slot == self.slot or self.stage or self.tries > 255):
            return False
        if not self.trial and (self.tries or self.prev_slot or self.prev_seq):
            return False
        return not (self.ready and not self.stage)

    # ---- decisions ----

    def other(self):
        # the slot a new version goes into
        return (self.slot + 1) % SLOTS

    def refusal(self, seq):
        # -> why a version with this seq may not be installed, or None
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= SEQ_MAX:
            return "seq"
        if self.trial:
            return "trial"
        if seq <= self.seq:
            return "older"
        if seq == self.failed:
            return "failed"
        return None

    def accepts(self, seq):
        # the anti-rollback check: True if a version with this seq may be installed
        return self.refusal(seq) is None

    def begin(self, seq):
        # -> the record to write before the other slot is erased for seq
        why = self.refusal(seq)
        if why is not None:
            raise SlotError(why, _REFUSALS.get(why, why) % (seq, self.seq, self.failed))
        return self._copy(stage=seq, ready=0)

    def staged(self, seq):
        # -> the record once version seq is complete and checked in the other slot
        if not self.stage or self.stage != seq or self.trial:
            raise SlotError("stage", "seq %d is not being staged (stage=%d)" % (seq, self.stage))
        return self._copy(ready=1)

    def switch(self):
        # -> the record that boots the staged version on trial at the next boot
        if not self.ready:
            raise SlotError("not_ready", "no staged version is complete and checked")
        return SlotRecord(self.other(), self.stage, 1, 0, self.slot, self.seq, 0, 0, self.failed)

    def started(self):
        # -> the record to write before the app starts (main.py); self outside a trial
        return self._copy(tries=self.tries + 1) if self.trial else self

    def commit(self):
        # -> the record once the trial version is healthy: it stays
        if not self.trial:
            raise SlotError("not_trial", "slot %d (seq %d) is not on trial" % (self.slot, self.seq))
        # a failed seq at or below this one is refused as older anyway: forgotten
        return SlotRecord(self.slot, self.seq, failed=self.failed if self.failed > self.seq else 0)

    def rollback(self):
        # -> the record that boots the previous version again; self outside a trial
        if not self.trial:
            return self
        return SlotRecord(self.prev_slot, self.prev_seq, failed=self.seq)

    def at_boot(self):
        # -> (slot to mount, record to write first or None). A trial that
        # has had its starts without a commit rolls back here.
        if self.trial and self.tries >= TRIAL_STARTS:
            rec = self.rollback()
            return rec.slot, rec
        return self.slot, None

    def unmountable(self, slot):
        # slot would not mount (erased, or no ROMFS image) -> (the slot to
        # try next or None, record to write first or None): a trial rolls
        # back; anything else falls back to slot 0, which `pgw deploy` writes.
        if self.trial and slot == self.slot:
            rec = self.rollback()
            return rec.slot, rec
        if slot != 0:
            return 0, None
        return None, None


_REFUSALS = {
    "seq": "seq %r is not 1..4294967295 (running %d, rolled back %d)",
    "trial": "seq %d must wait: seq %d is on trial (rolled back %d)",
    "older": "seq %d is not above the running seq %d (rolled back %d): anti-rollback",
    "failed": "seq %d was rolled back before (running %d, rolled back %d): publish a newer seq",
}


def _is_name(key):
    for c in key:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c == "_"):
            return False
    return key != ""

# A new version into the other code slot, the switch to it at a safe
# moment, and the commit of its trial (docs/ota.md "Slots, trial boot and
# rollback"). The rules are lib/otaslots.py's; boot.py chooses the slot at
# boot and main.py counts a trial's start. The downloader feeds a verified
# ROMFS image, one chunk at a time:
#   job = begin(seq, size)           the other slot, for a new version
#   job = resume(seq, size, offset)  after a reboot: what is stored up to
#                                    offset stays (re-hash job.stored()[:offset])
#   job.write(offset, data)          in order, any length up to 4 KB
#   job.finish(sha256)               read back and checked: the version is staged
#                                    (ready=False: a firmware image follows, mark_ready(seq) after it)
#   await switch_when_safe(app)      no trade delivery due: switch() and reset
# A version may bring a full MicroPython image (gateway.otaimage, ESP32 OTA
# partitions): recorded in IMAGE_RECORD, it is set to boot with the switch,
# and the trial commits it (mark_app_valid_cancel_rollback) with the slot.
# Imported only for an update or a trial: the app does not carry it.
import hashlib
import os

import asyncio
import machine

from compat import const
from gateway import boot
from otaslots import SlotError, SlotRecord

_RECORD = const("/state/ota.txt")  # in boot.STATE_DIR, spelt out: const() folds no concatenation
IMAGE_RECORD = "/state/ota-fw.txt"  # a firmware image staged with a version: gateway.otaimage
CHUNK_MAX = const(4096)
_BLOCK = const(4096)  # erased as the writes reach it
_AHEAD_S = const(60)  # device seconds before a traded interval in which no switch starts
_POLL_MS = const(1000)


def rom_ioctl():
    # the board's vfs.rom_ioctl (the virtual board's stand-in), checked for two slots
    try:
        from vboard_rom import rom_ioctl as ioctl
    except ImportError:
        import vfs

        ioctl = getattr(vfs, "rom_ioctl", None)
    if ioctl is None or ioctl(1) < 2:
        raise SlotError("no_slots", "this board has no second ROM segment")
    return ioctl


def load():
    try:
        with open(_RECORD, "rb") as f:
            return SlotRecord.decode(f.read(200))
    except OSError:
        return SlotRecord()


def save(rec):
    try:
        os.mkdir(boot.STATE_DIR)
    except OSError:
        pass
    boot.write_atomic(_RECORD, rec.encode())


class Job:
    # One version being written into `slot`; what is stored reads back as stored().
    def __init__(self, seq, size, offset):
        self.ioctl = rom_ioctl()
        self.slot = load().other()
        if self.slot == boot.rom_slot:
            raise SlotError("mounted", "slot %d holds the code that runs" % self.slot)
        self.seg = self.ioctl(2, self.slot)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= len(self.seg):
            raise SlotError("size", "an image of %r bytes does not fit slot %d (%d bytes)"
                            % (size, self.slot, len(self.seg)))
        if offset > size:
            raise SlotError("offset", "resume at %d is past the image's %d bytes" % (offset, size))
        self.seq = seq
        self.size = size
        self.at = offset  # the next byte of the image
        self.carry = b""  # bytes short of a whole write unit, written with the next ones
        self.erased = offset  # blocks from here on are erased as the writes reach them
        self.unit = 1
        if offset < size:
            self._erase_to(offset + 1)  # the first erase tells the write unit

    def _erase_to(self, end):
        while self.erased < end:
            unit = self.ioctl(3, self.slot, self.erased, min(_BLOCK, len(self.seg) - self.erased))
            if unit < 0:
                raise SlotError("erase", "slot %d refused an erase at %d (error %d)"
                                % (self.slot, self.erased, -unit))
            self.unit = max(unit, 1)
            self.erased += _BLOCK

    def _program(self, offset, data):
        self._erase_to(offset + len(data))
        rc = self.ioctl(4, self.slot, offset, data)
        if rc:
            raise SlotError("write", "slot %d refused a write at %d (error %d)" % (self.slot, offset, rc))

    def write(self, offset, data):
        # the image's bytes at offset, right after the last ones; any length
        # up to CHUNK_MAX: whole write units go to flash, the rest waits
        n = len(data)
        if offset != self.at or n > CHUNK_MAX or offset + n > self.size:
            raise SlotError("offset", "%d bytes at %d: expected at most %d at %d, of %d"
                            % (n, offset, CHUNK_MAX, self.at, self.size))
        mv = memoryview(data)
        at = self.at - len(self.carry)
        self.at += n
        if self.carry:
            k = min(self.unit - len(self.carry), n)
            self.carry += bytes(mv[:k])
            mv = mv[k:]
            if len(self.carry) < self.unit:
                return
            self._program(at, self.carry)
            at += self.unit
        whole = len(mv) - len(mv) % self.unit
        if whole:
            self._program(at, mv[:whole])
        self.carry = bytes(mv[whole:])

    def stored(self):
        # the slot's bytes as written so far, read in place
        return self.seg[:self.at - len(self.carry)]

    def finish(self, sha256, ready=True):
        # Read back and check what the slot holds; then the version is staged
        # (ready=False: another component follows, mark_ready() once it is in).
        if self.at != self.size:
            raise SlotError("short", "%d of %d bytes written" % (self.at, self.size))
        if self.carry:  # the last unit, padded
            self._program(self.size - len(self.carry), self.carry + bytes(self.unit - len(self.carry)))
            self.carry = b""
        self.ioctl(5, self.slot)
        if hashlib.sha256(self.seg[:self.size]).digest() != sha256:
            raise SlotError("digest", "slot %d does not read back the image written" % self.slot)
        import vfs

        try:
            vfs.VfsRom(self.seg)
        except OSError:
            raise SlotError("image", "slot %d holds no ROMFS image" % self.slot)
        if ready:
            mark_ready(self.seq)


def mark_ready(seq):
    # the version being staged is complete and checked: switch() may boot it
    save(load().staged(seq))


def begin(seq, size):
    # -> a Job writing version seq (size bytes) into the other slot, from 0
    new = load().begin(seq)  # SlotError if anti-rollback (or a trial) refuses it
    save(new)  # before the first erase: no record names a half-written slot ready
    _forget_image()  # a firmware image staged before goes with an older version
    return Job(seq, size, 0)


def resume(seq, size, offset):
    # -> a Job going on with version seq at offset (a whole 4 KB block, or
    # size: all stored); the bytes before it stay as stored, for the
    # downloader to re-hash
    rec = load()
    if rec.stage != seq or rec.ready or rec.trial:
        raise SlotError("stage", "seq %d is not being written (%s)" % (seq, rec.encode().decode().strip()))
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or (offset % _BLOCK and offset != size):
        raise SlotError("offset", "resume at a whole block (%d bytes), not %r" % (_BLOCK, offset))
    return Job(seq, size, offset)


def switch():
    # The staged version boots on trial: one atomic record write, then a
    # reset. Its firmware image, if any, is set to boot first: a power cut
    # between the two boots the new image with the old code, not on trial,
    # so nothing commits it and the next reset goes back to the old one.
    rec = load().switch()  # SlotError not_ready
    image = _image()
    if image is not None and image.switch(rec.seq):  # ImageError boot
        print("pgw: firmware image set to boot with seq %d" % rec.seq)
    save(rec)
    print("pgw: switching to slot %d, seq %d (trial)" % (rec.slot, rec.seq))
    machine.reset()


def busy(app):
    # -> why switching now would cut into a trade's delivery, or None
    t = app.trading
    if t is None or app.hub is None:
        return None
    now_s = app.hub.now_s()
    if now_s is None:
        return None  # no clock: nothing is delivered (docs/trading.md)
    if t.delivering(now_s, _AHEAD_S * t.rate):
        return "a trade of ours is delivered now or within %d s" % _AHEAD_S
    return None


async def switch_when_safe(app, log=print, poll_ms=_POLL_MS):
    # Waits until no trade delivery is due, then switch(): does not return.
    if not load().ready:
        raise SlotError("not_ready", "no staged version is complete and checked")
    said = None
    while True:
        why = busy(app)
        if why is None:
            switch()
        if why != said:
            log("ota: switch waits: %s" % why)
            said = why
            # a household that trades every interval has no gap: it makes one
            # by posting no more ORDERs until the switch
            app.trading.paused = "an update waits for an interval without trades"
        await asyncio.sleep_ms(poll_ms)


def unhealthy(app):
    # -> what the trial version has not done yet, or None once it is
    # healthy: every configured meter read, and, with a hub configured, an
    # ACK from it. Without meters or a hub, running healthy_after_s is all.
    cfg = app.config
    if app.mono.ms() < cfg["healthy_after_s"] * 1000:
        return "running less than healthy_after_s"
    if cfg.get("meters"):
        if app.meters is None:
            return "meters not running"
        for h in app.meters.meters:
            if not h.good:
                return "meter %s not read yet" % h.name
    if cfg["mqtt"]["host"] and cfg["hub"]["key"]:
        if app.hub is None:
            return "no hub link: %s" % app.hub_problem
        up = app.hub.uplink
        if not up.acks + up.duplicate_acks:
            return "no ACK from the hub yet"
    return None


def _image():
    # gateway.otaimage when a firmware image was staged with a version, else None
    try:
        os.stat(IMAGE_RECORD)
    except OSError:
        return None
    from gateway import otaimage

    return otaimage


def _forget_image():
    try:
        os.remove(IMAGE_RECORD)
    except OSError:
        pass


async def watch_trial(app, log=print):
    # The app's task on a trial: commit once healthy; reset at the deadline
    # (ota.trial_s after boot), and the next boot rolls back. With a
    # firmware image, the image must be what runs, and is committed first.
    rec = load()
    image = _image()
    booted = image.not_booted(rec.seq) if image is not None else None  # fixed until a reset
    deadline_ms = app.config["ota"]["trial_s"] * 1000
    while True:
        why = booted or unhealthy(app)
        if why is None:
            break
        if app.mono.ms() >= deadline_ms:
            log("ota: seq %d not healthy after %d s (%s): reset, back to seq %d"
                % (rec.seq, deadline_ms // 1000, why, rec.prev_seq))
            machine.reset()
        await asyncio.sleep_ms(500)
    try:
        if image is not None:
            image.commit(rec.seq)  # mark_app_valid_cancel_rollback; OSError if refused
        save(load().commit())
        log("ota: seq %d healthy: committed in slot %d" % (rec.seq, rec.slot))
    except (SlotError, OSError) as e:  # the record changed under us: nothing to commit
        log("ota: commit of seq %d failed: %s" % (rec.seq, e))
    boot.forget_modules(("gateway.ota", "otaslots", "gateway.otaimage"))  # freed as this task ends

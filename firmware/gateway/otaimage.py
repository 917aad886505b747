# A full MicroPython image from an OTA bundle into the next ESP32 OTA app
# partition (docs/ota.md "Full firmware images"), beside the code the
# downloader writes into the other ROM slot. Imported only for a bundle
# with a firmware component, and on the trial that boots one.
#
# Rules:
# - the image goes to Partition(RUNNING).get_next_update(), erased a 4 KB
#   block at a time as the writes reach it and written as the checked bytes
#   stream in: no buffer of our own, nothing of the image kept in the heap;
# - resumable at whole 4 KB blocks: the bytes before stay, read back for
#   the downloader to hash again;
# - finish() reads the partition back and checks the SHA-256, then records
#   the image for the version's seq (IMAGE_RECORD in gateway.ota); only
#   switch() (gateway.ota) calls set_boot(), at the safe moment, with the
#   code slot's switch;
# - the trial that boots it: the running partition must be that one, and
#   the commit calls mark_app_valid_cancel_rollback() before the code slot
#   is committed. No commit: the bootloader boots the previous app again
#   at the next reset, as boot.py rolls back the code slot.
import hashlib
import os

import esp32
from compat import const
from gateway import boot
from gateway.ota import IMAGE_RECORD

_BLOCK = const(4096)  # the flash erase block, Partition's block size
_READ = const(1024)  # read-back piece
_MAGIC = const(0xE9)  # the first byte of an ESP32 app image


class ImageError(ValueError):
    # reason: "partition" (no OTA app partition to write), "size", "offset",
    # "flash" (the partition refused a read, write or erase), "digest",
    # "image" (not an app image), "boot" (set_boot refused it)
    def __init__(self, reason, message):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason


def next_partition():
    # -> the app partition an image is written to
    try:
        return esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    except OSError as e:
        raise ImageError("partition", "no OTA app partition to update (%s)" % e)


def room():
    # -> bytes an image may have here: the next app partition's size
    return next_partition().info()[3]


class Image:
    # One image being written into the next app partition, from offset on.
    def __init__(self, seq, size, offset):
        self.part = next_partition()
        info = self.part.info()
        self.label = info[4]
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= info[3]:
            raise ImageError("size", "an image of %r bytes does not fit %s (%d bytes)" % (size, self.label, info[3]))
        if isinstance(offset, bool) or not isinstance(offset, int) or offset % _BLOCK or not 0 <= offset <= size:
            raise ImageError("offset", "resume at a whole block (%d bytes) of %d, not %r" % (_BLOCK, size, offset))
        if self.label == esp32.Partition(esp32.Partition.RUNNING).info()[4]:
            raise ImageError("partition", "%s is the app that runs" % self.label)
        self.seq = seq
        self.size = size
        self.at = offset  # the next byte of the image
        self.erased = offset  # blocks from here on are erased as the writes reach them

    def write(self, offset, data):
        # the image's bytes at offset, right after the last ones
        n = len(data)
        if offset != self.at or offset + n > self.size:
            raise ImageError("offset", "%d bytes at %d: expected %d, of %d" % (n, offset, self.at, self.size))
        try:
            while self.erased < offset + n:
                self.part.ioctl(6, self.erased // _BLOCK)
                self.erased += _BLOCK
            self.part.writeblocks(offset // _BLOCK, data, offset % _BLOCK)
        except OSError as e:
            raise ImageError("flash", "%s refused a write at %d (%s)" % (self.label, offset, e))
        self.at += n

    def read(self, offset, mv):
        # stored bytes at offset into mv (the downloader re-hashes what a resume keeps)
        if offset + len(mv) > self.at:
            raise ImageError("offset", "%d bytes at %d: %d stored" % (len(mv), offset, self.at))
        self.part.readblocks(offset // _BLOCK, mv, offset % _BLOCK)

    def finish(self, sha256):
        # Read back and check; then the image is recorded for its version's seq.
        if self.at != self.size:
            raise ImageError("short", "%d of %d bytes written" % (self.at, self.size))
        buf = bytearray(_READ)
        mv = memoryview(buf)
        h = hashlib.sha256()
        for at in range(0, self.size, _READ):
            piece = mv[:min(_READ, self.size - at)]
            self.read(at, piece)
            if not at and piece[0] != _MAGIC:
                raise ImageError("image", "%s holds no ESP32 app image (first byte 0x%02x)" % (self.label, piece[0]))
            h.update(piece)
        if h.digest() != sha256:
            raise ImageError("digest", "%s does not read back the image written" % self.label)
        boot.write_atomic(IMAGE_RECORD, "%d %s %d %s\n" % (self.seq, self.label, self.size, sha256.hex()))


def begin(seq, size):
    return Image(seq, size, 0)


def resume(seq, size, offset):
    return Image(seq, size, offset)


def _recorded(seq):
    # -> the label of the image recorded for version seq, or None
    try:
        with open(IMAGE_RECORD) as f:
            words = f.read(160).split()
    except OSError:
        return None
    if len(words) == 4 and words[0] == str(seq):
        return words[1]
    return None


def switch(seq):
    # At the switch to version seq: its image boots at the next reset
    # (set_boot checks it, as the bootloader will). -> the label, or None
    # when no image goes with seq.
    label = _recorded(seq)
    if label is not None:
        try:
            esp32.Partition(label).set_boot()
        except OSError as e:
            raise ImageError("boot", "%s refused as the boot partition (%s)" % (label, e))
    return label


def not_booted(seq):
    # On the trial of version seq -> why its image is not what runs, or None
    label = _recorded(seq)
    if label is None:
        return None
    running = esp32.Partition(esp32.Partition.RUNNING).info()[4]
    if running != label:
        return "firmware %s did not boot (running %s)" % (label, running)
    return None


def commit(seq):
    # The trial of version seq is healthy: its image stays (before the code
    # slot is committed: a reset between the two keeps the new image with
    # the old code, never the old image with code written for the new one)
    if _recorded(seq) is not None:
        esp32.Partition.mark_app_valid_cancel_rollback()
        forget()


def forget():
    try:
        os.remove(IMAGE_RECORD)
    except OSError:
        pass

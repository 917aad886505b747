# The OTA download (docs/ota.md, "Download"): the hub's signed
# announcement, the bundle asked for a few chunks at a time, checked as it
# streams by lib/ota's reader, its code written into the other ROM slot by
# gateway.ota, and the switch at a safe moment.
#
# Resume: the manifest and index are kept in _HEAD as they pass, and a
# progress line every 4 KB of code stored (gateway.ota resumes at whole
# blocks). After a reboot or a lost link, a new reader is fed _HEAD and the
# stored code back (hashed again, not written again) and the download goes
# on from the next chunk. A bundle the reader refuses is remembered by its
# SHA-256 and not fetched again; the device keeps running what it runs.
#
# A firmware component (a full MicroPython image, after the code) is taken
# only where `esp32` has OTA app partitions; it goes to gateway.otaimage,
# imported for it alone. The code's slot is then marked ready only once the
# image is in too, and the progress counts code and image as one run of
# bytes: a resume point is a whole block of either, or the code's end.
import os

import asyncio
import cbor
import cose
from compat import const, ticks_diff, ticks_ms
from gateway import boot
from gateway import ota as install
from ota.bundle import BundleReader
from ota.manifest import KIND_FIRMWARE, KIND_INDEX, KIND_ROMFS, VENDOR_ID, OtaError, Policy, class_id
from trade import messages, topics

_HEAD = const("/state/ota-head.bin")  # in boot.STATE_DIR, spelt out: const() folds no concatenation
_PROGRESS = const("/state/ota-dl.txt")
_CHUNK = const(1024)  # the hub's chunk size (host_tools/hub/ota.py CHUNK)
_WINDOW = const(8)  # chunks one request asks for (the hub's most)
# Two requests in flight: the next is asked for while the last is still
# arriving, so the round trip is hidden. What is in flight waits in the
# socket's buffers, not in the heap: the MQTT client reads one packet at a time.
_ASK_AGAIN_MS = const(3000)  # a window not answered in this time is asked for again
_MAX_INDEX = const(16384)
_BLOCK = const(4096)


def _firmware_room():
    # bytes of the ESP32 OTA app partition an image would go to; 0: no
    # `esp32` module or no OTA partitions, so a firmware component is refused
    try:
        import esp32

        return esp32.Partition(esp32.Partition.RUNNING).get_next_update().info()[3]
    except (ImportError, OSError, AttributeError):
        return 0


def _line(path):
    try:
        with open(path) as f:
            return f.read(200).split()
    except OSError:
        return []


class _Sink:
    # Where the reader's checked bytes go: the head file, the ROM slot.
    def __init__(self, dl):
        self.dl = dl
        self.head = None
        self.job = None  # gateway.ota's Job, once the code starts
        self.image = None  # gateway.otaimage's Image, once a firmware image starts

    def _keep(self, mv):
        if self.head is None:
            self.head = open(_HEAD, "ab")
        self.head.write(mv)

    def manifest(self, m, signed, stored):
        self.dl.manifest = m
        if stored < len(signed):
            self._keep(signed[stored:])

    def component(self, kind, size, stored):
        if kind == KIND_ROMFS:
            if self.head is not None:
                self.head.close()
                self.head = None
            m = self.dl.manifest
            self.job = install.resume(m.seq, size, stored) if stored else install.begin(m.seq, size)
            self.dl.code_size = size
        elif kind == KIND_FIRMWARE:
            from gateway import otaimage

            seq = self.dl.manifest.seq
            self.image = otaimage.resume(seq, size, stored) if stored else otaimage.begin(seq, size)
        elif kind != KIND_INDEX:
            raise OtaError("components", "kind %d is not installed here" % kind)

    def index_entry(self, path, size, sha256):
        pass

    def data(self, kind, offset, mv):
        if kind == KIND_INDEX:
            self._keep(mv)
        elif kind == KIND_FIRMWARE:
            self.image.write(offset, mv)
            self.dl.code_at = self.dl.code_size + offset + len(mv)
        else:
            self.job.write(offset, mv)
            self.dl.code_at = offset + len(mv)

    def component_end(self, kind):
        m = self.dl.manifest
        if kind == KIND_ROMFS:  # with an image to come, the slot is ready only after it
            self.job.finish(m.component(KIND_ROMFS)[1], m.component(KIND_FIRMWARE) is None)
        elif kind == KIND_FIRMWARE:
            self.image.finish(m.component(KIND_FIRMWARE)[1])
            install.mark_ready(m.seq)

    def file(self, path, size, sha256, stored):
        raise OtaError("components", "files are not installed here")

    file_end = read_index = file


class OtaDownload:
    def __init__(self, app, log=print):
        cfg = app.config
        self.app = app
        self.log = log
        self.hub = app.hub
        kid = self.hub.key.kid
        c = cfg["community"]
        self.ann_topic = topics.hub(c, "ota").encode()
        self.chunk_prefix = (topics.device(c, kid, "ota") + "/").encode()
        self.ask_topic = topics.device(c, kid, "otaget")
        rkid, pub = cose.decode_key(cfg["ota"]["key"])
        slot_bytes = len(install.rom_ioctl()(2, 1))
        limits = {KIND_INDEX: _MAX_INDEX, KIND_ROMFS: slot_bytes}
        image_bytes = _firmware_room()
        if image_bytes:
            limits[KIND_FIRMWARE] = image_bytes
        self.policy = Policy(lambda k: pub if k == rkid else None, VENDOR_ID,
                             class_id(VENDOR_ID, app.board.name), install.load().seq,
                             limits, _MAX_INDEX + slot_bytes + image_bytes + 2048)
        self.wake = asyncio.Event()
        self.target = None  # (sha256, size, bundle id) being fetched
        self.reader = None
        self.manifest = None
        self.code_at = 0  # code bytes handed to the slot, then firmware image bytes after them
        self.code_size = 0  # the code component's bytes
        self.saved_at = 0  # code bytes the progress line vouches for
        self.next = 0  # the next chunk wanted
        self.asked = 0  # chunks below this have been asked for
        self.asked_ms = 0
        self.state = "idle"
        self.refused = None  # SHA-256 of the last bundle refused or staged: not fetched again
        self._skip = 0  # bytes of the next chunk already stored (a resume inside a chunk)
        p = _line(_PROGRESS)
        ready = install.load().ready
        if len(p) == 4 and int(p[3]) and ready:
            # staged, then a reboot before its done line: it is done (a download
            # with no code stored yet is not what the record says is ready)
            p = ["done", p[0]]
            boot.write_atomic(_PROGRESS, "done %s\n" % p[1])
        if len(p) == 2 and p[0] == "done":
            self.refused = bytes.fromhex(p[1])
            if ready:  # staged before a reboot: it still switches at a safe moment
                self.state = "staged"
                self.wake.set()
        elif len(p) == 4:
            self._resume(bytes.fromhex(p[0]), int(p[1]), p[2], int(p[3]))

    # ---- from the hub ----

    def on_message(self, topic, payload):
        if topic == self.ann_topic:
            self._announced(payload)
        elif topic.startswith(self.chunk_prefix) and self.reader is not None:
            try:
                n = int(topic[len(self.chunk_prefix):].decode())
            except ValueError:
                return
            if n == self.next:
                self._chunk(payload)

    def _announced(self, payload):
        try:
            m = messages.open_signed(payload, self.hub.uplink.hub_lookup)
        except (messages.ProtocolError, cose.CoseError) as e:
            self.log("ota: refused an announcement: %s" % e)
            return
        if m.type != messages.OTA:
            return
        sha, url = m["sha256"], m.fields.get("url") or ""
        if sha == self.refused:
            return
        if self.target is not None and self.target[0] == sha:
            # Again: retained after every reconnect, and each minute. What was
            # asked on a lost link is lost with it: ask again from here, now.
            if self.reader is not None:
                self.asked = self.next
                self.log("ota: at chunk %d of %d: asking again" % (self.next, -(-self.target[1] // _CHUNK)))
                self.wake.set()
            return
        if self.state in ("staged", "switching") or not url.startswith("ota/"):
            return
        self._clear()
        self.log("ota: version %s announced (%d bytes): downloading" % (m["version"], m["size"]))
        self.target = (sha, m["size"], url[4:])
        self._start(0)
        self._save()

    def _start(self, stored):
        sink = _Sink(self)
        self.reader = BundleReader(self.policy, sink, stored)
        self._skip = 0
        self.state = "downloading"
        self.wake.set()
        return sink

    def _chunk(self, payload):
        self.next += 1
        if self._skip:  # resumed inside this chunk: its first bytes are stored
            payload = memoryview(payload)[self._skip:]
            self._skip = 0
        try:
            done = self.reader.feed(payload)
            if done or self.reader.offset >= self.target[1]:
                self.reader.finish()  # every announced byte is in: short -> "truncated"
        except Exception as e:  # OtaError, SlotError, OSError; anything else is said too
            self._refuse(e)
            return
        if done:
            self.state = "staged"
            self.reader = None
            self.log("ota: version %s (seq %d) checked and staged" % (self.manifest.version, self.manifest.seq))
            self._save()
        elif self.code_at - self.saved_at >= _BLOCK:
            self._save()
        self.wake.set()

    def _refuse(self, e):
        self.log("ota: bundle refused: %s%s; keeping seq %d" % (
            "" if isinstance(e, (OtaError, install.SlotError)) else type(e).__name__ + ": ", e,
            self.policy.installed_seq))
        self.refused = self.target[0]
        self._clear()
        self._done()

    def _clear(self):
        self.target = self.reader = self.manifest = None
        self.state = "idle"
        self.code_at = self.saved_at = self.next = self.asked = self._skip = self.code_size = 0
        try:
            os.remove(_HEAD)
        except OSError:
            pass

    def _save(self):
        # What a reboot may resume from: the head and the code up to a whole block
        if self.state == "staged":
            self.refused = self.target[0]
            self._done()
            return
        at, code = self.code_at, self.code_size
        if at != code:  # a whole block of the code, or of the image after it; or the code's very end
            at -= (at - (code if at > code else 0)) % _BLOCK
        sha, size, bid = self.target
        boot.write_atomic(_PROGRESS, "%s %d %s %d\n" % (sha.hex(), size, bid, at))
        self.saved_at = at

    def _done(self):
        # this bundle is not fetched again, after a reboot either
        boot.write_atomic(_PROGRESS, "done %s\n" % self.refused.hex())

    def _resume(self, sha, size, bid, at):
        self.target = (sha, size, bid)
        if at:
            try:
                self._refeed(at)
                self.log("ota: resuming at %d of %d bytes" % (self.reader.offset, size))
                return
            except (OtaError, install.SlotError, OSError, ValueError) as e:
                self.log("ota: cannot resume (%s): starting over" % e)
        self._clear()
        self.target = (sha, size, bid)
        self._start(0)

    def _refeed(self, at):
        # The bytes kept before the reboot, through a reader told they are
        # stored: hashed and checked again, not written again. The sink
        # resumes the slot's job when the code component starts.
        head = os.stat(_HEAD)[6]
        sink = self._start(head + at)
        buf = bytearray(_CHUNK)
        mv = memoryview(buf)
        with open(_HEAD, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                self.reader.feed(mv[:n])
        if sink.job is None:
            raise OtaError("storage", "the kept head does not end where the code starts")
        code = sink.job.stored()
        end = min(at, sink.job.size)
        for i in range(0, end, _CHUNK):
            self.reader.feed(code[i:min(i + _CHUNK, end)])
        if at > end:  # and the firmware image's stored blocks, read back from its partition
            if sink.image is None:
                raise OtaError("storage", "stored bytes past the code, and no firmware image")
            for i in range(0, at - end, _CHUNK):
                piece = mv[:min(_CHUNK, at - end - i)]
                sink.image.read(i, piece)
                self.reader.feed(piece)
        self.code_at = self.saved_at = at
        self.next, self._skip = divmod(head + at, _CHUNK)

    # ---- the task ----

    async def run(self):
        link = self.hub.link
        while True:
            try:
                await asyncio.wait_for_ms(self.wake.wait(), _ASK_AGAIN_MS)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            if self.state == "staged":
                self.state = "switching"
                try:
                    await install.switch_when_safe(self.app, self.log)
                except ValueError as e:  # a firmware image set_boot refused: what runs stays
                    self.log("ota: switch refused: %s; keeping seq %d" % (e, self.policy.installed_seq))
                    self.state = "idle"
            if self.reader is None or link.state != "up":
                continue
            now = ticks_ms()
            if ticks_diff(now, self.asked_ms) >= _ASK_AGAIN_MS or self.asked < self.next:
                self.asked = self.next  # nothing arrived for a while (or a resume): ask again from here
            if self.asked - self.next <= _WINDOW:
                self.asked_ms = now
                await link.publish(self.ask_topic, _ask(self.target[2], self.asked))
                self.asked += _WINDOW


def _ask(bid, first):
    # CBOR [id, first, count]: a text of 16, two small uints
    return cbor.dumps([bid, first, _WINDOW])

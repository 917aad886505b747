# The ATECC608A/B secure element over I2C: wake, command, poll, sleep.
# lib/atecc608 encodes and checks the packets; this module moves them over a
# machine.I2C (or anything with writeto/readfrom_into that raises OSError
# on a NACK) and owns the waiting.
#
# Wake: a write to address 0x00 holds SDA low through the address byte,
# which is >60 us only at <=100 kHz: run the bus at 100 kHz or pass
# `wake_pulse`, a function that pulls SDA low some other way.
import atecc608 as se
from compat import const, sleep_ms

_POLL_MS = const(2)
_WAKE_MS = const(2)  # tWHI: SDA high 1.5 ms before the chip listens
_WAKE_TRIES = const(3)
_RX = const(67)  # longest response read: count + 64 bytes + CRC


def _retryable(exc):
    # Line trouble either way, or the watchdog about to put the chip to
    # sleep: the whole sequence is worth running again from a fresh wake.
    if exc.reason in ("crc", "length"):
        return True
    return exc.reason == "status" and exc.status in (se.STATUS_CRC, se.STATUS_WATCHDOG)


def _point(b):
    return int.from_bytes(b[:32], "big"), int.from_bytes(b[32:], "big")


class Atecc608:
    def __init__(self, i2c, address=0x60, retries=2, margin_ms=50, wake_pulse=None, sleep=sleep_ms):
        self.i2c = i2c
        self.address = address
        self.retries = retries  # extra runs of a sequence after line errors
        self.margin_ms = margin_ms  # beyond the datasheet's longest execution
        self._wake_pulse = wake_pulse
        self._sleep = sleep
        self._rx = bytearray(_RX)
        self._mv = memoryview(self._rx)
        self._config = None
        self.polls = 0  # reads NACKed while the chip was busy
        self.reruns = 0  # sequences run again after a retryable error

    # -- link
    def wake(self):
        err = None
        for _ in range(_WAKE_TRIES):
            if self._wake_pulse is not None:
                self._wake_pulse()
            else:
                try:
                    self.i2c.writeto(0, b"")
                except OSError:
                    pass  # nobody acknowledges address 0; the low pulse is what counts
            self._sleep(_WAKE_MS)
            token = self._mv[:4]
            try:
                self.i2c.readfrom_into(self.address, token)
            except OSError:
                err = se.AteccError("nack", "no answer at I2C 0x%02X after wake" % self.address)
                continue
            err = se.wake_error(token)
            if err is None:
                return
            self.idle()  # already awake, or a stale buffer: start over
        raise err

    def _word(self, word):
        try:
            self.i2c.writeto(self.address, bytes((word,)))
        except OSError:
            pass  # asleep already (the watchdog), or gone: nothing to undo

    def idle(self):
        # low power, TempKey kept, watchdog stopped
        self._word(se.WORD_IDLE)

    def sleep(self):
        # lowest power, volatile state cleared
        self._word(se.WORD_SLEEP)

    def _execute(self, packet):
        # Send one command and return its response data.
        want = se.response_len(packet[2], packet[3])
        try:
            self.i2c.writeto(self.address, packet)
        except OSError:
            raise se.AteccError("nack", "command 0x%02X not acknowledged" % packet[2])
        budget = se.max_exec_ms(packet[2]) + self.margin_ms
        waited = 0
        count = self._mv[:1]
        while True:
            # the chip NACKs its address until the command has finished
            self._sleep(_POLL_MS)
            waited += _POLL_MS
            try:
                self.i2c.readfrom_into(self.address, count)
                break
            except OSError:
                self.polls += 1
                if waited >= budget:
                    raise se.AteccError("timeout", "no response to 0x%02X in %d ms" % (packet[2], waited))
        n = self._rx[0]
        if n < 4 or n > want + 3:
            raise se.AteccError("length", "response count %d to 0x%02X" % (n, packet[2]))
        try:
            self.i2c.readfrom_into(self.address, self._mv[1:n])  # the chip goes on from byte 1
        except OSError:
            raise se.AteccError("nack", "response to 0x%02X cut off" % packet[2])
        return se.response(self._mv[:n], want)

    def run(self, *packets):
        # Wake, execute the commands in order, sleep; their data as a list.
        # A retryable error runs the whole sequence again: a Sign needs its
        # Nonce again, TempKey does not survive the sleep.
        attempt = 0
        while True:
            try:
                self.wake()
                out = [self._execute(p) for p in packets]
                self.sleep()
                return out
            except se.AteccError as exc:
                self.sleep()
                if attempt >= self.retries or not _retryable(exc):
                    raise
                attempt += 1
                self.reruns += 1

    # -- commands
    def info(self):
        # revision, e.g. 00 00 60 02 for a 608A
        return self.run(se.info())[0]

    def read_config(self):
        out = self.run(*[se.read_config(off, 32) for off in (0, 32, 64, 96)])
        config = b"".join(out)
        if se.parse_config(config)["config_locked"]:
            self._config = config  # locked: it cannot change any more
        return config

    def config(self):
        return self._config or self.read_config()

    def slot_info(self, slot):
        return se.slot_info(self.config(), slot)

    def genkey(self, slot):
        # a new private key in `slot` -> its public key (x, y)
        return _point(self.run(se.genkey(slot))[0])

    def public_key(self, slot):
        return _point(self.run(se.genkey_public(slot))[0])

    def random(self):
        return self.run(se.random())[0]

    def sign_digest(self, slot, digest):
        # ES256 over a SHA-256 digest computed by the caller -> r||s
        return self.run(se.nonce_passthrough(digest), se.sign_external(slot))[1]

    def verify_digest(self, public_key, digest, signature):
        # public_key: X||Y bytes or an (x, y) pair
        if isinstance(public_key, tuple):
            public_key = public_key[0].to_bytes(32, "big") + public_key[1].to_bytes(32, "big")
        try:
            self.run(se.nonce_passthrough(digest), se.verify_external(signature, public_key))
        except se.AteccError as exc:
            if exc.reason == "status" and exc.status == se.STATUS_MISCOMPARE:
                return False
            raise
        return True


class Atecc608Key:
    # A key provider whose P-256 private key lives in a secure element slot.
    def __init__(self, i2c, address=0x60, slot=0, **options):
        self.chip = Atecc608(i2c, address, **options)
        self.slot = slot
        self._public = None

    def check(self):
        # raise AteccError("slot") unless the slot can sign external digests
        s = self.chip.slot_info(self.slot)
        if not s["ext_sign"]:
            raise se.AteccError("slot", "slot %d holds no P-256 key for external signatures" % self.slot)

    def public_key(self):
        if self._public is None:
            self._public = self.chip.public_key(self.slot)
        return self._public

    @property
    def kid(self):
        # as SoftwareKey has it; cose is loaded by whoever signs anyway
        from cose import device_id

        return device_id(*self.public_key())

    def sign_digest(self, digest):
        return self.chip.sign_digest(self.slot, digest)

    def describe(self):
        where = "ATECC608 at I2C 0x%02X slot %d" % (self.chip.address, self.slot)
        try:
            cfg = se.parse_config(self.chip.config())
        except se.AteccError as exc:
            return "%s (unreachable: %s)" % (where, exc.reason)
        return "%s, rev %s, serial %s" % (where, cfg["revision"].hex(), cfg["serial"].hex().upper())

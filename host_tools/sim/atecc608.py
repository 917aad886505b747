"""A simulated Microchip ATECC608A on I2C, at the level of bus transactions.

`Atecc608Sim` has the methods of MicroPython's `machine.I2C` that a driver
uses (`writeto`, `readfrom`, `readfrom_into`) and answers them as the chip
would, so firmware/gateway/keys/atecc608.py runs against it unchanged:

- Only its own address answers; any other address raises OSError (a NACK,
  errno ENODEV as on the ESP32 port; `nack_errno` to change).
- States sleep, idle and awake. A transaction to address 0x00 (which
  nobody acknowledges) holds SDA low long enough to wake the chip from
  sleep or idle; the next read returns the wake token 04 11 33 43. Asleep
  or idle, the chip NACKs its address. Word address 0x01 sends it to
  sleep (volatile buffers lost), 0x02 to idle (kept), 0x00 rewinds the
  output buffer, 0x03 carries a command.
- A command is executed at once, then the chip NACKs reads for
  `exec_polls(opcode)` polls (injectable; 3 by default), so a driver's
  polling runs without real waiting. A command whose count or CRC is wrong
  gets status 0xFF; an unknown opcode or malformed parameters 0x03.
- Reads continue from an output-buffer pointer across transactions (a
  driver may read the count byte first, then the rest); past the end 0xFF.
- Info (revision), Read (config zone, 4 and 32 bytes), Nonce pass-through
  (TempKey, message digest buffer, alternate key buffer), Sign external,
  Verify external (P-256), GenKey (private and public-key modes) and Random,
  with real P-256 from `cryptography`. Private keys never leave the object;
  `public_key(slot)` lets tests check what the driver reports.
  Permissions follow the config zone (see `slot_may`): Sign needs both zones
  locked, a P-256 private slot and ReadKey bit 0; GenKey private needs the
  config locked and, once the data zone is locked, WriteConfig's GenKey bit
  and the slot not locked on its own. The sim's own choices where the
  datasheet leaves it open: a public key not on the curve gets 0x0F; reads
  outside the config zone get 0x0F (not modelled); Sign and Verify use up
  TempKey and the message digest buffer.

Fault injection: `corrupt_next(n)` (flip a bit in the CRC of the next n
command responses), `status_next(code, n)` (answer the next n commands with
`code` instead of executing them), `watchdog_next()` (the next command gets
0xEE, and once that is read the watchdog expires: the chip sleeps), and
`silent` (commands are taken but never answered: reads NACK forever).

Default config zone (`default_config`): both zones locked, I2C at
`address`; slots 0 and 3-7 P-256 private keys with GenKey and external
signatures allowed; slot 1 a fixed key (no GenKey, slot locked); slot 2
ECDH only; slot 8 plain data; slots 9-15 P-256 public keys.
"""

import errno
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (Prehashed, decode_dss_signature,
                                                             encode_dss_signature)

WAKE_TOKEN = bytes.fromhex("04113343")
REVISION = bytes.fromhex("00006002")  # ATECC608A
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

OP_READ, OP_NONCE, OP_RANDOM, OP_INFO, OP_GENKEY, OP_SIGN, OP_VERIFY = 0x02, 0x16, 0x1B, 0x30, 0x40, 0x41, 0x45
OK, MISCOMPARE, PARSE, EXECUTION, WATCHDOG, BAD_CRC = 0x00, 0x01, 0x03, 0x0F, 0xEE, 0xFF


def crc16(data):
    """The chip's CRC as its datasheet describes it, bit by bit: polynomial
    0x8005, register starting at 0, each byte fed least significant bit first."""
    crc = 0
    for byte in data:
        for bit in range(8):
            feedback = ((byte >> bit) & 1) ^ (crc >> 15)
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= 0x8005
    return crc


def packet(body):
    """count | body | CRC (LE): the framing of responses (and commands)."""
    frame = bytes([len(body) + 3]) + bytes(body)
    return frame + crc16(frame).to_bytes(2, "little")


SLOTS = {  # slot: (SlotConfig, KeyConfig)
    0: (0x2083, 0x0033),  # P-256 private: ext+int sign, secret, GenKey allowed
    1: (0x0081, 0x0033),  # fixed P-256 private: ext sign, no GenKey
    2: (0x2084, 0x0033),  # P-256 private: ECDH only
    8: (0x0000, 0x003C),  # data, readable, writable
}
for _slot in range(3, 8):
    SLOTS[_slot] = SLOTS[0]
for _slot in range(9, 16):
    SLOTS[_slot] = (0x0000, 0x0030)  # P-256 public key


def default_config(address=0x60, serial=bytes.fromhex("01239a5f3c71d208ee"), locked=True):
    """A 608A config zone as a provisioned device has it (see module doc)."""
    c = bytearray(128)
    c[0:4] = serial[0:4]
    c[4:8] = REVISION
    c[8:13] = serial[4:9]
    c[13] = 0x01  # AES enabled
    c[14] = 0x01  # I2C
    c[16] = address << 1
    for slot, (slot_config, key_config) in SLOTS.items():
        c[20 + 2 * slot:22 + 2 * slot] = slot_config.to_bytes(2, "little")
        c[96 + 2 * slot:98 + 2 * slot] = key_config.to_bytes(2, "little")
    c[52:68] = bytes.fromhex("ffffffff00000000") * 2  # counters at 0
    c[86] = c[87] = 0x00 if locked else 0x55  # LockValue, LockConfig
    slot_locked = 0xFFFF & ~(1 << 1)  # slot 1 locked on its own
    c[88:90] = slot_locked.to_bytes(2, "little")
    return bytes(c)


def _pubkey_bytes(key):
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


class _Status(Exception):
    def __init__(self, code):
        super().__init__("status 0x%02X" % code)
        self.code = code


class Atecc608Sim:
    def __init__(self, address=0x60, config=None, seed=b"pgw-atecc608-sim", exec_polls=None,
                 nack_errno=errno.ENODEV):
        self.address = address
        self.config = bytearray(config if config is not None else default_config(address))
        self.exec_polls = exec_polls or (lambda opcode: 3)
        self.nack_errno = nack_errno
        self.seed = bytes(seed)
        self.state = "sleep"
        self._keys = {}
        for slot in range(16):
            if self.slot_may(slot, "private"):
                self._keys[slot] = self._derive_key(b"slot%d" % slot)
        self._generated = 0
        self._randoms = 0
        self._tempkey = None  # (bytes, from pass-through)
        self._digest_buffer = None
        self._alt_key = None
        self._out = b""
        self._pos = 0
        self._busy = 0
        self._sleep_when_read = False
        # faults
        self.silent = False
        self._corrupt = 0
        self._statuses = []
        self._watchdog = False
        # what happened, for tests
        self.commands = []  # opcodes executed
        self.wakes = 0
        self.nacks = 0
        self.bad_crc_commands = 0

    # -- fault injection
    def corrupt_next(self, n=1):
        self._corrupt += n

    def status_next(self, code, n=1):
        self._statuses.extend([code] * n)

    def watchdog_next(self):
        self._watchdog = True

    # -- what tests may look at
    def public_key(self, slot):
        """X||Y of the key in `slot` (the private key stays in here)."""
        return _pubkey_bytes(self._keys[slot])

    def slot_may(self, slot, what):
        """Whether the config lets `slot` do `what`: "private" (holds a
        P-256 private key), "sign", "genkey", "pubkey"."""
        if not 0 <= slot <= 15:
            return False
        c = self.config
        slot_config = int.from_bytes(c[20 + 2 * slot:22 + 2 * slot], "little")
        key_config = int.from_bytes(c[96 + 2 * slot:98 + 2 * slot], "little")
        private = bool(key_config & 1) and (key_config >> 2) & 7 == 4
        config_locked = c[87] != 0x55
        data_locked = c[86] != 0x55
        slot_locked = not (int.from_bytes(c[88:90], "little") >> slot) & 1
        if what == "private":
            return private
        if what == "sign":
            return private and config_locked and data_locked and bool(slot_config & 1)
        if what == "genkey":
            return (private and config_locked and not slot_locked
                    and (not data_locked or bool((slot_config >> 12) & 2)))
        if what == "pubkey":
            return private and config_locked and (not data_locked or bool(key_config & 2))
        raise ValueError(what)

    # -- the bus
    def _nack(self):
        self.nacks += 1
        raise OSError(self.nack_errno, "I2C NACK")

    def writeto(self, addr, buf, stop=True):
        if addr == 0x00:
            # SDA held low through the address byte: the wake pulse
            if self.state != "awake":
                self.state = "awake"
                self.wakes += 1
                self._set_output(WAKE_TOKEN)
            self._nack()
        if addr != self.address or self.state != "awake" or self._busy:
            self._nack()
        buf = bytes(buf)
        if not buf:
            return 1
        word = buf[0]
        if word == 0x00:
            self._pos = 0
        elif word == 0x01:
            self._fall_asleep()
        elif word == 0x02:
            self.state = "idle"
        elif word == 0x03:
            self._command(buf[1:])
        return len(buf)

    def readfrom(self, addr, n, stop=True):
        buf = bytearray(n)
        self.readfrom_into(addr, buf, stop)
        return bytes(buf)

    def readfrom_into(self, addr, buf, stop=True):
        if addr != self.address or self.state != "awake":
            self._nack()
        if self._busy:
            if not self.silent:
                self._busy -= 1
            self._nack()
        n = len(buf)
        chunk = self._out[self._pos:self._pos + n]
        buf[:] = chunk + b"\xff" * (n - len(chunk))
        self._pos += n
        if self._sleep_when_read and self._pos >= len(self._out):
            self._fall_asleep()  # the watchdog expired

    def _fall_asleep(self):
        self.state = "sleep"
        self._tempkey = self._digest_buffer = self._alt_key = None
        self._sleep_when_read = False

    def _set_output(self, data):
        self._out = bytes(data)
        self._pos = 0

    # -- commands
    def _command(self, pkt):
        if len(pkt) < 7 or pkt[0] != len(pkt) or crc16(pkt[:-2]) != int.from_bytes(pkt[-2:], "little"):
            self.bad_crc_commands += 1
            self._set_output(packet([BAD_CRC]))
            return
        opcode, param1, param2, data = pkt[1], pkt[2], int.from_bytes(pkt[3:5], "little"), pkt[5:-2]
        self.commands.append(opcode)
        self._busy = max(0, int(self.exec_polls(opcode)))
        if self._statuses:
            body = [self._statuses.pop(0)]
        elif self._watchdog:
            self._watchdog = False
            self._sleep_when_read = True
            body = [WATCHDOG]
        else:
            handler = {OP_INFO: self._info, OP_READ: self._read, OP_NONCE: self._nonce,
                       OP_SIGN: self._sign, OP_VERIFY: self._verify, OP_GENKEY: self._genkey,
                       OP_RANDOM: self._random}.get(opcode)
            try:
                if handler is None:
                    raise _Status(PARSE)
                body = handler(param1, param2, data)
            except _Status as status:
                body = [status.code]
        out = bytearray(packet(body))
        if self._corrupt:
            self._corrupt -= 1
            out[-1] ^= 0x01
        self._set_output(out)

    def _info(self, mode, param2, data):
        if mode != 0 or param2 or data:
            raise _Status(PARSE)  # only the revision mode is modelled
        return self.config[4:8]

    def _read(self, param1, param2, data):
        if data or param1 & 0x7C:
            raise _Status(PARSE)
        if param1 & 3 != 0:
            raise _Status(EXECUTION)  # OTP and data zone reads are not modelled
        length = 32 if param1 & 0x80 else 4
        block, word = (param2 >> 3) & 3, param2 & 7
        if param2 >> 5 or (length == 32 and word):
            raise _Status(PARSE)
        offset = block * 32 + word * 4
        return self.config[offset:offset + length]

    def _nonce(self, mode, param2, data):
        if mode & 3 != 3 or param2 or mode & 0x1C:
            raise _Status(PARSE)  # only pass-through is modelled
        if len(data) != (64 if mode & 0x20 else 32):
            raise _Status(PARSE)
        target = mode & 0xC0
        if target == 0x00:
            self._tempkey = bytes(data)
        elif target == 0x40:
            self._digest_buffer = bytes(data)
        elif target == 0x80:
            self._alt_key = bytes(data)
        else:
            raise _Status(PARSE)
        return [OK]

    def _message(self, mode):
        # the digest Sign/Verify work on; either source is used up
        if mode & 0x20:
            message, self._digest_buffer = self._digest_buffer, None
        else:
            message, self._tempkey = self._tempkey, None
        if message is None:
            raise _Status(EXECUTION)
        return message[:32]

    def _sign(self, mode, slot, data):
        if mode & ~0xA0 or not mode & 0x80 or data:
            raise _Status(PARSE)  # only external messages are modelled
        if not self.slot_may(slot, "sign") or slot not in self._keys:
            raise _Status(EXECUTION)
        digest = self._message(mode)
        der = self._keys[slot].sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def _verify(self, mode, key_type, data):
        if mode & ~0x27 or mode & 7 != 2 or key_type != 4 or len(data) != 128:
            raise _Status(PARSE)  # external mode, P-256, no MAC output
        digest = self._message(mode)
        signature, public = data[:64], data[64:]
        try:
            key = ec.EllipticCurvePublicNumbers(int.from_bytes(public[:32], "big"),
                                                int.from_bytes(public[32:], "big"),
                                                ec.SECP256R1()).public_key()
        except ValueError:
            raise _Status(EXECUTION) from None  # not a point on the curve
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
            return [MISCOMPARE]
        try:
            key.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature:
            return [MISCOMPARE]
        return [OK]

    def _genkey(self, mode, slot, data):
        if mode & ~0x04 or data or not 0 <= slot <= 15:
            raise _Status(PARSE)  # the digest modes are not modelled
        if mode & 0x04:
            if not self.slot_may(slot, "genkey"):
                raise _Status(EXECUTION)
            self._generated += 1
            self._keys[slot] = self._derive_key(b"genkey%d" % self._generated)
        elif not self.slot_may(slot, "pubkey") or slot not in self._keys:
            raise _Status(EXECUTION)
        return _pubkey_bytes(self._keys[slot])

    def _random(self, mode, param2, data):
        if mode > 1 or param2 or data:
            raise _Status(PARSE)
        if self.config[87] == 0x55:
            return bytes.fromhex("ffff0000") * 8  # what an unlocked chip returns
        self._randoms += 1
        return hashlib.sha256(self.seed + b"random%d" % self._randoms).digest()

    def _derive_key(self, label):
        # deterministic keys: a test run is the same every time
        d = int.from_bytes(hashlib.sha256(self.seed + label).digest(), "big") % (P256_ORDER - 1) + 1
        return ec.derive_private_key(d, ec.SECP256R1())

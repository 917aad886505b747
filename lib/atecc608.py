# Microchip ATECC608A/B (and 508A) secure element: the I2C packet layer,
# command encodings and the config zone, sans-I/O. The I/O (wake, polling,
# idle/sleep) is firmware/gateway/keys/atecc608.py.
#
# A command is written after word address 0x03:
#   03 | count | opcode | param1 | param2 (LE16) | data | CRC (LE16)
# count covers itself through the CRC. A response is read as
#   count | data | CRC (LE16)
# and a 4-byte response (count 4) carries one status byte instead of data.
# The CRC covers count..data: polynomial 0x8005, initial 0, input bits
# LSB-first into a register that is not reflected on output, i.e. the
# 16-bit reflection of CRC-16/ARC.
from compat import const

WORD_RESET = const(0x00)
WORD_SLEEP = const(0x01)
WORD_IDLE = const(0x02)
WORD_COMMAND = const(0x03)

OP_READ = const(0x02)
OP_NONCE = const(0x16)
OP_RANDOM = const(0x1B)
OP_INFO = const(0x30)
OP_GENKEY = const(0x40)
OP_SIGN = const(0x41)
OP_VERIFY = const(0x45)

STATUS_OK = const(0x00)
STATUS_MISCOMPARE = const(0x01)
STATUS_PARSE = const(0x03)
STATUS_ECC_FAULT = const(0x05)
STATUS_SELF_TEST = const(0x07)
STATUS_HEALTH_TEST = const(0x08)
STATUS_EXECUTION = const(0x0F)
STATUS_AFTER_WAKE = const(0x11)
STATUS_WATCHDOG = const(0xEE)
STATUS_CRC = const(0xFF)

ZONE_CONFIG = const(0)
ZONE_OTP = const(1)
ZONE_DATA = const(2)

# Nonce pass-through targets (Nonce mode bits 6-7; 608 only beyond TempKey)
TARGET_TEMPKEY = const(0x00)
TARGET_MSG_DIGEST = const(0x40)
TARGET_ALT_KEY = const(0x80)
# Sign/Verify message source (mode bit 5; the digest buffer is 608 only)
SOURCE_TEMPKEY = const(0x00)
SOURCE_MSG_DIGEST = const(0x20)

# 04 | status 0x11 | CRC: what the chip answers right after a wake
WAKE_TOKEN = b"\x04\x11\x33\x43"

_KEYTYPE_P256 = const(4)
_VERIFY_EXTERNAL = const(0x02)
_GENKEY_PRIVATE = const(0x04)
_SIGN_EXTERNAL = const(0x80)
_MAX_COUNT = const(155)  # largest packet the 608's input buffer takes
_UNLOCKED = const(0x55)  # LockValue/LockConfig value of an unlocked zone

# CRC-16/ARC (poly 0x8005 reflected = 0xA001) four bits at a time: 16
# entries instead of 256 keep the import small.
_CRC_NIBBLE = (0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
               0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400)


class AteccError(Exception):
    # reason: "crc", "status" (.status holds the chip's code), "length",
    # "timeout", "nack", "wake", "arg" (a bad argument to a builder),
    # "slot" (a slot that cannot do what was asked).
    def __init__(self, reason, message="", status=None):
        super().__init__(message or reason)
        self.reason = reason
        self.status = status


def crc16(data, start=0, end=None):
    # The chip's CRC of data[start:end]; on the wire low byte first.
    if end is None:
        end = len(data)
    t = _CRC_NIBBLE
    crc = 0
    for i in range(start, end):
        crc ^= data[i]
        crc = (crc >> 4) ^ t[crc & 0xF]
        crc = (crc >> 4) ^ t[crc & 0xF]
    out = 0  # reflect: the chip's register is not reflected on output
    for _ in range(16):
        out = (out << 1) | (crc & 1)
        crc >>= 1
    return out


def status_name(code):
    names = {0x00: "success", 0x01: "miscompare", 0x03: "parse error",
             0x05: "ECC fault", 0x07: "self-test error", 0x08: "health test error",
             0x0F: "execution error", 0x11: "after wake", 0xEE: "watchdog about to expire",
             0xFF: "CRC or communication error"}
    return names.get(code, "unknown status")


def command(opcode, param1=0, param2=0, data=b""):
    # The bytes to write for one command, word address 0x03 first.
    n = 7 + len(data)
    if n > _MAX_COUNT:
        raise AteccError("arg", "command too long (%d bytes)" % n)
    p = bytearray(n + 1)
    p[0] = WORD_COMMAND
    p[1] = n
    p[2] = opcode
    p[3] = param1
    p[4] = param2 & 0xFF
    p[5] = (param2 >> 8) & 0xFF
    p[6:n - 1] = data
    c = crc16(p, 1, n - 1)
    p[n - 1] = c & 0xFF
    p[n] = c >> 8
    return p


def _slot(slot):
    if not 0 <= slot <= 15:
        raise AteccError("arg", "slot %d not in 0..15" % slot)
    return slot


def _sized(data, n, what):
    if len(data) != n:
        raise AteccError("arg", "%s must be %d bytes, not %d" % (what, n, len(data)))
    return data


def info(mode=0):
    # mode 0: the 4-byte revision (00 00 60 02 for a 608A)
    return command(OP_INFO, mode)


def read_address(zone, slot=0, block=0, offset=0):
    # Read/Write param2: config and OTP are addressed block<<3 | word,
    # the data zone block<<8 | slot<<3 | word (words of 4 bytes).
    if zone == ZONE_DATA:
        return (block << 8) | (_slot(slot) << 3) | offset
    return (block << 3) | offset


def read(zone, address, length=4):
    # Read 4 or 32 bytes; a 32-byte read starts on a block (word 0 of it).
    if length not in (4, 32) or zone not in (ZONE_CONFIG, ZONE_OTP, ZONE_DATA):
        raise AteccError("arg", "read of %d bytes in zone %d" % (length, zone))
    if length == 32 and address & 7:
        raise AteccError("arg", "32-byte read not on a block")
    return command(OP_READ, zone | (0x80 if length == 32 else 0), address)


def read_config(offset, length=4):
    # Read the config zone at byte `offset`, aligned to `length`.
    if not 0 <= offset < 128 or offset % length:
        raise AteccError("arg", "config offset %d for %d bytes" % (offset, length))
    return read(ZONE_CONFIG, offset >> 2, length)


def nonce_passthrough(num_in, target=TARGET_TEMPKEY):
    # Load 32 (or 64) bytes as they are into TempKey or another buffer.
    if len(num_in) not in (32, 64):
        raise AteccError("arg", "nonce input must be 32 or 64 bytes")
    return command(OP_NONCE, 0x03 | target | (0x20 if len(num_in) == 64 else 0), 0, num_in)


def sign_external(slot, source=SOURCE_TEMPKEY):
    # ECDSA-sign the digest loaded by a pass-through Nonce -> r||s
    return command(OP_SIGN, _SIGN_EXTERNAL | source, _slot(slot))


def verify_external(signature, public_key, source=SOURCE_TEMPKEY):
    # Check r||s over the loaded digest against a P-256 key X||Y: status 0 or 1.
    data = bytes(_sized(signature, 64, "signature")) + bytes(_sized(public_key, 64, "public key"))
    return command(OP_VERIFY, _VERIFY_EXTERNAL | source, _KEYTYPE_P256, data)


def genkey(slot):
    # A new random private key in `slot` -> its public key X||Y
    return command(OP_GENKEY, _GENKEY_PRIVATE, _slot(slot))


def genkey_public(slot):
    # The public key X||Y of the private key already in `slot`
    return command(OP_GENKEY, 0, _slot(slot))


def random():
    return command(OP_RANDOM, 0)


def response_len(opcode, mode):
    # Data bytes of a successful response (1: a status byte only).
    if opcode == OP_SIGN or (opcode == OP_GENKEY and not mode & 0x10):
        return 64
    if opcode == OP_READ:
        return 32 if mode & 0x80 else 4
    if opcode == OP_INFO:
        return 4
    if opcode == OP_RANDOM or (opcode == OP_NONCE and mode & 3 != 3):
        return 32
    if opcode == OP_VERIFY:
        return 32 if mode & 0x80 else 1
    return 1


def max_exec_ms(opcode):
    # Longest execution at the 608's default clock (ChipMode divider 0),
    # from the datasheet's execution-time table, rounded up.
    if opcode in (OP_SIGN, OP_GENKEY):
        return 115
    if opcode == OP_VERIFY:
        return 105
    if opcode == OP_RANDOM:
        return 23
    if opcode == OP_NONCE:
        return 20
    return 5  # Info, Read


def response(packet, data_len):
    # Data of a response read from the chip (count byte first; bytes after
    # `count` are ignored, so a reused buffer can be passed).
    n = len(packet)
    if n < 1:
        raise AteccError("length", "empty response")
    count = packet[0]
    if count < 4 or count > n:
        raise AteccError("length", "response count %d with %d bytes read" % (count, n))
    crc = crc16(packet, 0, count - 2)
    if packet[count - 2] != crc & 0xFF or packet[count - 1] != crc >> 8:
        raise AteccError("crc", "response CRC mismatch")
    if count == 4:
        status = packet[1]
        if status != STATUS_OK:
            raise AteccError("status", "status 0x%02X: %s" % (status, status_name(status)), status)
        if data_len == 1:
            return b"\x00"
    if count != data_len + 3:
        raise AteccError("length", "response of %d bytes, %d expected" % (count, data_len + 3))
    return bytes(packet[1:count - 2])


def wake_error(packet):
    # The error for a wake read that is not WAKE_TOKEN (None if it is).
    packet = bytes(packet)
    if packet == WAKE_TOKEN:
        return None
    try:
        response(packet, 1)
    except AteccError as exc:
        if exc.reason == "status":
            return AteccError("wake", "wake answered " + str(exc), exc.status)
    return AteccError("wake", "wake answered " + packet.hex())


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _config(config):
    if len(config) != 128:
        raise AteccError("length", "config zone must be 128 bytes, not %d" % len(config))
    return config


def parse_config(config):
    # The device-wide fields of the 128-byte config zone.
    c = _config(config)
    return {
        "serial": bytes(c[0:4]) + bytes(c[8:13]),
        "revision": bytes(c[4:8]),
        "i2c_enable": bool(c[14] & 1),
        "i2c_address": c[16] >> 1,  # stored as the 8-bit write address
        "chip_mode": c[19],
        "watchdog_ms": 10000 if c[19] & 4 else 1300,
        "config_locked": c[87] != _UNLOCKED,
        "data_locked": c[86] != _UNLOCKED,
        "slot_locked": _u16(c, 88) ^ 0xFFFF,  # bit n set: slot n locked
    }


def slot_info(config, slot):
    # SlotConfig and KeyConfig of one slot as readable flags.
    c = _config(config)
    _slot(slot)
    sc = _u16(c, 20 + 2 * slot)
    kc = _u16(c, 96 + 2 * slot)
    private = bool(kc & 1)
    key_type = (kc >> 2) & 7
    p256 = key_type == _KEYTYPE_P256
    read_key = sc & 0xF  # for a P-256 private key: which uses are allowed
    write_config = sc >> 12
    secret = bool(sc & 0x80)
    config_locked = c[87] != _UNLOCKED
    data_locked = c[86] != _UNLOCKED
    slot_locked = not (_u16(c, 88) >> slot) & 1
    ecc_private = private and p256
    return {
        "slot": slot,
        "slot_config": sc,
        "key_config": kc,
        "private": private,
        "key_type": ("p256" if p256 else "aes" if key_type == 6 else
                     "data" if key_type == 7 else "reserved"),
        "pub_info": bool(kc & 2),
        "lockable": bool(kc & 0x20),
        "req_random": bool(kc & 0x40),
        "req_auth": bool(kc & 0x80),
        "auth_key": (kc >> 8) & 0xF,
        "read_key": read_key,
        "no_mac": bool(sc & 0x10),
        "limited_use": bool(sc & 0x20),
        "encrypt_read": bool(sc & 0x40),
        "secret": secret,
        "write_key": (sc >> 8) & 0xF,
        "write_config": write_config,
        "ext_sign": ecc_private and bool(read_key & 1),
        "int_sign": ecc_private and bool(read_key & 2),
        "ecdh": ecc_private and bool(read_key & 4),
        # GenKey needs the config locked; after the data lock also
        # WriteConfig's GenKey bit and a slot not locked on its own.
        "genkey": (ecc_private and config_locked and not slot_locked
                   and (not data_locked or bool(write_config & 2))),
        # the data zone is readable only once locked, in clear if not secret
        "readable": data_locked and not private and not secret,
        "config_locked": config_locked,
        "data_locked": data_locked,
        "slot_locked": slot_locked,
    }

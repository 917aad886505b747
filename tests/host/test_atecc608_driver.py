"""The firmware's ATECC608 driver (firmware/gateway/keys/atecc608.py) against
the simulated chip (host_tools/sim/atecc608.py) at the level of I2C
transactions: wake, polling, retries and faults, with signatures checked by
`cryptography`. No real waiting: the driver is handed a sleep that only
adds up the milliseconds it was asked for."""

import errno
import hashlib
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "firmware", ROOT / "lib"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import atecc608 as se  # noqa: E402
from gateway.keys.atecc608 import Atecc608, Atecc608Key  # noqa: E402

from host_tools.sim.atecc608 import Atecc608Sim, crc16, default_config, packet  # noqa: E402

DIGEST = hashlib.sha256(b"meter 1 reading 2025-06-21T10:00:07Z 1234.5 kWh").digest()


class FakeSleep:
    def __init__(self):
        self.total_ms = 0
        self.calls = 0

    def __call__(self, ms):
        self.total_ms += ms
        self.calls += 1


def chip(sim=None, **options):
    sim = sim or Atecc608Sim()
    sleep = FakeSleep()
    return sim, Atecc608(sim, sleep=sleep, **options), sleep


def verify_with_cryptography(x, y, digest, signature):
    key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_sim_crc_agrees_with_lib():
    data = bytes(range(256)) * 2
    for n in (0, 1, 5, 39, 135, 512):
        assert crc16(data[:n]) == se.crc16(data[:n]), n


def test_wake_and_info():
    sim, c, sleep = chip()
    assert c.info() == bytes.fromhex("00006002")
    assert sim.wakes == 1
    assert sim.commands == [se.OP_INFO]
    assert sim.state == "sleep"  # put back to sleep after the command
    assert sleep.total_ms >= 2  # the wake's tWHI


def test_polling_follows_the_chip():
    sim, c, _ = chip(Atecc608Sim(exec_polls=lambda opcode: 10 if opcode == se.OP_INFO else 0))
    c.info()
    assert c.polls == 10
    assert sim.nacks >= 10


def test_wake_when_already_awake():
    # a chip left awake with its output buffer read: the wake pulse does
    # nothing, the read gives no token, and the driver idles and wakes it
    sim, c, _ = chip()
    c.wake()
    c._execute(se.info())
    assert sim.state == "awake"
    assert c.info() == bytes.fromhex("00006002")
    assert sim.wakes == 2


def test_read_config_and_slots():
    sim, c, _ = chip()
    config = c.read_config()
    assert config == default_config()
    assert sim.commands == [se.OP_READ] * 4
    cfg = se.parse_config(config)
    assert cfg["serial"].hex() == "01239a5f3c71d208ee"
    assert cfg["i2c_address"] == 0x60
    assert cfg["config_locked"] and cfg["data_locked"]
    s0 = c.slot_info(0)
    assert s0["private"] and s0["key_type"] == "p256" and s0["ext_sign"] and s0["genkey"]
    assert not s0["readable"]
    s1 = c.slot_info(1)
    assert s1["ext_sign"] and s1["slot_locked"] and not s1["genkey"]
    s2 = c.slot_info(2)
    assert s2["ecdh"] and not s2["ext_sign"]
    assert c.slot_info(8)["readable"]
    assert c.slot_info(9)["key_type"] == "p256" and not c.slot_info(9)["private"]
    assert sim.commands == [se.OP_READ] * 4  # locked config read once


def test_genkey_sign_and_verify_with_cryptography():
    sim, c, _ = chip()
    old = c.public_key(0)
    x, y = c.genkey(0)
    assert (x, y) != old
    assert sim.public_key(0) == x.to_bytes(32, "big") + y.to_bytes(32, "big")
    assert c.public_key(0) == (x, y)
    signature = c.sign_digest(0, DIGEST)
    assert len(signature) == 64
    verify_with_cryptography(x, y, DIGEST, signature)
    with pytest.raises(InvalidSignature):
        verify_with_cryptography(x, y, hashlib.sha256(b"other").digest(), signature)
    assert sim.commands[-2:] == [se.OP_NONCE, se.OP_SIGN]


def test_verify_external_true_and_false():
    sim, c, _ = chip()
    x, y = c.public_key(0)
    signature = c.sign_digest(0, DIGEST)
    assert c.verify_digest((x, y), DIGEST, signature) is True
    pub = x.to_bytes(32, "big") + y.to_bytes(32, "big")
    assert c.verify_digest(pub, DIGEST, signature) is True
    assert c.verify_digest(pub, hashlib.sha256(b"tampered").digest(), signature) is False
    bad = bytearray(signature)
    bad[40] ^= 0x01
    assert c.verify_digest(pub, DIGEST, bytes(bad)) is False
    assert c.verify_digest(c.public_key(3), DIGEST, signature) is False
    assert c.verify_digest(pub, DIGEST, bytes(64)) is False  # r = s = 0


def test_verify_external_of_a_foreign_signature():
    key = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(DIGEST, ec.ECDSA(Prehashed(hashes.SHA256()))))
    numbers = key.public_key().public_numbers()
    sim, c, _ = chip()
    assert c.verify_digest((numbers.x, numbers.y), DIGEST, r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_bad_status_is_reported_with_its_code():
    sim, c, _ = chip()
    sim.status_next(0x0F)
    with pytest.raises(se.AteccError) as info:
        c.info()
    assert info.value.reason == "status" and info.value.status == 0x0F
    assert sim.commands == [se.OP_INFO]  # an execution error is not retried
    assert sim.state == "sleep"


def test_config_refuses_what_the_slot_may_not_do():
    sim, c, _ = chip()
    for call in (lambda: c.sign_digest(2, DIGEST), lambda: c.genkey(1), lambda: c.public_key(9)):
        with pytest.raises(se.AteccError) as info:
            call()
        assert info.value.reason == "status" and info.value.status == se.STATUS_EXECUTION


def test_crc_error_on_a_response_is_retried():
    sim, c, _ = chip()
    x, y = c.public_key(0)
    sim.commands.clear()
    sim.corrupt_next(1)  # the Nonce's answer
    signature = c.sign_digest(0, DIGEST)
    verify_with_cryptography(x, y, DIGEST, signature)
    assert c.reruns == 1
    assert sim.commands == [se.OP_NONCE, se.OP_NONCE, se.OP_SIGN]


def test_crc_error_on_a_command_is_retried():
    # the line flips a bit of the next command: the chip answers 0xFF
    class FlakyLine:
        def __init__(self, sim, n):
            self.sim, self.n = sim, n

        def writeto(self, addr, buf):
            if self.n and addr == self.sim.address and len(buf) > 1 and buf[0] == se.WORD_COMMAND:
                self.n -= 1
                buf = bytearray(buf)
                buf[-1] ^= 0x80
            return self.sim.writeto(addr, buf)

        def readfrom_into(self, addr, buf):
            return self.sim.readfrom_into(addr, buf)

    sim = Atecc608Sim()
    c = Atecc608(FlakyLine(sim, 1), sleep=FakeSleep())
    assert c.info() == bytes.fromhex("00006002")
    assert sim.bad_crc_commands == 1 and c.reruns == 1


def test_permanently_corrupt_line_gives_crc_after_bounded_retries():
    sim, c, _ = chip(retries=2)
    sim.corrupt_next(10 ** 6)
    with pytest.raises(se.AteccError) as info:
        c.sign_digest(0, DIGEST)
    assert info.value.reason == "crc"
    assert c.reruns == 2
    assert sim.commands == [se.OP_NONCE] * 3


def test_watchdog_warning_restarts_the_sequence():
    sim, c, _ = chip()
    x, y = c.public_key(0)
    sim.commands.clear()
    sim.watchdog_next()  # the Nonce gets 0xEE, then the chip falls asleep
    signature = c.sign_digest(0, DIGEST)
    verify_with_cryptography(x, y, DIGEST, signature)
    assert sim.commands == [se.OP_NONCE, se.OP_NONCE, se.OP_SIGN]
    assert c.reruns == 1


def test_silent_chip_times_out_within_bounds():
    sim, c, sleep = chip(retries=2, margin_ms=50)
    sim.silent = True
    with pytest.raises(se.AteccError) as info:
        c.sign_digest(0, DIGEST)
    assert info.value.reason == "timeout"
    # the Nonce was never answered: at most its longest execution plus the
    # margin in 2 ms polls, and no retry for a timeout
    budget = se.max_exec_ms(se.OP_NONCE) + 50
    assert c.polls <= budget // 2 + 1, c.polls
    assert sleep.total_ms <= budget + 2 + 2 * 3, sleep.total_ms
    assert sim.commands == [se.OP_NONCE]


def test_slow_chip_beyond_its_budget_times_out():
    sim, c, sleep = chip(Atecc608Sim(exec_polls=lambda opcode: 1000), margin_ms=10)
    with pytest.raises(se.AteccError) as info:
        c.info()
    assert info.value.reason == "timeout"
    assert c.polls == (se.max_exec_ms(se.OP_INFO) + 10 + 1) // 2


def test_wrong_address_is_a_nack():
    for nack in (errno.ENODEV, errno.EIO):
        sim, c, sleep = chip(Atecc608Sim(nack_errno=nack), address=0x61)
        with pytest.raises(se.AteccError) as info:
            c.info()
        assert info.value.reason == "nack"
        assert sim.commands == []
        assert sleep.total_ms <= 3 * 2  # three wake attempts


def test_sim_answers_a_bad_command_crc_with_status_ff():
    sim = Atecc608Sim()
    with pytest.raises(OSError):
        sim.writeto(0x00, b"")  # wake
    assert sim.readfrom(0x60, 4) == bytes.fromhex("04113343")
    bad = bytearray(se.info())
    bad[-1] ^= 0x01
    sim.writeto(0x60, bad)
    while True:
        try:
            answer = sim.readfrom(0x60, 4)
            break
        except OSError:
            pass
    assert answer == packet(b"\xff")
    with pytest.raises(se.AteccError) as info:
        se.response(answer, 4)
    assert info.value.status == se.STATUS_CRC


def test_unlocked_chip():
    sim, c, _ = chip(Atecc608Sim(config=default_config(locked=False)))
    assert not se.parse_config(c.read_config())["config_locked"]
    assert c.random() == bytes.fromhex("ffff0000") * 8
    with pytest.raises(se.AteccError) as info:
        c.genkey(0)  # GenKey needs the config zone locked
    assert info.value.status == se.STATUS_EXECUTION


def test_random_on_a_locked_chip():
    sim, c, _ = chip()
    a, b = c.random(), c.random()
    assert len(a) == 32 and a != b


def test_key_provider():
    sim = Atecc608Sim()
    key = Atecc608Key(sim, address=0x60, slot=0, sleep=FakeSleep())
    key.check()
    x, y = key.public_key()
    assert isinstance(x, int) and isinstance(y, int)
    assert sim.public_key(0) == x.to_bytes(32, "big") + y.to_bytes(32, "big")
    signature = key.sign_digest(DIGEST)
    verify_with_cryptography(x, y, DIGEST, signature)
    pub = b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")
    assert key.kid == hashlib.sha256(pub).digest()[:8]  # the kid SoftwareKey gives
    text = key.describe()
    assert "0x60" in text and "slot 0" in text and "01239A5F3C71D208EE" in text, text
    with pytest.raises(se.AteccError) as info:
        Atecc608Key(sim, slot=2, sleep=FakeSleep()).check()
    assert info.value.reason == "slot"
    gone = Atecc608Key(sim, address=0x35, sleep=FakeSleep())
    assert "unreachable: nack" in gone.describe()
    with pytest.raises(se.AteccError) as info:
        gone.sign_digest(DIGEST)
    assert info.value.reason == "nack"
    with pytest.raises(se.AteccError) as info:
        key.sign_digest(DIGEST[:31])
    assert info.value.reason == "arg"


def test_idle_chip_keeps_quiet_until_woken():
    sim, c, _ = chip()
    c.wake()
    c.idle()
    assert sim.state == "idle"
    with pytest.raises(OSError):
        sim.readfrom(0x60, 4)  # idle: the chip NACKs its address
    assert c.info() == bytes.fromhex("00006002")
    assert sim.wakes == 2

# lib/dlms/iec62056_21.py: the IEC 62056-21 mode E opening before HDLC.
from fuzzing import Xorshift32, iterations
from mpcompat import raises

from dlms import iec62056_21 as iec
from dlms.iec62056_21 import Iec21Error, Opening, parse_identification

# Identification lines of real meters: the example telegram in "Dutch Smart
# Meter Requirements v5.0.2 Final P1" p. 25 (Iskra MT382, "\2": mode E), and
# from github.com/ndokter/dsmr_parser test/example_telegrams.py the Kaifa
# header of TELEGRAM_V4_2 (no "\2") and the Sagemcom T210-D-R header of
# TELEGRAM_SAGEMCOM_T210_D_R (its identification starts with a digit).
ISKRA = b"/ISk5\\2MT382-1000\r\n"
KAIFA = b"/KFM5KAIFA-METER\r\n"
SAGEMCOM = b"/EST5\\253710000_A\r\n"


def test_baud_rates():
    want = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200,
            "A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}
    for z, baud in want.items():
        assert iec.baud_rate(z) == baud, (z, iec.baud_rate(z))
        assert iec.baud_rate(ord(z)) == baud, z
    for z in ("7", "G", "a", "", "55", 0):
        raises(Iec21Error, iec.baud_rate, z)
    assert iec.baud_char(9600) == "5" and iec.baud_char(300) == "0"
    raises(Iec21Error, iec.baud_char, 115200)


def test_sign_on():
    # IEC 62056-21 6.3.1 request message: / ? device-address ! CR LF
    assert iec.sign_on() == b"/?!\r\n"
    assert iec.sign_on("12345678") == b"/?12345678!\r\n"
    for bad in ("a!b", "x" * 33, "/", "\r"):
        raises(Iec21Error, iec.sign_on, bad)


def test_option_select():
    # 6.3.3 acknowledgement/option select: ACK V Z Y CR LF; mode E is V=2, Y=2
    assert iec.option_select("5") == b"\x062" + b"52\r\n"
    assert iec.option_select("5") == bytes.fromhex("063235320d0a")
    assert iec.option_select("0", "0", "0") == b"\x06000\r\n"
    raises(Iec21Error, iec.option_select, "9")


def test_parse_identification():
    ident = parse_identification(ISKRA)
    assert (ident.manufacturer, ident.z, ident.baud, ident.mode_e, ident.ident) == (
        "ISk", "5", 9600, True, "MT382-1000"), ident
    assert ident.fast_reaction  # lowercase third letter: 20 ms reaction time
    ident = parse_identification(KAIFA)
    assert (ident.manufacturer, ident.baud, ident.mode_e, ident.enhanced, ident.ident) == (
        "KFM", 9600, False, None, "KAIFA-METER"), ident
    assert not ident.fast_reaction
    ident = parse_identification(SAGEMCOM)
    assert (ident.manufacturer, ident.z, ident.mode_e, ident.ident) == (
        "EST", "5", True, "53710000_A"), ident
    # "/XXX\2Z..." order, no CR LF, and bytes read with the parity bit set
    ident = parse_identification(b"/LGZ\\25ZMD3104107.B40")
    assert (ident.z, ident.mode_e, ident.ident) == ("5", True, "ZMD3104107.B40"), ident
    parity = bytes(b | 0x80 for b in ISKRA)
    assert parse_identification(parity).ident == "MT382-1000"
    for bad in (b"", b"/IS", b"ISk5\\2MT382\r\n", b"/I5k5MT382\r\n", b"/ISk9MT382\r\n",
                b"/ISk5MT!382\r\n", b"/ISk5MT\x01\r\n", b"/" + b"A" * 80 + b"\r\n"):
        e = raises(Iec21Error, parse_identification, bad)
        assert e.reason == "bad_identification", (bad, e.reason)


def test_opening_to_hdlc_at_9600():
    op = Opening()
    assert op.start(0) == b"/?!\r\n"
    assert op.state == iec.SIGN_ON
    # the probe echoes our request, noise before the answer, byte by byte
    stream = b"/?!\r\n" + b"\x00\xff" + ISKRA
    got = b""
    for i in range(len(stream)):
        got += op.receive_data(stream[i:i + 1])
    assert got == b"\x06252\r\n", got
    assert op.state == iec.SWITCH and op.baud == 9600, (op.state, op.baud)
    assert op.identification.ident == "MT382-1000"
    assert op.receive_data(b"more") == b""


def test_opening_lower_baud_and_mode_b_char():
    op = Opening(max_baud=4800)
    op.start(0)
    assert op.receive_data(ISKRA) == b"\x06242\r\n"
    assert op.baud == 4800
    op = Opening()
    op.start(0)
    assert op.receive_data(b"/ABCE\\2X\r\n") == b"\x06252\r\n"  # mode B 'E' is 9600


def test_opening_failures():
    op = Opening()
    op.start(0)
    op.receive_data(KAIFA)
    assert op.state == iec.FAILED and op.error.reason == "not_mode_e", op.error
    op = Opening(require_mode_e=False)
    op.start(0)
    assert op.receive_data(KAIFA) == b"\x06252\r\n"
    op = Opening()
    op.start(0)
    op.receive_data(b"/ISk9\\2X\r\n")
    assert op.state == iec.FAILED and op.error.reason == "bad_identification", op.error


def test_opening_repeats_sign_on_then_gives_up():
    op = Opening(timeout_ms=1000, retries=2)
    req = op.start(0)
    assert op.tick(999) == b""
    assert op.tick(1000) == req
    assert op.tick(2000) == req
    assert op.tick(3000) == b""
    assert op.state == iec.FAILED and op.error.reason == "no_answer", op.error
    # without a start time the timer starts at the first tick
    op = Opening(timeout_ms=1000)
    op.start()
    assert op.tick(50000) == b""
    assert op.tick(51000) == op._request


def test_opening_bounded_line():
    op = Opening()
    op.start(0)
    for _ in range(100):
        op.receive_data(b"/" + b"A" * 50)
        assert len(op._line) <= 64, len(op._line)
    assert op.receive_data(ISKRA) == b"\x06252\r\n"


def test_identification_fuzz():
    # mutated identification lines: parse_identification raises only
    # Iec21Error, Opening never raises
    n = iterations(2000)
    seeds = (ISKRA, KAIFA, b"/LGZ\\25ZMD3104107.B40\r\n")
    rng = Xorshift32(0x9E3779B9)
    ok = 0
    for _ in range(n):
        s = rng.next()
        a = bytearray(seeds[s % 3])
        for _ in range(1 + (s >> 4) % 3):
            s = rng.next()
            p = (s >> 3) % len(a)
            if s & 1:
                a[p] = (s >> 12) & 0xFF
            else:
                a[p:p + 1] = b""
        try:
            parse_identification(bytes(a))
            ok += 1
        except Iec21Error:
            pass
        op = Opening(require_mode_e=bool(s & 2))
        op.start(0)
        out = op.receive_data(bytes(a) + b"\r\n")
        assert out == b"" or out[0] == 6, out
        assert op.state in (iec.SIGN_ON, iec.SWITCH, iec.FAILED), op.state
    assert ok > 0, ok

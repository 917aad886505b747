# lib/dlms/wrapper.py: the IEC 62056-47 wrapper (DLMS/COSEM over TCP/UDP).
from fuzzing import Xorshift32, iterations
from mpcompat import raises

from dlms import wrapper
from dlms.wrapper import Framer, WrapperError, WrapperFrame, decode, encode

# dlms-cosem tests/test_udp_message.py (github.com/u9n/dlms-cosem): a meter's
# general-glo-ciphering data notification over UDP, wPorts 1 -> 1, 70 bytes
PUSH = ("0001000100010046db082f192291991641033b30000001e5025ce9d2271fd78be8c20421"
        "1a916a9d7f587e0a7a814cadea89e9593f01f92ea8c087b5bdfdefeab6becf282dfe49c0"
        "8f5be6dc8400")
# Gurux GXDLMSClient(InterfaceType.WRAPPER, client 16, server 1).aarqRequest()
# and read(register 1.0.1.8.0.255, 2), gurux-dlms 1.0.203 (checked in tests/host)
AARQ = "000100100001001f601da109060760857405080101be10040e01000000065f1f0400401e5dffff"
GET = "000100100001000dc001c100030100010800ff0200"


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


def test_encode():
    assert encode(16, 1, h(AARQ)[8:]) == h(AARQ)
    assert encode(16, 1, h(GET)[8:]) == h(GET)
    assert encode(1, 1, h(PUSH)[8:]) == h(PUSH)
    assert WrapperFrame(1, 16, b"\x01").to_bytes() == h("0001000100100001" "01")
    assert encode(0xFFFF, 0, b"") == h("0001ffff00000000")
    raises(WrapperError, encode, 0x10000, 1, b"")
    raises(WrapperError, encode, 1, -1, b"")
    raises(WrapperError, encode, 1, 1, bytes(0x10000))


def test_decode():
    used, f = decode(h(PUSH))
    assert used == 78 and (f.src, f.dst) == (1, 1) and f.apdu == h(PUSH)[8:], (used, f)
    used, f = decode(h(AARQ) + h(GET))
    assert used == len(h(AARQ)) and (f.src, f.dst, f.apdu[:2]) == (16, 1, h("601d")), f
    used, f = decode(h(AARQ) + h(GET), used)
    assert used == len(h(GET)) and f.apdu == h(GET)[8:], f
    # 0 means "read more", as a pymodbus framer answers
    for cut in (0, 1, 7, 8, 20, 77):
        assert decode(h(PUSH)[:cut]) == (0, None), cut
    e = raises(WrapperError, decode, h("0002000100010000"))
    assert e.reason == "bad_version", e.reason
    e = raises(WrapperError, decode, h("1001"))
    assert e.reason == "bad_version", e.reason
    e = raises(WrapperError, decode, h(PUSH), 0, None, 69)
    assert (e.reason, e.detail) == ("oversized", 70), (e.reason, e.detail)
    assert isinstance(e, ValueError)


def frames_of(items):
    return [x for x in items if isinstance(x, WrapperFrame)]


def test_framer_any_chunking():
    stream = h(AARQ) + h(PUSH) + h(GET) + encode(1, 16, b"")
    want = [decode(h(v))[1] for v in (AARQ, PUSH, GET)] + [WrapperFrame(1, 16, b"")]
    for size in (1, 2, 5, 8, 9, 100, 1000):
        fr = Framer()
        got = []
        for i in range(0, len(stream), size):
            got += fr.feed(stream[i:i + size])
        assert got == want, (size, got)


def test_framer_oversized_is_skipped_without_buffering():
    fr = Framer(max_len=64)
    big = encode(1, 16, bytes(range(256)) * 20)  # 5120 bytes, never held
    got = []
    stream = h(GET) + big + h(GET)
    for i in range(0, len(stream), 100):
        got += fr.feed(stream[i:i + 100])
        assert fr._n <= len(fr._buf)
    assert [type(x).__name__ for x in got] == ["WrapperFrame", "WrapperError", "WrapperFrame"], got
    assert (got[1].reason, got[1].detail) == ("oversized", 5120), got[1]
    assert len(fr._buf) == 8 + 64


def test_framer_resynchronises_after_garbage():
    fr = Framer()
    got = fr.feed(b"\x55\xaa garbage" + h(GET) + b"\x00\x02\x00" + h(AARQ))
    assert [type(x).__name__ for x in got] == ["WrapperError", "WrapperFrame", "WrapperError",
                                               "WrapperFrame"], got
    assert got[0].reason == "bad_version" and fr.errors == 2 and fr.frames == 2, got
    # with the expected wPorts a stray 00 01 does not pass for a header
    fr = Framer(src=1, dst=16)
    got = fr.feed(b"\x00\x01\x00\x07" + encode(1, 16, b"\x00\x01\x02"))
    assert frames_of(got) == [WrapperFrame(1, 16, b"\x00\x01\x02")], got


def test_framer_fuzz():
    # mutated streams (flips, insertions, cuts, splices) in random chunks:
    # feed() never raises and stays bounded; the frame after the damage is
    # found when the damage is garbage between frames
    n = iterations(2000)
    seeds = [h(PUSH), h(AARQ), h(GET)]
    fr = Framer(max_len=128)
    cap = len(fr._buf)
    rng = Xorshift32(0x2545F491)
    recovered = 0
    between = 0
    for _ in range(n):
        fr.reset()
        s = rng.next()
        a = bytearray(seeds[s % 3])
        s = rng.next()
        op = s & 3
        p = (s >> 3) % (len(a) + 1)
        if op == 0 and p < len(a):
            a[p] ^= 1 << ((s >> 20) & 7)
        elif op == 1:
            a[p:p] = bytes(((s >> 12) & 0xFF,))
        elif op == 2:
            a = a[:p]
        else:
            a[p:p] = seeds[(s >> 9) % 3]
        junk = s & 0x100 and s & 0xFFFF000 != 0x0100000  # (00 01 would pass for a header)
        if junk:
            a = bytearray(bytes(((s >> 12) & 0xFF, (s >> 20) & 0xFF)) + h(GET))  # garbage, frame
            between += 1
        a += h(GET)
        s = rng.next()
        chunk = 1 + s % 50
        last = None
        for i in range(0, len(a), chunk):
            for item in fr.feed(a[i:i + chunk]):
                assert isinstance(item, (WrapperFrame, WrapperError)), item
                last = item
                if isinstance(item, WrapperFrame):
                    assert len(item.apdu) <= 128, item
            assert fr._n <= cap, fr._n
        if junk and last == decode(h(GET))[1]:
            recovered += 1
    assert recovered == between, (recovered, between)
    assert wrapper.HEADER_LEN == 8

"""lib/dlms/wrapper.py against gurux-dlms 1.0.203 and dlms-cosem 25.1.0; hypothesis fuzz."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dlms import wrapper  # noqa: E402
from dlms.wrapper import Framer, WrapperError, WrapperFrame  # noqa: E402

pytest.importorskip("gurux_dlms")
from gurux_dlms import GXDLMSClient  # noqa: E402
from gurux_dlms.enums import Authentication, InterfaceType  # noqa: E402
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister  # noqa: E402
from dlms_cosem.protocol.wrappers import WrapperHeader, WrapperProtocolDataUnit  # noqa: E402


@pytest.mark.parametrize("client,server", [(16, 1), (1, 1), (0x20, 0x11)])
def test_requests_match_gurux(client, server):
    c = GXDLMSClient(True, client, server, Authentication.NONE, None, InterfaceType.WRAPPER)
    msgs = list(c.aarqRequest())
    msgs += c.read(GXDLMSRegister("1.0.1.8.0.255"), 2)
    msgs += c.read(GXDLMSClock("0.0.1.0.0.255"), 2)
    msgs += c.read(GXDLMSProfileGeneric("1.0.99.1.0.255"), 3)
    fr = Framer()
    for m in msgs:
        m = bytes(m)
        used, f = wrapper.decode(m)
        assert used == len(m) and (f.src, f.dst) == (client, server)
        assert wrapper.encode(client, server, f.apdu) == m
        assert fr.feed(m) == [f]


@given(src=st.integers(0, 0xFFFF), dst=st.integers(0, 0xFFFF), apdu=st.binary(max_size=600))
def test_agrees_with_dlms_cosem(src, dst, apdu):
    theirs = WrapperProtocolDataUnit(apdu, WrapperHeader(src, dst, len(apdu))).to_bytes()
    assert wrapper.encode(src, dst, apdu) == theirs
    back = WrapperProtocolDataUnit.from_bytes(theirs)
    used, f = wrapper.decode(theirs, 0, None, 600)
    assert (f.src, f.dst, f.apdu) == (back.wrapper_header.source_wport,
                                      back.wrapper_header.destination_wport, back.data)


def split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for c in cuts + [len(data)]:
        out.append(data[last:c])
        last = c
    return out


frames_st = st.builds(WrapperFrame, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                      st.binary(max_size=300))


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(frames_st, max_size=10), cuts=st.lists(st.integers(0, 4000), max_size=30))
def test_framer_any_chunking(frames, cuts):
    stream = b"".join(f.to_bytes() for f in frames)
    fr = Framer(max_len=300)
    got = []
    for part in split(stream, cuts):
        got += fr.feed(part)
    assert got == frames


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=20),
       max_len=st.integers(0, 2048), ports=st.booleans())
def test_framer_feed_never_raises(data, cuts, max_len, ports):
    fr = Framer(max_len, 1 if ports else None, 16 if ports else None)
    for part in split(data, cuts):
        for item in fr.feed(part):
            assert isinstance(item, (WrapperFrame, WrapperError))
            if isinstance(item, WrapperFrame):
                assert len(item.apdu) <= max_len
        assert fr._n <= len(fr._buf) == 8 + max_len

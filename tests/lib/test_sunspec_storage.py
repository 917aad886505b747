# SunSpec model 124 setpoint writes (lib/modbus/sunspec_storage.py).
from mpcompat import raises

from modbus import sunspec_storage as st


def model(wchamax=5000, sf=-1):
    regs = [0] * 26
    regs[0], regs[1] = 124, 24
    regs[2] = wchamax  # WChaMax, WChaMax_SF (point 16) 0
    regs[2 + 23] = sf & 0xFFFF  # InOutWRte_SF
    return regs


def writes(w, regs=None, address=40100):
    return [(r.function, r.address, r.values) for r in st.setpoint_writes(address, regs or model(), w)]


def test_charge_discharge_idle():
    # rates first (OutWRte, InWRte at data offset 10), then StorCtl_Mod (offset 3)
    assert writes(2500) == [(16, 40112, [0, 500]), (6, 40105, 1)], writes(2500)  # StorCtl_Mod 1: charge
    assert writes(-1000) == [(16, 40112, [200, 0]), (6, 40105, 2)], writes(-1000)  # 2: discharge
    assert writes(0) == [(16, 40112, [0, 0]), (6, 40105, 3)], writes(0)  # 3: idle


def test_beyond_wchamax_is_cut_and_rounding_is_down():
    assert writes(9000)[0][2] == [0, 1000]
    assert writes(-1)[0][2] == [0, 0]  # 0.02 % rounds down: never above the setpoint
    assert writes(2501, model(sf=0))[0][2] == [0, 50]
    assert writes(2501, model(sf=-2))[0][2] == [0, 5002]


def test_refused_models():
    for regs in (model(wchamax=0), model(sf=2), [124, 24], [103, 24] + [0] * 24):
        raises(st.StorageError, st.setpoint_writes, 40100, regs, 1000)
    for bad in (1.5, True, None):
        raises(st.StorageError, st.setpoint_writes, 40100, model(), bad)

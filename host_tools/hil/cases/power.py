"""Power cuts: the board's power is cut while it writes its journal (the
virtual board's interpreter SIGKILLed; a real board's supply switched by
--power-cmd, or by the technician). After the boot every record whose
append had returned is there, in order and intact, and /config.json and the
boot record survived."""

from host_tools.hil.case import POWER_CUT, RAW_REPL, needs

ORDER = 40
CUT_AFTER = 50  # records known durable before the power goes

COMMON = """
import os, hashlib, journal
from gateway import boot as gboot
D = '/state/hil_journal'
def remove(d):
    try:
        for n in os.listdir(d):
            os.remove(d + '/' + n)
        os.rmdir(d)
    except OSError:
        pass
def config_digest():
    try:
        with open('/config.json', 'rb') as f:
            data = f.read()
    except OSError:
        data = b''
    return hashlib.sha256(data).digest().hex()
def body(seq):
    return ('hil reading %d ' % seq).encode() + b'x' * (seq % 7)
def the_journal():
    # the firmware's journal (lib/journal.py) in a directory of its own
    return journal.Journal(D, segment_bytes=4096, max_bytes=131072)
hil.set('config', config_digest())
hil.set('boots', gboot.load_record().boots)
"""

# Appends until the power goes; each seq is said once its append returned.
WRITE = COMMON + """
remove(D)
j = the_journal()
j.open()
for seq in range(1, 5001):
    j.append(seq, journal.READING, body(seq))
    hil.set('durable', seq)
hil.next('all written')
"""

CHECK = COMMON + """
j = the_journal()
st = j.open()
n = bad = gaps = 0
last = 0
for seq, kind, data in j.pending():
    if kind != journal.READING or data != body(seq):
        bad += 1
    if seq != last + 1:
        gaps += 1
    last = seq
    n += 1
hil.set('records', n)
hil.set('last', last)
hil.set('bad', bad)
hil.set('gaps', gaps)
hil.set('losses', [st[k] for k in ('corrupt', 'lost', 'dropped', 'state_lost')])
hil.set('torn', st['torn'])
j.close()
remove(D)
"""


@needs(RAW_REPL, POWER_CUT)
def case_power_cut_while_writing_the_journal(hil):
    """cut mid-journal-write: every record that was durable is back, intact; config and boot record survive"""
    half = hil.board_half()
    half.start(WRITE)
    config, boots = half.value("config"), half.value("boots")
    deadline_seq = CUT_AFTER
    half.wait_until(lambda: half.values.get("durable", 0) >= deadline_seq, "%d records written" % deadline_seq, 30)
    mark = hil.target.power_cut()
    half.reset_under_it()
    durable = half.values["durable"]  # what the host had been told before the cut
    assert "all written" not in half.points, "the board finished before the power went"
    hil.log("power cut after record %d was durable (the board had said so)" % durable)
    hil.release(half)
    hil.target.wait_app(mark)  # it booted into the app again
    half = hil.board_half()
    half.start(CHECK)
    half.done(timeout=60)
    v = half.values
    hil.log("after the boot: %s" % v)
    assert v["last"] >= durable, "record %d was durable before the cut, the journal ends at %d" % (durable, v["last"])
    assert v["records"] == v["last"] and v["gaps"] == 0, v  # 1..last, nothing missing
    assert v["bad"] == 0, "%d records changed" % v["bad"]
    assert v["losses"] == [0, 0, 0, 0], "corrupt, lost, dropped, state_lost: %s" % v["losses"]
    assert v["config"] == config, "/config.json changed across the power cut"
    assert v["boots"] > boots, "the boot record did not count the boot: %s -> %s" % (boots, v["boots"])

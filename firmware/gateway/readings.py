# One signed READING per trading interval per meter (docs/intervals.md):
# every good reading of a meter with energy registers is a sample for the
# interval engine; each closed interval goes into the uplink's journal.
# No interval is signed while the clock is unsynchronised: its samples are
# not taken; the next timed sample continues from the last one.
#
# Each meter's baseline (the boundary its next reading starts at) is kept in
# /state/base.<meter>, so readings tile time across a reboot. The file is
# written before the reading goes into the journal, with the reading's
# seq and energies: if the journal did not get that seq (power lost in
# between), the boundary before it holds again and the interval is read anew.
from compat import const
from gateway.boot import STATE_DIR, write_atomic
from intervals import IntervalEngine, IntervalError
from journal import JournalError
from trade import messages

_IMPORT = const("energy_import_wh")
_EXPORT = const("energy_export_wh")
_POWER = const("power_w")


class IntervalReadings:
    def __init__(self, meters, clock, uplink, mono, interval_min=15, log=print):
        self.clock = clock
        self.uplink = uplink
        self.mono = mono
        self.log = log
        self.engine = IntervalEngine(interval_min, len(meters.meters) or 1)
        self._index = {}
        for i, h in enumerate(meters.meters):
            self._index[h.name] = i
        self.signed = 0
        self.unsynced = 0  # samples dropped while the clock was unsynchronised
        self.errors = 0
        self._base_ts = [0] * len(meters.meters)  # the boundary last written per meter
        st = uplink.journal.stats()
        kept = max(st["newest"] or 0, st["acked"] or 0)  # every seq up to here is in, or was acked
        for h in meters.meters:
            self._restore(h.name, kept)
        meters.on_reading = self.on_reading

    def _path(self, name):
        return STATE_DIR + "/base." + name

    def _restore(self, name, kept):
        i = self._index[name]
        try:
            with open(self._path(name)) as f:
                seq, ts, imin, imp, exp, imp_wh, exp_wh = [int(v) for v in f.read().split()]
            if seq > kept:  # that reading never reached the journal: the boundary before it
                ts, imp, exp = ts - imin * 60, imp - imp_wh, exp - exp_wh
            self.engine.restore(i, ts, imp, exp)
        except OSError:
            return  # no baseline kept yet
        except (ValueError, IntervalError) as e:  # a torn or foreign file: start over
            self.log("readings: %s: kept baseline ignored: %s" % (name, e))
            return
        self._base_ts[i] = ts

    def _keep(self, i, name, seq, r):
        # seq 0 and r None: a baseline without a reading (the first after a start)
        ts, imp, exp = self.engine.baseline(i)
        if r is None:
            line = "0 %d 0 %d %d 0 0\n" % (ts, imp, exp)
        else:
            line = "%d %d %d %d %d %d %d\n" % (seq, ts, r.interval_min, imp, exp, r.import_wh, r.export_wh)
        try:
            write_atomic(self._path(name), line)
        except OSError as e:
            self.errors += 1
            self.log("readings: %s: baseline not kept: %s" % (name, e))
            return
        self._base_ts[i] = ts

    def on_reading(self, h, values):
        imp = values.get(_IMPORT)
        if imp is None:
            return  # no energy registers: an inverter, a battery
        i = self._index[h.name]
        now = self.clock.now_ms(self.mono.ms())
        if now is None:
            if self.unsynced == 0:
                self.log("readings: waiting for the clock before signing intervals")
            self.unsynced += 1
            return
        try:
            r = self.engine.sample(i, now // 1000, imp, values.get(_EXPORT, 0), values.get(_POWER, 0),
                                   now % 1000)
        except IntervalError as e:
            self.errors += 1
            self.log("readings: %s: %s" % (h.name, e))
            return
        if r is None:
            base = self.engine.baseline(i)
            if base is not None and base[0] != self._base_ts[i]:
                self._keep(i, h.name, 0, None)
            return
        self._keep(i, h.name, self.uplink.seqs.next, r)  # the seq submit() takes next
        try:
            seq = self.uplink.submit(messages.READING, r.ts, r.fields(h.name.encode()))
        except (JournalError, messages.ProtocolError) as e:
            self.errors += 1
            self.log("readings: %s: interval ending %d not journaled: %s" % (h.name, r.ts, e))
            return
        self.signed += 1
        self.log("reading %s seq %d ts %d %d min +%d -%d Wh" % (h.name, seq, r.ts, r.interval_min,
                                                            r.import_wh, r.export_wh))

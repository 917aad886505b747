# One signed READING per trading interval per meter (docs/intervals.md):
# every good reading of a meter with energy registers is a sample for the
# interval engine; each closed interval goes into the uplink's journal.
# No interval is signed while the clock is unsynchronised: its samples are
# not taken, and the engine starts again from the next boundary.
from intervals import IntervalEngine, IntervalError
from journal import JournalError
from trade import messages

_IMPORT = "energy_import_wh"
_EXPORT = "energy_export_wh"
_POWER = "power_w"


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
        meters.on_reading = self.on_reading

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
            self.engine.reset(i)
            return
        try:
            r = self.engine.sample(i, now // 1000, imp, values.get(_EXPORT, 0), values.get(_POWER, 0),
                                   now % 1000)
        except IntervalError as e:
            self.errors += 1
            self.log("readings: %s: %s" % (h.name, e))
            return
        if r is None:
            return
        try:
            seq = self.uplink.submit(messages.READING, r.ts, r.fields(h.name.encode()))
        except (JournalError, messages.ProtocolError) as e:
            self.errors += 1
            self.log("readings: %s: interval ending %d not journaled: %s" % (h.name, r.ts, e))
            return
        self.signed += 1
        self.log("reading %s seq %d ts %d %d min +%d -%d Wh" % (h.name, seq, r.ts, r.interval_min,
                                                            r.import_wh, r.export_wh))

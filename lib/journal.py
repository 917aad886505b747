# The gateway's store-and-forward journal (docs/journal.md): every message
# the gateway signs stays on flash until the hub acknowledges its sequence
# number, through power cuts, crashes and outages of days.
#
# Layout: a directory of segment files named by the seq of their first
# record ("%016x.jnl"), each a 4-byte magic then records:
#
#   flags    1 byte: 0x80 delta, 0x40 delta of another length, 0x0F kind
#   seq      varint: seq - the segment's first seq
#   back     varint, deltas only: seq - the seq of the record it refers to
#   length   varint: bytes of body
#   body     whole: the data; delta: [n, split] if resized, a bit mask of
#            the bytes that differ from the reference, those bytes
#   crc      4 bytes, little-endian: CRC-32 of flags .. body
#
# plus a small file "acked" (the acknowledged watermark, the acks above it,
# counters) that is replaced by write-new-then-rename on every change.
#
# Power-loss assumptions (littlefs): what a file gains becomes durable at
# close, all or nothing, and rename replaces its target atomically. Where a
# write can tear anyway (POSIX without fsync, a bad flash page), the length
# and CRC of each record find the damage: a torn tail is ignored and that
# segment is never appended to again; a bad record in the middle is skipped.
#
# Records are delta-encoded against one of the last few records of their
# segment (readings of one meter differ in a few bytes), which is what lets
# seven days of three meters' readings fit 64 KB. A chain of deltas is at
# most _CHAIN long, so a damaged record takes at most _CHAIN - 1 with it.

from compat import const
import os

try:
    from binascii import crc32 as _crc32_c
except ImportError:  # a port built without it
    _crc32_c = None

# kinds: the protocol's message types (docs/protocol.md section 4)
READING = 1
ORDER = 2
WITNESS = 6

_MAX_DATA = const(1024)  # bytes of one record's data
_MAX_SEQ = const(0xFFFFFFFFFFFFFFFF)
_ACK_WINDOW = const(64)  # the hub's replay window (lib/trade/replay.py _WINDOW)

_SEGMENT_MAGIC = const(b"PGJ\x01")
_STATE_MAGIC = const(b"PGA\x01")
_SUFFIX = const(".jnl")
_STATE = const("acked")
_STATE_NEW = const("acked.new")
_HEADER = const(4)
_DELTA = const(0x80)
_RESIZED = const(0x40)
_RESERVED = const(0x30)
_KIND = const(0x0F)
_REFS = const(8)  # records a delta may refer to: the last _REFS of its segment
_CHAIN = const(16)  # a whole record and at most 15 deltas built on it
_MAX_REF = const(128)  # larger data is stored whole and never referred to
_CHUNK = const(512)  # bytes read from flash at a time
_PEEK = const(24)  # flags and three varints, at most


class JournalError(ValueError):
    # reason: "config", "closed", "seq", "kind", "size"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class JournalFull(JournalError):
    # reason: "full" (the record was not stored)
    pass


def _crc32_soft(data, crc=0):
    # CRC-32 (IEEE, reflected, as zlib), for ports without binascii.crc32
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def crc32(data):
    if _crc32_c is None:
        return _crc32_soft(data)
    return _crc32_c(data) & 0xFFFFFFFF


def _put(out, n):
    # unsigned LEB128
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)


def _vlen(n):
    k = 1
    while n > 0x7F:
        n >>= 7
        k += 1
    return k


def _get(b, i, end):
    # -> (value, next index), None if cut short or longer than 10 bytes
    n = 0
    shift = 0
    while i < end and shift < 70:
        x = b[i]
        i += 1
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return n, i
        shift += 7
    return None


def _split(ref, data):
    # The cheapest alignment of data on ref: bytes before the split compare
    # with ref's start, bytes from it with ref's end, so a field that grew
    # or shrank shifts only what follows. -> (bytes that differ, split),
    # None if data is more than twice as long as ref.
    n = len(data)
    m = len(ref)
    off = m - n
    lo = -off if off < 0 else 0
    hi = n if n < m else m
    if lo > hi:
        return None
    head = 0
    for i in range(lo):
        if data[i] != ref[i]:
            head += 1
    tail = 0
    for i in range(lo, n):
        if data[i] != ref[i + off]:
            tail += 1
    best = head + tail
    split = lo
    if off:
        for k in range(lo, hi):
            if data[k] != ref[k]:
                head += 1
            if data[k] != ref[k + off]:
                tail -= 1
            if head + tail < best:
                best = head + tail
                split = k + 1
    return best, split


def _record(seq, base, kind, data, ref=None, split=0):
    out = bytearray()
    if ref is None:
        out.append(kind)
        _put(out, seq - base)
        _put(out, len(data))
        out += data
    else:
        rdata = ref[1]
        n = len(data)
        off = len(rdata) - n
        body = bytearray()
        flags = _DELTA | kind
        if off:
            flags |= _RESIZED
            _put(body, n)
            _put(body, split)
        else:
            split = n
        mask = bytearray((n + 7) >> 3)
        lits = bytearray()
        for i in range(n):
            if data[i] != rdata[i if i < split else i + off]:
                mask[i >> 3] |= 1 << (i & 7)
                lits.append(data[i])
        body += mask
        body += lits
        out.append(flags)
        _put(out, seq - base)
        _put(out, seq - ref[0])
        _put(out, len(body))
        out += body
    out += crc32(out).to_bytes(4, "little")
    return out


class _Segment:
    def __init__(self, base):
        self.base = base  # seq of its first record, also its name
        self.size = 0  # bytes of the file
        self.last = base - 1  # seq of its last record with a good CRC
        self.sealed = False  # a torn tail: never appended to again


class _Scan:
    # Reads the records of one segment in order, a chunk at a time. The file
    # is opened per chunk, so none stays open between calls and a segment
    # deleted meanwhile ends the scan with OSError. decode=False checks
    # everything but leaves the data out (open(), acks).
    def __init__(self, path, base, decode, chunk=None):
        # chunk: a buffer of the journal's to read into (the cursor's, reused
        # for every scan it makes: no 512 bytes to find in a fragmented heap)
        self.path = path
        self.base = base
        self.decode = decode
        self.pos = _HEADER
        self.prev = base - 1
        self.window = []  # [seq, data (or its length), depth in its chain, referred to]
        self.buf = self._chunk = chunk
        self.at = 0  # file offset of buf[0]
        self.got = 0  # bytes in buf
        self.short = False  # buf ends at the end of the file
        self.checked = False  # the magic
        self.ended = False
        self.torn = False
        self.corrupt = 0
        self.lost = 0
        self.bad_magic = False

    def _fill(self, pos, n):
        # -> how many of the n bytes at pos are in buf (fewer at the end of the file)
        at = self.at
        if self.buf is not None and at <= pos and (pos + n <= at + self.got or self.short):
            k = at + self.got - pos
            return n if n < k else (k if k > 0 else 0)
        size = n if n > _CHUNK else _CHUNK
        if self.buf is None or len(self.buf) < size:
            self.buf = bytearray(size)
        with open(self.path, "rb") as f:
            f.seek(pos)
            got = f.readinto(self.buf) or 0
        self.at = pos
        self.got = got
        self.short = got < len(self.buf)
        return n if n < got else got

    def release(self):
        # Give back a buffer of the scan's own; the journal's chunk stays.
        if self.buf is not self._chunk:
            self.buf = self._chunk
            self.at = self.got = 0
            self.short = False

    def next(self):
        # -> (seq, kind, data) of the next record that can be read, None at the end
        if self.ended:
            return None
        self.short = False  # the file may have grown since the last call
        if not self.checked:
            if self._fill(0, _HEADER) < _HEADER:
                self.ended = self.torn = True  # created, never written
                return None
            self.checked = True
            self.bad_magic = self.buf[self.at:self.at + _HEADER] != _SEGMENT_MAGIC
        while True:
            if self._fill(self.pos, 1) == 0:
                return None  # clean end; a later call looks again
            rec = self._parse(self.pos)
            if rec is None:
                q = self.pos + 1
                while self._fill(q, 1) and self._parse(q) is None:
                    q += 1
                if not self._fill(q, 1):
                    self.ended = self.torn = True
                    return None
                self.corrupt += 1
                self.pos = q
                continue
            end, flags, seq, back, body, blen = rec
            self.pos = end
            self.prev = seq
            data = self._resolve(flags, seq, back, body, blen)
            if data is None:
                self.lost += 1
                continue
            return seq, flags & _KIND, data

    def _parse(self, pos):
        # A record at pos with a good CRC -> (end, flags, seq, back, body
        # offset, body length); None otherwise.
        n = self._fill(pos, _PEEK)
        if n < 8:
            return None
        b = self.buf
        start = pos - self.at
        lim = start + n
        flags = b[start]
        if flags & _RESERVED or (flags & (_DELTA | _RESIZED)) == _RESIZED:
            return None
        v = _get(b, start + 1, lim)
        if v is None:
            return None
        seq = self.base + v[0]
        if seq <= self.prev or seq > _MAX_SEQ:
            return None
        back = 0
        if flags & _DELTA:
            v = _get(b, v[1], lim)
            if v is None:
                return None
            back = v[0]
            if back < 1 or seq - back < self.base:
                return None
        v = _get(b, v[1], lim)
        if v is None:
            return None
        blen = v[0]
        if blen < 1 or blen > _MAX_DATA:
            return None
        head = v[1] - start
        total = head + blen + 4
        if self._fill(pos, total) < total:
            return None
        b = self.buf
        s = pos - self.at
        e = s + head + blen
        if crc32(memoryview(b)[s:e]) != b[e] | b[e + 1] << 8 | b[e + 2] << 16 | b[e + 3] << 24:
            return None
        return pos + total, flags, seq, back, pos + head, blen

    def _resolve(self, flags, seq, back, body, blen):
        # The record's data (its length if not decoding), None if it cannot
        # be rebuilt: its reference is unreadable. Keeps the window.
        b = self.buf
        i = body - self.at
        end = i + blen
        depth = 0
        if not flags & _DELTA:
            n = blen
            data = bytes(b[i:end]) if self.decode else n
        else:
            rseq = seq - back
            ref = None
            for e in self.window:
                if e[0] == rseq:
                    ref = e
                    break
            if ref is None:
                return None
            rdata = ref[1]
            m = len(rdata) if self.decode else rdata
            n = m
            split = m
            if flags & _RESIZED:
                v = _get(b, i, end)
                w = v and _get(b, v[1], end)
                if not w:
                    return None
                n = v[0]
                split = w[0]
                i = w[1]
                if n < 1 or n > _MAX_REF or n == m or split > n or split > m or n - split > m:
                    return None
            mlen = (n + 7) >> 3
            lit = i + mlen
            if lit > end or (n & 7 and b[lit - 1] >> (n & 7)):
                return None
            ones = 0
            for k in range(i, lit):
                x = b[k]
                while x:
                    x &= x - 1
                    ones += 1
            if ones != end - lit:
                return None
            if self.decode:
                off = m - n
                out = bytearray(n)
                for k in range(n):
                    if b[i + (k >> 3)] >> (k & 7) & 1:
                        out[k] = b[lit]
                        lit += 1
                    else:
                        out[k] = rdata[k if k < split else k + off]
                data = bytes(out)
            else:
                data = n
            ref[3] = True
            depth = ref[2] + 1
        if n <= _MAX_REF:
            w = self.window
            w.append([seq, data, depth, False])
            if len(w) > _REFS:
                w.pop(0)
        return data


def _check_seq(seq):
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= _MAX_SEQ:
        raise JournalError("seq", "not a sequence number: %r" % (seq,))


class Journal:
    """Signed messages kept on flash until the hub acknowledges them.

    directory: where the segment files live (created at open()).
    segment_bytes: a segment file is closed for appends at this size.
    max_bytes: all segment files together stay within it; when full, a
    record of a kind in refuse_when_full is refused (JournalFull), any
    other pushes out the oldest segment (its unacknowledged records are
    counted as "dropped"). OSError from the filesystem propagates."""

    def __init__(self, directory, segment_bytes=8192, max_bytes=65536, refuse_when_full=(ORDER, WITNESS)):
        if not isinstance(segment_bytes, int) or segment_bytes < 64:
            raise JournalError("config", "segment_bytes must be at least 64")
        if not isinstance(max_bytes, int) or max_bytes < 2 * segment_bytes:
            raise JournalError("config", "max_bytes must be at least 2 * segment_bytes")
        self.directory = directory.rstrip("/") or "/"
        self._prefix = self.directory.rstrip("/") + "/"
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.refuse_when_full = tuple(refuse_when_full)
        self._segments = None  # open() fills it

    # -- opening

    def _path(self, name):
        if not isinstance(name, str):
            name = "%016x%s" % (name, _SUFFIX)
        return self._prefix + name

    def open(self):
        """Scan the directory, set torn tails aside, load the acknowledged
        watermark -> stats()."""
        self.close()
        try:
            os.mkdir(self.directory)
        except OSError:
            pass  # there already; listdir says if it is not a directory
        names = os.listdir(self.directory)
        self._load_state(names)
        before = self._state_bytes()
        self._bytes = 0
        self._pending = 0
        self._corrupt = 0
        self._lost = 0
        self._torn = 0
        self._tail = None
        self._window = []
        self._cursor = None
        self._chunk = bytearray(_CHUNK)  # the cursor's reads, allocated once
        self._head_seq = None
        bases = []
        for name in names:
            if len(name) == 16 + len(_SUFFIX) and name.endswith(_SUFFIX):
                try:
                    base = int(name[:16], 16)
                except ValueError:
                    continue
                if "%016x" % base == name[:16]:  # not ours otherwise: left alone
                    bases.append(base)
        bases.sort()
        segments = []
        ahead = self._ahead
        held = []
        newest = self._done - 1
        for k in range(len(bases)):
            seg = _Segment(bases[k])
            path = self._path(seg.base)
            scan = _Scan(path, seg.base, k == len(bases) - 1)
            while True:
                r = scan.next()
                if r is None:
                    break
                seq = r[0]
                if seq in ahead:
                    held.append(seq)
                elif seq >= self._done:
                    self._pending += 1
            seg.last = scan.prev
            seg.size = os.stat(path)[6]
            seg.sealed = scan.torn
            self._corrupt += scan.corrupt + (1 if scan.bad_magic else 0)
            self._lost += scan.lost
            if (scan.torn or seg.last < seg.base) and seg.size:
                self._torn += 1  # a record cut short, or a segment's first
            if seg.last < seg.base:
                os.remove(path)  # not one whole record: a torn creation
                continue
            segments.append(seg)
            self._bytes += seg.size
            if seg.last > newest:
                newest = seg.last
        if segments and not segments[-1].sealed and segments[-1].size < self.segment_bytes:
            # appends go on in the last segment, delta-encoded on its last records
            seg = self._tail = segments[-1]
            if not scan.decode or scan.base != seg.base:
                scan = _Scan(self._path(seg.base), seg.base, True)
                while scan.next() is not None:
                    pass
            self._window = scan.window
        self._segments = segments
        self._newest = newest if newest >= 0 else None
        # acks of records that turned out unreadable are forgotten
        self._ahead = [a for a in ahead if a in held]
        self._advance()
        if self._state_bytes() != before or self._state_from != _STATE:
            self._save_state()
        self._compact()
        return self.stats()

    def close(self):
        self._segments = None
        self._cursor = None
        self._window = []

    def _check_open(self):
        if self._segments is None:
            raise JournalError("closed", "open() the journal first")

    # -- the acknowledged state

    def _state_bytes(self):
        out = bytearray(_STATE_MAGIC)
        _put(out, self._done)
        _put(out, len(self._ahead))
        prev = self._done
        for a in self._ahead:
            _put(out, a - prev)
            prev = a
        _put(out, self._dropped)
        _put(out, self._abandoned)
        _put(out, self._refused)
        out += crc32(out).to_bytes(4, "little")
        return out

    def _save_state(self):
        tmp = self._path(_STATE_NEW)
        with open(tmp, "wb") as f:
            f.write(self._state_bytes())
        try:
            os.rename(tmp, self._path(_STATE))
        except OSError:
            # FAT will not rename over a file; open() falls back on acked.new
            os.remove(self._path(_STATE))
            os.rename(tmp, self._path(_STATE))
        self._state_from = _STATE

    def _load_state(self, names):
        self._done = 0  # every record with a seq below it is acknowledged
        self._ahead = []  # acknowledged seqs above it, ascending
        self._dropped = 0
        self._abandoned = 0
        self._refused = 0
        self._state_from = None
        self._state_lost = False
        if _STATE in names:
            if self._parse_state(_STATE):
                self._state_from = _STATE
            else:
                self._state_lost = True
        if _STATE_NEW in names:
            # an update cut short: used only if the committed file is bad
            if self._state_from is None and self._parse_state(_STATE_NEW):
                self._state_from = _STATE_NEW
                self._state_lost = False
            else:
                os.remove(self._path(_STATE_NEW))

    def _parse_state(self, name):
        with open(self._path(name), "rb") as f:
            b = f.read(1024)
        if len(b) < 12 or b[:4] != _STATE_MAGIC:
            return False
        end = len(b) - 4
        if crc32(b[:end]) != int.from_bytes(b[end:], "little"):
            return False
        v = _get(b, 4, end)
        count = v and _get(b, v[1], end)
        if not count or count[0] >= _ACK_WINDOW:
            return False
        done = v[0]
        i = count[1]
        ahead = []
        prev = done
        for _ in range(count[0]):
            v = _get(b, i, end)
            if not v:
                return False
            prev += v[0]
            ahead.append(prev)
            i = v[1]
        counters = []
        for _ in range(3):
            v = _get(b, i, end)
            if not v:
                return False
            counters.append(v[0])
            i = v[1]
        self._done = done
        self._ahead = ahead
        self._dropped, self._abandoned, self._refused = counters
        return True

    # -- the oldest unacknowledged record

    def _head(self):
        # seq of the oldest unacknowledged record, None if there is none
        while True:
            h = self._head_seq
            if h is not None and h >= self._done:
                return h
            cur = self._cursor
            if cur is None:
                seg = None
                for s in self._segments:
                    if s.last >= self._done:
                        seg = s
                        break
                if seg is None:
                    return None
                cur = self._cursor = _Scan(self._path(seg.base), seg.base, False, self._chunk)
            try:
                r = cur.next()
            except OSError:
                r = None
            if r is None:
                nxt = None
                for s in self._segments:
                    if s.base > cur.base and s.last >= self._done:
                        nxt = s
                        break
                if nxt is None:
                    cur.release()
                    return None
                self._cursor = _Scan(self._path(nxt.base), nxt.base, False, self._chunk)
            elif r[0] >= self._done and r[0] not in self._ahead:
                self._head_seq = r[0]

    def _advance(self):
        # Move the watermark over acknowledged records, and over records the
        # hub can no longer take: _ACK_WINDOW below a seq it acknowledged.
        a = self._ahead
        while True:
            h = self._head()
            if h is None:
                if self._newest is not None and self._done <= self._newest:
                    self._done = self._newest + 1
                self._ahead = []
                self._pending = 0
                break
            if a and a[0] < h:
                # every record below the oldest unacknowledged one is acknowledged
                while a and a[0] < h:
                    a.pop(0)
                self._done = h
            if a and h <= a[-1] - _ACK_WINDOW:
                self._abandoned += 1
                self._pending -= 1
                self._done = h + 1
            else:
                break
        if self._cursor is not None:
            self._cursor.release()

    def _holds(self, seq):
        # Is seq a readable record of the journal?
        for seg in self._segments:
            if seg.base <= seq <= seg.last:
                scan = _Scan(self._path(seg.base), seg.base, False)
                while True:
                    r = scan.next()
                    if r is None or r[0] > seq:
                        return False
                    if r[0] == seq:
                        return True
        return False

    def _compact(self):
        # Drop whole segments whose records are all acknowledged.
        keep = []
        for seg in self._segments:
            if seg.last < self._done and seg is not self._tail:
                self._remove(seg)
            else:
                keep.append(seg)
        self._segments = keep

    def _remove(self, seg):
        os.remove(self._path(seg.base))
        self._bytes -= seg.size
        if self._cursor is not None and self._cursor.base == seg.base:
            self._cursor = None

    # -- the API

    def append(self, seq, kind, data):
        """Store a record; raises JournalFull when it was refused for room,
        JournalError for a seq not above the last one or bad arguments."""
        self._check_open()
        _check_seq(seq)
        if self._newest is not None and seq <= self._newest:
            raise JournalError("seq", "%d is not above %d" % (seq, self._newest))
        if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind <= _KIND:
            raise JournalError("kind", "kind must be 0..15, not %r" % (kind,))
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise JournalError("size", "data must be bytes")
        data = bytes(data)
        n = len(data)
        if not 1 <= n <= self._max_data():
            raise JournalError("size", "%d bytes of data, 1 to %d fit" % (n, self._max_data()))
        tail = self._tail
        ref = None
        if tail is not None and tail.last < self._done and tail.size >= self.segment_bytes >> 2:
            # start afresh rather than keep acknowledged bytes: at most a
            # quarter segment of them is ever in the way of pending records
            tail = self._tail = None
            self._compact()
        if tail is not None:
            rec, ref = self._encode(seq, tail.base, kind, data)
            if tail.size + len(rec) > self.segment_bytes:
                tail = self._tail = None
                self._window = []
                ref = None
                self._compact()
        if tail is None:
            rec = _record(seq, seq, kind, data)
            need = _HEADER + len(rec)
        else:
            need = len(rec)
        while self._bytes + need > self.max_bytes:
            self._make_room(kind)
        if tail is None:
            seg = _Segment(seq)
            out = bytearray(_SEGMENT_MAGIC)
            out += rec
            mode = "wb"
        else:
            seg = tail
            out = rec
            mode = "ab"
        try:
            with open(self._path(seg.base), mode) as f:
                f.write(out)
        except OSError:
            if tail is not None:  # what reached the file is unknown: a new segment next time
                tail.sealed = True
                self._tail = None
                try:
                    tail.size = os.stat(self._path(tail.base))[6]
                except OSError:
                    pass
            raise
        if tail is None:
            self._segments.append(seg)
            self._tail = seg
            self._window = []
        seg.size += len(out)
        seg.last = seq
        self._bytes += len(out)
        self._newest = seq
        self._pending += 1
        if ref is not None:
            ref[3] = True
        if n <= _MAX_REF:
            w = self._window
            w.append([seq, data, 0 if ref is None else ref[2] + 1, False])
            if len(w) > _REFS:
                w.pop(0)

    def _max_data(self):
        # the most data a record alone in a new segment holds
        n = self.segment_bytes - _HEADER - 7
        if n > 0x7F:
            n -= 1  # its length takes two bytes
        return n if n < _MAX_DATA else _MAX_DATA

    def _encode(self, seq, base, kind, data):
        # -> (record bytes, the window entry it refers to or None)
        n = len(data)
        whole = 5 + _vlen(seq - base) + _vlen(n) + n
        best = None
        if n <= _MAX_REF:
            for e in self._window:
                if e[3] or e[2] >= _CHAIN - 1:
                    continue
                c = _split(e[1], data)
                if c is None:
                    continue
                body = ((n + 7) >> 3) + c[0]
                if n != len(e[1]):
                    body += _vlen(n) + _vlen(c[1])
                size = 5 + _vlen(seq - base) + _vlen(seq - e[0]) + _vlen(body) + body
                if size * 3 <= whole * 2 and (best is None or size < best[0]):
                    best = (size, c[1], e)
        if best is None:
            return _record(seq, base, kind, data), None
        return _record(seq, base, kind, data, best[2], best[1]), best[2]

    def _make_room(self, kind):
        if kind in self.refuse_when_full:
            self._refused += 1
            self._save_state()
            raise JournalFull("full", "%d of %d bytes used; kind %d is refused when full" % (
                self._bytes, self.max_bytes, kind))
        seg = self._segments[0]
        if seg is self._tail:  # cannot happen while max_bytes >= 2 * segment_bytes
            raise JournalFull("full", "no segment to drop")
        lost = self._count_pending(seg)
        self._dropped += lost
        self._pending -= lost
        if seg.last >= self._done:
            self._done = seg.last + 1
        self._head_seq = None
        self._cursor = None
        self._advance()
        self._save_state()
        self._remove(seg)
        self._segments.pop(0)

    def _count_pending(self, seg):
        scan = _Scan(self._path(seg.base), seg.base, False)
        n = 0
        while True:
            r = scan.next()
            if r is None:
                return n
            if r[0] >= self._done and r[0] not in self._ahead:
                n += 1

    def ack(self, seq):
        """The hub acknowledged seq -> True if that was an unacknowledged
        record here, False if not (already acknowledged, unknown)."""
        self._check_open()
        _check_seq(seq)
        if seq < self._done or seq in self._ahead or self._newest is None or seq > self._newest:
            return False
        if seq == self._head():
            self._done = seq + 1
        elif self._holds(seq):
            a = self._ahead
            i = 0
            while i < len(a) and a[i] < seq:
                i += 1
            a.insert(i, seq)
        else:
            return False
        self._pending -= 1
        self._advance()
        self._save_state()
        self._compact()
        return True

    def pending(self, after_seq=None):
        """Unacknowledged records, oldest first, as (seq, kind, data); only
        those above after_seq if given. Reads the files as it goes."""
        self._check_open()
        floor = self._done
        if after_seq is not None:
            if not isinstance(after_seq, int) or isinstance(after_seq, bool):
                raise JournalError("seq", "not a sequence number: %r" % (after_seq,))
            if after_seq + 1 > floor:
                floor = after_seq + 1
        return self._pending_from(floor)

    def _pending_from(self, floor):
        base = -1
        while self._segments is not None:
            seg = None
            for s in self._segments:
                if s.base > base and s.last >= floor:
                    seg = s
                    break
            if seg is None:
                return
            base = seg.base
            scan = _Scan(self._path(base), base, True)
            while True:
                try:
                    r = scan.next()
                except OSError:
                    break  # acknowledged and deleted meanwhile
                if r is None:
                    break
                seq = r[0]
                if seq >= floor and seq >= self._done and seq not in self._ahead:
                    yield r

    def depth(self):
        """Records not yet acknowledged (stats() without its dict)."""
        return self._pending

    def stats(self):
        """Depth, size and counters, for the console's `journal`."""
        self._check_open()
        return {
            "records": self._pending,
            "oldest": self._head(),
            "newest": self._newest,
            "acked": self._done - 1 if self._done else None,
            "ahead": len(self._ahead),
            "bytes": self._bytes,
            "segments": len(self._segments),
            "capacity": self.max_bytes,
            "free": self.max_bytes - self._bytes if self._bytes < self.max_bytes else 0,
            "dropped": self._dropped,
            "abandoned": self._abandoned,
            "refused": self._refused,
            "corrupt": self._corrupt,
            "lost": self._lost,
            "torn": self._torn,
            "state_lost": self._state_lost,
        }

# Streaming reader of an OTA bundle (docs/ota.md, "Bundle format"):
#
#   manifest (COSE_Sign1) || index || code (romfs or files) [|| firmware]
#
# one byte stream, fed in chunks split at any byte.
# Rules:
# - nothing reaches the sink before the manifest's signature and the
#   device's policy pass (ota.manifest.Policy.accept);
# - then each component's bytes go to the sink as they stream, hashed on
#   the way, and its SHA-256 is checked at its end (component_end): a sink
#   writes them where nothing runs them before the reader reports done;
# - bytes are handed on as memoryviews of the caller's chunk, valid during
#   the call only; the reader's one buffer (1 KB, allocated once) holds the
#   manifest, then one index entry at a time. In files mode the reader needs
#   each file's entry as the files stream by: it reads the index back from
#   the sink a window at a time (never whole: 100 entries are ~10 KB) and
#   hashes it again, so a sink that stored it wrong is caught;
# - resume after a reboot: a reader made with stored=N is fed the bundle's
#   first N bytes back from storage: it hashes and checks them again but
#   does not hand them to sink.data, and tells the sink how much of each
#   component and file is already stored;
# - any failure is an OtaError with a `reason` and ends the reader.
#
# The sink (duck-typed; a host test's can be a few lines):
#   manifest(m, signed, stored)   after the policy passed; signed: the
#                                 COSE_Sign1 bytes (memoryview), stored: how
#                                 many of them are already stored
#   component(kind, size, stored) a component starts
#   index_entry(path, size, sha256)  each index entry as it streams
#   file(path, size, sha256, stored) files mode: a file starts
#   data(kind, offset, mv)        new bytes; offset within the component,
#                                 or within the file in files mode
#   file_end(path)                files mode: the file's digest matched
#   component_end(kind)           the component's size and digest matched
#   read_index(offset, mv) -> n   files mode: stored index bytes into mv
import hashlib

import cbor
from compat import const
from ota.manifest import KIND_FILES, KIND_INDEX, KIND_NAMES, MAX_MANIFEST, MAX_SEQ, OtaError

BUFFER_BYTES = MAX_MANIFEST  # the reader's only buffer
_MAX_ENTRY = const(128)  # [path <= 64 bytes, size, sha256] takes at most 106
_MAX_PATH = const(64)
_S_MANIFEST = const(0)
_S_COMPONENT = const(1)
_S_DONE = const(2)


def _scan(buf, pos, end, pending, limit, bad, long):
    # Walks the whole CBOR heads (and string contents) in buf[pos:end]
    # -> (pos, pending): pending counts the data items still to come, 0 once
    # the item begun with pending = 1 is whole. Resumable: call again with
    # more bytes and the returned pair. Each pending item needs a byte at
    # least, so pending <= limit - pos holds throughout: the item ends by
    # `limit` or is refused as soon as it cannot.
    while pending and pos < end:
        ib = buf[pos]
        major = ib >> 5
        arg = ib & 31
        n = 1
        if arg >= 24:
            if arg > 27 or major == 7:  # indefinite, reserved, floats
                raise OtaError(bad, "CBOR initial byte 0x%02x" % ib)
            n = 1 + (1 << (arg - 24))
            if n > limit - pos:
                raise OtaError(long, "longer than %d bytes" % limit)
            if pos + n > end:
                break
            arg = int.from_bytes(buf[pos + 1:pos + n], "big")
        elif major == 7 and not 20 <= arg <= 22:  # false, true, null only
            raise OtaError(bad, "CBOR simple value %d" % arg)
        if major == 2 or major == 3:
            if arg > limit - pos - n:
                raise OtaError(long, "longer than %d bytes" % limit)
            if pos + n + arg > end:
                break
            pos += n + arg
            pending -= 1
        else:
            pos += n
            if major < 4 or major == 7:
                pending -= 1
            elif arg > limit - pos:  # arrays, maps and tags: their items
                raise OtaError(long, "longer than %d bytes" % limit)
            else:
                pending += (1 if major == 6 else arg * 2 if major == 5 else arg) - 1
        if pending > limit - pos:
            raise OtaError(long, "longer than %d bytes" % limit)
    return pos, pending


def _path_ok(path):
    # "/dir/name.ext": ASCII letters, digits, "._-", no empty, "." or ".."
    # part: a sink may join it to a staging directory as it is
    if not isinstance(path, str) or not 1 < len(path) <= _MAX_PATH or path[0] != "/":
        return False
    for c in path:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "/._-"):
            return False
    for part in path[1:].split("/"):
        if part == "" or part == "." or part == "..":
            return False
    return True


def _entry(data, reason):
    # One index entry's bytes -> (path, size, sha256)
    try:
        v = cbor.loads(data, 2, 8, True)
    except cbor.CborError as e:
        raise OtaError(reason, "entry: %s" % e)
    if not isinstance(v, list) or len(v) != 3:
        raise OtaError(reason, "an entry is [path, size, sha256]")
    path, size, digest = v
    if not _path_ok(path):
        raise OtaError(reason, "path %r" % (path,))
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SEQ:
        raise OtaError(reason, "%s: bad size" % path)
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise OtaError(reason, "%s: sha256 must be 32 bytes" % path)
    return path, size, digest


class BundleReader:
    def __init__(self, policy, sink, stored=0):
        self.policy = policy
        self.sink = sink
        self.stored = stored  # bundle bytes already in storage (resume)
        self.offset = 0  # bundle bytes consumed
        self.manifest = None
        self._buf = bytearray(BUFFER_BYTES)
        self._mv = memoryview(self._buf)
        self._error = None
        self._state = _S_MANIFEST
        # an item assembled in _buf: bytes held, scan position, items pending
        self._have = 0
        self._scan = 0
        self._pending = 1
        # the current component
        self._ci = -1
        self._kind = 0
        self._size = 0
        self._done = 0
        self._hash = None
        self._code_size = 0
        # the index as it streams
        self._prev_path = None
        self._entries = 0
        self._sum = 0
        # files mode: the current file, and the index read back
        self._path = None
        self._fsize = 0
        self._fdone = 0
        self._fdigest = None
        self._fhash = None
        self._files_left = 0
        self._idx_off = 0
        self._win_lo = 0
        self._win_hi = 0
        self._idx_hash = None

    @property
    def done(self):
        return self._state == _S_DONE

    def feed(self, chunk):
        # -> True once the whole bundle is in and checked
        if self._error is not None:
            raise self._error
        try:
            mv = memoryview(chunk)
            pos = 0
            end = len(mv)
            while pos < end:
                if self._state == _S_COMPONENT:
                    pos = self._component_bytes(mv, pos, end)
                elif self._state == _S_MANIFEST:
                    pos = self._manifest_bytes(mv, pos, end)
                else:
                    raise OtaError("trailing", "%d bytes after the last component" % (end - pos))
        except Exception as e:  # the sink's errors too: the reader's state is lost
            self._error = e
            raise
        return self._state == _S_DONE

    def finish(self):
        # The stream ended -> the Manifest; OtaError("truncated") if short
        if self._error is None and self._state != _S_DONE:
            self._error = OtaError("truncated", "the stream ended at byte %d" % self.offset)
        if self._error is not None:
            raise self._error
        return self.manifest

    def _stored_in(self, start, size):
        return max(0, min(size, self.stored - start))

    def _hand(self, kind, at, piece, stream_at):
        # sink.data for the part of piece not stored yet
        skip = self.stored - stream_at
        if skip <= 0:
            self.sink.data(kind, at, piece)
        elif skip < len(piece):
            self.sink.data(kind, at + skip, piece[skip:])

    def _assemble(self, mv, pos, end, limit, bad, long):
        # Copies bytes of one CBOR item into _buf -> (pos, length once whole, or 0)
        have = self._have
        take = min(end - pos, limit - have)
        self._buf[have:have + take] = mv[pos:pos + take]
        self._have = have + take
        self._scan, self._pending = _scan(self._buf, self._scan, self._have, self._pending, limit, bad, long)
        if self._pending:
            if self._have == limit:
                raise OtaError(long, "longer than %d bytes" % limit)
            return pos + take, 0
        n = self._scan
        self._have = 0
        self._scan = 0
        self._pending = 1
        return pos + n - have, n

    def _manifest_bytes(self, mv, pos, end):
        if self._have == 0 and mv[pos] != 0xD2:  # tag 18: fail early on a stream of something else
            raise OtaError("format", "the bundle does not start with a COSE_Sign1")
        start = pos
        pos, n = self._assemble(mv, pos, end, MAX_MANIFEST, "cbor", "size")
        self.offset += pos - start
        if n:
            m = self.policy.accept(bytes(self._mv[:n]))
            self.manifest = m
            self._code_size = m.component(m.code_kind())[0]
            self.sink.manifest(m, self._mv[:n], min(self.stored, n))
            self._next_component()
        return pos

    def _next_component(self):
        self._ci += 1
        comps = self.manifest.components
        if self._ci == len(comps):
            self._state = _S_DONE
            return
        kind, size, _ = comps[self._ci]
        self._state = _S_COMPONENT
        self._kind = kind
        self._size = size
        self._done = 0
        self._hash = hashlib.sha256()
        self.sink.component(kind, size, self._stored_in(self.offset, size))
        if kind == KIND_FILES:
            self._files_left = self._entries
            self._idx_hash = hashlib.sha256()
            self._next_file()

    def _component_bytes(self, mv, pos, end):
        take = min(end - pos, self._size - self._done)
        piece = mv[pos:pos + take]
        self._hash.update(piece)
        kind = self._kind
        if kind == KIND_FILES:
            self._files_bytes(piece)  # advances self.offset file by file
        else:
            self._hand(kind, self._done, piece, self.offset)
            if kind == KIND_INDEX:
                self._index_bytes(piece)
            self.offset += take
        self._done += take
        if self._done == self._size:
            self._end_component()
        return pos + take

    def _end_component(self):
        kind = self._kind
        if self._hash.digest() != self.manifest.components[self._ci][2]:
            raise OtaError("digest", "the %s component's SHA-256 does not match" % KIND_NAMES[kind])
        if kind == KIND_INDEX:
            if self._have:
                raise OtaError("index", "the index ends inside an entry")
            if self.manifest.code_kind() == KIND_FILES and self._sum != self._code_size:
                raise OtaError("index", "files of %d bytes, the files component has %d" % (
                    self._sum, self._code_size))
        elif kind == KIND_FILES:
            if self._path is not None or self._files_left or self._win_lo != self._win_hi:
                raise OtaError("storage", "the stored index does not match the files")
            size, digest = self.manifest.component(KIND_INDEX)
            if self._idx_off != size or self._idx_hash.digest() != digest:
                raise OtaError("storage", "the index read back is not the index received")
        self.sink.component_end(kind)
        self._next_component()

    # -- the index as it streams --

    def _index_bytes(self, piece):
        pos = 0
        end = len(piece)
        while pos < end:
            pos, n = self._assemble(piece, pos, end, _MAX_ENTRY, "index", "index")
            if not n:
                continue
            path, size, digest = _entry(bytes(self._mv[:n]), "index")
            if self._prev_path is not None and path <= self._prev_path:
                raise OtaError("index", "%s: paths must be sorted and unique" % path)
            self._prev_path = path
            self._entries += 1
            self._sum += size
            if self._sum > self._code_size:
                raise OtaError("index", "files larger than the %s component" % KIND_NAMES[
                    self.manifest.code_kind()])
            self.sink.index_entry(path, size, digest)

    # -- files mode: the files component split by the index read back --

    def _files_bytes(self, piece):
        pos = 0
        end = len(piece)
        while pos < end:
            if self._path is None:
                raise OtaError("storage", "the stored index lists fewer bytes than the files hold")
            t = min(end - pos, self._fsize - self._fdone)
            part = piece[pos:pos + t]
            self._fhash.update(part)
            self._hand(KIND_FILES, self._fdone, part, self.offset)
            self._fdone += t
            self.offset += t
            pos += t
            if self._fdone == self._fsize:
                self._end_file()
                self._next_file()

    def _end_file(self):
        if self._fhash.digest() != self._fdigest:
            raise OtaError("digest", "%s: SHA-256 does not match the index" % self._path)
        path = self._path
        self._path = None
        self.sink.file_end(path)

    def _next_file(self):
        # Opens the next file that has bytes; empty ones open and close here
        while self._files_left:
            self._files_left -= 1
            path, size, digest = self._read_entry()
            self._path = path
            self._fsize = size
            self._fdone = 0
            self._fdigest = digest
            self._fhash = hashlib.sha256()
            self.sink.file(path, size, digest, self._stored_in(self.offset, size))
            if size:
                return
            self._end_file()

    def _read_entry(self):
        # The next entry of the stored index, read back a window at a time
        index_size = self.manifest.component(KIND_INDEX)[0]
        while True:
            lo = self._win_lo
            hi = self._win_hi
            if hi > lo:
                pos, pending = _scan(self._buf, lo, hi, 1, lo + _MAX_ENTRY, "storage", "storage")
                if not pending:
                    self._win_lo = pos
                    return _entry(bytes(self._mv[lo:pos]), "storage")
            if lo:  # keep the partial entry, at the front
                self._buf[0:hi - lo] = bytes(self._mv[lo:hi])
                hi -= lo
                self._win_lo = 0
                self._win_hi = hi
            want = min(BUFFER_BYTES - hi, index_size - self._idx_off)
            if want <= 0:
                raise OtaError("storage", "the stored index ends inside an entry")
            got = self.sink.read_index(self._idx_off, self._mv[hi:hi + want])
            if not isinstance(got, int) or not 0 < got <= want:
                raise OtaError("storage", "read_index gave %r bytes at %d" % (got, self._idx_off))
            self._idx_hash.update(self._mv[hi:hi + got])
            self._idx_off += got
            self._win_hi = hi + got

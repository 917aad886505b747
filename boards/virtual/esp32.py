# Stand-in for the esp32 port's `esp32` module (its Partition class) on a
# virtual board whose board file has ESP32 OTA partitions (ota_0, ota_1,
# otadata). rom.py imports it only then, so on other boards `import esp32`
# fails, as on an RP2040.
#
# The partitions live in a host file, the board's flash (PGW_VBOARD_FLASH,
# offsets from the board file; PGW_VBOARD_PARTITIONS lists them). Reads and
# writes go there directly, with NOR flash's rules: erase sets a 4 KB block
# to 0xFF, a write can only clear bits. What ESP-IDF does in C goes to the
# supervisor over the link, whose bootloader keeps otadata
# (host_tools/vboard/otadata.py): set_boot() (which checks the image),
# mark_app_valid_cancel_rollback() and Partition.BOOT. RUNNING is the app
# partition the supervisor's bootloader chose at the last reset
# (PGW_VBOARD_APP). Errors are OSError(-esp_err_t), as the port raises them.
import os

import vfs
import vboard_link as _link

_BLOCK = 4096
_ERR_INVALID_SIZE = -260  # ESP_ERR_INVALID_SIZE: outside the partition
_FF = b"\xff" * 256
_scratch = bytearray(256)  # what flash holds under a write, a piece at a time
_host = vfs.VfsPosix()  # the host's files, reachable once "/" is the board's flash


def _table():
    # (label, type, subtype, address, size) of each partition
    out = []
    for item in (os.getenv("PGW_VBOARD_PARTITIONS") or "").split(";"):
        f = item.split(",")
        if len(f) == 5:
            out.append((f[0], int(f[1]), int(f[2]), int(f[3]), int(f[4])))
    return out


def _ask(op):
    # the supervisor's ESP-IDF: "ota ok [label]" or "ota err CODE"
    words = _link.request("ota " + op, "ota ").split()
    if words[1] != "ok":
        raise OSError(-int(words[2]))
    return words[2] if len(words) > 2 else None


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_BLOCK):
        if id == Partition.BOOT:
            id = _ask("boot")
        elif id == Partition.RUNNING:
            id = os.getenv("PGW_VBOARD_APP")
        elif not isinstance(id, str):
            raise ValueError
        for p in _table():
            if p[0] == id:
                self._p = p
                self._bs = block_size
                return
        raise OSError(2)  # ENOENT, as the port raises for a partition it cannot find

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=_BLOCK):
        return [Partition(p[0], block_size) for p in _table()
                if p[1] == type and subtype in (0xFF, p[2]) and label in (None, p[0])]

    def info(self):
        label, ptype, subtype, addr, size = self._p
        return (ptype, subtype, addr, size, label, False)

    def __repr__(self):
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % (
            self._p[1], self._p[2], self._p[3], self._p[4], self._p[0])

    def _at(self, offset, n):
        if offset < 0 or offset + n > self._p[4]:
            raise OSError(_ERR_INVALID_SIZE)
        return self._p[3] + offset

    def readblocks(self, block_num, buf, offset=0):
        at = self._at(block_num * self._bs + offset, len(buf))
        with _host.open(os.getenv("PGW_VBOARD_FLASH"), "rb") as f:
            f.seek(at)
            f.readinto(buf)

    def writeblocks(self, block_num, buf, offset=None):
        # without an offset the blocks are erased first (the simple block protocol)
        start = block_num * self._bs
        if offset is None:
            for b in range(start, start + len(buf), self._bs):
                self._erase(b, self._bs)
            offset = 0
        at = self._at(start + offset, len(buf))
        mv = memoryview(buf)
        s = memoryview(_scratch)
        with _host.open(os.getenv("PGW_VBOARD_FLASH"), "r+b") as f:
            for i in range(0, len(mv), 256):
                n = min(256, len(mv) - i)
                f.seek(at + i)
                f.readinto(s[:n])
                if (_scratch if n == 256 else _scratch[:n]) == _FF[:n]:
                    f.seek(at + i)
                    f.write(mv[i:i + n])
                else:  # written over without an erase: bits only clear
                    for k in range(n):
                        _scratch[k] &= mv[i + k]
                    f.seek(at + i)
                    f.write(s[:n])

    def _erase(self, offset, n):
        at = self._at(offset, n)
        with _host.open(os.getenv("PGW_VBOARD_FLASH"), "r+b") as f:
            f.seek(at)
            for i in range(0, n, 256):
                f.write(_FF[:min(256, n - i)])

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):  # init, deinit, sync
            return 0
        if cmd == 4:  # block count
            return self._p[4] // self._bs
        if cmd == 5:  # block size
            return self._bs
        if cmd == 6:  # erase a block
            self._erase(arg * self._bs, self._bs)
            return 0
        return None

    def set_boot(self):
        _ask("set_boot " + self._p[0])

    def get_next_update(self):
        # esp_ota_get_next_update_partition: the OTA app after this one, else the first
        apps = sorted((p[0] for p in _table() if p[1] == 0 and p[0].startswith("ota_")), key=lambda n: int(n[4:]))
        if not apps:
            raise OSError(2)
        i = apps.index(self._p[0]) + 1 if self._p[0] in apps else 0
        return Partition(apps[i % len(apps)], self._bs)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        _ask("valid")

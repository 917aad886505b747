# The virtual board's flash: a host directory mounted as "/".
#
# A thin layer over os.VfsPosix, for three reasons:
# - confinement: VfsPosix joins its root and the path as text, so
#   "/../x" would reach outside the directory; here every path is
#   normalised first, and ".." stops at "/" as it does on a board;
# - the unix port's VfsPosix builds both paths of rename() in one shared
#   buffer, so renaming an absolute path fails with ENOENT (littlefs on a
#   board does not);
# - its ilistdir() gives no sizes, which `mpremote fs ls` shows.
import os


class HostDirFlash:
    def __init__(self, root):
        self._root = root.rstrip("/")
        self._fs = os.VfsPosix(self._root)
        self._host = os.VfsPosix()  # unconfined: only ever given paths under _root

    def _path(self, path):
        if not path.startswith("/"):
            path = self._fs.getcwd() + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return "/" + "/".join(parts)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def ilistdir(self, path):
        path = self._path(path)
        base = path if path.endswith("/") else path + "/"
        for entry in self._fs.ilistdir(path):
            size = 0
            if entry[1] == 0x8000:
                size = self._fs.stat(base + entry[0])[6]
            yield (entry[0], entry[1], entry[2], size)

    def rename(self, old, new):
        self._host.rename(self._root + self._path(old), self._root + self._path(new))

    def chdir(self, path):
        return self._fs.chdir(self._path(path))

    def getcwd(self):
        return self._fs.getcwd() or "/"

    def mkdir(self, path):
        return self._fs.mkdir(self._path(path))

    def remove(self, path):
        return self._fs.remove(self._path(path))

    def rmdir(self, path):
        return self._fs.rmdir(self._path(path))

    def stat(self, path):
        return self._fs.stat(self._path(path))

    def statvfs(self, path):
        return self._fs.statvfs(self._path(path))

    def open(self, path, mode):
        return self._fs.open(self._path(path), mode)

# The virtual board's flash: a host directory mounted as "/".
#
# A thin layer over os.VfsPosix for two reasons. The unix port's VfsPosix
# builds both paths of rename() in one shared buffer, so renaming one
# absolute path to another fails with ENOENT (littlefs on a board does
# not); and its ilistdir() gives no sizes, which `mpremote fs ls` shows.
import os


class HostDirFlash:
    def __init__(self, root):
        self._root = root.rstrip("/")
        self._fs = os.VfsPosix(self._root)
        self._host = os.VfsPosix()  # unconfined: used only with paths built from _root

    def _host_path(self, path):
        if not path.startswith("/"):
            cwd = self._fs.getcwd()
            path = (cwd if cwd.endswith("/") else cwd + "/") + path
        if "/../" in path + "/":
            raise OSError(1)  # EPERM: the flash has no parent
        return self._root + path

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def ilistdir(self, path):
        base = path if path.endswith("/") else path + "/"
        for entry in self._fs.ilistdir(path):
            size = 0
            if entry[1] == 0x8000:
                size = self._fs.stat(base + entry[0])[6]
            yield (entry[0], entry[1], entry[2], size)

    def rename(self, old, new):
        self._host.rename(self._host_path(old), self._host_path(new))

    def chdir(self, path):
        return self._fs.chdir(path)

    def getcwd(self):
        return self._fs.getcwd()

    def mkdir(self, path):
        return self._fs.mkdir(path)

    def remove(self, path):
        return self._fs.remove(path)

    def rmdir(self, path):
        return self._fs.rmdir(path)

    def stat(self, path):
        return self._fs.stat(path)

    def statvfs(self, path):
        return self._fs.statvfs(path)

    def open(self, path, mode):
        return self._fs.open(path, mode)

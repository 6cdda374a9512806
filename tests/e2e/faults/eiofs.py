#!/usr/bin/python3
"""A passthrough FUSE filesystem that fails chosen operations with EIO on command.

    /usr/bin/python3 eiofs.py BACKING MOUNTPOINT CONTROL

Mirrors the directory BACKING at MOUNTPOINT (fusepy, Debian's python3-fusepy, on libfuse 2;
run in the foreground until unmounted or sent SIGTERM). It runs with the system Python because
the test venv has no system site packages.

CONTROL is a file outside the mount that the test rewrites (atomically, by rename) to switch
faults on and off; it is checked before every operation. Each line is one rule:

    read PREFIX [FROM]   read() of a file whose path (relative to the mount) starts with PREFIX
                         fails with EIO when the request reaches past byte FROM (default 0:
                         every read). A request that ends at or before FROM is answered, so
                         with FROM = 1 MiB a 4 MiB file reads fine up to 1 MiB and then fails,
                         never short (a short FUSE read means end of file to the kernel).
    write PREFIX         every change under PREFIX fails with EIO: create, mknod, mkdir, open
                         for writing, write, truncate, fsync, rename (either side), link,
                         unlink, rmdir.
    data PREFIX          only the changes of a file's bytes fail: write, truncate, fsync (files
                         can still be created, opened, renamed and removed).

An empty or missing CONTROL file means no faults. Every injected error is counted in
CONTROL + ".hits" (one line per hit: `read|write|data PATH`), so a test can tell that the fault it
armed was actually met.
"""

import errno
import logging
import os
import sys
import threading

try:  # Debian renames upstream's `fuse` module to `fusepy` (python3-fuse owns `fuse`)
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:  # pragma: no cover - upstream fusepy from PyPI
    from fuse import FUSE, FuseOSError, Operations

# Flags the backing file must not be opened with: O_DIRECT would make every pread/pwrite of
# this process need aligned buffers; O_APPEND would ignore the offsets the kernel sends.
STRIP_FLAGS = getattr(os, "O_DIRECT", 0) | os.O_APPEND
WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


class Control:
    def __init__(self, path: str):
        self.path = path
        self.hits_path = path + ".hits"
        self.key = None
        self.rules: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def current(self) -> list[tuple[str, str, int]]:
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        with self.lock:
            if key != self.key:
                rules = []
                if key is not None:
                    with open(self.path) as f:
                        for line in f:
                            words = line.split()
                            if not words or words[0].startswith("#"):
                                continue
                            kind, prefix = words[0], words[1].lstrip("/")
                            start = int(words[2]) if len(words) > 2 else 0
                            if kind not in ("read", "write", "data"):
                                raise ValueError(f"unknown rule {line!r} in {self.path}")
                            rules.append((kind, prefix, start))
                self.key, self.rules = key, rules
            return self.rules

    def check(self, kinds: tuple[str, ...], path: str, offset: int = 0, size: int = 1) -> None:
        rel = path.lstrip("/")
        for k, prefix, start in self.current():
            if k in kinds and rel.startswith(prefix) and offset + size > start:
                kind = k
                with self.lock, open(self.hits_path, "a") as f:
                    f.write(f"{kind} {rel}\n")
                raise FuseOSError(errno.EIO)


class EioFs(Operations):
    use_ns = True

    def __init__(self, backing: str, control: Control):
        self.root = os.path.realpath(backing)
        self.control = control

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _write(self, *paths: str) -> None:
        for p in paths:
            self.control.check(("write",), p)

    def _data(self, path: str) -> None:
        self.control.check(("write", "data"), path)

    # --- metadata

    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        out = {k: getattr(st, k) for k in (
            "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_ino", "st_dev",
        )}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            out[k] = getattr(st, k + "_ns")
        return out

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._full(path), ns=times) if times else os.utime(self._full(path))

    def readlink(self, path):
        return os.readlink(self._full(path))

    def statfs(self, path):
        sv = os.statvfs(self._full(path))
        return {k: getattr(sv, k) for k in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
            "f_frsize", "f_namemax",
        )}

    # --- directories

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._full(path))

    def mkdir(self, path, mode):
        self._write(path)
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        self._write(path)
        os.rmdir(self._full(path))

    def fsyncdir(self, path, datasync, fh):
        fd = os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- names

    def mknod(self, path, mode, dev):
        self._write(path)
        os.mknod(self._full(path), mode, dev)

    def unlink(self, path):
        self._write(path)
        os.unlink(self._full(path))

    def symlink(self, target, source):
        self._write(target)
        os.symlink(source, self._full(target))

    def link(self, target, source):
        self._write(target, source)
        os.link(self._full(source), self._full(target))

    def rename(self, old, new):
        self._write(old, new)
        os.rename(self._full(old), self._full(new))

    # --- files

    def create(self, path, mode, fi=None):
        self._write(path)
        # Read-write whatever the caller asked for: the kernel also reads through this handle
        # (a page fault of a shared mapping, say; SQLite maps its -shm file), and fusepy does not
        # pass the open flags here.
        return os.open(self._full(path), os.O_RDWR | os.O_CREAT, mode)

    def open(self, path, flags):
        if flags & os.O_ACCMODE in WRITE_MODES:
            self._write(path)
        return os.open(self._full(path), flags & ~STRIP_FLAGS)

    def read(self, path, size, offset, fh):
        self.control.check(("read",), path, offset, size)
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self._data(path)
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self._data(path)
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._full(path), length)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        self._data(path)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    def release(self, path, fh):
        os.close(fh)


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    backing, mountpoint, control = sys.argv[1:]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # fusepy's unexpected errors
    FUSE(EioFs(backing, Control(control)), mountpoint, foreground=True, nothreads=False,
         fsname="berth-eiofs")


if __name__ == "__main__":
    main()

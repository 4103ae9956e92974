"""Unpack one OCI image layer (a gzip or plain tar) into a directory usable as an
overlayfs lower layer. Blocking code: callers run it in a thread.

Why our own extraction loop rather than ``TarFile.extractall``: OCI whiteouts must become
overlayfs whiteouts (``.wh.NAME`` -> a 0:0 character device NAME, ``.wh..wh..opq`` -> the
``trusted.overlay.opaque=y`` xattr on the directory), numeric ownership must be kept
exactly (the image's uids, not the host's names), and every member is checked against
path traversal: no ``..``, no absolute escape, no writing through a symlink that an
earlier member planted. Directory metadata is applied last, deepest first, so that
read-only directories and their mtimes survive the files written into them.

What an image may not bring (the layer dirs live on the host, and runc would hand
anything in them to the container): device nodes are skipped (/dev is a tmpfs with the
standard devices; a block device in a layer is the host's disk), setuid and setgid bits
are dropped from files (a setuid-root binary in a layer dir is a host root shell for
whoever reaches it; in the container noNewPrivileges makes them inert anyway; setgid on
a directory only sets the group of new files and is kept), and only ``user.*`` xattrs
are applied (``trusted.*`` would forge overlayfs metadata such as opaque dirs or
redirects, ``security.*`` file capabilities or labels). A whiteout applies to lower
layers only, as the OCI image spec says, never to what its own layer holds.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO

from orch.errors import ImageError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_ALLOWED_XATTR = "user."
_DROPPED_MODE_BITS = stat.S_ISUID | stat.S_ISGID
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _open_layer(blob: IO[bytes], name: str) -> tarfile.TarFile:
    head = blob.read(4)
    blob.seek(0)
    if head.startswith(_ZSTD_MAGIC):
        raise ImageError(f"layer {name}: zstd-compressed layers are not supported")
    mode = "r|gz" if head.startswith(_GZIP_MAGIC) else "r|"
    return tarfile.open(fileobj=blob, mode=mode)  # type: ignore[call-overload]


def _rel_parts(name: str, layer: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"layer {layer}: unsafe path {name!r} in archive")
    return parts


class _Extractor:
    def __init__(self, root: Path, layer: str) -> None:
        self.root = root
        self.layer = layer
        self.safe_dirs: set[Path] = {root}
        self.dirs: list[tuple[Path, tarfile.TarInfo]] = []
        self.own: set[Path] = set()
        """Paths this layer itself made (whiteouts must leave them alone)."""
        self.whiteouts: set[Path] = set()
        """Whiteouts made for lower layers, to be turned opaque if a directory follows."""
        self.dropped: set[Path] = set()
        """Device nodes left out (a hardlink to one is left out too)."""

    def parent(self, parts: list[str]) -> Path:
        """The directory for parts[:-1], created if missing, refusing symlinks on the way."""
        path = self.root
        for part in parts[:-1]:
            path = path / part
            if path in self.safe_dirs:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                self.own.add(path)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise ImageError(
                        f"layer {self.layer}: path {'/'.join(parts)!r} goes through a non-directory"
                    )
            self.safe_dirs.add(path)
        return path

    def clear(self, path: Path, keep_dir: bool) -> None:
        """Remove what is at path so a new entry can take its place (a later entry wins)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(path)
            self.safe_dirs = {d for d in self.safe_dirs if not d.is_relative_to(path)}
        else:
            os.unlink(path)

    def member(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        parts = _rel_parts(info.name, self.layer)
        if not parts:  # the "./" entry: metadata of the layer root
            if info.isdir():
                self.dirs.append((self.root, info))
            return
        base = parts[-1]
        parent = self.parent(parts)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, base)
            return
        path = parent / base
        if info.ischr() or info.isblk():
            self.dropped.add(path)  # device nodes from images are dropped (module docstring)
            return
        self.clear(path, keep_dir=info.isdir())
        self.own.add(path)
        if info.isdir():
            if not path.exists():
                os.mkdir(path, 0o755)
            if path in self.whiteouts:  # ".wh.d" then "d/": d hides the lower d's content
                os.setxattr(path, OPAQUE_XATTR, b"y")
            self.safe_dirs.add(path)
            self.dirs.append((path, info))
            self.xattrs(path, info)
            return
        if info.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                src = tf.extractfile(info)
                if src is not None:
                    shutil.copyfileobj(src, out, 1 << 20)
        elif info.issym():
            os.symlink(info.linkname, path)
        elif info.islnk():
            target = self.root.joinpath(*_rel_parts(info.linkname, self.layer))
            self.parent(_rel_parts(info.linkname, self.layer))  # refuses symlinked parents
            if target in self.dropped:
                return
            if not os.path.lexists(target):
                raise ImageError(
                    f"layer {self.layer}: hardlink {info.name!r} to missing {info.linkname!r}"
                )
            os.link(target, path, follow_symlinks=False)
            return  # a hardlink shares the target's inode and metadata
        elif info.isfifo():
            os.mkfifo(path, 0o600)
        else:
            return  # other types (GNU sparse handled by tarfile; unknown ones skipped)
        self.xattrs(path, info)
        self.metadata(path, info)

    def whiteout(self, parent: Path, base: str) -> None:
        if base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if base.startswith(OPAQUE_MARKER[:8]):  # other ".wh..wh." aufs metadata
            return
        target = parent / base[len(WHITEOUT_PREFIX) :]
        if target in self.own:
            # The OCI spec: a whiteout hides lower layers only. The layer's own entry
            # already hides a lower one, except that a lower directory would merge into
            # its own directory: make that opaque.
            if os.path.isdir(target) and not os.path.islink(target):
                os.setxattr(target, OPAQUE_XATTR, b"y")
            return
        self.clear(target, keep_dir=False)
        os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))
        self.whiteouts.add(target)

    def xattrs(self, path: Path, info: tarfile.TarInfo) -> None:
        for key, value in info.pax_headers.items():
            name = key.removeprefix(_XATTR_PAX)
            if name != key and name.startswith(_ALLOWED_XATTR):
                raw = value.encode("utf-8", "surrogateescape")
                os.setxattr(path, name, raw, follow_symlinks=False)

    def metadata(self, path: Path, info: tarfile.TarInfo) -> None:
        os.chown(path, info.uid, info.gid, follow_symlinks=False)
        if not info.issym():
            mode = info.mode & 0o7777
            if not info.isdir():
                mode &= ~_DROPPED_MODE_BITS
            os.chmod(path, mode)
        os.utime(path, (info.mtime, info.mtime), follow_symlinks=False)

    def finish(self) -> None:
        for path, info in sorted(self.dirs, key=lambda d: len(d[0].parts), reverse=True):
            self.metadata(path, info)


def extract_layer(blob: Path, dest: Path) -> None:
    """Extract the layer archive at ``blob`` into the existing empty directory ``dest``."""
    name = blob.name
    try:
        with open(blob, "rb") as f, _open_layer(f, name) as tf:
            ex = _Extractor(dest, name)
            for info in tf:
                ex.member(tf, info)
            ex.finish()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ImageError(f"layer {name}: cannot unpack: {exc}") from exc

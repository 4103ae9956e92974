"""Pull OCI images with skopeo and unpack their layers once, for overlayfs.

Layout under ``root``::

    policy.json            skopeo signature policy (accept anything: we pin by digest)
    blobs/sha256/<hex>     every blob of every image, shared (skopeo --dest-shared-blob-dir)
    refs/<key>/            one small OCI layout per pulled reference (index.json + oci-layout)
    layers/sha256-<hex>/   each layer unpacked once, with overlayfs whiteouts

Why per-reference layouts over one shared blob dir, and not one index.json for all: skopeo
rewrites index.json on every copy, so concurrent pulls of different images into a single
layout could lose each other's entries; separate small layouts cannot, and the blobs are
still stored once. Layer directory names avoid ':' because overlayfs uses it as the
lowerdir separator.

Registry mirrors (``ImageSettings.mirrors``) change only where skopeo fetches from: the
reference, the per-reference layout key and every message keep the name users wrote, so
a task's image reads the same on every node whichever mirror served it.

Concurrency: pulls of the same reference and unpacks of the same layer serialize through
per-key asyncio locks; a layer is unpacked into a temp dir and renamed into place, so a
crash mid-unpack never leaves a half layer that looks complete (also across processes).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orch.errors import ImageError
from orch.runtime.layers import extract_layer
from orch.runtime.model import Image
from orch.runtime.settings import ImageSettings
from orch.runtime.util import KeyedLock, error_line, private_dir, run

_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_REF_ANNOTATION = "org.opencontainers.image.ref.name"
_LOCAL_TAG = "image"
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def host_arch() -> str:
    machine = platform.machine()
    return _ARCHES.get(machine, machine)


def registry_host(ref: str) -> str | None:
    """The registry host[:port] of a registry reference; None for an OCI layout ref."""
    if ref.startswith("oci:"):
        return None
    name = ref.removeprefix("docker://")
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _is_loopback(host: str) -> bool:
    h = host
    if h.startswith("["):
        h = h[1:].partition("]")[0]
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def skopeo_source(ref: str, oci_dirs: Sequence[str] = ()) -> str:
    """The skopeo transport string for one of our references. An ``oci:`` layout must lie
    under one of ``oci_dirs`` (symlinks resolved): a task must not make the agent read
    any path of the host it likes (ImageSettings.oci_layout_dirs)."""
    if ref.startswith("oci:"):
        path, sep, tag = ref[4:].partition(":")
        if not path.startswith("/"):
            raise ImageError(f"pull {ref}: OCI layout path must be absolute")
        real = os.path.realpath(path)
        if not any(_is_under(real, d) for d in oci_dirs):
            where = ", ".join(oci_dirs) if oci_dirs else "nowhere (no OCI layout dirs set)"
            raise ImageError(f"pull {ref}: OCI layouts are only read from {where}")
        return f"oci:{real}{sep}{tag}"
    if not ref or any(c.isspace() for c in ref):
        raise ImageError(f"pull {ref!r}: invalid image reference")
    return "docker://" + ref.removeprefix("docker://")


def _is_under(path: str, top: str) -> bool:
    return Path(path).is_relative_to(os.path.realpath(top))


def mirrored(ref: str, mirrors: Mapping[str, str]) -> tuple[str, str | None]:
    """``ref`` with its registry host replaced by its mirror, and the mirror (None when
    ``ref`` has none). Docker Hub short names are spelled out first ("busybox" ->
    "library/busybox"), as a mirror of docker.io serves them under the full name."""
    host = registry_host(ref)
    mirror = mirrors.get(host) if host is not None else None
    if host is None or mirror is None:
        return ref, None
    name = ref.removeprefix("docker://")
    first, sep, rest = name.partition("/")
    explicit = sep and ("." in first or ":" in first or first == "localhost")
    path = rest if explicit else name
    if host == "docker.io" and "/" not in path:
        path = "library/" + path
    return f"{mirror}/{path}", mirror


def pick_platform(manifests: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """From an index's manifests, the linux one for this host's arch, else linux/amd64."""
    for arch in (host_arch(), "amd64"):
        for m in manifests:
            p = m.get("platform") or {}
            if p.get("os") == "linux" and p.get("architecture") == arch:
                return m
    raise ImageError(f"pull {ref}: no linux/{host_arch()} image in the index")


class ImageStore:
    """Pulls images into ``root`` and hands out unpacked layers. One per agent (or shared)."""

    def __init__(self, root: Path, settings: ImageSettings | None = None) -> None:
        self.root = Path(root)
        self.settings = settings or ImageSettings()
        self.blobs = self.root / "blobs"
        self.refs = self.root / "refs"
        self.layers = self.root / "layers"
        self._pull_locks = KeyedLock()
        self._inflight: dict[str, asyncio.Future[Image]] = {}
        self._layer_locks = KeyedLock()
        self.layers_unpacked = 0
        """How many layers this store unpacked (the rest were already on disk)."""
        for d in (self.root, self.blobs, self.refs, self.layers):
            private_dir(d)
        self._policy = self.root / "policy.json"
        if not self._policy.exists():
            self._policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self._sweep_temp()

    def _ref_dir(self, ref: str) -> Path:
        return self.refs / hashlib.sha256(ref.encode()).hexdigest()[:32]

    def _blob(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if not hexpart or "/" in digest or algo not in ("sha256", "sha512"):
            raise ImageError(f"bad digest {digest!r}")
        return self.blobs / algo / hexpart

    def layer_dir(self, digest: str) -> Path:
        return self.layers / digest.replace(":", "-")

    async def pull(self, ref: str) -> Image:
        """Copy ``ref`` here with skopeo (reusing blobs already present) and unpack it.

        Pulls of one reference that overlap share one skopeo run: when 20 replicas land on
        a node at once, the registry is asked once (the tag is still re-resolved on every
        new pull, as Swarm does, so a moved tag is seen by the next task)."""
        inflight = self._inflight.get(ref)
        if inflight is None:
            inflight = asyncio.ensure_future(self._pull(ref))
            self._inflight[ref] = inflight
            inflight.add_done_callback(lambda _: self._inflight.pop(ref, None))
        return await asyncio.shield(inflight)

    async def _pull(self, ref: str) -> Image:
        async with self._pull_locks.hold(ref):
            await self._copy(ref)
            image = await self.get(ref)
        if image is None:
            raise ImageError(f"pull {ref}: skopeo reported success but wrote no image")
        return image

    def _skopeo_argv(self, ref: str, dest: Path) -> list[str]:
        s = self.settings
        argv = [
            s.skopeo_binary,
            "--policy",
            str(self._policy),
            "--command-timeout",
            f"{int(s.pull_timeout)}s",
            "copy",
            "--quiet",
            "--dest-shared-blob-dir",
            str(self.blobs),
        ]
        source, mirror = mirrored(ref, s.mirrors)
        if self._insecure(registry_host(ref), mirror):
            argv.append("--src-tls-verify=false")
        return [*argv, skopeo_source(source, s.oci_layout_dirs), f"oci:{dest}:{_LOCAL_TAG}"]

    def _insecure(self, host: str | None, mirror: str | None) -> bool:
        """Plain HTTP / no TLS verification: loopback registries, the listed insecure
        ones, and the mirror of either (a local cluster's mirror of 127.0.0.1:5055)."""
        if host is None:
            return False
        hosts = [host] if mirror is None else [host, mirror]
        return any(_is_loopback(h) or h in self.settings.insecure_registries for h in hosts)

    async def _copy(self, ref: str) -> None:
        dest = self._ref_dir(ref)
        argv = self._skopeo_argv(ref, dest)  # first: a refused reference leaves nothing
        dest.mkdir(exist_ok=True)
        try:
            done = await run(argv, time_limit=self.settings.pull_timeout + 5)
        except TimeoutError as exc:
            raise ImageError(
                f"pull {ref}: timed out after {self.settings.pull_timeout:g}s"
            ) from exc
        except OSError as exc:
            raise ImageError(f"pull {ref}: cannot run skopeo: {exc}") from exc
        if done.returncode != 0:
            if not (dest / "index.json").exists():
                shutil.rmtree(dest, ignore_errors=True)
            reason = error_line(done.stderr, f"skopeo exited {done.returncode}")
            reason = reason.removeprefix(f"initializing source {argv[-2]}: ")
            _, mirror = mirrored(ref, self.settings.mirrors)
            via = f" (through mirror {mirror})" if mirror else ""
            raise ImageError(f"pull {ref}: {reason}{via}")
        (dest / "ref").write_text(ref)

    async def get(self, ref: str) -> Image | None:
        """The image already pulled as ``ref`` (layers unpacked on demand), or None."""
        index = self._read_json_file(self._ref_dir(ref) / "index.json", ref)
        if index is None:
            return None
        desc = next(
            (
                m
                for m in index.get("manifests", [])
                if (m.get("annotations") or {}).get(_REF_ANNOTATION) == _LOCAL_TAG
            ),
            None,
        )
        if desc is None:
            return None
        if desc.get("mediaType") in _INDEX_TYPES:
            sub = self._read_blob_json(desc["digest"], ref)
            desc = pick_platform(sub.get("manifests", []), ref)
        manifest = self._read_blob_json(desc["digest"], ref)
        if manifest.get("mediaType") in _INDEX_TYPES or "manifests" in manifest:
            desc = pick_platform(manifest.get("manifests", []), ref)
            manifest = self._read_blob_json(desc["digest"], ref)
        image_config = self._read_blob_json(manifest["config"]["digest"], ref)
        digests = [layer["digest"] for layer in manifest.get("layers", [])]
        layers = await asyncio.gather(*(self._unpack(d, ref) for d in digests))
        return Image(
            ref=ref,
            digest=desc["digest"],
            layers=list(layers),
            config=dict(image_config.get("config") or {}),
        )

    def _read_json_file(self, path: Path, ref: str) -> Any | None:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ImageError(f"image {ref}: unreadable {path.name}: {exc}") from exc

    def _read_blob_json(self, digest: str, ref: str) -> dict[str, Any]:
        data = self._read_json_file(self._blob(digest), ref)
        if not isinstance(data, dict):
            raise ImageError(f"image {ref}: blob {digest} is missing or not a JSON object")
        return data

    async def _unpack(self, digest: str, ref: str) -> Path:
        final = self.layer_dir(digest)
        async with self._layer_locks.hold(digest):
            if final.exists():
                return final
            blob = self._blob(digest)
            if not blob.exists():
                raise ImageError(f"image {ref}: layer blob {digest} is missing")
            tmp = self.layers / f".tmp-{os.getpid()}-{digest.replace(':', '-')}"
            await asyncio.to_thread(self._unpack_sync, blob, tmp, final)
            self.layers_unpacked += 1
        return final

    @staticmethod
    def _unpack_sync(blob: Path, tmp: Path, final: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            extract_layer(blob, tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():  # not "another process won the race"
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _sweep_temp(self) -> None:
        """Remove half-unpacked layers of processes that died mid-unpack."""
        for entry in self.layers.glob(".tmp-*"):
            pid = entry.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(entry, ignore_errors=True)

"""Images on the real thing: skopeo pulls from OCI layouts (and a refused registry),
layers unpacked once, OCI whiteouts turned into overlayfs ones and seen through a real
overlay mount, unsafe archives refused."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest
from runtime_helpers import build_layout, entry, needs, tar_layer

from orch.errors import ImageError
from orch.runtime.images import ImageStore, pick_platform, registry_host, skopeo_source
from orch.runtime.layers import extract_layer
from orch.runtime.rootfs import is_mounted, mount_overlay, unmount
from orch.runtime.settings import ImageSettings

pytestmark = pytest.mark.integration


def test_reference_parsing() -> None:
    assert registry_host("127.0.0.1:5000/web:1") == "127.0.0.1:5000"
    assert registry_host("localhost/web@sha256:" + "a" * 64) == "localhost"
    assert registry_host("library/busybox:latest") == "docker.io"
    assert registry_host("oci:/x:y") is None
    assert skopeo_source("127.0.0.1:5000/web:1") == "docker://127.0.0.1:5000/web:1"
    assert skopeo_source("oci:/abs/p:t", ["/abs"]) == "oci:/abs/p:t"
    with pytest.raises(ImageError, match="must be absolute"):
        skopeo_source("oci:rel/p:t", ["/"])
    arm = {"digest": "a", "platform": {"os": "linux", "architecture": "s390x"}}
    amd = {"digest": "b", "platform": {"os": "linux", "architecture": "amd64"}}
    assert pick_platform([arm, amd], "r")["digest"] == "b"
    with pytest.raises(ImageError, match="no linux/"):
        pick_platform([arm], "r")


async def test_pull_from_oci_layout(image_store: ImageStore, busybox_ref: str) -> None:
    image = await image_store.pull(busybox_ref)
    assert image.ref == busybox_ref
    assert image.digest.startswith("sha256:")
    assert image.config["Cmd"] == ["sh"]
    assert any(e.startswith("PATH=") for e in image.config["Env"])
    (layer,) = image.layers
    busybox = layer / "bin" / "busybox"
    assert busybox.stat().st_mode & 0o111
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    assert (layer / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (layer / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert ":" not in layer.name  # overlayfs lowerdir separator


async def test_second_pull_unpacks_nothing(
    tmp_path: Path, busybox_ref: str, layouts_root: str
) -> None:
    needs("skopeo")
    settings = ImageSettings(oci_layout_dirs=(layouts_root,))
    store = ImageStore(tmp_path / "img", settings)
    first = await store.pull(busybox_ref)
    assert store.layers_unpacked == 1
    inode = first.layers[0].stat().st_ino
    again = await store.pull(busybox_ref)
    assert again == first and store.layers_unpacked == 1
    # a new store on the same root (an agent restart) reuses the unpacked layer too
    restarted = ImageStore(tmp_path / "img", settings)
    assert await restarted.get(busybox_ref) == first
    assert (await restarted.pull(busybox_ref)).layers[0].stat().st_ino == inode
    assert restarted.layers_unpacked == 0


async def test_concurrent_pulls_share_one_unpack(image_store: ImageStore, busybox_ref: str) -> None:
    images = await asyncio.gather(*(image_store.pull(busybox_ref) for _ in range(4)))
    assert all(i == images[0] for i in images)
    assert image_store.layers_unpacked == 1


async def test_two_images_share_blobs_and_layers(image_store: ImageStore, layout_dir: Path) -> None:
    base = tar_layer([entry("etc/", tarfile.DIRTYPE, 0o755), (entry("etc/base"), b"base\n")])
    ref_a = build_layout(layout_dir, [base], tag="a")
    ref_b = build_layout(layout_dir, [base, tar_layer([(entry("b.txt"), b"b\n")])], tag="b")
    a, b = await asyncio.gather(image_store.pull(ref_a), image_store.pull(ref_b))
    assert a.layers[0] == b.layers[0] and len(b.layers) == 2
    assert image_store.layers_unpacked == 2


@pytest.mark.parametrize(
    "ref_of",
    [
        lambda d: f"oci:{d}/busybox:nope",  # missing tag
        lambda d: f"oci:{d}/nothing-here:latest",  # missing layout
        lambda d: "127.0.0.1:1/orch/missing:1",  # registry refusing connections
    ],
)
async def test_missing_image_fails_fast(image_store: ImageStore, image_dir: Path, ref_of) -> None:
    ref = ref_of(image_dir)
    started = time.monotonic()
    with pytest.raises(ImageError) as err:
        await image_store.pull(ref)
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert message.startswith(f"pull {ref}: ")
    assert "level=" not in message and "\n" not in message
    assert not list(image_store.refs.iterdir())  # no half-written reference left
    assert await image_store.get(ref) is None


async def test_pull_from_a_plain_http_registry_on_loopback(
    image_store: ImageStore, registry: str, busybox_ref: str
) -> None:
    image = await image_store.pull(f"{registry}/orch/busybox:1")
    local = await image_store.pull(busybox_ref)
    assert image.config["Cmd"] == ["sh"]
    assert image.layers == local.layers  # same layer digest: unpacked once, shared
    assert image_store.layers_unpacked == 1
    by_digest = await image_store.pull(f"{registry}/orch/busybox@{image.digest}")
    assert by_digest.layers == image.layers
    started = time.monotonic()
    with pytest.raises(ImageError, match=rf"pull {registry}/orch/busybox:2: .*manifest unknown"):
        await image_store.pull(f"{registry}/orch/busybox:2")
    assert time.monotonic() - started < 10


async def test_pull_through_an_image_index(image_store: ImageStore, layout_dir: Path) -> None:
    """A tag naming an OCI index (multi-arch) resolves to this host's linux image."""
    ref = build_layout(layout_dir, [tar_layer([(entry("hello"), b"hi\n")])], tag="single")
    index = json.loads((layout_dir / "index.json").read_text())
    desc = next(
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == "single"
    )
    fake = {**desc, "platform": {"os": "linux", "architecture": "s390x"}, "annotations": {}}
    real = {**desc, "platform": {"os": "linux", "architecture": "amd64"}, "annotations": {}}
    blob = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [fake, real],
        }
    ).encode()
    digest = hashlib.sha256(blob).hexdigest()
    (layout_dir / "blobs" / "sha256" / digest).write_bytes(blob)
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": f"sha256:{digest}",
            "size": len(blob),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    )
    (layout_dir / "index.json").write_text(json.dumps(index))
    image = await image_store.pull(f"oci:{layout_dir}:multi")
    assert image.digest == desc["digest"]
    assert (image.layers[0] / "hello").read_text() == "hi\n"
    assert ref != f"oci:{layout_dir}:multi"


async def test_whiteouts_in_a_mounted_rootfs(
    image_store: ImageStore, layout_dir: Path, tmp_path: Path
) -> None:
    """Layer 2 deletes a file and makes a directory opaque; the overlay shows it so."""
    needs("mount")
    lower = tar_layer(
        [
            entry("keep/", tarfile.DIRTYPE, 0o755),
            (entry("keep/a"), b"a\n"),
            (entry("keep/gone"), b"x\n"),
            entry("opq/", tarfile.DIRTYPE, 0o750),
            (entry("opq/old1"), b"1\n"),
            (entry("opq/old2"), b"2\n"),
            entry("dir-gone/", tarfile.DIRTYPE, 0o755),
            (entry("dir-gone/f"), b"f\n"),
        ]
    )
    upper = tar_layer(
        [
            entry("keep/.wh.gone"),
            entry("opq/", tarfile.DIRTYPE, 0o750),
            entry("opq/.wh..wh..opq"),
            (entry("opq/new"), b"new\n"),
            entry(".wh.dir-gone"),
        ]
    )
    image = await image_store.pull(build_layout(layout_dir, [lower, upper], tag="wh"))
    top = image.layers[1]
    gone = os.lstat(top / "keep" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(top / "opq", "trusted.overlay.opaque") == b"y"
    assert not (top / "opq" / ".wh..wh..opq").exists()

    target = tmp_path / "ctr" / "rootfs"
    await mount_overlay(image.layers, tmp_path / "ctr" / "upper", tmp_path / "ctr" / "work", target)
    try:
        assert is_mounted(target)
        assert sorted(os.listdir(target / "keep")) == ["a"]
        assert sorted(os.listdir(target / "opq")) == ["new"]
        assert oct((target / "opq").stat().st_mode & 0o777) == oct(0o750)
        assert not (target / "dir-gone").exists()
        # the container's writes land in its upper dir, never in the shared layers
        (target / "keep" / "a").write_text("changed\n")
        assert (image.layers[0] / "keep" / "a").read_text() == "a\n"
        await mount_overlay(
            image.layers, tmp_path / "ctr" / "upper", tmp_path / "ctr" / "work", target
        )
    finally:
        await unmount(target)
    assert not is_mounted(target)
    await unmount(target)  # idempotent


async def test_unmount_detaches_a_busy_mount(
    image_store: ImageStore, busybox_ref: str, tmp_path: Path
) -> None:
    needs("mount")
    image = await image_store.pull(busybox_ref)
    target = tmp_path / "c" / "rootfs"
    await mount_overlay(image.layers, tmp_path / "c" / "upper", tmp_path / "c" / "work", target)
    holder = await asyncio.create_subprocess_exec("sleep", "60", cwd=target)
    try:
        await unmount(target)
        assert not is_mounted(target)
    finally:
        holder.kill()
        await holder.wait()
        await unmount(target)


def _blob(tmp_path: Path, data: bytes, compress: bool) -> Path:
    path = tmp_path / "layer.blob"
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_layer_keeps_metadata_and_links(tmp_path: Path, compress: bool) -> None:
    """(Device nodes and setuid bits are dropped: test_runtime_hardening.py.)"""
    needs()
    data = tar_layer(
        [
            entry("bin/", tarfile.DIRTYPE, 0o555),
            (entry("bin/tool", mode=0o755, uid=1000, gid=2000), b"#!/bin/sh\n"),
            entry("bin/alias", tarfile.SYMTYPE, linkname="tool"),
            entry("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"),
            entry("run/fifo", tarfile.FIFOTYPE, 0o600),
        ]
    )
    out = tmp_path / "out"
    out.mkdir()
    extract_layer(_blob(tmp_path, data, compress), out)
    tool = os.lstat(out / "bin" / "tool")
    assert (tool.st_uid, tool.st_gid, stat.S_IMODE(tool.st_mode)) == (1000, 2000, 0o755)
    assert tool.st_mtime == 1_700_000_000
    assert os.readlink(out / "bin" / "alias") == "tool"
    assert os.lstat(out / "bin" / "hard").st_ino == tool.st_ino
    assert stat.S_IMODE(os.lstat(out / "bin").st_mode) == 0o555
    assert stat.S_ISFIFO(os.lstat(out / "run" / "fifo").st_mode)


@pytest.mark.parametrize(
    "members",
    [
        [(entry("../escape"), b"x")],
        [(entry("a/../../escape"), b"x")],
        [entry("link", tarfile.SYMTYPE, linkname="/"), (entry("link/escape"), b"x")],
        [entry("hl", tarfile.LNKTYPE, linkname="../../etc/passwd")],
    ],
    ids=["dotdot", "nested-dotdot", "through-symlink", "hardlink-out"],
)
def test_layer_refuses_path_traversal(tmp_path: Path, members: list) -> None:
    needs()
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    with pytest.raises(ImageError, match=r"layer layer\.blob"):
        extract_layer(_blob(tmp_path, tar_layer(members), True), out)
    assert not (tmp_path / "deep" / "escape").exists()
    assert not (tmp_path / "escape").exists()
    assert not Path("/escape").exists()

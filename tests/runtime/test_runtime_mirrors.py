"""Registry mirrors: the rewrite of a reference to its mirror (pure), the skopeo command
line it gives, and a real skopeo pull that goes to the mirror while the error still names
the reference the user wrote."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from orch.errors import ImageError, ValidationError
from orch.runtime.images import ImageStore, mirrored
from orch.runtime.settings import ImageSettings

MIRRORS = {"127.0.0.1:5055": "10.212.7.1:5055", "docker.io": "mirror.example:5000"}


@pytest.mark.parametrize(
    ("ref", "source", "mirror"),
    [
        ("127.0.0.1:5055/busybox:latest", "10.212.7.1:5055/busybox:latest", "10.212.7.1:5055"),
        ("docker://127.0.0.1:5055/a/b@sha256:" + "c" * 64, "10.212.7.1:5055/a/b@sha256:" + "c" * 64, "10.212.7.1:5055"),
        ("busybox:1.36", "mirror.example:5000/library/busybox:1.36", "mirror.example:5000"),
        ("docker.io/busybox", "mirror.example:5000/library/busybox", "mirror.example:5000"),
        ("grafana/grafana:10", "mirror.example:5000/grafana/grafana:10", "mirror.example:5000"),
        ("127.0.0.1:5056/busybox:latest", "127.0.0.1:5056/busybox:latest", None),
        ("quay.io/x/y:1", "quay.io/x/y:1", None),
        ("oci:/abs/layout:tag", "oci:/abs/layout:tag", None),
    ],
)  # fmt: skip
def test_mirrored_rewrites_only_the_registry_host(
    ref: str, source: str, mirror: str | None
) -> None:
    assert mirrored(ref, MIRRORS) == (source, mirror)


def test_no_mirrors_leave_every_reference_alone() -> None:
    assert mirrored("127.0.0.1:5055/busybox:latest", {}) == ("127.0.0.1:5055/busybox:latest", None)


@pytest.mark.parametrize("bad", [{"": "a:1"}, {"a:1": ""}, {"a:1": "b:1/path"}, {"a 1": "b"}])
def test_malformed_mirrors_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="registry mirror"):
        ImageSettings(mirrors=bad)


def _argv(tmp_path: Path, ref: str, **settings: object) -> list[str]:
    store = ImageStore(tmp_path / "images", ImageSettings(**settings))  # type: ignore[arg-type]
    return store._skopeo_argv(ref, tmp_path / "dest")


def test_skopeo_pulls_from_the_mirror_over_plain_http_for_a_loopback_origin(tmp_path) -> None:
    argv = _argv(tmp_path, "127.0.0.1:5055/busybox:latest", mirrors=MIRRORS)
    assert argv[-2] == "docker://10.212.7.1:5055/busybox:latest"
    assert "--src-tls-verify=false" in argv
    # The local layout is keyed by the reference users wrote, not the mirror.
    assert argv[-1] == f"oci:{tmp_path / 'dest'}:image"


def test_a_mirror_of_a_tls_registry_keeps_tls_unless_listed_insecure(tmp_path) -> None:
    argv = _argv(tmp_path, "busybox:1.36", mirrors=MIRRORS)
    assert argv[-2] == "docker://mirror.example:5000/library/busybox:1.36"
    assert "--src-tls-verify=false" not in argv
    insecure = _argv(
        tmp_path, "busybox:1.36", mirrors=MIRRORS, insecure_registries=("mirror.example:5000",)
    )
    assert "--src-tls-verify=false" in insecure


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connections are refused


@pytest.mark.integration
async def test_a_real_pull_goes_to_the_mirror_and_the_error_names_both(tmp_path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    mirror = f"127.0.0.2:{_refused_port()}"
    # The origin does not resolve at all: a pull that reached it would say so.
    ref = "origin.invalid:5055/busybox:latest"
    store = ImageStore(tmp_path / "images", ImageSettings(mirrors={"origin.invalid:5055": mirror}))
    with pytest.raises(ImageError) as err:
        await store.pull(ref)
    message = str(err.value)
    assert message.startswith(f"pull {ref}: ")
    assert message.endswith(f"(through mirror {mirror})")
    # skopeo was refused by the mirror; it never looked the origin up.
    reason = message.removeprefix(f"pull {ref}: ")
    assert "connection refused" in reason and "origin.invalid" not in reason, message

"""Fixtures for the runtime layer: the example busybox image (deploy/build-images.sh, built
once per session), an image store and a container runtime rooted in a temp dir, and ids
with a per-run "orcht<random>" prefix. The runtime fixture sweeps everything it made
(containers, mounts, cgroups) at teardown, also when the test failed, and then checks
that nothing is left.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from runtime_helpers import cleanup_runtime, needs, runtime_settings
from tests_support import wait_until

from orch.runtime.containers import ContainerRuntime
from orch.runtime.images import ImageStore
from orch.runtime.settings import ImageSettings

ROOT = Path(__file__).resolve().parents[2]
RUN_PREFIX = "orcht" + secrets.token_hex(2)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OCI layouts built by deploy/build-images.sh (busybox:latest)."""
    needs("umoci", "skopeo")
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed")
    out = tmp_path_factory.mktemp("images")
    subprocess.run(["sh", str(ROOT / "deploy/build-images.sh"), str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def busybox_ref(image_dir: Path) -> str:
    return f"oci:{image_dir}/busybox:latest"


@pytest.fixture
def prefix() -> str:
    """A prefix unique to this test: run prefix + 3 random hex chars."""
    return RUN_PREFIX + secrets.token_hex(2)[:3]


@pytest.fixture(scope="session")
def layouts_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The one directory the tests' image stores read OCI layouts from (ImageSettings.
    oci_layout_dirs): pytest's temp root, which holds every layout the tests build."""
    return str(tmp_path_factory.getbasetemp())


@pytest.fixture
def image_store(tmp_path: Path, layouts_root: str) -> ImageStore:
    needs("skopeo")
    return ImageStore(
        tmp_path / "images", ImageSettings(pull_timeout=30, oci_layout_dirs=(layouts_root,))
    )


@pytest.fixture
async def runtime(tmp_path: Path, prefix: str) -> AsyncIterator[ContainerRuntime]:
    """A ContainerRuntime of its own; everything it made is removed afterwards."""
    needs("runc", "skopeo", "mount")
    rt = ContainerRuntime(runtime_settings(tmp_path, prefix))
    try:
        yield rt
    finally:
        await cleanup_runtime(rt)


@pytest.fixture
def layout_dir(tmp_path: Path) -> Iterator[Path]:
    needs("umoci", "skopeo")
    yield tmp_path / "layout"


@pytest.fixture
def registry(tmp_path: Path, image_dir: Path) -> Iterator[str]:
    """A real registry (Debian docker-registry) on a free loopback port, holding busybox."""
    needs("docker-registry", "skopeo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'registry'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 20, what="the registry to listen")
        host = f"127.0.0.1:{port}"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             f"oci:{image_dir}/busybox:latest", f"docker://{host}/orch/busybox:1"],
            check=True,
        )  # fmt: skip
        yield host
    finally:
        proc.terminate()
        proc.wait(10)

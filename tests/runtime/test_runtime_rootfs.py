"""Overlay mount options (absolute paths for mount(2) when they fit, paths relative to the
layer dir for the `mount` binary when not), and both ways of mounting on the real thing."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import needs

from orch.errors import ContainerError
from orch.runtime.rootfs import is_mounted, mount_overlay, mounts_under, overlay_options, unmount


def test_absolute_options_when_they_fit() -> None:
    layers = [Path("/l/a"), Path("/l/b")]
    opts, cwd = overlay_options(layers, Path("/c/upper"), Path("/c/work"))
    assert (opts, cwd) == ("lowerdir=/l/b:/l/a,upperdir=/c/upper,workdir=/c/work", None)


def test_relative_options_when_absolute_ones_are_too_long() -> None:
    layers = [Path("/var/lib/orch/images/layers") / f"{i:064x}" for i in range(50)]
    opts, cwd = overlay_options(layers, Path("/c/upper"), Path("/c/work"))
    assert cwd == "/var/lib/orch/images/layers"
    assert opts.startswith(f"lowerdir={49:064x}:{48:064x}:") and len(opts) <= 4000


def test_options_that_cannot_work_are_refused() -> None:
    with pytest.raises(ContainerError, match="must not contain"):
        overlay_options([Path("/l/a,b")], Path("/u"), Path("/w"))
    spread = [Path(f"/l{i}") / ("x" * 100) for i in range(60)]  # no common dir to cd into
    with pytest.raises(ContainerError, match="too long"):
        overlay_options(spread, Path("/u"), Path("/w"))


@pytest.mark.integration
@pytest.mark.parametrize("count", [2, 45])
async def test_mount_both_ways(tmp_path: Path, count: int) -> None:
    """2 layers go through mount(2); 45 with long names through `mount` in their dir."""
    needs("mount")
    layers = []
    for i in range(count):
        layer = tmp_path / "layers" / f"{i:064x}"
        layer.mkdir(parents=True)
        (layer / f"f{i}").write_text(str(i))
        layers.append(layer)
    (layers[-1] / "f0").write_text("top")  # the last layer is the top one
    ctr = tmp_path / "ctr"
    _opts, cwd = overlay_options(layers, ctr / "upper", ctr / "work")
    assert (cwd is None) == (count == 2)
    target = ctr / "rootfs"
    await mount_overlay(layers, ctr / "upper", ctr / "work", target)
    try:
        assert is_mounted(target) and mounts_under(tmp_path) == [target]
        assert (target / "f0").read_text() == "top"
        assert (target / "f1").read_text() == "1"
        (target / "new").write_text("x")
        assert (ctr / "upper" / "new").exists() and not (layers[-1] / "new").exists()
    finally:
        await unmount(target)
    assert not is_mounted(target)

"""orch as a package, not only as an editable checkout: pyproject lists every package
(the repository root is the ``orch`` package, so setuptools cannot find them itself),
every declared dependency is used and every third-party import is declared, and the built
wheel installs into a fresh virtualenv whose commands start."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOT_SHIPPED = {"tests", "build", "bench", "deploy", "docs", "state"}
"""Top-level folders that are not part of the ``orch`` package."""
COMMANDS = ("orch", "orch-manager", "orch-agent")


def package_dirs() -> Iterator[Path]:
    """Folders of the repository that ship as part of ``orch`` (have an __init__.py or
    not), relative to the root."""
    for folder, subdirs, _ in os.walk(ROOT):
        here = Path(folder).relative_to(ROOT)
        subdirs[:] = [
            d
            for d in subdirs
            if not d.startswith(".")
            and d != "__pycache__"
            and not d.endswith(".egg-info")
            and not (here == Path(".") and d in NOT_SHIPPED)
        ]
        yield here


def dotted(folder: Path) -> str:
    return ".".join(("orch", *folder.parts))


def shipped_modules() -> Iterator[Path]:
    for folder in package_dirs():
        yield from (ROOT / folder).glob("*.py")


def normalized(requirement: str) -> str:
    """The distribution name of a requirement, PEP 503-normalized ("PyYAML>=6" -> pyyaml)."""
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names of the non-stdlib, non-orch modules the package imports -> the
    files that import them."""
    found: dict[str, set[str]] = {}
    for path in shipped_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("orch", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_pyproject_lists_exactly_the_packages_of_the_tree() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"orch": "."}
    with_init = {dotted(f) for f in package_dirs() if (ROOT / f / "__init__.py").exists()}
    assert sorted(setuptools["packages"]) == sorted(with_init)


def test_every_shipped_folder_with_python_files_is_a_package() -> None:
    # A folder of modules without __init__.py would be left out of the wheel silently.
    loose = [
        str(f)
        for f in package_dirs()
        if any((ROOT / f).glob("*.py")) and not (ROOT / f / "__init__.py").exists()
    ]
    assert loose == []


def test_declared_dependencies_are_used_and_imports_are_declared() -> None:
    declared = {normalized(r) for r in PYPROJECT["project"]["dependencies"]}
    provided_by = metadata.packages_distributions()
    imports = third_party_imports()
    used: set[str] = set()
    undeclared: dict[str, set[str]] = {}
    for top, files in imports.items():
        dists = {normalized(d) for d in provided_by.get(top, [])}
        used |= dists & declared
        if not dists & declared:
            undeclared[top] = files
    assert undeclared == {}, "imported but not declared in [project] dependencies"
    assert declared - used == set(), "declared in [project] dependencies but never imported"


def test_the_wheel_installs_alone_and_its_commands_start(tmp_path: Path) -> None:
    """Build the wheel from a copy of the tree, install it without its dependencies into a
    plain virtualenv, and lend that virtualenv this one's third-party packages through a
    .pth file (which does not run this site's .pth files, so the editable orch stays
    invisible): whatever the wheel lacks fails here."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=_not_copied)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "--no-index", "-w", tmp_path / "dist", source)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("orch-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
        "--no-deps", "--no-index", wheel)  # fmt: skip
    site = run(
        venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    )
    (Path(site.strip()) / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = run(venv / "bin" / "python", "-c", IMPORT_ALL, cwd=tmp_path)
    assert where.strip().startswith(str(venv)), f"orch imported from {where.strip()}"
    for command in COMMANDS:
        assert "usage" in run(venv / "bin" / command, "--help", cwd=tmp_path).lower()


IMPORT_ALL = """
import importlib, pkgutil, orch
for m in pkgutil.walk_packages(orch.__path__, "orch."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
print(orch.__file__)
"""
"""Every module of the installed package imports (a package missing from the wheel fails
here even when no command's --help reaches it)."""


def _not_copied(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {
        n
        for n in names
        if n == "__pycache__"
        or n.endswith(".egg-info")
        or (top and (n.startswith(".") or n in ("build", "state")))
    }


def run(*argv: object, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{argv}: {result.stderr or result.stdout}"
    return result.stdout

"""Helpers for the manifest tests: load a text and get its problems."""

from __future__ import annotations

import textwrap

import pytest

from orch.errors import ValidationError
from orch.manifests.loader import Manifest, load_text


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def problems_of(text: str, filename: str = "t.yaml") -> list[str]:
    """The problems ``load_text`` reports for ``text``; fails the test if it loads."""
    with pytest.raises(ValidationError) as caught:
        load_text(dedent(text), filename)
    return caught.value.problems


def load(text: str, filename: str = "t.yaml") -> Manifest:
    return load_text(dedent(text), filename)


def service(spec: str, name: str = "web") -> str:
    """A Service document with ``spec`` (YAML lines, any indent) under spec:."""
    body = textwrap.indent(dedent(spec), "  ")
    return f"apiVersion: orch/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{body}"

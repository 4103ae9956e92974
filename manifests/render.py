"""Print a spec as the manifest a person would have written: the loader's inverse.

``orch inspect -o yaml`` shows specs this way, and the round-trip tests hold
``load(render(spec)) == spec``. Rendering walks the same schema table as loading, so a
field added there is rendered too. Values print in human form (64Mi, 1m30s, 0.5) and
fields left at their default are omitted, except those that mean something at zero.
"""

from __future__ import annotations

from typing import Any

import yaml
from google.protobuf.message import Message

from orch.manifests import schema
from orch.manifests.schema import Obj
from orch.proto import specs_pb2

_UNSET: Any = object()


def spec_to_manifest(spec: specs_pb2.ServiceSpec | specs_pb2.NetworkSpec) -> dict[str, Any]:
    """The manifest document of ``spec`` as plain dicts, lists and scalars."""
    kind = "Service" if isinstance(spec, specs_pb2.ServiceSpec) else "Network"
    document: dict[str, Any] = {"apiVersion": schema.API_VERSION, "kind": kind}
    document.update(_render_obj(spec, schema.SCHEMAS[kind]))
    document.setdefault("metadata", {"name": spec.name})
    return document


def specs_to_yaml(specs: list[specs_pb2.ServiceSpec | specs_pb2.NetworkSpec]) -> str:
    """A multi-document YAML text of ``specs``, in order, that ``load_text`` reads back."""
    documents = [spec_to_manifest(s) for s in specs]
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def _render_obj(message: Message, obj: Obj) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in obj.fields:
        if isinstance(f.type, Obj) and f.type.convert is None:
            nested = _render_obj(message, f.type)
            if nested:
                out[f.name] = nested
        elif f.target is not None:
            value = _get(message, f.target, f.always)
            if value is not _UNSET:
                out[f.name] = f.type.render(value)
    return out


def _get(message: Message, target: str, always: bool) -> Any:
    """The value at ``target``, or _UNSET when it is absent or (unless ``always``) zero."""
    *parents, last = target.split(".")
    for part in parents:
        if not message.HasField(part):
            return _UNSET
        message = getattr(message, part)
    fd = message.DESCRIPTOR.fields_by_name[last]
    value = getattr(message, last)
    if fd.message_type is not None and not fd.is_repeated:
        return value if message.HasField(last) else _UNSET
    if always:
        return value
    if fd.is_repeated:  # lists and maps
        return value if len(value) else _UNSET
    return value if value else _UNSET

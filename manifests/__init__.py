"""orch.manifests: YAML manifests in, protobuf specs out, and every mistake named by file:line.

    loader.load_paths(["web.yaml", "dir/"]) -> Manifest(services, networks, origin())
      yamlpos   YAML -> dicts/lists that remember lines (PyYAML compose + own containers)
      schema    the field table: types, parsers, defaults, docs, protobuf targets
      validate  value rules on the protobuf; the manager runs the same ones on Apply
    render.spec_to_manifest(spec) -> the manifest again (orch inspect -o yaml)
    units     durations, sizes, CPUs: parse and print exactly
    problems  the Problem record and field-path spelling they all share

Nothing is imported here, so the manager can import ``validate`` without the rest.
"""

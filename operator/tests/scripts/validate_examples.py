#!/usr/bin/env python3
"""Validates MqttCluster YAML files against the openAPIV3Schema of the generated CRD.

Usage: validate_examples.py CRD.yaml EXAMPLE.yaml...

The schema is read as the API server reads it: `nullable: true` also allows null, and an unknown
field is an error (as `kubectl apply` with its default strict field validation). CEL rules
(x-kubernetes-validations) are checked by the API server only; the operator's own validation,
which `hmq-operator render` runs, enforces the same rules. A few built-in bad documents must be
rejected, so a schema that accepts everything fails this script.
"""

import copy
import sys

import jsonschema
import yaml


def api_server_view(node):
    """Rewrites the OpenAPI v3 schema into JSON Schema with the API server's semantics."""
    if isinstance(node, list):
        return [api_server_view(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: api_server_view(value) for key, value in node.items()}
    if node.pop("nullable", False):
        kind = node.get("type")
        if isinstance(kind, str):
            node["type"] = [kind, "null"]
        if "enum" in node:
            node["enum"] = node["enum"] + [None]
    if (
        node.get("type") in ("object", ["object", "null"])
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node.setdefault("additionalProperties", False)
    return node


def main(crd_path, example_paths):
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    version = crd["spec"]["versions"][0]
    schema = api_server_view(version["schema"]["openAPIV3Schema"])
    for properties in ("apiVersion", "kind", "metadata"):
        schema["properties"].setdefault(properties, {})
    validator = jsonschema.Draft7Validator(schema)
    failed = 0
    count = 0
    for path in example_paths:
        with open(path) as f:
            for document in yaml.safe_load_all(f):
                if not document or document.get("kind") != "MqttCluster":
                    continue
                count += 1
                errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
                name = document.get("metadata", {}).get("name")
                for error in errors:
                    failed += 1
                    location = ".".join(str(p) for p in error.path)
                    print(f"FAIL {path} ({name}): {location}: {error.message}")
                if not errors:
                    print(f"ok   {path} ({name})")
    good = {"apiVersion": "hmq.io/v1alpha1", "kind": "MqttCluster", "metadata": {"name": "x"}, "spec": {}}
    bad_cases = {
        "negative replicas": ("replicas", -1),
        "unknown spec field": ("replica", 3),
        "unknown config key": ("config", {"maxInflite": 5}),
        "operator-managed config key": ("config", {"tlsPort": 8883}),
        "config value out of the broker's range": ("config", {"maxPacketSize": 8}),
        "wsPath without a leading slash": ("config", {"wsPath": "ws"}),
        "bad service type": ("listeners", {"service": {"type": "External"}}),
        "port out of range": ("listeners", {"mqtt": {"port": 70000}}),
        "bad ACL access": ("acl", {"rules": [{"permission": "allow", "type": "clientid",
                                             "value": "*", "access": "all", "topics": ["#"]}]}),
        "topic with a space": ("acl", {"rules": [{"permission": "allow", "type": "clientid",
                                                 "value": "*", "access": "publish", "topics": ["a b"]}]}),
    }
    for label, (key, value) in bad_cases.items():
        document = copy.deepcopy(good)
        document["spec"][key] = value
        if validator.is_valid(document):
            failed += 1
            print(f"FAIL the schema accepts a spec with {label}")
        else:
            print(f"ok   rejects {label}")
    if count == 0:
        print("FAIL no MqttCluster documents found")
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))

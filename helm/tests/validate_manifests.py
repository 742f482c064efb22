"""Validates rendered manifests: core kinds with kubernetes-validate (strict) against each Kubernetes version
given, and the custom resources the chart can render (not in Kubernetes' schemas) against the minimal schemas in
helm/tests/schemas. Any other kind without a schema is an error, so a mistyped apiVersion cannot pass.

    python validate_manifests.py --kube-version 1.29 --kube-version latest FILE...
"""
import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

SCHEMAS = Path(__file__).resolve().parent / "schemas"
# (apiVersion, kind) -> schema file: every custom resource the chart may render.
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kube-version", action="append", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    versions = [latest_version() if v == "latest" else v for v in args.kube_version]
    custom = {key: jsonschema.Draft7Validator(json.loads((SCHEMAS / name).read_text())) for key, name in CUSTOM.items()}
    errors = 0
    for name in args.files:
        docs = [d for d in yaml.safe_load_all(Path(name).read_text()) if d]
        core, crds, seen = 0, Counter(), Counter()
        for doc in docs:
            where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            seen[(doc.get("kind"), doc.get("metadata", {}).get("name"))] += 1
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in custom:
                crds[key[1]] += 1
                for e in custom[key].iter_errors(doc):
                    errors += 1
                    print(f"FAIL {where}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
                continue
            core += 1
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except SchemaNotFoundError as e:
                    errors += 1
                    print(f"FAIL {where}: no Kubernetes {version} schema for {key[0]} {key[1]} ({e.message})")
                except kubernetes_validate.ValidationError as e:
                    errors += 1
                    print(f"FAIL {where}: Kubernetes {version}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
        for (kind, obj), n in seen.items():
            if n > 1:
                errors += 1
                print(f"FAIL {name}: {kind}/{obj} is rendered {n} times")
        note = ", ".join(f"{k} x{n}" for k, n in sorted(crds.items()))
        print(f"  {Path(name).name}: {core} objects checked against Kubernetes {' and '.join(versions)} (strict)"
              + (f"; custom resources not in Kubernetes' schemas, checked against helm/tests/schemas: {note}" if note else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

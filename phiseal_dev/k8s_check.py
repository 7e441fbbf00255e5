"""`make check`'s manifest step: renders each kustomization and validates every object offline.

Core objects are checked with ``kubernetes-validate`` (the Kubernetes OpenAPI schemas it ships,
strict: an unknown field is an error). CloudNativePG's ``Cluster`` and ``ScheduledBackup`` are
checked against their published JSON schemas, kept in ``deploy/schemas/`` (converted from the
operator's CRDs; see deploy/schemas/README.md), also refusing unknown fields. Any other kind
fails the check until a schema for it is added. Without kubectl nothing is rendered: the step
says so and passes, since the rest of ``make check`` does not depend on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = (ROOT / "deploy" / "base", ROOT / "deploy" / "overlays" / "production")
SCHEMAS = ROOT / "deploy" / "schemas"
# The oldest Kubernetes the manifests support (native gRPC probes are GA from 1.27).
KUBERNETES_VERSION = "1.30.0"
CUSTOM = {
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_cluster_v1.json",
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): "postgresql.cnpg.io_scheduledbackup_v1.json",
}


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever it lists properties and says
    nothing else, so a misspelt field fails as it does for core objects."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def render(kustomization: Path, kubectl: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl, "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"k8s: kubectl kustomize {kustomization} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def problems(obj: Mapping[str, Any], custom: Mapping[tuple[str, str], Any]) -> Iterator[str]:
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = custom.get(key)
    if schema is not None:
        for error in jsonschema.Draft7Validator(schema).iter_errors(obj):
            where = ".".join(str(p) for p in error.absolute_path) or "(root)"
            yield f"{where}: {error.message}"
        return
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        yield f"no schema for {key[0]} {key[1]}: add its published schema to deploy/schemas/"
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(root)"
        yield f"{where}: {exc.message}"


def main() -> int:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("k8s: kubectl is not installed: deploy/ was NOT rendered or validated")
        return 0
    custom = {k: closed(json.loads((SCHEMAS / f).read_text())) for k, f in CUSTOM.items()}
    total = 0
    for kustomization in KUSTOMIZATIONS:
        where = kustomization.relative_to(ROOT)
        objects = render(kustomization, kubectl)
        failed = 0
        for obj in objects:
            name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            for problem in problems(obj, custom):
                print(f"k8s: {where}: {name}: {problem}")
                failed += 1
        kinds = ", ".join(sorted({str(o.get("kind")) for o in objects}))
        print(
            f"k8s: {where}: {failed} problems"
            if failed
            else f"k8s: {where}: {len(objects)} objects valid against Kubernetes "
            f"{KUBERNETES_VERSION} and the CloudNativePG schemas ({kinds})"
        )
        total += failed
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

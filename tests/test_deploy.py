"""deploy/: the manifests render, validate offline, and say what the design says."""

from __future__ import annotations

import copy
import json
import shutil
from typing import Any

import pytest

from phiseal_dev import k8s_check

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def rendered(which: int) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    return k8s_check.render(k8s_check.KUSTOMIZATIONS[which], KUBECTL)


def custom() -> dict[tuple[str, str], Any]:
    return {
        k: k8s_check.closed(json.loads((k8s_check.SCHEMAS / f).read_text()))
        for k, f in k8s_check.CUSTOM.items()
    }


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_both_kustomizations_validate() -> None:
    """Every object of the base and the production overlay passes its schema."""
    schemas = custom()
    found = {
        f"{o['kind']}/{o['metadata']['name']}": list(k8s_check.problems(o, schemas))
        for which in (0, 1)
        for o in rendered(which)
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_validation_catches_mistakes() -> None:
    """A misspelt Deployment field, a wrong probe type and a Cluster with instances as text
    are each reported: the check is not a formality."""
    objects = rendered(1)
    schemas = custom()
    deployment = copy.deepcopy(by_kind(objects, "Deployment")["keysvc"])
    deployment["spec"]["replica"] = 3
    probe = copy.deepcopy(by_kind(objects, "Deployment")["keysvc"])
    probe["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "x"
    cluster = copy.deepcopy(by_kind(objects, "Cluster")["phiseal-db"])
    cluster["spec"]["instances"] = "three"
    backup = copy.deepcopy(by_kind(objects, "ScheduledBackup")["phiseal-db-nightly"])
    backup["spec"]["shedule"] = backup["spec"].pop("schedule")
    assert [
        bool(list(k8s_check.problems(o, schemas))) for o in (deployment, probe, cluster, backup)
    ] == [True] * 4


def test_production_runs_what_the_design_asks() -> None:
    """gRPC readiness and liveness probes on each health port, an autoscaled encryptsvc, a PDB
    per service, headless Services, and PostgreSQL with three instances, synchronous
    replication and a scheduled backup."""
    objects = rendered(1)
    deployments = by_kind(objects, "Deployment")
    assert sorted(deployments) == ["auditsvc", "encryptsvc", "keysvc", "policysvc"]
    for name, d in deployments.items():
        container = d["spec"]["template"]["spec"]["containers"][0]
        health = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
        assert container["readinessProbe"]["grpc"] == {"port": health}, name
        assert container["livenessProbe"]["grpc"] == {"port": health, "service": "liveness"}
    assert (
        by_kind(objects, "HorizontalPodAutoscaler")["encryptsvc"]["spec"]["scaleTargetRef"]["name"]
        == "encryptsvc"
    )
    assert sorted(by_kind(objects, "PodDisruptionBudget")) == sorted(deployments)
    assert {n: s["spec"]["clusterIP"] for n, s in by_kind(objects, "Service").items()} == {
        n: "None" for n in deployments
    }
    cluster = by_kind(objects, "Cluster")["phiseal-db"]["spec"]
    assert cluster["instances"] == 3
    assert cluster["postgresql"]["synchronous"]["number"] == 1
    assert by_kind(objects, "ScheduledBackup")["phiseal-db-nightly"]["spec"]["cluster"] == {
        "name": "phiseal-db"
    }

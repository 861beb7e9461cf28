"""The KubeRay manifests' Kubernetes core objects against Kubernetes' own OpenAPI schemas, strictly
(kubernetes-validate's packaged JSON schemas, every object closed to unknown fields): each pod
template of a RayCluster / RayJob (head and worker groups) is a valid core/v1 PodTemplate. A wrong
field name in a container, a volume or the pod spec fails. The Ray-level fields (rayStartParams,
workerGroupSpecs, authOptions, ...) are checked in tests/test_clusters.py; KubeRay's own CRD
schemas are not vendored here (see README, "Clusters")."""

from __future__ import annotations

import copy
import glob
import os

import kubernetes_validate
import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S_VERSION = "1.33.0"  # a release every supported KubeRay (>= 1.5) runs on


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    out = [("headGroupSpec", spec["headGroupSpec"]["template"])]
    out += [(f"workerGroupSpecs[{g['groupName']}]", g["template"]) for g in spec.get("workerGroupSpecs", [])]
    return out


def _as_pod_template(name: str, template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


MANIFESTS = sorted(glob.glob(f"{REPO}/clusters/k8s/*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[os.path.basename(p) for p in MANIFESTS])
def test_every_pod_template_is_a_strictly_valid_core_v1_pod_template(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    assert docs and all(d["kind"] in ("RayCluster", "RayJob") for d in docs)
    for doc in docs:
        for where, template in _pod_templates(doc):
            kubernetes_validate.validate(_as_pod_template("t", template), K8S_VERSION, strict=True)
            assert template["spec"]["containers"], where


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda t: t["spec"]["containers"][0].__setitem__("imagePullPolicyy", "Always"), "imagePullPolicyy"),
        (lambda t: t["spec"].__setitem__("nodeSelecter", {"gpu": "true"}), "nodeSelecter"),
        (lambda t: t["spec"]["containers"][0]["resources"].__setitem__("limit", {"cpu": "1"}), "limit"),
    ],
)
def test_a_wrong_field_name_in_a_pod_template_fails(mutate, field):
    """The check above is strict: it would catch a misspelt field (the schemas are closed)."""
    doc = yaml.safe_load(open(f"{REPO}/clusters/k8s/raycluster.yaml"))
    template = copy.deepcopy(_pod_templates(doc)[0][1])
    mutate(template)
    with pytest.raises(kubernetes_validate.ValidationError, match=field):
        kubernetes_validate.validate(_as_pod_template("t", template), K8S_VERSION, strict=True)

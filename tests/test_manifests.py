"""Every manifest in k8s/ validates: KubeRay kinds against the CRDs' openAPIV3Schema,
core kinds (and every pod template inside the Ray kinds) against Kubernetes' schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import kuberay_crds_dir

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
K8S_VERSION = kubernetes_validate.latest_version()
#: YAML files in k8s/ that are not Kubernetes objects.
NOT_MANIFESTS = {"kustomization.yaml", "backend-config.yaml"}


def documents() -> list[tuple[str, int, dict]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name in NOT_MANIFESTS:
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                out.append((str(path.relative_to(ROOT)), i, doc))
    return out


DOCS = documents()


def crd_schema(kind: str, version: str) -> dict:
    crds = kuberay_crds_dir()
    for path in crds.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return v["schema"]["openAPIV3Schema"]
    raise LookupError(f"no CRD for {kind} {version} in {crds}")


def pod_templates(obj, path=""):
    """(path, template) of every pod template in a Ray resource."""
    if isinstance(obj, dict):
        if "template" in obj and isinstance(obj["template"], dict) and \
                "containers" in obj["template"].get("spec", {}):
            yield f"{path}.template", obj["template"]
        for k, v in obj.items():
            yield from pod_templates(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from pod_templates(v, f"{path}[{i}]")


def test_there_are_manifests_of_each_kind():
    kinds = {d["kind"] for _, _, d in DOCS}
    assert {"RayCluster", "RayJob", "ServiceAccount", "PersistentVolumeClaim",
            "Namespace"} <= kinds


@pytest.mark.parametrize(("path", "index", "doc"), DOCS,
                         ids=[f"{p}#{i}:{d['kind']}" for p, i, d in DOCS])
def test_manifest_is_valid(path, index, doc):
    group_version = doc["apiVersion"]
    if group_version.startswith("ray.io/"):
        schema = crd_schema(doc["kind"], group_version.split("/")[1])
        jsonschema.validate(doc, schema)
        templates = list(pod_templates(doc["spec"]))
        if doc["kind"] != "RayJob" or "rayClusterSpec" in doc["spec"]:
            assert templates, "a Ray resource without pod templates"
        for where, tpl in templates:
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": "check"}, "template": tpl}
            try:
                kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path} {where}: {exc.message}")
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_catches_mistakes():
    cluster = next(d for _, _, d in DOCS if d["kind"] == "RayCluster")
    bad = yaml.safe_load(yaml.safe_dump(cluster))
    bad["spec"]["workerGroupSpecs"][0].pop("groupName")
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        jsonschema.validate(bad, crd_schema("RayCluster", "v1"))
    tpl = yaml.safe_load(yaml.safe_dump(cluster["spec"]["headGroupSpec"]["template"]))
    tpl["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "x"}, "template": tpl},
                                     K8S_VERSION, strict=True)


@pytest.mark.parametrize(("folder", "namespace"), [("", "lwmecps"),
                                                   ("testbed", "lwmecps-testapp")])
def test_kustomization_lists_existing_files_and_renders(folder, namespace):
    base = K8S / folder
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (base / res).exists(), res
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: rendering not checked")
    out = subprocess.run(["kubectl", "kustomize", str(base)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = list(yaml.safe_load_all(out.stdout))
    assert all(d["metadata"].get("namespace") == namespace for d in rendered
               if d["kind"] != "Namespace")


def test_testbed_matches_the_scenario():
    from lwmecps_rllib.backends.kubernetes import KubernetesConfig
    from lwmecps_rllib.scenarios import load_scenario

    sc = load_scenario("testbed-4bs")
    deps = [d for _, _, d in DOCS if d["kind"] == "Deployment"]
    assert sorted(d["metadata"]["name"] for d in deps) == sorted(sc.deployment_names)
    cfg = KubernetesConfig.from_dict(yaml.safe_load((K8S / "testbed" /
                                                     "backend-config.yaml").read_text()))
    for d in deps:
        station = d["metadata"]["labels"]["lwmecps.io/station"]
        node = next(s.node for s in sc.stations if s.name == station)
        terms = d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        expr = terms[0]["matchExpressions"][0]
        assert expr["key"] == "kubernetes.io/hostname"
        assert expr["values"] == [cfg.nodes[node]]
        res = d["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert res["requests"] == {"cpu": "100m", "memory": "100Mi"}


#: What the Kubernetes backend calls, as (API group, resource, verb). Keep in step with
#: lwmecps_rllib/backends/kubernetes.py (a test below reads its calls).
BACKEND_CALLS = {
    "list_node": ("", "nodes", "list"),
    "read_namespaced_deployment_status": ("apps", "deployments/status", "get"),
    "patch_namespaced_deployment_scale": ("apps", "deployments/scale", "patch"),
    "patch_namespaced_deployment": ("apps", "deployments", "patch"),
    "list_namespaced_pod": ("", "pods", "list"),
}


def test_rbac_allows_what_the_backend_calls_and_little_else():
    import re

    source = (ROOT / "lwmecps_rllib" / "backends" / "kubernetes.py").read_text()
    called = set(re.findall(r"self\._(?:apps|core)\(\)\.(\w+)", source))
    assert called == set(BACKEND_CALLS), called
    rbac = [d for p, _, d in DOCS if p.endswith("k8s/rbac.yaml")]
    allowed = set()
    for doc in rbac:
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                for g in rule["apiGroups"]:
                    for r in rule["resources"]:
                        for v in rule["verbs"]:
                            allowed.add((g, r, v, doc["kind"]))
    for group, resource, verb in BACKEND_CALLS.values():
        kind = "ClusterRole" if resource == "nodes" else "Role"
        assert (group, resource, verb, kind) in allowed, (group, resource, verb)
    verbs = {v for *_, v, _ in [(a, b, c, d) for a, b, c, d in allowed]}
    assert not verbs & {"create", "delete", "deletecollection", "update", "escalate", "bind",
                        "impersonate", "*"}
    assert {r for _, r, _, k in allowed if k == "ClusterRole"} == {"nodes"}
    assert {v for _, r, v, k in allowed if k == "ClusterRole"} <= {"get", "list", "watch"}


def test_serve_configs_match_serves_schema_and_each_other():
    from ray.serve.schema import ServeDeploySchema

    local = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(local)
    service = next(d for _, _, d in DOCS if d["kind"] == "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    a, b = local["applications"][0], embedded["applications"][0]
    assert a["import_path"] == b["import_path"] == "lwmecps_rllib.serving:app_builder"
    assert a["deployments"][0]["name"] == b["deployments"][0]["name"] == "PlacementService"
    from lwmecps_rllib.serving import ServeArgs

    ServeArgs(**a["args"])
    ServeArgs(**b["args"])


def test_serve_configs_shed_a_flood_and_time_out():
    """Both Serve configs bound the queue at each proxy (503 beyond it) and the time a
    request may take (408), with the same values."""
    local = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    service = next(d for _, _, d in DOCS if d["kind"] == "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    limits = []
    for config in (local, embedded):
        deployment = config["applications"][0]["deployments"][0]
        queued, timeout = deployment.get("max_queued_requests"), config["http_options"].get(
            "request_timeout_s")
        assert isinstance(queued, int) and queued > 0, queued
        assert isinstance(timeout, (int, float)) and 0 < timeout <= 60, timeout
        limits.append((queued, timeout, deployment["max_ongoing_requests"]))
    assert limits[0] == limits[1]

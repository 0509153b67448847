"""Every manifest in k8s/ validates: KubeRay kinds against the CRDs' openAPIV3Schema,
core kinds (and every pod template inside the Ray kinds) against Kubernetes' schemas."""

from __future__ import annotations

import re
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


#: Keys whose value is a pod template (KubeRay's RayJob calls its submitter's so).
POD_TEMPLATE_KEYS = ("template", "submitterPodTemplate")


def pod_templates(obj, path=""):
    """(path, template) of every pod template in a resource."""
    if isinstance(obj, dict):
        for key in POD_TEMPLATE_KEYS:
            if isinstance(obj.get(key), dict) and "containers" in obj[key].get("spec", {}):
                yield f"{path}.{key}", obj[key]
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
    deps = [d for p, _, d in DOCS if d["kind"] == "Deployment" and p.startswith("k8s/testbed/")]
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
    "list_namespaced_deployment": ("apps", "deployments", "list"),
    "patch_namespaced_deployment_scale": ("apps", "deployments/scale", "patch"),
    "patch_namespaced_deployment": ("apps", "deployments", "patch"),
    "list_namespaced_pod": ("", "pods", "list"),
}


def rbac_rules() -> list[tuple[str, dict]]:
    """(kind, rule) of every Role and ClusterRole rule in k8s/rbac.yaml."""
    return [(d["kind"], rule) for p, _, d in DOCS if p.endswith("k8s/rbac.yaml")
            and d["kind"] in ("Role", "ClusterRole") for rule in d["rules"]]


def test_rbac_allows_what_the_backend_calls_and_nothing_else():
    import re

    from lwmecps_rllib.scenarios import load_scenario

    source = (ROOT / "lwmecps_rllib" / "backends" / "kubernetes.py").read_text()
    called = set(re.findall(r"self\._(?:apps|core)\(\)\.(\w+)", source))
    assert called == set(BACKEND_CALLS), called
    allowed = {(g, r, v, kind) for kind, rule in rbac_rules() for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    needed = {(g, r, v, "ClusterRole" if r == "nodes" else "Role")
              for g, r, v in BACKEND_CALLS.values()}
    assert allowed == needed, {"unused": allowed - needed, "missing": needed - allowed}
    # The Deployments are named: patch, scale and status reach the testbed's servers only.
    servers = sorted(load_scenario("testbed-4bs").deployment_names)
    for kind, rule in rbac_rules():
        if rule["verbs"] == ["list"]:  # list cannot be limited by name: read-only
            assert "resourceNames" not in rule, rule
        else:
            assert kind == "Role" and "apps" in rule["apiGroups"], rule
            assert sorted(rule.get("resourceNames", [])) == servers, rule


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


# --------------------------------------------------------------------------- hardening
#: The Secret holding the Ray token (key `auth_token`, KubeRay's key).
AUTH_SECRET = "lwmecps-ray-auth"
#: Kinds that make pods, and where their pod templates are.
POD_KINDS = {"Deployment", "RayCluster", "RayService", "RayJob"}


def all_pod_templates() -> list[tuple[str, dict, dict]]:
    """(where, template, manifest) of every pod template of every manifest."""
    return [(f"{p}#{i}:{d['kind']}{where}", tpl, d) for p, i, d in DOCS
            for where, tpl in pod_templates(d.get("spec", {}))]


TEMPLATES = all_pod_templates()


def test_every_pod_making_manifest_has_pod_templates_checked():
    kinds = {d["kind"] for _, _, d in TEMPLATES}
    assert kinds == POD_KINDS
    assert any(w.endswith(".submitterPodTemplate") for w, _, _ in TEMPLATES)
    assert {d["kind"] for _, _, d in DOCS} & POD_KINDS == POD_KINDS


def containers(tpl: dict) -> list[dict]:
    return tpl["spec"]["containers"] + tpl["spec"].get("initContainers", [])


@pytest.mark.parametrize(("where", "tpl"), [(w, t) for w, t, _ in TEMPLATES],
                         ids=[w for w, _, _ in TEMPLATES])
def test_pods_run_locked_down(where, tpl):
    pod = tpl["spec"].get("securityContext", {})
    assert pod.get("runAsNonRoot") is True, where
    assert isinstance(pod.get("runAsUser"), int) and pod["runAsUser"] > 0, where
    assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    writable = {v["name"] for v in tpl["spec"].get("volumes", []) if "emptyDir" in v}
    for c in containers(tpl):
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"])
        assert sc.get("readOnlyRootFilesystem") is True, (where, c["name"])
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), (where, c["name"])
        assert not sc.get("privileged"), (where, c["name"])
        assert sc.get("runAsNonRoot") is not False and sc.get("runAsUser", 1) != 0
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in writable, (where, c["name"], "no writable /tmp")


def test_ray_autoscaler_runs_locked_down():
    for _, _, d in DOCS:
        if d["kind"] == "RayCluster" and d["spec"].get("enableInTreeAutoscaling"):
            sc = d["spec"]["autoscalerOptions"]["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"]
            assert "ALL" in sc["capabilities"]["drop"]
            assert {"name": "tmp", "mountPath": "/tmp"} in d["spec"]["autoscalerOptions"][
                "volumeMounts"]


def image_is_pinned(image: str) -> bool:
    """A digest, or a tag other than `latest`."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def test_images_are_pinned():
    assert not image_is_pinned("lwmecps-rllib") and not image_is_pinned("x:latest")
    assert not image_is_pinned("registry:5000/x") and image_is_pinned("registry:5000/x:1.0")
    for where, tpl, _ in TEMPLATES:
        for c in containers(tpl):
            assert image_is_pinned(c["image"]), (where, c["image"])
    froms = re.findall(r"^FROM\s+(\S+)", (K8S / "Dockerfile").read_text(), re.M)
    assert froms and all(image_is_pinned(f) for f in froms), froms
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all(i.get("newTag") not in (None, "", "latest") or i.get("digest")
               for i in kust.get("images", []))


def ray_cluster_specs() -> list[tuple[str, dict]]:
    """(where, RayClusterSpec) of every Ray cluster the manifests make."""
    out = []
    for p, i, d in DOCS:
        spec = d.get("spec", {})
        cluster = {"RayCluster": spec, "RayService": spec.get("rayClusterConfig"),
                   "RayJob": spec.get("rayClusterSpec")}.get(d["kind"])
        if cluster is not None:
            out.append((f"{p}#{i}", cluster))
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_ray_cluster_requires_the_token_from_the_secret():
    clusters = ray_cluster_specs()
    assert {w.split("#")[0] for w, _ in clusters} == {"k8s/raycluster.yaml",
                                                     "k8s/rayservice.yaml"}
    for where, cluster in clusters:
        assert cluster.get("authOptions") == {"mode": "token", "secretName": AUTH_SECRET}, where
    # Nothing turns it off: KubeRay keeps a RAY_AUTH_MODE a container already has.
    for where, tpl, _ in TEMPLATES:
        for c in containers(tpl):
            mode = env_of(c).get("RAY_AUTH_MODE")
            assert mode is None or mode.get("value") == "token", (where, c["name"])


def test_rayjob_submitters_carry_the_token_and_the_client_label():
    jobs = [d for _, _, d in DOCS if d["kind"] == "RayJob"]
    assert jobs
    for job in jobs:
        if "rayClusterSpec" in job["spec"]:
            continue
        tpl = job["spec"]["submitterPodTemplate"]
        assert tpl["metadata"]["labels"]["lwmecps.io/ray-client"] == "true"
        assert tpl["spec"]["restartPolicy"] == "Never"
        for c in tpl["spec"]["containers"]:
            env = env_of(c)
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
                "name": AUTH_SECRET, "key": "auth_token"}


def test_a_rayjob_with_its_own_cluster_requires_the_token():
    from lwmecps_rllib.jobs import TrainingTask, rayjob_manifest

    cluster = next(d for _, _, d in DOCS if d["kind"] == "RayCluster")
    body = rayjob_manifest(TrainingTask(name="ppo-1"), "lwmecps", cluster_spec=cluster["spec"])
    assert body["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"


def test_network_policy_limits_the_ray_control_plane():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (policy,) = [d for p, _, d in DOCS if d["kind"] == "NetworkPolicy"
                 and d["spec"]["podSelector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}]
    assert "networkpolicy.yaml" in kust["resources"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ray_only = {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        sources = rule.get("from")
        if not sources:  # open to all: the Serve endpoint only
            assert ports == {8000}, rule
        elif sources != [ray_only]:  # not Ray's own pods: only the dashboard and client
            assert ports and ports <= {8265, 10001}, rule
            assert all(s.get("podSelector") or s.get("namespaceSelector") for s in sources)


def test_serve_reads_the_shared_volume_read_only():
    service = next(d for _, _, d in DOCS if d["kind"] == "RayService")
    templates = list(pod_templates(service["spec"]))
    assert templates
    for where, tpl in templates:
        pvcs = {v["name"] for v in tpl["spec"]["volumes"] if "persistentVolumeClaim" in v}
        assert all(v["persistentVolumeClaim"].get("readOnly") is True
                   for v in tpl["spec"]["volumes"] if "persistentVolumeClaim" in v), where
        for c in containers(tpl):
            for m in c.get("volumeMounts", []):
                if m["name"] in pvcs:
                    assert m.get("readOnly") is True, (where, m)


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


def test_controller_runs_as_its_account_bound_to_the_backends_roles_with_its_config():
    from lwmecps_rllib.backends.config import KubernetesConfig
    from lwmecps_rllib.control.__main__ import options_from_args, parse_args

    docs = {(d["kind"], d["metadata"]["name"]): d for p, _, d in DOCS
            if p == "k8s/controller.yaml"}
    dep = docs["Deployment", "lwmecps-controller"]
    pod = dep["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    assert ("ServiceAccount", account) in docs
    bound = {(d["kind"], d["roleRef"]["name"]) for p, _, d in DOCS if p == "k8s/rbac.yaml"
             and d["kind"] in ("RoleBinding", "ClusterRoleBinding")
             and {"kind": "ServiceAccount", "name": account, "namespace": "lwmecps"}
             in d["subjects"]}
    roles = {(d["kind"], d["metadata"]["name"]) for p, _, d in DOCS if p == "k8s/rbac.yaml"
             and d["kind"] in ("Role", "ClusterRole")}
    assert {("RoleBinding", n) for k, n in roles if k == "Role"} | {
        ("ClusterRoleBinding", n) for k, n in roles if k == "ClusterRole"} == bound
    [container] = pod["containers"]
    assert container["command"] == ["python", "-m", "lwmecps_rllib.control"]
    config_map = docs["ConfigMap", pod["volumes"][0]["configMap"]["name"]]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")["mountPath"]
    args = parse_args(container["args"])
    name = args.backend_config.removeprefix(mount + "/")
    cfg = KubernetesConfig.parse(yaml.safe_load(config_map["data"][name]))
    assert cfg.in_cluster and cfg.namespace == "lwmecps-testapp"
    options = options_from_args(args)
    assert options.mode == "shadow" and options.policy_url.endswith(":8000")
    assert container["ports"][0]["containerPort"] == options.metrics_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_ray_workers_offer_the_cpus_their_pods_reserve():
    """Ray schedules env runners, learners and trials by what each worker declares: it must
    be the pod's CPU request (and limit), and the group must scale to zero and back."""
    groups = [(path, g) for path, _, d in DOCS if d["kind"] == "RayCluster"
              for g in d["spec"]["workerGroupSpecs"]]
    assert groups
    for path, group in groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        declared = group["rayStartParams"].get("num-cpus")
        assert declared is not None, f"{path}: {group['groupName']} declares no num-cpus"
        assert float(declared) == float(resources["requests"]["cpu"]) == float(
            resources["limits"]["cpu"]), path
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], path
    cluster = next(d for p, _, d in DOCS
                   if p == "k8s/raycluster.yaml" and d["kind"] == "RayCluster")
    cpus = sum(float(g["rayStartParams"]["num-cpus"]) * g["maxReplicas"]
               for g in cluster["spec"]["workerGroupSpecs"])
    assert cpus == 64  # the size docs/kuberay.md plans for
    assert cluster["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] >= 60


def test_rayjobs_run_our_commands_with_the_resources_they_ask_for():
    """Each RayJob's entrypoint parses with the command it runs into a checked spec; what
    a training, or a sweep's concurrent trials, ask for fits the RayCluster's workers; a
    training's driver (which learns) reserves a CPU, so it does not run on the head."""
    import shlex

    from lwmecps_rllib.algorithms import build_config
    from lwmecps_rllib.cli import run_specs_from_args
    from lwmecps_rllib.train import __main__ as train_cli
    from lwmecps_rllib.tune import __main__ as tune_cli
    from lwmecps_rllib.tune import base_config

    cluster = next(d for p, _, d in DOCS
                   if p == "k8s/raycluster.yaml" and d["kind"] == "RayCluster")
    cpus = sum(float(g["rayStartParams"]["num-cpus"]) * g["maxReplicas"]
               for g in cluster["spec"]["workerGroupSpecs"])
    assert float(cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"]) == 0
    asked = {}
    for path, _, job in DOCS:
        if job["kind"] != "RayJob":
            continue
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[:2] == ["python", "-m"], path
        if argv[2] == "lwmecps_rllib.train":
            args = train_cli.build_parser().parse_args(argv[3:])
            options, training = run_specs_from_args(args)
            config, copies = build_config(training, args.env, options), 1
            assert job["spec"].get("entrypointNumCpus", 0) >= 1, path
        else:
            assert argv[2] == "lwmecps_rllib.tune", path
            sweep = tune_cli.build_sweep(tune_cli.build_parser().parse_args(argv[3:]))
            config, copies = base_config(sweep), sweep.search.max_concurrent_trials
        # What RLlib reserves for one training: the main process, its runners and learners.
        bundles = config.algo_class.default_resource_request(config).bundles
        need = copies * sum(b.get("CPU", 0) for b in bundles)
        assert need <= cpus, (path, need, cpus)
        asked[path] = (config.num_env_runners, config.num_learners, copies)
    assert asked["k8s/rayjob-train.yaml"] == (4, 0, 1)
    assert asked["k8s/rayjob-tune.yaml"] == (4, 0, 2)

"""Checks of the rendered chart: what a cluster operator relies on, per render (defaults and each ci values file)."""
import json
import re
from pathlib import Path

import pytest
import yaml

import render as chart
from conftest import Render, container, env_of, pod_specs, rendered

ROOT = chart.ROOT
OPTIONAL_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "HorizontalPodAutoscaler", "NetworkPolicy"}


def matches(selector: dict, labels: dict) -> bool:
    """A label selector's matchLabels (and In/Exists expressions) against a set of labels."""
    if not selector:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions", []):
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
    return True


def version_specs(r: Render) -> list:
    return r.values["workers"]["versions"]


def worker_for(r: Render, version: str) -> dict:
    found = [d for d in r.workers() if d["spec"]["template"]["metadata"]["labels"]["switchboard.io/version"] == version]
    assert len(found) == 1, f"{r.name}: {len(found)} worker Deployments for version {version}"
    return found[0]


# --- workers: drain, probes, rollout -----------------------------------------------------------------------

def test_worker_grace_period_covers_the_drain(each):
    assert each.workers(), f"{each.name}: no worker Deployment"
    for d in each.workers():
        spec = d["spec"]["template"]["spec"]
        drain = int(env_of(container(spec, "worker"))["SWITCHBOARD_DRAIN_DEADLINE"])
        grace = spec["terminationGracePeriodSeconds"]
        assert grace >= drain + 60, f"{each.name}: {d['metadata']['name']}: grace {grace}s, drain deadline {drain}s"


def test_worker_probes(each):
    for d in each.workers():
        c = container(d["spec"]["template"]["spec"], "worker")
        ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
        assert ready["path"] == "/readyz", d["metadata"]["name"]
        assert live["path"] == "/healthz", d["metadata"]["name"]
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert ready["path"] != live["path"], "a draining worker is not ready but must stay alive"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": 8080}
        for probe in (ready, live):
            assert probe["port"] in ("http", 8080)
        env = env_of(c)
        assert (env["SWITCHBOARD_HTTP_HOST"], env["SWITCHBOARD_HTTP_PORT"]) == ("0.0.0.0", "8080")
        assert "lifecycle" not in c, "workers need no preStop: no Service sends them traffic"


def test_router_probes_and_service(each):
    (d,) = each.routers()
    c = container(d["spec"]["template"]["spec"], "router")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["args"] == ["router"]
    svc = each.one("Service", d["metadata"]["name"])
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_worker_rollout_never_goes_below_the_wanted_count(each):
    for d in each.workers():
        s = d["spec"]["strategy"]
        assert s["type"] == "RollingUpdate"
        assert s["rollingUpdate"]["maxUnavailable"] == 0, d["metadata"]["name"]


def test_worker_env(each):
    for d in each.workers():
        c = container(d["spec"]["template"]["spec"], "worker")
        env = env_of(c)
        assert c["args"] == ["worker"]
        assert env["SWITCHBOARD_WHEN_DRAINED"] == "stay", "a drained worker that exits is restarted forever"
        assert env["SWITCHBOARD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["SWITCHBOARD_CPU_SOURCE"] == "auto"
        assert env["SWITCHBOARD_DRAIN_AT_DEADLINE"] in ("migrate", "end")
        for name in ("SWITCHBOARD_NATS_URL", "SWITCHBOARD_REDIS_URL", "SWITCHBOARD_PREFIX", "SWITCHBOARD_KEY_PREFIX",
                     "SWITCHBOARD_CAPACITY", "SWITCHBOARD_HANDLER", "SWITCHBOARD_VERSION"):
            assert name in env, f"{d['metadata']['name']}: no {name}"
        assert env["SWITCHBOARD_NATS_URL"] == each.values["nats"]["url"]
        assert env["SWITCHBOARD_REDIS_URL"] == each.values["redis"]["url"]


def test_worker_pods_are_not_evicted_by_autoscalers(each):
    for d in each.workers():
        a = d["spec"]["template"]["metadata"]["annotations"]
        assert a["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
        assert a["karpenter.sh/do-not-disrupt"] == "true"


def test_one_worker_deployment_per_version(each):
    versions = [v["version"] for v in version_specs(each)]
    assert len(each.workers()) == len(versions)
    names = set()
    for v in version_specs(each):
        d = worker_for(each, v["version"])
        names.add(d["metadata"]["name"])
        assert d["spec"]["selector"]["matchLabels"]["switchboard.io/version"] == v["version"]
        assert env_of(container(d["spec"]["template"]["spec"], "worker"))["SWITCHBOARD_VERSION"] == v["version"]
        image = container(d["spec"]["template"]["spec"], "worker")["image"]
        tag = (v.get("image") or {}).get("tag")
        if tag:
            assert image.endswith(":" + tag), image
    assert len(names) == len(versions)


def test_worker_settings_per_version(each):
    w = each.values["workers"]
    for v in version_specs(each):
        d = worker_for(each, v["version"])
        env = env_of(container(d["spec"]["template"]["spec"], "worker"))
        assert env["SWITCHBOARD_CAPACITY"] == str(v.get("capacity", w["capacity"]))
        assert env["SWITCHBOARD_HANDLER"] == v.get("handler", w["handler"])
        assert env["SWITCHBOARD_DRAIN_DEADLINE"] == str(v.get("drainDeadlineSeconds", w["drainDeadlineSeconds"]))
        assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == \
            v.get("terminationGracePeriodSeconds", w["terminationGracePeriodSeconds"])


def test_autoscaled_versions_leave_replicas_to_the_autoscaler(each):
    for v in version_specs(each):
        d = worker_for(each, v["version"])
        if (v.get("autoscaling") or {}).get("enabled"):
            assert "replicas" not in d["spec"], f"{each.name}: {v['version']} is autoscaled but sets replicas"
        else:
            assert d["spec"]["replicas"] == v.get("replicas", 1)
    (router,) = each.routers()
    if each.values["router"]["autoscaling"]["enabled"]:
        assert "replicas" not in router["spec"]
    else:
        assert router["spec"]["replicas"] == each.values["router"]["replicas"]


# --- selectors and references ------------------------------------------------------------------------------

def test_deployment_selectors_match_their_pods(each):
    for d in each.kind("Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert matches(d["spec"]["selector"], labels), d["metadata"]["name"]
        assert "helm.sh/chart" not in d["spec"]["selector"]["matchLabels"], "selectors must not change with the chart"
        assert "app.kubernetes.io/version" not in d["spec"]["selector"]["matchLabels"]
    deployments = each.kind("Deployment")
    for a in deployments:
        for b in deployments:
            if a is not b:
                assert not matches(a["spec"]["selector"], b["spec"]["template"]["metadata"]["labels"]), \
                    f"{a['metadata']['name']} would adopt the pods of {b['metadata']['name']}"


def test_pdbs_cover_the_routers_and_gateways_only(each):
    pdbs = each.kind("PodDisruptionBudget")
    g = each.values["gateway"]
    gateway_pdb = g["enabled"] and g["podDisruptionBudget"]["enabled"] and (g["autoscaling"]["enabled"] or g["replicas"] > 1)
    assert len(pdbs) == (1 if each.values["router"]["podDisruptionBudget"]["enabled"] else 0) + (1 if gateway_pdb else 0)
    covered = []
    for pdb in pdbs:
        selected = [d for d in each.kind("Deployment") if matches(pdb["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert selected in (each.routers(), each.gateways()), f"PodDisruptionBudget/{pdb['metadata']['name']}"
        covered += selected
        assert pdb["spec"]["minAvailable"] >= 1
    assert not [d for d in covered if d in each.workers()], "workers drain on SIGTERM; a PDB would only stall node drains"


def test_autoscalers_target_real_deployments(each):
    deployments = {d["metadata"]["name"]: d for d in each.kind("Deployment")}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for a in each.kind(kind):
            ref = a["spec"]["scaleTargetRef"]
            assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
            assert ref["name"] in deployments, f"{kind}/{a['metadata']['name']} scales {ref['name']}, which is not rendered"
            target = deployments[ref["name"]]
            assert "replicas" not in target["spec"], f"{ref['name']} is autoscaled and must not set replicas"
            version = target["spec"]["template"]["metadata"]["labels"].get("switchboard.io/version")
            if kind == "ScaledObject":
                (trigger,) = a["spec"]["triggers"]
                assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "1"
                assert f'version="{version}"' in trigger["metadata"]["query"]
                assert "switchboard_workers_desired" in trigger["metadata"]["query"]
            elif target["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway":
                legs = [m for m in a["spec"]["metrics"] if m["type"] == "Pods"]
                assert [m["pods"]["metric"]["name"] for m in legs] == ["switchboard_gateway_legs"]
                assert legs[0]["pods"]["target"]["type"] == "AverageValue"
            elif version is not None:
                (metric,) = a["spec"]["metrics"]
                assert metric["type"] == "External"
                assert metric["external"]["metric"]["name"] == "switchboard_workers_desired"
                assert metric["external"]["metric"]["selector"]["matchLabels"]["version"] == version
                assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
                assert a["spec"]["minReplicas"] >= 1


def test_services_and_service_monitors_select_real_pods(each):
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in each.kind("Deployment")]
    services = each.kind("Service")
    for svc in services:
        assert any(matches({"matchLabels": svc["spec"]["selector"]}, p) for p in pods), svc["metadata"]["name"]
    scraped = []
    for sm in each.kind("ServiceMonitor"):
        hits = [s for s in services if matches(sm["spec"]["selector"], s["metadata"]["labels"])]
        assert len(hits) == 1, f"ServiceMonitor/{sm['metadata']['name']} selects {len(hits)} Services"
        ports = {p["name"] for p in hits[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in ports and ep["path"] == "/metrics"
        scraped += [d for d in each.kind("Deployment")
                    if matches({"matchLabels": hits[0]["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])]
    if each.kind("ServiceMonitor"):
        names = sorted(d["metadata"]["name"] for d in scraped)
        assert names == sorted(d["metadata"]["name"] for d in each.kind("Deployment")), \
            f"{each.name}: ServiceMonitors scrape {names}, not every router and worker"


def test_network_policies_select_real_pods(each):
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in each.kind("Deployment")]
    open_router = not each.values["networkPolicy"]["routerIngressFrom"]
    for np in each.kind("NetworkPolicy"):
        assert any(matches(np["spec"]["podSelector"], p) for p in pods), np["metadata"]["name"]
        component = np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in np["spec"].get("ingress", []):
            if component == "gateway":
                continue  # callers and Twilio come from anywhere: test_gateway_network_policy
            if not (component == "router" and open_router):
                assert rule.get("from"), f"NetworkPolicy/{np['metadata']['name']}: an ingress rule without from admits anyone"


def test_network_policy_lets_workers_be_scraped_and_reach_nats(everything):
    np = everything.one("NetworkPolicy", "sb-worker")
    assert np["spec"]["ingress"][0]["from"] == everything.values["networkPolicy"]["metricsFrom"]
    ports = [p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]]
    for port in (4222, 6379, 26379, 53, 443):
        assert port in ports


# --- security and labels -----------------------------------------------------------------------------------

def test_every_pod_and_container_is_locked_down(each):
    specs = list(pod_specs(each.docs))
    assert len(specs) >= 2
    for where, spec, _ in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001 and psc["fsGroup"] == 10001, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, f"{where}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, f"{where}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{where}/{c['name']}"
            assert not sc["capabilities"].get("add"), f"{where}/{c['name']}"
            assert sc.get("privileged") is not True
            assert "/tmp" in [m["mountPath"] for m in c.get("volumeMounts", [])], f"{where}/{c['name']}: no writable /tmp"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: mounts a token into every container"


def test_standard_labels_on_every_object(each):
    needed = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
              "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart")
    for d in each.docs:
        labels = d["metadata"].get("labels", {})
        for key in needed:
            assert labels.get(key), f"{each.name}: {d['kind']}/{d['metadata']['name']} has no {key}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    for where, _, meta in pod_specs(each.docs):
        for key in needed[:4]:
            assert meta["labels"].get(key), f"{where}: pod has no {key}"


# --- features that are off render nothing ------------------------------------------------------------------

def test_defaults_render_no_optional_feature(defaults):
    kinds = {d["kind"] for d in defaults.docs}
    assert not kinds & OPTIONAL_KINDS, kinds & OPTIONAL_KINDS
    assert not [c for c in defaults.kind("ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert [s["metadata"]["name"] for s in defaults.kind("Service")] == ["switchboard-router"]


def test_everything_renders_every_optional_feature(everything):
    kinds = {d["kind"] for d in everything.docs}
    assert OPTIONAL_KINDS - {"ScaledObject"} <= kinds
    assert rendered("keda-values.yaml").kind("ScaledObject")
    (dash,) = [c for c in everything.kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    board = json.loads(dash["data"]["switchboard.json"])
    assert board["panels"] and board["uid"] == "switchboard"


def test_optional_features_follow_their_switch():
    base = chart.CHART / "ci" / "minimal-values.yaml"
    cases = {
        "monitoring.serviceMonitor.enabled=true": "ServiceMonitor",
        "monitoring.prometheusRule.enabled=true": "PrometheusRule",
        "networkPolicy.enabled=true": "NetworkPolicy",
        "router.autoscaling.enabled=true": "HorizontalPodAutoscaler",
    }
    for flag, kind in cases.items():
        on = chart.documents(chart.render(base, sets=(flag,)).stdout)
        off = chart.documents(chart.render(base, sets=(flag.replace("=true", "=false"),)).stdout)
        assert [d for d in on if d["kind"] == kind], flag
        assert not [d for d in off if d["kind"] == kind], flag


# --- topology ----------------------------------------------------------------------------------------------

def topology_render(source: str, *sets: str) -> list:
    return chart.documents(chart.render(chart.CHART / "ci" / "minimal-values.yaml",
                                        sets=(f"workers.topology.source={source}",) + sets).stdout)


def test_topology_from_an_init_container():
    docs = topology_render("initContainer")
    (d,) = [x for x in docs if x["kind"] == "Deployment" and "worker" in x["metadata"]["name"]]
    spec = d["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["name"] == "topology"
    assert init["command"][:2] == ["/bin/sh", "-c"]
    assert "topology.kubernetes.io/region" in init["command"][2].replace("\\", "")
    assert env_of(init)["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    env = env_of(container(spec, "worker"))
    assert env["SWITCHBOARD_CONFIG"] == "/run/switchboard/topology.json"
    assert "SWITCHBOARD_REGION" not in env and "SWITCHBOARD_ZONE" not in env, "env would win over the file"
    assert {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True} \
        in init["volumeMounts"]
    assert "kube-api-access" not in [m["name"] for m in container(spec, "worker")["volumeMounts"]], \
        "only the init container gets the token"
    (role,) = [x for x in docs if x["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    (binding,) = [x for x in docs if x["kind"] == "ClusterRoleBinding"]
    (sa,) = [x for x in docs if x["kind"] == "ServiceAccount"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"] == spec["serviceAccountName"]


def test_topology_from_the_downward_api():
    docs = topology_render("downwardAPI")
    (d,) = [x for x in docs if x["kind"] == "Deployment" and "worker" in x["metadata"]["name"]]
    spec = d["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    env = env_of(container(spec, "worker"))
    assert env["SWITCHBOARD_REGION"] == {"fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/region']"}}
    assert env["SWITCHBOARD_ZONE"] == {"fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']"}}
    assert "SWITCHBOARD_CONFIG" not in env
    assert not [x for x in docs if x["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_topology_static():
    docs = topology_render("static", "workers.topology.region=eu-west", "workers.topology.zone=eu-west-b")
    (d,) = [x for x in docs if x["kind"] == "Deployment" and "worker" in x["metadata"]["name"]]
    env = env_of(container(d["spec"]["template"]["spec"], "worker"))
    assert (env["SWITCHBOARD_REGION"], env["SWITCHBOARD_ZONE"]) == ("eu-west", "eu-west-b")
    assert "initContainers" not in d["spec"]["template"]["spec"]
    failed = chart.render(chart.CHART / "ci" / "minimal-values.yaml", sets=("workers.topology.source=static",), check=False)
    assert failed.returncode != 0 and "needs workers.topology.region" in failed.stderr


# --- credentials and the env contract with the binary -------------------------------------------------------

def test_secrets_reach_the_processes(everything):
    (router,) = everything.routers()
    spec = router["spec"]["template"]["spec"]
    env = env_of(container(spec, "router"))
    mounts = {m["name"]: m["mountPath"] for m in container(spec, "router")["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert env["SWITCHBOARD_ADMIN_KEY_FILE"] == mounts["admin-keys"] + "/keys"
    assert volumes["admin-keys"]["secret"]["secretName"] == "switchboard-admin-keys"
    assert env["SWITCHBOARD_NATS_CREDS"] == mounts["nats-credentials"] + "/router.creds"
    assert env["SWITCHBOARD_MEDIA_SIGNING_KEY"] == mounts["nats-credentials"] + "/media-signing.json"
    assert {i["key"] for i in volumes["nats-credentials"]["secret"]["items"]} == {"router.creds", "media-signing.json"}
    assert env["SWITCHBOARD_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "switchboard-redis", "key": "redis-password"}}
    assert env["SWITCHBOARD_REDIS_SENTINEL_PASSWORD"] == {"secretKeyRef": {"name": "switchboard-redis", "key": "sentinel-password"}}
    assert env["SWITCHBOARD_NATS_TLS_CA"] == mounts["nats-tls"] + "/ca.crt"
    assert env["SWITCHBOARD_TENANCY"] == "on"
    assert env["SWITCHBOARD_REDIS_URL"].startswith("redis-sentinel://")
    for w in everything.workers():
        wspec = w["spec"]["template"]["spec"]
        wenv = env_of(container(wspec, "worker"))
        wvolumes = {v["name"]: v for v in wspec["volumes"]}
        assert wenv["SWITCHBOARD_NATS_CREDS"].endswith("/worker.creds")
        assert [i["key"] for i in wvolumes["nats-credentials"]["secret"]["items"]] == ["worker.creds"], \
            "a worker must not get the router's credential"
        assert "SWITCHBOARD_MEDIA_SIGNING_KEY" not in wenv
        assert "admin-keys" not in wvolumes


def test_workers_mint_a_credential_of_their_own_at_start():
    docs = chart.documents(chart.render(chart.CHART / "ci" / "everything-values.yaml",
                                        sets=("nats.auth.workerSigningKey=worker-signing.json",)).stdout)
    docs += rendered("member-credentials-values.yaml").docs
    workers = [d for d in docs if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]]
    assert workers
    for w in workers:
        spec = w["spec"]["template"]["spec"]
        init = {c["name"]: c for c in spec["initContainers"]}["nats-credential"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert [i["key"] for i in volumes["nats-signing"]["secret"]["items"]] == ["worker-signing.json"], \
            "only the signing key: not the shared worker credential, not the router's"
        assert volumes["nats-credentials"]["emptyDir"]["medium"] == "Memory"
        args = init["args"]
        assert args[0] == "nats-credential" and args[args.index("--id") + 1] == "$(POD_NAME)"
        assert env_of(init)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert args[args.index("--prefix") + 1] in ("voice", "sb")
        out = args[args.index("--out") + 1]
        worker = container(spec, "worker")
        env = env_of(worker)
        mounts = {m["name"]: m for m in worker["volumeMounts"]}
        assert "nats-signing" not in mounts, "the worker must never see the signing key"
        assert env["SWITCHBOARD_NATS_CREDS"] == out == mounts["nats-credentials"]["mountPath"] + "/worker.creds"
        assert mounts["nats-credentials"]["readOnly"] is True
        # Its id is the pod's name, as the minted credential's.
        assert env["SWITCHBOARD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_no_secret_values_in_plain_env(each):
    for where, spec, _ in pod_specs(each.docs):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                if re.search(r"PASSWORD|TOKEN|API_KEY|SECRET", e["name"]):
                    assert "valueFrom" in e and "secretKeyRef" in e["valueFrom"], f"{where}/{c['name']}: {e['name']}"
            for e in c.get("env", []):
                if e["name"] in ("SWITCHBOARD_NATS_URL", "SWITCHBOARD_REDIS_URL"):
                    assert not re.search(r"//[^/@]*:[^/@]*@", e["value"]), f"{where}: a password in {e['name']}"


def option_env_names() -> set:
    """SWITCHBOARD_* variables the binary reads: one per option read through Settings, and those read directly."""
    names = set()
    for f in (ROOT / "Sources").rglob("*.swift"):
        text = f.read_text()
        for option in re.findall(r'Settings\.(?:string|int|double|value)\("([a-z0-9-]+)"', text):
            names.add("SWITCHBOARD_" + option.upper().replace("-", "_"))
        names.update(re.findall(r'"(SWITCHBOARD_[A-Z_]+)"', text))
    return names


def test_every_variable_the_chart_sets_is_read_by_switchboard(each):
    known = option_env_names()
    assert "SWITCHBOARD_NATS_URL" in known, "could not read the options from Sources/"
    for where, spec, _ in pod_specs(each.docs):
        for c in spec.get("initContainers", []) + spec["containers"]:
            if c["name"] == "topology":
                continue
            for name in env_of(c):
                if name.startswith("SWITCHBOARD_"):
                    assert name in known, f"{where}/{c['name']}: switchboard reads no {name}"


def test_metrics_in_alerts_and_dashboard_exist():
    names = set(re.findall(r'"(switchboard_[a-z_]+)"', (ROOT / "Sources/SwitchboardObservability/Names.swift").read_text()))
    assert "switchboard_placements_total" in names
    everything = rendered("everything-values.yaml")
    (rule,) = everything.kind("PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    dash = json.loads((chart.CHART / "dashboards" / "switchboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    (so,) = rendered("keda-values.yaml").kind("ScaledObject")[:1]
    exprs.append(so["spec"]["triggers"][0]["metadata"]["query"])
    used = set()
    for e in exprs:
        used.update(m.removesuffix("_bucket") for m in re.findall(r"\b(switchboard_[a-z_]+)", e))
    assert used, "no metric found in the expressions"
    assert used <= names, f"not exported by switchboard: {sorted(used - names)}"
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"SwitchboardNoReadyWorkers", "SwitchboardPlacementFailures", "SwitchboardFailovers", "SwitchboardCallsLost",
            "SwitchboardDrainStuck"} <= alerts


# --- the gateway -------------------------------------------------------------------------------------------

GATEWAY_BASE = ("gateway.enabled=true",)
# The Redis settings routers and workers get, and gateways with gateway.timeline redis.
REDIS_ENV = {"SWITCHBOARD_REDIS_URL", "SWITCHBOARD_KEY_PREFIX", "SWITCHBOARD_REDIS_REPLICAS_TO_ACK"}
REDIS_PASSWORDS = {"SWITCHBOARD_REDIS_PASSWORD", "SWITCHBOARD_REDIS_SENTINEL_PASSWORD"}


def gateway_render(*sets: str) -> list:
    return chart.documents(chart.render(chart.CHART / "ci" / "minimal-values.yaml", sets=GATEWAY_BASE + sets).stdout)


def gateway_pod(docs: list) -> dict:
    (d,) = [x for x in docs if x["kind"] == "Deployment" and x["metadata"]["name"].endswith("-gateway")]
    return d["spec"]["template"]["spec"]


def arg_values(args: list, flag: str) -> list:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_gateway_is_off_by_default(defaults):
    assert not defaults.gateways()
    assert not [d for d in defaults.docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]
    assert not defaults.kind("Ingress")


def test_gateway_deployment(gateway):
    g = gateway.values["gateway"]
    (d,) = gateway.gateways()
    spec = d["spec"]["template"]["spec"]
    c = container(spec, "gateway")
    args, env = c["args"], env_of(c)
    assert args[0] == "gateway"
    assert arg_values(args, "--public-url") == [g["publicURL"]]
    assert sorted(arg_values(args, "--number")) == sorted(f"{n}={t}" for n, t in g["numbers"].items())
    assert arg_values(args, "--max-legs") == [str(g["maxLegs"])]
    assert arg_values(args, "--drain-deadline") == [str(g["drainDeadlineSeconds"])]
    assert arg_values(args, "--region") == [g["region"]] and "--zone" not in args
    assert args[-len(g["extraArgs"]):] == g["extraArgs"]
    assert spec["terminationGracePeriodSeconds"] == g["drainDeadlineSeconds"] + 60, "the grace period covers the drain"
    assert (env["SWITCHBOARD_HTTP_HOST"], env["SWITCHBOARD_HTTP_PORT"]) == ("0.0.0.0", str(g["httpPort"]))
    assert env["SWITCHBOARD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SWITCHBOARD_NATS_URL"] == gateway.values["nats"]["url"]
    assert env["SWITCHBOARD_TIMELINE"] == g["timeline"] == "redis"
    assert env["SWITCHBOARD_REDIS_URL"] == gateway.values["redis"]["url"], "call timelines go to the cluster's Redis"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": g["httpPort"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", "a draining gateway is not ready but must stay alive"
    assert "lifecycle" not in c, "SIGTERM drains; no preStop"
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in d["spec"], "autoscaled"
    a = d["spec"]["template"]["metadata"]["annotations"]
    assert a["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false" and a["karpenter.sh/do-not-disrupt"] == "true"
    assert a["example.com/team"] == "voice"
    keys = [t["topologyKey"] for t in spec["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]


def test_gateway_secrets_are_files(gateway):
    g = gateway.values["gateway"]
    spec = gateway_pod(gateway.docs)
    c = container(spec, "gateway")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    (volume,) = [v for v in spec["volumes"] if v["name"] == "gateway-secrets"]
    files = {}
    for source in volume["projected"]["sources"]:
        (item,) = source["secret"]["items"]
        files[item["path"]] = (source["secret"]["name"], item["key"])
    for flag, value in (("--twilio-auth-token-file", "twilioAuthToken"), ("--tenant-keys-file", "tenantKeys"),
                        ("--token-secret-file", "tokenSecret")):
        (path,) = arg_values(c["args"], flag)
        directory, name = path.rsplit("/", 1)
        assert directory == mounts["gateway-secrets"]["mountPath"] and mounts["gateway-secrets"]["readOnly"] is True
        assert files[name] == (g[value]["existingSecret"], g[value]["key"])
    in_env = {e["name"] for e in c["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]}
    assert in_env <= REDIS_PASSWORDS, f"the gateway's own secrets only as files, not {in_env - REDIS_PASSWORDS}"
    bare = gateway_pod(gateway_render())
    assert "gateway-secrets" not in {v["name"] for v in bare["volumes"]}
    args = container(bare, "gateway")["args"]
    assert not [a for a in args if a.endswith("-file")] and "--public-url" not in args


def test_gateway_mints_a_credential_of_its_own_at_start(gateway):
    spec = gateway_pod(gateway.docs)
    (init,) = spec["initContainers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert [i["key"] for i in volumes["nats-signing"]["secret"]["items"]] == ["gateway-signing.json"]
    assert volumes["nats-credentials"]["emptyDir"]["medium"] == "Memory"
    args = init["args"]
    assert args[0] == "nats-credential" and args[args.index("--id") + 1] == "$(POD_NAME)"
    assert args[args.index("--signing-key") + 1].endswith("/gateway-signing.json")
    assert args[args.index("--prefix") + 1] == gateway.values["nats"]["subjectPrefix"]
    out = args[args.index("--out") + 1]
    c = container(spec, "gateway")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert "nats-signing" not in mounts, "the gateway must never see the signing key"
    assert env_of(c)["SWITCHBOARD_NATS_CREDS"] == out == mounts["nats-credentials"]["mountPath"] + "/gateway.creds"
    # The workers of the same release mint theirs with their own key.
    for w in gateway.workers():
        wvolumes = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        assert [i["key"] for i in wvolumes["nats-signing"]["secret"]["items"]] == ["worker-signing.json"]


@pytest.mark.parametrize("sets, key, variable", [
    (("nats.auth.existingSecret=switchboard-nats",), "gateway.creds", "SWITCHBOARD_NATS_CREDS"),
    (("nats.auth.existingSecret=switchboard-nats", "nats.auth.gatewayKey=edge.creds"), "edge.creds", "SWITCHBOARD_NATS_CREDS"),
    (("nats.auth.existingSecret=switchboard-nats", "nats.auth.kind=nkey"), "gateway.nk", "SWITCHBOARD_NATS_NKEY"),
    # A worker signing key alone: workers mint, gateways share gateway.creds.
    (("nats.auth.existingSecret=switchboard-nats", "nats.auth.workerSigningKey=worker-signing.json"), "gateway.creds", "SWITCHBOARD_NATS_CREDS"),
])
def test_gateway_shared_credential(sets, key, variable):
    spec = gateway_pod(gateway_render(*sets))
    assert "initContainers" not in spec
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert [i["key"] for i in volumes["nats-credentials"]["secret"]["items"]] == [key], "only the gateway's own file"
    assert env_of(container(spec, "gateway"))[variable] == f"/etc/switchboard/nats/{key}"


def test_gateway_ingress(gateway):
    g = gateway.values["gateway"]
    (ing,) = gateway.kind("Ingress")
    (svc,) = [s for s in gateway.kind("Service") if s["metadata"]["name"] == ing["metadata"]["name"]]
    host = g["publicURL"].removeprefix("https://")
    assert ing["spec"]["ingressClassName"] == "nginx"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == host
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}
    assert ing["spec"]["tls"] == [{"hosts": [host], "secretName": g["ingress"]["tls"]["secretName"]}]
    a = ing["metadata"]["annotations"]
    assert a["nginx.ingress.kubernetes.io/proxy-read-timeout"] == a["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600", \
        "WebSocket legs outlive nginx's 60 s default"
    assert a["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    # The public URL from the Ingress's host, and the other way round.
    docs = gateway_render("gateway.ingress.enabled=true", "gateway.ingress.host=gw.example.org")
    assert arg_values(container(gateway_pod(docs), "gateway")["args"], "--public-url") == ["https://gw.example.org"]
    docs = gateway_render("gateway.ingress.enabled=true", "gateway.publicURL=https://gw.example.org:8443")
    (ing,) = [d for d in docs if d["kind"] == "Ingress"]
    assert ing["spec"]["rules"][0]["host"] == "gw.example.org"
    assert not [d for d in gateway_render("gateway.publicURL=https://gw.example.org") if d["kind"] == "Ingress"]


def test_gateway_scales_on_live_legs(gateway):
    a = gateway.values["gateway"]["autoscaling"]
    (hpa,) = [h for h in gateway.kind("HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-gateway")]
    (d,) = gateway.gateways()
    assert hpa["spec"]["scaleTargetRef"]["name"] == d["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (a["minReplicas"], a["maxReplicas"])
    legs, cpu = hpa["spec"]["metrics"]
    assert legs == {"type": "Pods", "pods": {"metric": {"name": "switchboard_gateway_legs"},
                                             "target": {"type": "AverageValue", "averageValue": str(a["targetLegsPerPod"])}}}
    assert cpu["resource"]["name"] == "cpu"
    assert cpu["resource"]["target"]["averageUtilization"] == a["targetCPUUtilizationPercentage"]
    assert hpa["spec"]["behavior"] == a["behavior"]
    (rules,) = [c for c in gateway.kind("ConfigMap") if c["metadata"]["name"].endswith("-prometheus-adapter-rules")]
    (rule,) = yaml.safe_load(rules["data"]["custom-rules.yaml"])["rules"]
    assert rule["name"]["as"] == "switchboard_gateway_legs" and "switchboard_gateway_legs" in rule["seriesQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}, "a Pods metric is per pod"
    assert "external-rules.yaml" not in rules["data"]
    # Legs only.
    docs = gateway_render("gateway.autoscaling.enabled=true", "gateway.tokenSecret.existingSecret=gw",
                          "gateway.autoscaling.targetCPUUtilizationPercentage=0")
    (hpa,) = [x for x in docs if x["kind"] == "HorizontalPodAutoscaler"]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]


def test_gateway_pdb_only_when_there_can_be_two():
    assert not [d for d in gateway_render() if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("-gateway")]
    docs = gateway_render("gateway.replicas=2", "gateway.tokenSecret.existingSecret=gw")
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("-gateway")]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"


def test_gateway_network_policy(gateway):
    (np,) = [n for n in gateway.kind("NetworkPolicy") if n["metadata"]["name"].endswith("-gateway")]
    assert np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    (rule,) = np["spec"]["ingress"]
    assert "from" not in rule, "callers and Twilio come from anywhere"
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    ports = sorted({p["port"] for r in np["spec"]["egress"] for p in r["ports"]})
    assert ports == [53, 4222, 6379, 26379], "NATS, DNS and Redis (call timelines) only"


TIMELINE_BASE = ("redis.url=redis-sentinel://s1:26379\\,s2:26379/mymaster", "redis.keyPrefix=voice",
                 "redis.replicasToAck=1", "redis.auth.existingSecret=switchboard-redis",
                 "redis.auth.passwordKey=redis-password", "redis.auth.sentinelPasswordKey=sentinel-password",
                 "networkPolicy.enabled=true")


def egress_ports(docs: list, suffix: str) -> list:
    (np,) = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith(suffix)]
    return sorted({p["port"] for r in np["spec"]["egress"] for p in r["ports"]})


def redis_env(env: dict) -> dict:
    return {n: v for n, v in env.items() if n in REDIS_ENV | REDIS_PASSWORDS}


def test_gateway_timeline_in_redis():
    """gateway.timeline redis (the default): the gateway gets the Redis settings of routers and workers, and may reach Redis."""
    docs = gateway_render(*TIMELINE_BASE)
    env = env_of(container(gateway_pod(docs), "gateway"))
    assert env["SWITCHBOARD_TIMELINE"] == "redis"
    (router,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router")]
    router_env = env_of(container(router["spec"]["template"]["spec"], "router"))
    assert redis_env(env) == redis_env(router_env)
    assert set(redis_env(env)) == REDIS_ENV | REDIS_PASSWORDS
    assert env["SWITCHBOARD_REDIS_URL"] == "redis-sentinel://s1:26379,s2:26379/mymaster"
    assert env["SWITCHBOARD_KEY_PREFIX"] == "voice"
    assert env["SWITCHBOARD_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "switchboard-redis", "key": "redis-password"}}
    assert env["SWITCHBOARD_REDIS_SENTINEL_PASSWORD"] == {"secretKeyRef": {"name": "switchboard-redis", "key": "sentinel-password"}}
    assert egress_ports(docs, "-gateway") == [53, 4222, 6379, 26379]
    assert gateway_render(*TIMELINE_BASE, "gateway.timeline=redis") == docs, "redis is the default"


def test_gateway_timeline_off_keeps_the_gateway_nats_only():
    docs = gateway_render(*TIMELINE_BASE, "gateway.timeline=off")
    env = env_of(container(gateway_pod(docs), "gateway"))
    assert env["SWITCHBOARD_TIMELINE"] == "off"
    assert not [n for n in env if "REDIS" in n or n == "SWITCHBOARD_KEY_PREFIX"], "no Redis with timeline off"
    assert egress_ports(docs, "-gateway") == [53, 4222], "NATS and DNS only"
    # Routers and workers keep theirs.
    for d in [x for x in docs if x["kind"] == "Deployment" and not x["metadata"]["name"].endswith("-gateway")]:
        spec = d["spec"]["template"]["spec"]
        assert set(redis_env(env_of(spec["containers"][0]))) == REDIS_ENV | REDIS_PASSWORDS, d["metadata"]["name"]
    assert 6379 in egress_ports(docs, "-router") and 6379 in egress_ports(docs, "-worker")


def test_gateway_is_scraped_while_it_drains(gateway):
    (sm,) = [s for s in gateway.kind("ServiceMonitor") if s["metadata"]["name"].endswith("-gateway")]
    (svc,) = [s for s in gateway.kind("Service") if matches(sm["spec"]["selector"], s["metadata"]["labels"])]
    assert svc["spec"]["publishNotReadyAddresses"] is True and svc["spec"]["clusterIP"] == "None"
    assert svc["metadata"]["name"] != gateway.gateways()[0]["metadata"]["name"], "not the Service that carries traffic"


def test_gateway_flags_are_the_commands():
    """The flags the chart passes exist in `switchboard gateway` (once its command is in Sources/)."""
    command = ROOT / "Sources" / "switchboard" / "GatewayCommand.swift"
    if not command.exists():
        pytest.skip("no Sources/switchboard/GatewayCommand.swift yet")
    text = "\n".join(f.read_text() for f in [*(ROOT / "Sources" / "switchboard").glob("*.swift"),
                                             *(ROOT / "Sources").glob("SwitchboardGateway/**/*.swift")])
    args = container(gateway_pod(rendered("gateway-values.yaml").docs), "gateway")["args"]
    extra = set(rendered("gateway-values.yaml").values["gateway"]["extraArgs"])
    for flag in [a for a in args[1:] if a.startswith("--") and a not in extra]:
        name = flag[2:]
        camel = name.split("-")[0] + "".join(w.capitalize() for w in name.split("-")[1:])
        assert f'"{name}"' in text or re.search(rf"\bvar\s+{camel}\b", text, re.IGNORECASE), \
            f"switchboard gateway has no {flag}"


# --- the helm test -----------------------------------------------------------------------------------------

def test_helm_test_places_and_ends_a_call(defaults, everything):
    for r, keyed in ((defaults, False), (everything, True)):
        (pod,) = r.kind("Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        c = pod["spec"]["containers"][0]
        script = c["command"][2]
        assert "switchboard call route" in script and "switchboard call end" in script
        env = env_of(c)
        (router,) = r.routers()
        port = r.values["router"]["service"]["port"]
        assert env["SWITCHBOARD_ROUTER_URL"] == f"http://{router['metadata']['name']}:{port}"
        assert ("SWITCHBOARD_API_KEY" in env) == keyed
    no_key = chart.documents(chart.render(chart.CHART / "ci" / "minimal-values.yaml", sets=("router.tenancy=on",)).stdout)
    assert not [d for d in no_key if d["kind"] == "Pod"], "with tenancy on and no tenant key the test cannot pass"


# --- values that must be refused ---------------------------------------------------------------------------

@pytest.mark.parametrize("sets, message", [
    (("workers.drainDeadlineSeconds=300", "workers.terminationGracePeriodSeconds=300"), "must be at least drainDeadlineSeconds"),
    (("workers.drainDeadlineSeconds=600",), "must be at least drainDeadlineSeconds"),
    (("workers.versions[0].version=1.0.0", "workers.versions[0].terminationGracePeriodSeconds=100"), "must be at least drainDeadlineSeconds"),
    (("router.colour=blue",), "colour"),
    (("workers.versions[0].version=1.0.0", "workers.versions[0].replica=2"), "replica"),
    (("workers.drainAtDeadline=later",), "drainAtDeadline"),
    (("router.strategy=random",), "strategy"),
    (("workers.topology.source=guess",), "source"),
    (("workers.versions[0].version=1.0.0", "workers.versions[1].version=1.0.0"), "each version must appear once"),
    (("workers.versions[0].version=1.0.0", "workers.versions[0].autoscaling.enabled=true",
      "workers.versions[0].autoscaling.minReplicas=0"), "cannot scale to zero"),
    (("workers.versions[0].version=1.0.0", "workers.versions[0].autoscaling.enabled=true",
      "workers.versions[0].autoscaling.minReplicas=5", "workers.versions[0].autoscaling.maxReplicas=2"), "above maxReplicas"),
    (("adminKeys.keys[0].name=alice", "adminKeys.keys[0].key=short"), "key"),
    (("gateway.enabled=true", "gateway.replicas=2"), "gateway.tokenSecret.existingSecret is required"),
    (("gateway.enabled=true", "gateway.autoscaling.enabled=true"), "gateway.tokenSecret.existingSecret is required"),
    (("gateway.enabled=true", "gateway.ingress.enabled=true"), "gateway.ingress needs a host"),
    (("gateway.enabled=true", "gateway.autoscaling.enabled=true", "gateway.tokenSecret.existingSecret=gw",
      "gateway.autoscaling.targetLegsPerPod=900"), "is above gateway.maxLegs"),
    (("gateway.enabled=true", "gateway.tokenSecret.existingSecret=gw", "gateway.autoscaling.enabled=true",
      "gateway.autoscaling.minReplicas=5", "gateway.autoscaling.maxReplicas=2"), "minReplicas is above maxReplicas"),
    # An unquoted number key is read as a number: its "+" is gone.
    (("gateway.enabled=true", "gateway.numbers.15550100=acme"), "15550100"),
    (("gateway.enabled=true", "gateway.publicURL=gw.example.com"), "publicURL"),
    (("gateway.enabled=true", "gateway.zone=eu-west-a"), "gateway.zone needs gateway.region"),
    (("gateway.enabled=true", "gateway.timeline=memory"), "timeline"),
    (("gateway.enabled=true", "gateway.timeline=true"), "timeline"),
])
def test_bad_values_are_refused(sets, message):
    result = chart.render(chart.CHART / "ci" / "minimal-values.yaml", sets=sets, check=False)
    assert result.returncode != 0, f"helm template accepted {sets}"
    assert message in result.stderr, result.stderr


def test_the_margin_is_exactly_sixty_seconds():
    ok = chart.render(chart.CHART / "ci" / "minimal-values.yaml",
                      sets=("workers.drainDeadlineSeconds=100", "workers.terminationGracePeriodSeconds=160"), check=False)
    assert ok.returncode == 0, ok.stderr
    short = chart.render(chart.CHART / "ci" / "minimal-values.yaml",
                         sets=("workers.drainDeadlineSeconds=100", "workers.terminationGracePeriodSeconds=159"), check=False)
    assert short.returncode != 0


# --- the plain manifests -----------------------------------------------------------------------------------

def test_plain_manifests_are_the_chart_rendered():
    on_disk = chart.MANIFESTS.read_text()
    assert on_disk == chart.manifests(), "deploy/kubernetes/switchboard.yaml is out of date: scripts/check-chart --write-manifests"


def test_plain_manifests_name_no_namespace_and_no_secret_values():
    docs = chart.documents(chart.MANIFESTS.read_text())
    assert docs
    for d in docs:
        assert "namespace" not in d["metadata"], f"{d['kind']}/{d['metadata']['name']}"
        assert d["kind"] != "Secret", "the plain manifests expect Secrets the operator makes"
        assert d["kind"] != "Pod", "no helm test pod in the plain manifests"


def test_network_policy_without_scrapers_admits_nobody_to_workers():
    docs = chart.documents(chart.render(chart.CHART / "ci" / "minimal-values.yaml",
                                        sets=("networkPolicy.enabled=true", "networkPolicy.metricsFrom=null")).stdout)
    (np,) = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-worker")]
    assert np["spec"]["ingress"] == []
    assert "Ingress" in np["spec"]["policyTypes"]


# --- recordings --------------------------------------------------------------------------------------------

def test_recordings_share_one_volume_between_gateways_and_routers(gateway):
    r = gateway.values["recordings"]
    spec = gateway_pod(gateway.docs)
    c = container(spec, "gateway")
    assert arg_values(c["args"], "--recordings-dir") == ["/var/lib/switchboard/recordings"]
    assert arg_values(c["args"], "--recording-retention") == [str(r["retentionDays"] * 86400)]
    assert arg_values(c["args"], "--recording-bitrate") == [str(r["bitrate"])] and int(r["bitrate"]) >= 32000
    (router,) = gateway.routers()
    rspec = router["spec"]["template"]["spec"]
    rc = container(rspec, "router")
    assert env_of(rc)["SWITCHBOARD_RECORDINGS_DIR"] == "/var/lib/switchboard/recordings"
    assert env_of(rc)["SWITCHBOARD_RECORD_CALLS"] == "false", "tenants choose, unless recordAll"
    for pod, name in ((spec, "gateway"), (rspec, "router")):
        (volume,) = [v for v in pod["volumes"] if v["name"] == "recordings"]
        assert volume["persistentVolumeClaim"]["claimName"] == r["existingClaim"]
        (mount,) = [m for m in container(pod, name)["volumeMounts"] if m["name"] == "recordings"]
        assert mount["mountPath"] == "/var/lib/switchboard/recordings" and not mount.get("readOnly")


def test_recordings_are_off_by_default_and_need_a_claim(defaults):
    for d in defaults.docs:
        assert "recordings" not in str(d), f"{d['kind']}/{d['metadata']['name']}"
    refused = chart.render(chart.CHART / "ci" / "minimal-values.yaml", sets=("recordings.enabled=true",), check=False)
    assert refused.returncode != 0 and "recordings.existingClaim is required" in refused.stderr
    low = chart.render(chart.CHART / "ci" / "minimal-values.yaml",
                       sets=("recordings.enabled=true", "recordings.existingClaim=x", "recordings.bitrate=16000"), check=False)
    assert low.returncode != 0, "below 32 kbit/s the channels fold into one"

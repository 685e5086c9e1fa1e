"""The Kubernetes manifests (``infra/kubernetes/``) are valid and fit together, checked offline.

Every document is validated against the Kubernetes JSON schemas that ``kubernetes-validate``
ships (strict: an unknown or misspelt field fails), for ``K8S_VERSION``; nothing here talks to a
cluster or to the network. Then the cross-references a schema cannot see: the balancer's
variables are real settings that the balancer's own loader accepts, Services and
PodDisruptionBudgets select the pods they mean, probes and annotations name declared ports, the
ConfigMaps and Secrets referenced exist with the keys used, and every in-cluster DNS name the
configuration spells out (the headless replica Service, each sentinel) names a Service, or a
StatefulSet pod behind it, that the manifests declare.
"""

from __future__ import annotations

import base64
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import validate  # type: ignore[import-untyped]  # ships no py.typed

from balancer.config import flat_keys, load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "infra" / "kubernetes"
# The oldest Kubernetes these manifests are meant for (policy/v1 PDBs, seccompProfile …).
K8S_VERSION = "1.30.0"
CLUSTER_DOMAIN = "svc.cluster.local"
WORKLOADS = ("Deployment", "StatefulSet")
# A literal in-cluster name: [pod.]service.namespace.svc.cluster.local, not preceded by a shell
# variable or another label ("chlb-sentinel-$i.chlb-sentinel…" is not checked).
FQDN = re.compile(r"(?<![\w$.-])((?:[a-z0-9-]+\.){2,3})svc\.cluster\.local\b")

Doc = dict[str, Any]


@functools.cache
def _kustomization() -> Doc:
    loaded: Doc = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return loaded


@functools.cache
def _documents() -> tuple[Doc, ...]:
    """Every document of every resource the kustomization lists, in its order."""
    docs: list[Doc] = []
    for name in _kustomization()["resources"]:
        docs.extend(d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d)
    return tuple(docs)


def _of_kind(*kinds: str) -> list[Doc]:
    return [d for d in _documents() if d["kind"] in kinds]


def _named(kind: str, name: str) -> Doc:
    found = [d for d in _of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name!r}: {len(found)} declared, expected 1"
    return found[0]


def _containers(workload: Doc) -> list[Doc]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def _with_image(image: str) -> tuple[Doc, Doc]:
    """The one workload whose container runs ``image`` (any tag), and that container."""
    found = [
        (w, c)
        for w in _of_kind(*WORKLOADS)
        for c in _containers(w)
        if c["image"].split(":")[0] == image
    ]
    assert len(found) == 1, f"expected one container of {image}, found {len(found)}"
    return found[0]


def _selects(selector: dict[str, str], workload: Doc) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _selected(selector: dict[str, str]) -> list[Doc]:
    return [w for w in _of_kind(*WORKLOADS) if _selects(selector, w)]


def _ports(container: Doc) -> dict[str | int, int]:
    """A container's ports by name and by number → number."""
    ports: dict[str | int, int] = {}
    for p in container.get("ports", []):
        ports[p["containerPort"]] = p["containerPort"]
        if "name" in p:
            ports[p["name"]] = p["containerPort"]
    return ports


def _config_value(kind: str, name: str, key: str) -> str:
    """A key of a ConfigMap or Secret (``data`` of a Secret is base64)."""
    doc = _named(kind, name)
    if key in doc.get("stringData", {}):
        return str(doc["stringData"][key])
    assert key in doc.get("data", {}), f"{kind} {name!r} has no key {key!r}"
    value = doc["data"][key]
    return base64.b64decode(value).decode() if kind == "Secret" else str(value)


def _value_from(source: Doc) -> str:
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return _config_value("Secret", ref["name"], ref["key"])
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return _config_value("ConfigMap", ref["name"], ref["key"])
    assert "fieldRef" in source, f"unexpected variable source {source}"
    return "chlb-balancer-5d8f7c9b4-x2x7q"  # what metadata.name gives a Deployment's pod


def _environment(container: Doc) -> dict[str, str]:
    """The variables a container gets, as Kubernetes resolves them (a pod name for fieldRef)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", source["configMapRef"])
            if "configMapRef" in source
            else ("Secret", source["secretRef"])
        )
        doc = _named(kind, ref["name"])
        env.update({k: _config_value(kind, ref["name"], k) for k in doc.get("data", {})})
        env.update({k: str(v) for k, v in doc.get("stringData", {}).items()})
    for var in container.get("env", []):
        env[var["name"]] = var["value"] if "value" in var else _value_from(var["valueFrom"])
    return env


def _balancer_env() -> dict[str, str]:
    return _environment(_with_image("chlb-balancer")[1])


def _probes(container: Doc) -> Iterator[Doc]:
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind, {})
        for action in ("httpGet", "tcpSocket", "grpc"):
            if action in probe:
                yield probe[action]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert _kustomization()["namespace"] == "chlb"


@pytest.mark.parametrize(
    "doc", _documents(), ids=[f"{d['kind']}/{d['metadata']['name']}" for d in _documents()]
)
def test_document_matches_kubernetes_schema(doc: Doc) -> None:
    """Strict: the schemas forbid fields Kubernetes does not know (a typo fails here)."""
    validate(doc, K8S_VERSION, strict=True)


def test_every_object_is_in_the_namespace() -> None:
    namespace = _kustomization()["namespace"]
    assert _named("Namespace", namespace)
    for doc in _documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]


def test_balancer_variables_are_settings_the_balancer_accepts() -> None:
    """Every LB_* variable is a flag's variable, and ``lb-balancer``'s own loader parses the
    whole environment (an unknown runtime, a bad value or a missing section fails)."""
    env = _balancer_env()
    known = {f"LB_{key.upper()}" for key in flat_keys()}
    unknown = sorted(set(env) - known)
    assert not unknown, f"not lb-balancer settings (lb-balancer --help): {unknown}"
    settings = load_settings([], env)
    assert settings.runtime == "dns"
    assert settings.admin.token, "the admin token must come from the Secret"
    workload, container = _with_image("chlb-balancer")
    assert settings.http.port in _ports(container).values()
    assert settings.http.host == "0.0.0.0"
    assert workload["spec"]["replicas"] >= 2


def test_probes_and_scrape_annotations_use_declared_ports() -> None:
    for workload in _of_kind(*WORKLOADS):
        for container in _containers(workload):
            for action in _probes(container):
                assert action["port"] in _ports(container), (container["name"], action)
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            declared = {p for c in _containers(workload) for p in _ports(c).values()}
            assert int(annotations["prometheus.io/port"]) in declared


def test_services_select_one_workload_and_its_ports() -> None:
    for service in _of_kind("Service"):
        selected = _selected(service["spec"]["selector"])
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"
        ports = {p for c in _containers(selected[0]) for p in _ports(c)}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    for workload in _of_kind(*WORKLOADS):
        assert _selects(workload["spec"]["selector"]["matchLabels"], workload)


def test_replicas_are_discovered_through_a_headless_service() -> None:
    """LB_DNS_NAME is the FQDN of a headless Service that answers with the ready replica pods
    only, at the port LB_DNS_PORT."""
    env = _balancer_env()
    service_name, namespace, domain = env["LB_DNS_NAME"].split(".", 2)
    assert domain == CLUSTER_DOMAIN
    service = _named("Service", service_name)
    assert service["metadata"]["namespace"] == namespace
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is False
    replicas, server = _with_image("chlb-server")
    assert _selected(service["spec"]["selector"]) == [replicas]
    assert int(env["LB_DNS_PORT"]) in _ports(server).values()
    assert any(p["port"] == int(env["LB_DNS_PORT"]) for p in service["spec"]["ports"])


def _statefulset_pod(pod: str, service: Doc) -> Doc:
    """The StatefulSet governed by ``service`` that has the pod named ``pod``."""
    for sts in _of_kind("StatefulSet"):
        prefix = sts["metadata"]["name"] + "-"
        if sts["spec"]["serviceName"] == service["metadata"]["name"] and pod.startswith(prefix):
            ordinal = pod.removeprefix(prefix)
            assert ordinal.isdigit() and int(ordinal) < sts["spec"]["replicas"], pod
            return sts
    raise AssertionError(f"no StatefulSet pod {pod} behind Service {service['metadata']['name']}")


def _resolve(fqdn: str) -> tuple[Doc, Doc]:
    """The Service ``[pod.]service.namespace.svc.cluster.local`` names, and the workload whose
    pods answer it (the StatefulSet the pod belongs to, for a pod's name)."""
    labels = fqdn.removesuffix("." + CLUSTER_DOMAIN).split(".")
    pod = labels[0] if len(labels) == 3 else None
    service = _named("Service", labels[-2])
    assert service["metadata"]["namespace"] == labels[-1], fqdn
    if pod is None:
        selected = _selected(service["spec"]["selector"])
        assert len(selected) == 1, fqdn
        return service, selected[0]
    assert service["spec"]["clusterIP"] == "None", f"{fqdn}: pod names need a headless Service"
    return service, _statefulset_pod(pod, service)


def test_sentinel_setting_names_each_sentinel() -> None:
    env = _balancer_env()
    sentinels = env["LB_REDIS_SENTINEL"].split(",")
    assert len(sentinels) >= 3, "a quorum needs three sentinels"
    for address in sentinels:
        host, _, port = address.strip().rpartition(":")
        _, sts = _resolve(host)
        commands = [" ".join(c.get("command", [])) for c in _containers(sts)]
        assert any("--sentinel" in c for c in commands), f"{host} runs no sentinel"
        assert int(port) in {p for c in _containers(sts) for p in _ports(c).values()}
    assert len({a.strip() for a in sentinels}) == len(sentinels)


def test_dns_names_in_the_configuration_exist() -> None:
    """Every literal in-cluster name in a ConfigMap (the settings, the Redis scripts) names a
    declared Service or StatefulSet pod, and every master name agrees with the balancer's."""
    master = _balancer_env()["LB_REDIS_MASTER_NAME"]
    seen = 0
    for config in _of_kind("ConfigMap"):
        for text in config.get("data", {}).values():
            for match in FQDN.finditer(text):
                _resolve(match[0])
                seen += 1
            named = re.findall(r"(?:sentinel monitor|get-master-addr-by-name) (\S+)", text)
            assert set(named) <= {master}, (config["metadata"]["name"], named)
    assert seen >= 4  # the replica Service, three sentinels, the Redis Service


def test_referenced_volumes_exist() -> None:
    for workload in _of_kind(*WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        claims = workload["spec"].get("volumeClaimTemplates", [])
        volumes |= {c["metadata"]["name"] for c in claims}
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                _named("ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                _named("Secret", volume["secret"]["secretName"])
        for container in _containers(workload):
            _environment(container)  # every ConfigMap, Secret and key it reads exists
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (container["name"], mount)


def test_disruption_budgets_keep_pods_running() -> None:
    budgets = _of_kind("PodDisruptionBudget")
    for budget in budgets:
        selected = _selected(budget["spec"]["selector"]["matchLabels"])
        assert len(selected) == 1, budget["metadata"]["name"]
        replicas = selected[0]["spec"]["replicas"]
        assert budget["spec"].get("minAvailable", 0) < replicas
        assert 0 < budget["spec"].get("maxUnavailable", 1) < replicas
    balancer, _ = _with_image("chlb-balancer")
    assert any(_selected(b["spec"]["selector"]["matchLabels"]) == [balancer] for b in budgets)


def test_pods_run_as_non_root_without_api_access() -> None:
    """No pod needs the Kubernetes API (discovery is DNS): no token mounted, no RBAC objects."""
    assert not _of_kind("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    for workload in _of_kind(*WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in _containers(workload):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["limits"], container["name"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell to parse the scripts")
def test_configmap_scripts_parse_as_shell() -> None:
    scripts = [
        (config["metadata"]["name"], key, text)
        for config in _of_kind("ConfigMap")
        for key, text in config.get("data", {}).items()
        if key.endswith(".sh")
    ]
    assert scripts
    for name, key, text in scripts:
        result = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, f"{name}/{key}: {result.stderr}"

"""Kubernetes manifests: core objects against the Kubernetes schemas (offline), the
Prometheus Operator objects against a minimal schema, and the wiring between them."""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamvae.config import load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
BASE = K8S / "base"
K8S_VERSION = "1.30.0"  # oldest Kubernetes release still commonly run
CORE_KINDS = {
    "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment",
    "PodDisruptionBudget", "Service", "Secret",
}  # fmt: skip

Doc = dict[str, Any]

SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                                    "properties": {
                                        "expr": {"type": "string"},
                                        "for": {"type": "string"},
                                        "labels": {"type": "object"},
                                        "annotations": {"type": "object"},
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_docs() -> list[Doc]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _load(BASE / name)]


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of kubectl's strategic merge the GPU patch uses: maps merge, lists of
    named items (containers, env) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else value
        return out
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(i, dict) and "name" in i for i in base + patch):
        merged = {item["name"]: item for item in base}
        for item in patch:
            name = item["name"]
            merged[name] = strategic_merge(merged[name], item) if name in merged else item
        return list(merged.values())
    return copy.deepcopy(patch)


def gpu_docs() -> list[Doc]:
    overlay = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    docs = base_docs()
    for patch_ref in overlay["patches"]:
        (patch,) = _load(K8S / "overlays" / "gpu" / patch_ref["path"])
        target = _get(docs, patch_ref["target"]["kind"], patch_ref["target"]["name"])
        docs[docs.index(target)] = strategic_merge(target, patch)
    return docs


def validate_core(doc: Doc) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_core_objects_match_the_kubernetes_schemas(variant: str) -> None:
    docs = base_docs() if variant == "base" else gpu_docs()
    core = [d for d in docs if d["kind"] in CORE_KINDS]
    assert {d["kind"] for d in core} == CORE_KINDS - {"Secret"}
    for doc in core:
        validate_core(doc)
    for doc in _load(BASE / "secret.example.yaml"):
        validate_core(doc)


def test_schema_validation_catches_a_typo() -> None:
    deployment = copy.deepcopy(_get(base_docs(), "Deployment", "streamvae"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(deployment)


def test_operator_objects() -> None:
    docs = base_docs()
    monitor = _get(docs, "ServiceMonitor", "streamvae")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    rule = _get(docs, "PrometheusRule", "streamvae")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    sys.path.insert(0, str(K8S))
    try:
        import render_prometheusrule
    finally:
        sys.path.remove(str(K8S))
    assert rule == render_prometheusrule.prometheus_rule(), (
        "base/prometheusrule.yaml is stale: run python deploy/kubernetes/render_prometheusrule.py"
    )


def _pod(docs: list[Doc], name: str) -> Doc:
    pod: Doc = _get(docs, "Deployment", name)["spec"]["template"]
    return pod


def _container(docs: list[Doc], name: str) -> Doc:
    (container,) = _pod(docs, name)["spec"]["containers"]
    return dict(container)


def _env(container: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _config(docs: list[Doc], tmp_path: Path) -> Any:
    text = _get(docs, "ConfigMap", "streamvae-config")["data"]["config.toml"]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path)


@pytest.mark.parametrize("name", ["streamvae", "streamvae-retrainer"])
def test_pods_are_hardened_and_probed(name: str, tmp_path: Path) -> None:
    docs = base_docs()
    settings = _config(docs, tmp_path)
    pod = _pod(docs, name)["spec"]
    assert pod["terminationGracePeriodSeconds"] > settings.service.shutdown_timeout_s + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    container = _container(docs, name)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["args"][0] == "run"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (port,) = container["ports"]
    assert port["containerPort"] == settings.metrics.port
    assert settings.metrics.host == "0.0.0.0"
    assert "memory" in container["resources"]["limits"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/etc/streamvae", settings.store.path} <= mounts
    # every referenced ConfigMap / PVC / Secret exists (the Secret as the documented example)
    known = {(d["kind"], d["metadata"]["name"]) for d in docs + _load(BASE / "secret.example.yaml")}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in known
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in known
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in known


def test_retrainer_is_a_singleton_and_scorers_do_not_retrain() -> None:
    docs = base_docs()
    retrainer = _get(docs, "Deployment", "streamvae-retrainer")
    assert retrainer["spec"]["replicas"] == 1
    assert retrainer["spec"]["strategy"]["type"] == "Recreate"
    assert _env(_container(docs, "streamvae-retrainer"))["STREAMVAE_RETRAINING__ENABLED"] == "true"
    scorer = _env(_container(docs, "streamvae"))
    assert scorer["STREAMVAE_RETRAINING__ENABLED"] == "false"
    # one writer per state_dir: scorers keep theirs off the retrainer's volume
    assert not scorer["STREAMVAE_RETRAINING__STATE_DIR"].startswith("/var/lib/streamvae/")
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v
        for v in _pod(docs, "streamvae")["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert set(claims) == {"streamvae-models"}
    assert _get(docs, "PersistentVolumeClaim", "streamvae-models")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


def test_services_and_monitor_select_the_pods() -> None:
    """Service name = `job` label: the rules expect streamvae and streamvae-retrainer."""
    docs = base_docs()
    monitor = _get(docs, "ServiceMonitor", "streamvae")
    for name in ("streamvae", "streamvae-retrainer"):
        service = _get(docs, "Service", name)
        labels = _pod(docs, name)["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        others = {n for n in ("streamvae", "streamvae-retrainer") if n != name}
        for other in others:
            other_labels = _pod(docs, other)["metadata"]["labels"]
            assert not service["spec"]["selector"].items() <= other_labels.items()
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    rules = (REPO / "deploy" / "prometheus" / "streamvae-rules.yml").read_text()
    assert 'up{job=~"streamvae|streamvae-retrainer"}' in rules


def test_retrainer_reads_every_partition_without_duplicating_outputs(tmp_path: Path) -> None:
    docs = base_docs()
    settings = _config(docs, tmp_path)
    env = _env(_container(docs, "streamvae-retrainer"))
    assert env["STREAMVAE_KAFKA__GROUP_ID"] != settings.kafka.group_id
    assert env["STREAMVAE_KAFKA__OUTPUT_TOPIC"] != settings.kafka.output_topic
    assert env["STREAMVAE_KAFKA__DEAD_LETTER_TOPIC"] != settings.kafka.dead_letter_topic
    scorer = _env(_container(docs, "streamvae"))
    assert "STREAMVAE_KAFKA__GROUP_ID" not in scorer


def test_sasl_password_comes_from_a_secret_file(tmp_path: Path) -> None:
    docs = base_docs()
    text = _get(docs, "ConfigMap", "streamvae-config")["data"]["config.toml"]
    assert "sasl_password_file" in text
    assert "sasl_password =" not in text
    secret = _load(BASE / "secret.example.yaml")[0]
    for name in ("streamvae", "streamvae-retrainer"):
        env = _env(_container(docs, name))
        ref = env["STREAMVAE_KAFKA__SASL_USERNAME"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
        assert "STREAMVAE_KAFKA__SASL_PASSWORD" not in env


def test_configmap_keys_exist_in_config_example() -> None:
    text = _get(base_docs(), "ConfigMap", "streamvae-config")["data"]["config.toml"]
    example_path = REPO / "config.example.toml"
    if not example_path.exists():
        pytest.skip("config.example.toml not in this checkout yet")
    example = tomllib.loads(example_path.read_text())
    for section, values in tomllib.loads(text).items():
        assert set(values) <= set(example[section]), section


def test_gpu_overlay_requests_a_gpu() -> None:
    docs = gpu_docs()
    container = _container(docs, "streamvae")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _env(container)["STREAMVAE_MODEL__DEVICE"] == "cuda"
    assert container["image"].endswith("-cuda")
    assert "readOnlyRootFilesystem" in container["securityContext"]  # base kept
    assert "nvidia.com/gpu" not in _container(docs, "streamvae-retrainer")["resources"]["limits"]


@pytest.mark.parametrize("variant", ["base", "gpu"])
@pytest.mark.parametrize("name", ["streamvae", "streamvae-retrainer"])
def test_pod_environment_is_valid_configuration(
    variant: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap plus each pod's STREAMVAE_* env load (unknown keys would be refused)."""
    docs = base_docs() if variant == "base" else gpu_docs()
    for key, value in _env(_container(docs, name)).items():
        if key.startswith("STREAMVAE_"):
            monkeypatch.setenv(key, value if isinstance(value, str) else "from-the-cluster")
    monkeypatch.setenv("STREAMVAE_KAFKA__SASL_MECHANISM", "PLAIN")
    _config(docs, tmp_path)

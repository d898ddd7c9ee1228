"""`kubectl kustomize` renders base and GPU overlay into schema-valid objects."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.unit.test_kubernetes_manifests import CORE_KINDS, K8S, K8S_VERSION

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("target", ["base", "overlays/gpu"])
def test_kustomize_renders_valid_objects(target: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert kinds == (CORE_KINDS - {"Secret"}) | {"ServiceMonitor", "PrometheusRule"}
    for doc in docs:
        assert doc["metadata"]["namespace"] == "streamvae"
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    images = {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert all(image.startswith("ghcr.io/streamvae/streamvae:") for image in images)
    assert any(image.endswith("-cuda") for image in images) == (target == "overlays/gpu")

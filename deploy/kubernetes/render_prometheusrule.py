"""Write base/prometheusrule.yaml from ../prometheus/streamvae-rules.yml (the one source).

    python deploy/kubernetes/render_prometheusrule.py

tests/unit/test_kubernetes_manifests.py fails when the two differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "streamvae-rules.yml"
OUT = HERE / "base" / "prometheusrule.yaml"


def prometheus_rule() -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "streamvae", "labels": {"app.kubernetes.io/name": "streamvae"}},
        "spec": {"groups": groups},
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, like the source file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def main() -> None:
    header = "# Generated from deploy/prometheus/streamvae-rules.yml by render_prometheusrule.py.\n"
    OUT.write_text(header + yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=100))


if __name__ == "__main__":
    main()

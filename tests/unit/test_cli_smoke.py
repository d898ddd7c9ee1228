from __future__ import annotations

import subprocess
import sys

from streamvae.cli import build_parser


def test_parser_knows_every_command() -> None:
    parser = build_parser()
    for argv in (
        ["check-config"],
        ["train", "--data", "a.jsonl", "--out", "store"],
        ["score", "--model", "store", "--data", "a.jsonl", "--out", "-"],
        ["run"],
        ["produce", "--data", "a.jsonl"],
        ["models", "list"],
        ["retrain"],
        ["demo", "--no-ui"],
    ):
        assert parser.parse_args(argv).func is not None


def test_python_m_streamvae_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamvae", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("streamvae ")

"""The daemon against a real broker: one output per input, commits at the end offsets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from streamvae.broker import EmbeddedBroker
from tests.integration.daemon_harness import (
    INVALID,
    Daemon,
    mixed,
    offsets,
    produce,
    read_outputs,
    setup_case,
    valid,
)

pytestmark = pytest.mark.integration


async def test_every_record_one_output_and_commits_at_end(
    broker: EmbeddedBroker,
    topics: Callable[..., str],
    tiny_models: dict[str, object],
    tmp_path: Path,
) -> None:
    names, group, config = setup_case(
        broker,
        topics,
        tmp_path,
        models=[tiny_models["v1"]],
        promote="v1",
        partitions=3,
        output={"top_contributions": 2},
    )
    corpus = [*mixed(400, invalid_every=5), valid(9999, site="brand-new-site")]
    await produce(broker.bootstrap_servers, names[0], corpus)
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        outputs = await read_outputs(broker.bootstrap_servers, names[1:], len(corpus))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    positions = [o.source for o in outputs]
    assert len(positions) == len(set(positions)) == len(corpus)
    scores = [o.value for o in outputs if o.topic == names[1]]
    dead = [o.value for o in outputs if o.topic == names[2]]
    assert len(dead) == 400 // 5
    assert Counter(d["reason"] for d in dead).keys() == {str(r) for _, r in INVALID}
    assert {s["model_version"] for s in scores} == {"v1"}
    assert all(len(s["contributions"]) == 2 for s in scores)
    new = [s for s in scores if s["site"] == "brand-new-site"]
    assert len(new) == 1
    assert new[0]["status"] == "warming"
    assert new[0]["anomaly"] is False
    assert {s["status"] for s in scores if s["site"] != "brand-new-site"} == {"active"}
    committed, ends = await offsets(broker.bootstrap_servers, group, names[0])
    assert committed == ends
    assert sum(ends.values()) == len(corpus)

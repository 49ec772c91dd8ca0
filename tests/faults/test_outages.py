"""Usage records through faults, with real processes: a private Postgres and Redis stopped under load,
a gateway SIGKILLed under load (benchmarks/faults.py runs the same scenarios at full length)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from benchmarks.faults import FaultStack, fault_stack, outage, sigkill

# initdb, a gateway start and a few seconds of load and outage each.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def stack() -> AsyncIterator[FaultStack]:
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("needs Postgres's server binaries (initdb, pg_ctl) on PATH to run a private Postgres")
    # Not pytest's tmp_path: the private Postgres runs as its own user when we are root, and pytest's
    # folders are private to us.
    run_dir = Path(tempfile.mkdtemp(prefix="inventiv-faults-"))
    os.chmod(run_dir, 0o755)
    try:
        async with fault_stack(run_dir) as started:
            yield started
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def test_postgres_stopped_under_load_loses_and_doubles_nothing(stack: FaultStack) -> None:
    figures = await outage(stack, "postgres", outage_s=3.0, rate=60.0, warm_s=2.0, after_s=2.0)
    assert figures.completed > 200 and figures.completed_during_outage > 100
    # The gateway kept serving: nothing but complete answers, no 5xx.
    assert (figures.server_errors, figures.failures) == (0, 0)
    assert (figures.lost, figures.doubled) == (0, 0)
    assert figures.drain_s is not None


async def test_redis_stopped_under_load_buffers_counts_and_loses_nothing(stack: FaultStack) -> None:
    figures = await outage(stack, "redis", outage_s=3.0, rate=60.0, warm_s=2.0, after_s=2.0)
    assert figures.completed > 200 and figures.completed_during_outage > 100
    assert (figures.server_errors, figures.failures) == (0, 0)
    # Affinity off, counted; the records held in the buffer (the gauge shows them), then flushed.
    assert figures.affinity_unavailable > 0
    assert figures.buffered_peak > 0
    assert (figures.lost, figures.doubled, figures.dropped) == (0, 0, 0)
    assert figures.drain_s is not None


async def test_a_sigkilled_durable_gateway_leaves_no_answered_request_unrecorded(stack: FaultStack) -> None:
    figures = await sigkill(stack, "durable", rate=80.0, warm_s=2.0)
    assert figures.completed > 100
    assert (figures.completed_unrecorded, figures.doubled) == (0, 0)
    # Streams cut by the kill are in Postgres too, as opened records.
    assert figures.cut_streams_with_row == figures.cut_streams

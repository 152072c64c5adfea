"""Little's-law efficiency: the lease includes pre-ping, and the pool's time adds up.

Real Postgres (the session's `pg`), a real SQLAlchemy engine driven through `instrument`; the
hand-off integral is also checked alone on hand-made steps.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typer.testing import CliRunner

from poolbench.analysis.recommend import PRE_PING_NOT_MEASURED, pre_ping_cost
from poolbench.analysis.synthetic import make_sweep
from poolbench.cli import app
from poolbench.instrumentation.engine import instrument_engine
from poolbench.instrumentation.telemetry import PoolOccupancy, Telemetry
from poolbench.results import RUNS_CSV_FILE
from poolbench.sweep.figures import efficiency_figures, telemetry_figures
from poolbench.sweep.pg import Database

SLEEP_S = 0.02
PING_SLEEP_S = 0.05


def test_occupancy_integrates_idle_and_idle_while_waiting() -> None:
    occ = PoolOccupancy(0.0)
    occ.update(0.0, idle=2)  # two connections idle, nobody waiting
    occ.update(1.0, idle=0)  # both leased
    occ.update(2.0, idle=0, waiting_delta=+1)  # a checkout waits
    occ.update(3.0, idle=1)  # one comes back; the waiter has not taken it yet
    occ.update(3.5, idle=0, waiting_delta=-1)  # taken
    occ.reset_window(4.0)
    occ.update(5.0, idle=3)
    assert (occ.idle_s, occ.handoff_s) == pytest.approx((2.5, 0.5))
    # The window counts from its reset: 1 s of nothing, then 3 idle for 1 s.
    assert occ.window(7.0) == pytest.approx((6.0, 0.0))


def test_efficiency_figures_from_a_snapshot() -> None:
    snapshot: dict[str, Any] = {
        "window_s": 10.0,
        "requests": {"completed": 900},
        "sqlalchemy": {
            "pool_size": 2,
            "peak_checked_out": 2,
            "hold_time_ms": {"count": 900, "mean": 20.0},
            "ping_ms": {"count": 880, "mean": 0.5},
            "idle_s": 2.5,
            "handoff_s": 1.5,
        },
    }
    figures = efficiency_figures(snapshot)
    # 90 rps x 20 ms = 1.8 connections busy of 2: 0.9; 1.5 of 20 connection-s in hand-off.
    assert figures["littles_efficiency"] == pytest.approx(0.9)
    assert figures["handoff_share"] == pytest.approx(0.075)
    assert figures["idle_share"] == pytest.approx(0.05)
    assert (figures["ping_mean_ms"], figures["pings"]) == (0.5, 880)
    # Nothing measured: blank, never a guess.
    assert {telemetry_figures(None)[k] for k in figures} == {None}


async def _slow_pinging_engine(pg: Database, pool_size: int) -> tuple[AsyncEngine, Telemetry]:
    engine = create_async_engine(
        pg.sqlalchemy_url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True
    )

    # A real round trip on the connection, made slow enough to tell apart from the query.
    def slow_ping(dbapi_connection: Any) -> bool:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"select pg_sleep({PING_SLEEP_S})")
        finally:
            cursor.close()
        return True

    engine.sync_engine.dialect.do_ping = slow_ping  # type: ignore[method-assign]
    telemetry = Telemetry()
    instrument_engine(engine, telemetry.sqlalchemy)
    return engine, telemetry


async def _query(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("select pg_sleep(:s)"), {"s": SLEEP_S})


async def test_pre_ping_is_inside_the_hold_and_measured(pg: Database) -> None:
    engine, telemetry = await _slow_pinging_engine(pg, pool_size=1)
    try:
        for _ in range(4):
            await _query(engine)
    finally:
        await engine.dispose()
    pool = telemetry.snapshot()["sqlalchemy"]
    # The first checkout opened the connection: fresh, so SQLAlchemy did not ping it.
    assert pool["ping_ms"]["count"] == 3
    assert pool["ping_ms"]["p50"] >= PING_SLEEP_S * 1000
    # Every pinged lease (3 of 4) holds the connection for the ping and the query.
    hold = pool["hold_time_ms"]
    assert hold["count"] == 4
    assert hold["p50"] >= (SLEEP_S + PING_SLEEP_S) * 1000
    assert hold["sum"] >= (4 * SLEEP_S + 3 * PING_SLEEP_S) * 1000


async def test_held_plus_idle_is_the_pools_whole_time(pg: Database) -> None:
    engine, telemetry = await _slow_pinging_engine(pg, pool_size=1)
    try:
        await _query(engine)  # open the connection before the window
        telemetry.reset_window()
        # Four at once through one connection: three wait, each woken by a checkin.
        await asyncio.gather(*(_query(engine) for _ in range(4)))
        await asyncio.sleep(0.05)
        body = telemetry.snapshot()
    finally:
        await engine.dispose()
    pool = body["sqlalchemy"]
    held_s = pool["hold_time_ms"]["sum"] / 1000
    # One connection: at every instant it is either out of the pool (a lease) or idle in it.
    assert held_s + pool["idle_s"] == pytest.approx(body["window_s"], abs=0.005)
    assert held_s >= 4 * (SLEEP_S + PING_SLEEP_S)
    # Three hand-offs, each at least a loop turn, and no more than the idle time.
    assert 0 < pool["handoff_s"] <= pool["idle_s"]
    assert pool["handoff_s"] < 0.05


# --- recommend: pre-ping's cost beside its benefit ------------------------------------------


def test_pre_ping_cost_in_words() -> None:
    measured = pre_ping_cost({"ping_mean_ms": 2.5, "hold_time_mean_ms": 25.0}, pd.DataFrame())
    assert measured.startswith("measured 2.50 ms per checkout, 10% of the mean hold (25.0 ms)")
    none_pinged = pd.DataFrame({"pings": [0, 0]})
    assert "no checkout pinged" in pre_ping_cost({"hold_time_mean_ms": 25.0}, none_pinged)
    assert pre_ping_cost({}, pd.DataFrame({"rps": [1.0]})) == PRE_PING_NOT_MEASURED


def _add_ping_figures(sweep_dir: Path, ping_ms: float) -> None:
    figures = {"ping_mean_ms": ping_ms, "pings": 500}
    for path in (sweep_dir / "runs").glob("*/run.json"):
        # The synthetic sweep writes the flat row a real run.json keeps under "figures".
        path.write_text(json.dumps(json.loads(path.read_text()) | figures))
    runs = pd.read_csv(sweep_dir / RUNS_CSV_FILE).assign(**figures)
    runs.to_csv(sweep_dir / RUNS_CSV_FILE, index=False)


def test_recommend_states_pre_pings_measured_cost(tmp_path: Path) -> None:
    unmeasured = make_sweep(tmp_path / "a")
    text = CliRunner().invoke(app, ["recommend", str(unmeasured)]).stdout
    assert f"Pre-ping's cost: {PRE_PING_NOT_MEASURED}." in text
    measured = make_sweep(tmp_path / "b")
    _add_ping_figures(measured, 3.0)
    result = CliRunner().invoke(app, ["recommend", str(measured)])
    assert result.exit_code == 0, result.stderr
    # Beside its benefit, from the recommended config's own runs (hold ~20 ms there).
    line = next(x for x in result.stdout.splitlines() if "pool_pre_ping=True:" in x)
    assert "failover" in line and "Pre-ping's cost: measured 3.00 ms per checkout" in line
    assert "of the mean hold" in line

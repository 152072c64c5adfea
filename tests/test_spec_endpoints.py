"""Per-endpoint SLOs: `[slo.endpoints."POST /orders"]` in a spec, and the verdict on a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poolbench.errors import UsageError
from poolbench.objectives import EndpointSlo, Slo
from poolbench.specfile import load_spec, spec_from_manifest

SPEC = """
scenario = "mix"
[slo]
p95_ms = 100
max_error_rate = 0.01
[slo.endpoints."POST /orders"]
p95_ms = 300
[slo.endpoints."GET /users/[id]"]
p95_ms = 50
max_error_rate = 0.001
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_endpoint_objectives_are_read_in_order(tmp_path: Path) -> None:
    slo = load_spec(write(tmp_path, SPEC)).slo
    assert slo.p95_ms == 100 and slo.max_error_rate == 0.01
    assert slo.endpoints == {
        "POST /orders": EndpointSlo(p95_ms=300),
        "GET /users/[id]": EndpointSlo(p95_ms=50, max_error_rate=0.001),
    }
    assert list(slo.endpoints) == ["POST /orders", "GET /users/[id]"]
    assert slo.describe() == (
        "p95 <= 100 ms, errors <= 1.00%; POST /orders: p95 <= 300 ms; "
        "GET /users/[id]: p95 <= 50 ms, errors <= 0.10%"
    )


def test_no_endpoint_objectives_by_default(tmp_path: Path) -> None:
    slo = load_spec(write(tmp_path, 'scenario = "mix"\n')).slo
    assert slo.endpoints == {} and slo.endpoint_failure({}) is None
    assert slo.describe() == "p95 <= 250 ms, errors <= 1.00%"
    assert Slo.unset().endpoints == {} and not Slo.unset().is_set
    assert Slo(p95_ms=None, max_error_rate=None, endpoints={"GET /x": EndpointSlo(p95_ms=1)}).is_set


def test_endpoint_objectives_survive_the_manifest(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SPEC))
    # What manifest.json stores, through JSON, and back as `load_sweep` reads it.
    manifest = json.loads(json.dumps({"spec": spec.to_dict()}))
    assert manifest["spec"]["slo"]["endpoints"]["POST /orders"] == {
        "p95_ms": 300,
        "max_error_rate": None,
    }
    assert spec_from_manifest(manifest, "manifest.json") == spec


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[slo.endpoints."POST /orders"]\np95_ms = 0', 'slo.endpoints."POST /orders".p95_ms: must'),
        (
            '[slo.endpoints."POST /orders"]\np95_ms = "x"',
            '"POST /orders".p95_ms: must be a finite number',
        ),
        (
            '[slo.endpoints."POST /orders"]\nmax_error_rate = 1.5',
            'slo.endpoints."POST /orders".max_error_rate: must be a fraction',
        ),
        (
            '[slo.endpoints."POST /orders"]\np99_ms = 3',
            'slo.endpoints."POST /orders".p99_ms: unknown key',
        ),
        ('[slo.endpoints."POST /orders"]\n', '"POST /orders": must set p95_ms and/or'),
        ('[slo]\nendpoints = {"POST /orders" = 3}', '"POST /orders": must be a table'),
        ('[slo.endpoints."/orders"]\np95_ms = 3', '"/orders": must be a request type and name'),
        ("[slo]\nendpoints = 3", "slo.endpoints: must be a table"),
    ],
)
def test_invalid_endpoint_objectives_name_the_field(
    tmp_path: Path, table: str, message: str
) -> None:
    path = write(tmp_path, f'scenario = "mix"\n{table}\n')
    with pytest.raises(UsageError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"spec {path}: ")
    assert message in str(info.value) and "\n" not in str(info.value)


def figures(requests: float, p95_ms: float, error_rate: float) -> dict[str, Any]:
    return {"requests": requests, "failures": 0, "p95_ms": p95_ms, "error_rate": error_rate}


SLO = Slo(
    p95_ms=100,
    endpoints={
        "POST /orders": EndpointSlo(p95_ms=300),
        "GET /users/[id]": EndpointSlo(max_error_rate=0.01),
    },
)


def test_a_run_passes_when_every_endpoint_meets_its_objective() -> None:
    run = {
        "POST /orders": figures(10, 299.0, 0.5),  # no error objective of its own
        "GET /users/[id]": figures(90, 900.0, 0.01),  # no p95 objective of its own
        "GET /other": figures(5, 5000.0, 1.0),  # no objective at all
    }
    assert SLO.endpoint_failure(run) is None


def test_the_first_endpoint_missing_its_objective_is_the_reason() -> None:
    run = {"POST /orders": figures(10, 412.0, 0), "GET /users/[id]": figures(90, 10.0, 0.2)}
    assert SLO.endpoint_failure(run) == "POST /orders: p95 412.0 ms > 300 ms"
    run["POST /orders"] = figures(10, 100.0, 0)
    assert SLO.endpoint_failure(run) == "GET /users/[id]: errors 20.00% > 1.00%"


@pytest.mark.parametrize(
    "orders",
    [None, figures(0, float("nan"), float("nan")), {"requests": float("nan")}],
    ids=["absent", "zero", "blank"],
)
def test_an_endpoint_without_a_completed_request_fails(orders: dict[str, Any] | None) -> None:
    run = {"GET /users/[id]": figures(90, 10.0, 0)}
    if orders is not None:
        run["POST /orders"] = orders
    assert SLO.endpoint_failure(run) == "POST /orders: no request completed"


def test_unknown_figures_fail_as_in_the_aggregate() -> None:
    run = {
        "POST /orders": {"requests": 3, "p95_ms": float("nan"), "error_rate": 0},
        "GET /users/[id]": figures(90, 10.0, 0),
    }
    assert SLO.endpoint_failure(run) == "POST /orders: p95 unknown"
    run["POST /orders"] = figures(3, 10.0, 0)
    run["GET /users/[id]"] = {"requests": 3, "p95_ms": 10.0, "error_rate": None}
    assert SLO.endpoint_failure(run) == "GET /users/[id]: error rate unknown"

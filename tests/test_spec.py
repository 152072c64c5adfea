"""Sweep specs: parsing, overrides, grid expansion and one-line errors from the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from poolbench.defaults import DEFAULT_SEED_USERS
from poolbench.errors import UsageError
from poolbench.locustfiles import defines_user
from poolbench.objectives import Fleet, Slo
from poolbench.shipped import OWN_LOCUSTFILE
from poolbench.spec import Grid, SweepSpec, Target, Timing, Workload
from poolbench.specfile import (
    load_spec,
    parse_override,
    spec_from_dict,
)

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "bench" / "poolbench" / "specs").glob("*.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_load_and_round_trip(path: Path) -> None:
    spec = load_spec(path)
    assert spec.points()
    assert spec_from_dict(spec.to_dict(), source="manifest") == spec


def test_external_example_target_is_valid_once_uncommented() -> None:
    text = (ROOT / "bench" / "poolbench" / "specs" / "external.toml").read_text()
    head, marker, example = text.partition("# [target]\n")
    assert marker, "the commented-out [target] example is missing"
    uncommented = "\n".join(
        line.removeprefix("#").removeprefix(" ") for line in example.splitlines()
    )
    spec = spec_from_dict(tomllib.loads(f"{head}[target]\n{uncommented}"), source="external")
    assert spec.target is not None and spec.target.url == "http://127.0.0.1:8000"
    command = spec.target.expand(spec.points()[0]).command
    assert "-e DB_POOL_SIZE=2 -e DB_MAX_OVERFLOW=0" in command
    assert spec.app_env == {"DB_POOL_TIMEOUT_S": "5"}


def test_restart_cmd_placeholders_are_checked_at_load_time(tmp_path: Path) -> None:
    text = 'scenario = "single_query"\n[target]\nurl = "http://127.0.0.1:9000"\n'
    with pytest.raises(UsageError, match="target.restart_cmd: bad placeholder 'HOME'"):
        load_spec(write(tmp_path, text + 'restart_cmd = "cd ${HOME} && restart"\n'))
    spec = load_spec(
        write(tmp_path, text + 'restart_cmd = "cd ${{HOME}} && restart {pool_size}"\n')
    )
    assert spec.target is not None
    point = spec.points()[0]
    assert spec.target.expand(point).command == f"cd ${{HOME}} && restart {point.pool_size}"


MANAGED = """name = "mine"
locustfile = "load.py"
[grid]
pool_size = [2, 4]
[target]
command = "uvicorn app:app --port {port}"
cwd = "service"
[target.env]
MYAPP_DB_URL = "{database_url}"
MYAPP_POOL = "{pool_size}"
"""


def test_a_managed_target_fills_its_command_and_env_and_runs_in_the_spec_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / "load.py").write_text("from locust import HttpUser\nclass U(HttpUser):\n    pass\n")
    spec = load_spec(write(tmp_path, MANAGED))
    assert spec.target is not None and spec.target.managed
    assert spec.target.cwd == str(tmp_path / "service")  # relative to the spec file
    expanded = spec.target.expand(spec.points()[1], port="8123", database_url="postgresql+a://d")
    assert expanded.command == "uvicorn app:app --port 8123"
    assert expanded.env == {"MYAPP_DB_URL": "postgresql+a://d", "MYAPP_POOL": "4"}
    # What a manifest stores reads back as the same spec, nulls and all (issue 18, item 1).
    stored = spec.to_dict()
    assert stored["target"]["url"] is None and stored["target"]["pid_file"] is None
    assert spec_from_dict(stored, source="manifest", check_files=False) == spec
    restarted = load_spec(
        write(
            tmp_path, 'scenario = "single_query"\n[target]\nurl = "http://h:1"\nrestart_cmd = "r"\n'
        )
    )
    assert restarted.target is not None and restarted.target.cwd == str(tmp_path)
    assert spec_from_dict(restarted.to_dict(), source="m", check_files=False) == restarted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--port {port}", "--port 80"), "target.command: tell the service where to listen"),
        (("command =", "restart_cmd ="), "target.url: missing (restart_cmd needs the url"),
        (("{pool_size}", "{pool}"), "target.env.MYAPP_POOL: bad placeholder 'pool'"),
        (("MYAPP_POOL", "9BAD"), 'target.env."9BAD": must be an environment variable name'),
        (("cwd = ", 'stop_cmd = "x"\ncwd = '), "target.stop_cmd: only with restart_cmd"),
    ],
)
def test_a_target_that_cannot_run_fails_at_load_time(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    (tmp_path / "load.py").write_text("from locust import HttpUser\nclass U(HttpUser):\n    pass\n")
    with pytest.raises(UsageError) as info:
        load_spec(write(tmp_path, MANAGED.replace(*change)))
    assert message in str(info.value)


def test_quick_spec_can_fit_a_usl_curve() -> None:
    spec = load_spec(ROOT / "bench" / "poolbench" / "specs" / "quick.toml")
    assert len(spec.grid.pool_size) >= 6
    assert spec.scenario == "single_query" and spec.workload.sim_latency_ms > 0


def test_defaults_fill_everything_not_given(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, 'scenario = "single_query"\n'))
    assert spec.name == "x"  # the file's stem
    assert spec.workload.seed_users == DEFAULT_SEED_USERS
    assert spec.target is None
    assert len(spec.points()) == 1


def test_points_are_the_cartesian_product_times_repetitions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
scenario = "single_query"
[grid]
pool_size = [1, 2, 4]
max_overflow = [0, 5]
users = 16
[timing]
repetitions = 2
""",
    )
    points = load_spec(path).points()
    assert len(points) == 3 * 2 * 2
    assert len({p.run_id for p in points}) == len(points)
    assert points[0].run_id == "p1-o0-s20-u16-q1-r1"
    # Repetitions are the outer loop: every point once before any repeats.
    assert [p.repetition for p in points] == [1] * 6 + [2] * 6


def test_extra_axes_appear_in_run_id_only_when_swept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'scenario = "single_query"\n[grid]\nsim_latency_ms = [5, 20]\npg_max_connections = [50]\n',
    )
    ids = [p.run_id for p in load_spec(path).points()]
    assert ids == ["p5-o10-s20-u32-q1-l5-r1", "p5-o10-s20-u32-q1-l20-r1"]


def test_points_sharing_a_postgres_setting_run_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'scenario = "single_query"\n[grid]\npg_max_connections = [50, 20]\npool_size = [1, 2]\n',
    )
    assert [p.pg_max_connections for p in load_spec(path).points()] == [20, 20, 50, 50]


def test_overrides_replace_any_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'scenario = "single_query"\n[grid]\npool_size = [1, 2, 3]\n')
    overrides = dict(
        parse_override(text)
        for text in ("grid.pool_size=[2,4]", "timing.duration_s=5", "scenario=write_heavy")
    )
    spec = load_spec(path, overrides)
    assert spec.grid.pool_size == (2, 4)
    assert spec.timing.duration_s == 5.0
    assert spec.scenario == "write_heavy"


def test_target_and_app_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
scenario = "single_query"
[target]
url = "http://127.0.0.1:9000/"
restart_cmd = "restart --pool {pool_size}"
[app_env]
DB_POOL_TIMEOUT_S = 2
DB_POOL_PRE_PING = false
""",
    )
    spec = load_spec(path)
    assert spec.target is not None and spec.target.url == "http://127.0.0.1:9000"
    assert spec.app_env == {"DB_POOL_TIMEOUT_S": "2", "DB_POOL_PRE_PING": "false"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'scenario = "single_query"\n[grid]\npool_size = ["a"]\n',
            "grid.pool_size: must be a list",
        ),
        (
            'scenario = "single_query"\n[grid]\npool_size = [true]\n',
            "grid.pool_size: must be a list",
        ),
        (
            'scenario = "single_query"\n[grid]\npool_size = []\n',
            "grid.pool_size: must not be empty",
        ),
        ('scenario = "single_query"\n[grid]\npools = [1]\n', "grid.pools: unknown key"),
        ('scenario = "single_query"\ncolour = 1\n', "colour: unknown key"),
        ('scenario = "nope"\n', "scenario: scenarios/nope.py is not a scenario"),
        ("[grid]\npool_size = [1]\n", "scenario: missing"),
        ('scenario = "single_query"\nshape = "zigzag"\n', "shape: must be one of"),
        ('scenario = "single_query"\n[timing]\nduration_s = 0\n', "timing.duration_s: must be"),
        ('scenario = "single_query"\n[slo]\nmax_error_rate = 2\n', "slo.max_error_rate"),
        (
            'scenario = "single_query"\n[target]\nurl = "http://x"\n',
            "target: give command (poolbench starts and stops your service) or restart_cmd",
        ),
        (
            'scenario = "single_query"\n[grid]\nsim_latency_ms = [1]\n'
            "[workload]\nsim_latency_ms = 2\n",
            "grid.sim_latency_ms: also set in [workload]",
        ),
        ("scenario = ", "not valid TOML"),
    ],
)
def test_invalid_specs_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"spec {path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_override_syntax_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_override("timing.duration_s")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolbench.cli", "sweep", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "grid.pool_size=[0, 2]"], "grid.pool_size: must be a list of integers from 1"),
        (["--set", "grid.bogus=1"], "grid.bogus: unknown key"),
        (["--set", "scenario=missing_scenario"], "scenarios/missing_scenario.py is not a scenario"),
        (["--set", "grid.users=[]"], "grid.users: must not be empty"),
        # Each of these once passed validation and failed after Postgres had started.
        (["--set", "timing.duration_s=inf"], "timing.duration_s: must be a finite number"),
        (["--set", "timing.warmup_s=inf"], "timing.warmup_s: must be a finite number"),
        (["--set", "timing.warmup_s=1e9"], "timing.warmup_s: must be a finite number"),
        (["--set", "timing.duration_s=1e9"], "timing.duration_s: must be a finite number"),
        (["--set", "open_model_rps=inf"], "open_model_rps: must be a finite number"),
        (["--set", "open_model_rps=nan"], "open_model_rps: must be a finite number"),
        (["--set", "scenario=shapes"], "scenarios/shapes.py is not a scenario"),
        (["--set", "scenario=common"], "scenarios/common.py is not a scenario"),
        (["--set", "timing.repetitions=1000000"], "timing.repetitions: must be an integer"),
        (
            [
                "--set",
                "grid.users=[1,2,3,4,5,6,7,8,9,10,11,12]",
                "--set",
                "timing.repetitions=1000",
            ],
            "runs (grid x repetitions); at most",
        ),
    ],
)
def test_cli_prints_one_line_and_exits_2(args: list[str], message: str) -> None:
    result = cli("bench/poolbench/specs/quick.toml", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: spec bench/poolbench/specs/quick.toml: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_without_spec_or_resume_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert result.stderr.startswith("error: give a SPEC")


def test_spec_is_frozen() -> None:
    spec = SweepSpec(name="x", scenario="single_query")
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "y"  # type: ignore[misc]


def test_kind_follows_the_load_model_and_both_runs_two_experiments(tmp_path: Path) -> None:
    closed = load_spec(write(tmp_path, 'scenario = "single_query"\n'))
    assert closed.kind == "capacity" and {p.experiment for p in closed.points()} == {"capacity"}
    both = load_spec(
        write(
            tmp_path,
            'scenario = "single_query"\nkind = "both"\nopen_model_rps = 5\n'
            "[grid]\npool_size = [2, 4]\nmax_overflow = [0]\nusers = [10]\n",
        )
    )
    points = both.points()
    slo = [p for p in points if p.experiment == "slo"]
    capacity = [p for p in points if p.experiment == "capacity"]
    assert len(slo) == len(capacity) == 2
    assert all(p.offered_rps == 50 and p.open_model_rps == 5 for p in slo)
    # Closed loop with users well above the pool: 4 x the largest pool by default.
    assert all(p.open_model_rps == 0 and p.users == 16 for p in capacity)
    assert all(p.run_id.endswith("-cap-r1") for p in capacity)
    assert len({p.run_id for p in points}) == len(points)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kind = "slo"\n', "kind: slo needs open_model_rps > 0"),
        ('kind = "capacity"\nopen_model_rps = 3\n', "kind: capacity is a closed loop"),
        ('kind = "soak"\n', "kind: must be one of slo, capacity, both"),
        ("capacity_users = 0\n", "capacity_users: must be an integer from 1"),
    ],
)
def test_invalid_kinds_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, 'scenario = "single_query"\n' + text)
    with pytest.raises(UsageError, match=message):
        load_spec(path)


@pytest.mark.parametrize(
    ("source", "is_scenario"),
    [
        ("from locust import HttpUser\nclass U(HttpUser):\n    pass\n", True),
        ("import locust\nclass U(locust.FastHttpUser):\n    pass\n", True),
        ("from locust import HttpUser\nclass U(HttpUser):\n    abstract = True\n", False),
        ("from locust import LoadTestShape\nclass S(LoadTestShape):\n    pass\n", False),
        ("def helper():\n    return 1\n", False),
        ("class U(HttpUser:\n", False),  # not valid Python
    ],
)
def test_a_scenario_must_define_a_concrete_user_class(
    tmp_path: Path, source: str, is_scenario: bool
) -> None:
    (tmp_path / "candidate.py").write_text(source)
    assert defines_user(tmp_path / "candidate.py") is is_scenario
    assert defines_user(tmp_path / "absent.py") is False


def test_app_workers_and_pooler_axes_and_their_run_ids(tmp_path: Path) -> None:
    text = (
        'scenario = "single_query"\n[grid]\npool_size = [2]\nmax_overflow = [0]\nusers = [8]\n'
        'app_workers = [1, 2]\npooler = ["direct", "pgbouncer"]\npgbouncer_pool_size = [2, 4]\n'
    )
    points = load_spec(write(tmp_path, text)).points()
    # A direct point runs once, not once per PgBouncer pool size.
    assert [p.run_id for p in points] == [
        "p2-o0-s20-u8-q1-w1-direct-r1",
        "p2-o0-s20-u8-q1-w1-pgb2-r1",
        "p2-o0-s20-u8-q1-w1-pgb4-r1",
        "p2-o0-s20-u8-q1-w2-direct-r1",
        "p2-o0-s20-u8-q1-w2-pgb2-r1",
        "p2-o0-s20-u8-q1-w2-pgb4-r1",
    ]
    direct, pgb = points[3], points[4]
    assert (direct.app_workers, direct.pooler, direct.pgbouncer_pool_size) == (2, "direct", None)
    assert (pgb.pooler, pgb.pgbouncer_pool_size) == ("pgbouncer", 2)
    # Both pools of every worker: 2 x (2 + 0 + 10).
    assert direct.as_dict()["app_max_connections"] == 24
    # A single value adds no run-id part, as for every other extra axis.
    single = 'scenario = "single_query"\n[grid]\npooler = "pgbouncer"\npgbouncer_pool_size = 3\n'
    (point,) = load_spec(write(tmp_path, single)).points()
    assert point.run_id == "p5-o10-s20-u32-q1-r1" and point.pgbouncer_pool_size == 3
    spec = load_spec(write(tmp_path, text))
    assert spec_from_dict(spec.to_dict(), source="manifest") == spec


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("app_workers = [5]", "grid.app_workers: must be a list of integers from 1 to 4"),
        ("app_workers = [0]", "grid.app_workers: must be a list of integers from 1 to 4"),
        ('pooler = ["pgpool"]', "grid.pooler: must be a list of 'direct' and/or 'pgbouncer'"),
        ('pooler = ["direct", "direct"]', "grid.pooler: names a pooler twice"),
        ("pgbouncer_pool_size = [0]", "grid.pgbouncer_pool_size: must be a list of integers"),
    ],
)
def test_invalid_production_shape_axes(tmp_path: Path, grid: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        load_spec(write(tmp_path, f'scenario = "single_query"\n[grid]\n{grid}\n'))


def test_target_cannot_take_workers_or_pooler(tmp_path: Path) -> None:
    text = (
        'scenario = "single_query"\n[grid]\napp_workers = [2]\n[target]\n'
        'url = "http://127.0.0.1:9000"\nrestart_cmd = "true"\n'
    )
    with pytest.raises(UsageError, match="target: grid.app_workers and grid.pooler"):
        load_spec(write(tmp_path, text))


PLAIN_LOCUSTFILE = """\
from locust import HttpUser, constant, task


class Shopper(HttpUser):
    wait_time = constant(0.01)

    @task
    def user(self):
        self.client.get("/users/1", name="/users/[id]")
"""


NESTED_LOCUSTFILE = """\
from locust import HttpUser, TaskSet, task


class Browse(TaskSet):
    @task
    def user(self):
        self.client.get("/users/1")


class Shopper(HttpUser):
    tasks = [Browse]
"""

RAW_LOCUSTFILE = """\
from locust import User, task


class Raw(User):
    @task
    def nothing(self):
        pass
"""


def test_a_plain_locustfile_may_use_the_open_model(tmp_path: Path) -> None:
    """Its users are wrapped at run time (poolbench.load.wrapping); the check imports it."""
    (tmp_path / "mine.py").write_text(PLAIN_LOCUSTFILE)
    spec = load_spec(write(tmp_path, 'locustfile = "mine.py"\nopen_model_rps = 2\n'))
    assert spec.kind == "slo"


def test_a_locustfile_anywhere_is_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "mine.py").write_text(PLAIN_LOCUSTFILE)
    spec = load_spec(write(tmp_path, 'locustfile = "load/mine.py"\n'))
    assert spec.locustfile == str(tmp_path / "load" / "mine.py")
    assert spec.scenario == "mine" and spec.kind == "capacity"
    assert spec.locust_files == (str(OWN_LOCUSTFILE),)  # which runs the user's file
    stored = spec_from_dict(spec.to_dict(), source="elsewhere/manifest.json")
    assert stored == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('locustfile = "mine.py"\nscenario = "mix"\n', "give scenario or locustfile, not both"),
        ('locustfile = "absent.py"\n', "no such file, or it defines no Locust user class"),
        ('locustfile = "empty.py"\n', "no such file, or it defines no Locust user class"),
        (
            'locustfile = "nested.py"\nopen_model_rps = 2\n',
            "open_model_rps: the open model cannot run .*nested.py: Shopper's task Browse is a "
            "TaskSet, which runs a closed loop of its own",
        ),
        (
            'locustfile = "mine.py"\n[workload]\nthink_time_s = 0.5\n',
            "think_time_s: .*mine.py's users pace themselves with their own wait_time",
        ),
        (
            'locustfile = "raw.py"\nopen_model_rps = 2\n',
            "Raw is not an HttpUser or FastHttpUser",
        ),
        (
            'locustfile = "broken.py"\nopen_model_rps = 2\n',
            "importing it failed: RuntimeError: no SHOP_TOKEN",
        ),
    ],
)
def test_bad_locustfiles_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "mine.py").write_text(PLAIN_LOCUSTFILE)
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "nested.py").write_text(NESTED_LOCUSTFILE)
    (tmp_path / "raw.py").write_text(RAW_LOCUSTFILE)
    (tmp_path / "broken.py").write_text('raise RuntimeError("no SHOP_TOKEN")\n' + PLAIN_LOCUSTFILE)
    with pytest.raises(UsageError, match=message):
        load_spec(write(tmp_path, text))


def test_a_locustfile_on_poolbench_users_may_use_the_open_model(tmp_path: Path) -> None:
    source = PLAIN_LOCUSTFILE.replace("from locust import HttpUser", "from locust import task")
    source = source.replace("class Shopper(HttpUser)", "class Shopper(PoolbenchUser)")
    (tmp_path / "open.py").write_text("from poolbench.load import PoolbenchUser\n" + source)
    spec = load_spec(write(tmp_path, 'locustfile = "open.py"\nopen_model_rps = 2\n'))
    assert spec.kind == "slo"


def python_spec(**tables: object) -> SweepSpec:
    return SweepSpec(name="x", scenario="single_query", **tables)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "build"),
    [
        ("[grid]\npool_size = [0]\n", lambda: python_spec(grid=Grid(pool_size=(0,)))),
        ("[grid]\npools = [1]\n", lambda: python_spec(grid=Grid(**{"pools": (1,)}))),
        ("[timing]\nduration_s = 0\n", lambda: python_spec(timing=Timing(duration_s=0))),
        ("[workload]\nseed_users = 0\n", lambda: python_spec(workload=Workload(seed_users=0))),
        ("[slo]\np95_ms = -1\n", lambda: python_spec(slo=Slo(p95_ms=-1))),
        (
            "[fleet]\nmax_connections = 10\nreserved_connections = 10\n",
            lambda: python_spec(fleet=Fleet(max_connections=10, reserved_connections=10)),
        ),
        ('kind = "slo"\n', lambda: python_spec(kind="slo")),
        ('shape = "zigzag"\n', lambda: python_spec(shape="zigzag")),
        (
            "[grid]\nsim_latency_ms = [1]\n[workload]\nsim_latency_ms = 2\n",
            lambda: python_spec(
                grid=Grid(sim_latency_ms=(1,)), workload=Workload(sim_latency_ms=2)
            ),
        ),
        (
            '[target]\nurl = "http://127.0.0.1:9000"\nrestart_cmd = "cd ${HOME}"\n',
            lambda: python_spec(
                target=Target(url="http://127.0.0.1:9000", restart_cmd="cd ${HOME}")
            ),
        ),
    ],
    ids=["axis", "unknown", "timing", "workload", "slo", "fleet", "kind", "shape", "twice", "cmd"],
)
def test_a_spec_built_in_python_fails_as_its_toml_does(
    tmp_path: Path, text: str, build: Callable[[], SweepSpec]
) -> None:
    path = write(tmp_path, 'scenario = "single_query"\n' + text)
    with pytest.raises(UsageError) as from_toml:
        load_spec(path)
    with pytest.raises(UsageError) as from_python:
        build()
    assert str(from_toml.value) == f"spec {path}: {from_python.value}"
    assert "\n" not in str(from_python.value)


def test_a_stored_spec_loads_without_its_files(tmp_path: Path) -> None:
    stored = {"name": "old", "scenario": "renamed_since", "kind": "capacity"}
    assert spec_from_dict(stored, source="manifest.json", check_files=False).name == "old"
    with pytest.raises(UsageError, match="scenarios/renamed_since.py is not a scenario"):
        spec_from_dict(stored, source="x.toml")
    # Older manifests stored a swept axis's [workload] value as well.
    twice = stored | {"grid": {"sim_latency_ms": [1, 2]}, "workload": {"sim_latency_ms": 0}}
    spec = spec_from_dict(twice, source="manifest.json", check_files=False)
    assert spec.grid.sim_latency_ms == (1.0, 2.0)


def test_a_spec_sweeping_a_workload_axis_round_trips(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, 'scenario = "single_query"\n[grid]\nthink_time_s = [0, 1]\n'))
    assert "think_time_s" not in spec.to_dict()["workload"]
    assert spec_from_dict(spec.to_dict(), source="manifest") == spec


def test_a_grid_of_too_many_runs_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    axis = list(range(1, 1001))
    grid = f"[grid]\npool_size = {axis}\nusers = {axis}\n"
    path = write(tmp_path, 'scenario = "single_query"\n' + grid)
    with pytest.raises(UsageError, match="grid: more than 10,000 runs"):
        load_spec(path)

"""The private Locust API that `PoolbenchUser` relies on is still in the installed Locust.

`PoolbenchUser.run` replaces Locust's @final `User.run` for the open model, through `User`'s
private attributes, the way Locust's own `run` and `stop` use them. pyproject pins
`locust>=2.31,<3` for that; a Locust upgrade that changes them fails here, naming what changed,
instead of in a greenlet in the middle of a load run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

import poolbench.load

PIN_REASON = (
    "poolbench.load.open_model replaces Locust's @final User.run through private attributes "
    "(pyproject pins locust<3 for it); adapt PoolbenchUser to this Locust before moving the pin"
)


@pytest.fixture(scope="module")
def open_model() -> ModuleType:
    """poolbench.load.open_model, imported without gevent's monkey patching of this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCUST_SKIP_MONKEY_PATCH", "1")
        try:
            return importlib.import_module("poolbench.load.open_model")
        except ImportError as e:
            pytest.fail(f"{e}: {PIN_REASON}")


def test_a_started_user_has_the_private_attributes_poolbench_uses(open_model: ModuleType) -> None:
    from gevent.pool import Group
    from locust import User, task
    from locust.env import Environment
    from locust.user.task import DefaultTaskSet
    from locust.user.users import LOCUST_STATE_WAITING

    ran = []

    class ProbeUser(User):
        @task
        def probe(self) -> None:
            ran.append(True)

    user = ProbeUser(Environment())
    user.start(Group())  # spawned, not yet run: nothing here yields to it
    missing = [a for a in open_model.LOCUST_PRIVATE_USER_ATTRIBUTES if not hasattr(user, a)]
    assert not missing, f"Locust's User has no {', '.join(missing)}: {PIN_REASON}"
    # The open model's task loop: pick a task by weight and run it, as Locust's run does.
    tasks = DefaultTaskSet(user)
    tasks.execute_task(tasks.get_next_task())
    assert ran == [True], PIN_REASON
    # A user waiting (between arrivals) is killed at once when stopped, never waited for.
    user._state = LOCUST_STATE_WAITING
    assert user.stop() is True and user._greenlet.dead, PIN_REASON


def test_every_public_name_of_poolbench_load_resolves(open_model: ModuleType) -> None:
    missing = [name for name in poolbench.load.__all__ if not hasattr(poolbench.load, name)]
    assert not missing
    assert poolbench.load.PoolbenchUser is open_model.PoolbenchUser

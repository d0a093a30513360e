"""Workarounds for Ray bugs, all in this one module. Each names its upstream issue; all were checked on
the Ray release :data:`CHECKED_RAY` (pyproject pins Ray), so removing one is one commit.

    check_ray_version()                   # warns once when the running Ray is not CHECKED_RAY
    SchedulerState(scheduler)             # ray#30838: Tuner.restore forgets the scheduler's state
    ReleaseOrphanedPlacementGroups()      # ray#54305: a stopped trial's Train placement group leaks
    settle_placement_groups()             #   (the same, once Tuner.fit returns)
    pin_state_api(url)                    # no issue found: Ray's state API looks for "the" local cluster
    job_agent_ready(gcs_address)          # no issue found: the dashboard answers before the job agent
    restore_address_file(port, before)    # ray#45771 (kin): a stopped `ray start --block` leaves its address

On a Ray upgrade, ``tests/test_raycompat.py`` fails until :data:`CHECKED_RAY` is moved: re-check each
issue in :data:`ISSUES` on the new Ray and delete the workarounds it made unnecessary.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings

#: The Ray release (major.minor) these workarounds were checked on.
CHECKED_RAY = "2.60"

#: What each workaround is for: its upstream issue.
ISSUES = {
    "SchedulerState": "https://github.com/ray-project/ray/issues/30838",
    "ReleaseOrphanedPlacementGroups": "https://github.com/ray-project/ray/issues/54305",
    "pin_state_api": "no upstream issue found",
    "job_agent_ready": "no upstream issue found",
    "restore_address_file": "no upstream issue found (kin: https://github.com/ray-project/ray/issues/45771)",
}

_warned: set[str] = set()


def check_ray_version(version: str | None = None) -> bool:
    """True when ``version`` (default: ``ray.__version__``) is the release :data:`CHECKED_RAY`.

    Otherwise warns (once per version and process) that the workarounds here run unchecked on it,
    naming the issues to re-check, and returns False. ValueError for a version that is not
    ``MAJOR.MINOR[.anything]``.
    """
    if version is None:
        import ray

        version = ray.__version__
    parts = version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise ValueError(f"Ray version {version!r}: expected MAJOR.MINOR[.PATCH]")
    if f"{int(parts[0])}.{int(parts[1])}" == CHECKED_RAY:
        return True
    if version not in _warned:
        _warned.add(version)
        warnings.warn(f"crnn/raycompat.py's workarounds were checked on Ray {CHECKED_RAY}, not {version}; they "
                      f"still run. Re-check whether Ray fixed {'; '.join(f'{k}: {v}' for k, v in ISSUES.items())}")
    return False


# ----------------------------------------------------------------------------- ray#30838
class _SchedulerState:  # a ray.tune Callback: see __getattr__ at the end
    """Tune callback that saves ``scheduler`` with the experiment and puts it back on ``Tuner.restore``.

    Tune rebuilds the scheduler from ``tuner.pkl``, written when the search started, and never saves its
    state (ray#30838, open on Ray 2.60): a resumed ASHA would have forgotten every result at its rungs
    and stop nothing until new trials refilled them. Tune does save and restore callback state
    (``Callback.get_state``/``set_state``) with each experiment checkpoint, so this callback carries the
    scheduler's own public ``save``/``restore`` (``ASHAScheduler`` has both) through it. The callback
    and ``TuneConfig`` hold the same scheduler object and are pickled together in ``tuner.pkl``, so they
    still share it after ``Tuner.restore``; Tune restores callbacks before it re-adds the trials.
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        """``{"scheduler": bytes}``: what ``scheduler.save`` wrote."""
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "scheduler.pkl")
            self.scheduler.save(path)
            with open(path, "rb") as f:
                return {"scheduler": f.read()}

    def set_state(self, state: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "scheduler.pkl")
            with open(path, "wb") as f:
                f.write(state["scheduler"])
            self.scheduler.restore(path)


# ----------------------------------------------------------------------------- ray#54305
def _orphaned_placement_groups(include_alive_creators: bool = False) -> list:
    """This job's placement groups that are not removed and were created by an actor (not by the
    driver: Tune's own trial groups) that is dead (or, with ``include_alive_creators``, any actor).

    Reads the GCS placement-group table through Ray's private state accessor: the public
    ``ray.util.placement_group_table()`` does not tell who created a group, and the State API
    (``ray.util.state``) is what fails in the case this works around.
    """
    import ray
    import ray._private.state as ray_state
    from ray.core.generated import gcs_pb2

    job = ray.get_runtime_context().get_job_id()
    table = ray_state.state._connect_and_get_accessor().get_placement_group_table()
    out = []
    for raw in table:
        d = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if d.state == gcs_pb2.PlacementGroupTableData.REMOVED or d.is_detached:
            continue
        if d.creator_job_id.hex() != job or not d.creator_actor_id or set(d.creator_actor_id) <= {0, 255}:
            continue  # another job's, or created by the driver itself (Tune's own trial groups)
        if include_alive_creators or d.creator_actor_dead:
            out.append(d)
    return out


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor is dead; returns how many.

    When ASHA stops a trial, Tune kills the trial's actor and with it the Train controller it owns;
    the Train worker group's placement group then outlives them (ray#54305). Ray Train's fix, a
    detached ``PlacementGroupCleaner``, asks the State API whether the controller lives, and the
    State API finds "the" cluster from the environment: with several Ray clusters on one machine
    and no ``RAY_API_SERVER_ADDRESS`` pin (``crnn.runtime.init_ray`` pins it only for an embedded
    Ray) it asks none or the wrong one, and the group stays. Measured on Ray 2.60, 2 CPUs, another
    Ray on the machine: the trial after an ASHA-stopped one never started (its Ray Data reads had no
    CPU). This runs on the driver, which is connected to the right GCS.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = 0
    for d in _orphaned_placement_groups():
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(d.placement_group_id)))
            removed += 1
        except Exception as e:  # noqa: BLE001 -- best effort, never fail the search for it
            warnings.warn(f"could not remove orphaned placement group {d.placement_group_id.hex()}: {e}")
    return removed


def settle_placement_groups(timeout_s: float = 10.0) -> None:
    """After ``Tuner.fit``: wait (at most ``timeout_s`` seconds) for the Train runs of the trials stopped
    last to die, and free their placement groups, so that whatever runs next on this cluster gets the
    CPUs back. Best effort: a failure is a warning."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            release_orphaned_placement_groups()
            if not _orphaned_placement_groups(include_alive_creators=True) or time.monotonic() > deadline:
                return
            time.sleep(0.5)
    except Exception as e:  # noqa: BLE001 -- best effort
        warnings.warn(f"placement group clean-up check failed: {e}")


class _ReleaseOrphanedPlacementGroups:  # a ray.tune Callback: see __getattr__ at the end
    """Tune callback: every ``every_s`` seconds, :func:`release_orphaned_placement_groups`."""

    def __init__(self, every_s: float = 2.0):
        self.every_s, self._last, self.released = every_s, 0.0, 0

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            try:
                self.released += release_orphaned_placement_groups()
            except Exception as e:  # noqa: BLE001
                if not getattr(self, "_warned", False):
                    self._warned = True
                    warnings.warn(f"orphaned placement group check failed: {e}")

    def __getstate__(self):  # pickled with the experiment; the clock is not state
        return {"every_s": self.every_s, "_last": 0.0, "released": self.released}


# ----------------------------------------------------------------------------- no upstream issue found
#: Pins Ray's state API (``ray.util.state``) to one dashboard, whatever else runs on the machine.
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def state_api_pinned() -> bool:
    """Whether this process's environment pins Ray's state API already (the user's pin wins)."""
    return API_SERVER_ENV in os.environ


@contextlib.contextmanager
def pin_state_api(dashboard_url: str):
    """``with pin_state_api(url): ray.init(...)``: every process the embedded Ray starts (raylet,
    dashboard, and the workers the raylet spawns later) inherits ``RAY_API_SERVER_ADDRESS=url``; this
    process's environment is as before afterwards, so nothing it runs after ``ray.shutdown()`` chases
    a dead dashboard.

    Ray's state API, which Ray Train's placement-group cleaner polls, otherwise looks for "the" local
    cluster: seen on Ray 2.60, it fails when several Rays run on the machine and hangs for 40 s on a
    stale /tmp/ray/ray_current_cluster left by a killed ``ray start``, and Train's teardown then waits
    up to 12 s for the stuck cleaner (BENCHMARKS.md, start-up and teardown). No upstream issue found
    (searched 2026: the nearest, ray#55244 and ray#45771, are about ``ray.init`` and ``ray stop``).
    """
    os.environ[API_SERVER_ENV] = dashboard_url
    try:
        yield
    finally:
        os.environ.pop(API_SERVER_ENV, None)


def job_agent_ready(gcs_address: str) -> bool:
    """Whether the head's job agent has registered with the GCS at ``gcs_address`` (HOST:PORT).

    ``ray start --head`` returns, and the dashboard answers ``/api/version``, before the dashboard
    agent (which runs submitted jobs) has registered; Ray 2.60's job head then answers a submission
    with HTTP 500 "No available agent to submit job, please try again later." Ray has no public
    readiness check, so this reads the key the agent writes to the GCS through private APIs
    (``ray._raylet.GcsClient``, ``ray._private.ray_constants``). No upstream issue found (searched
    2026). When Ray has moved those internals: True (the dashboard answering has to do).
    """
    try:
        from ray._private.ray_constants import KV_NAMESPACE_DASHBOARD
        from ray._raylet import GcsClient
        from ray.dashboard.consts import DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX

        keys = GcsClient(address=gcs_address).internal_kv_keys(DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX.encode(),
                                                               namespace=KV_NAMESPACE_DASHBOARD, timeout=5)
        return bool(keys)
    except ImportError:
        return True
    except Exception:  # noqa: BLE001 -- not up (yet)
        return False


# ----------------------------------------------------------------------------- ray#45771 (kin)
#: Where ``ray start`` records the local cluster's address (NODE_IP:PORT); ``ray.init()``,
#: ``ray.init("auto")`` and Ray's state API read it.
ADDRESS_FILE = "/tmp/ray/ray_current_cluster"


def read_address_file(path: str = ADDRESS_FILE) -> str | None:
    """The address file's text (None: absent), to give :func:`restore_address_file` later."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def restore_address_file(port: int, before: str | None, path: str = ADDRESS_FILE) -> None:
    """After stopping the ``ray start`` whose GCS listened on ``port``: if the address file still
    names it, put the file back as :func:`read_address_file` found it (remove it when it was absent).

    Only ``ray stop`` removes the file, and it stops every Ray of the user on the machine; a
    ``ray start --block`` ended with SIGTERM (how jobs/cluster.py stops its own head) leaves its
    address behind on Ray 2.60, and later local Rays (and the state API) chase the dead cluster.
    ray#45771 reported the file left behind by ``ray stop`` (closed as fixed); no upstream issue
    found for ``--block`` (searched 2026).
    """
    if not (read_address_file(path) or "").strip().endswith(f":{port}"):
        return  # another Ray's address, or none: not ours to touch
    if before is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        with open(path, "w") as f:
            f.write(before)

# ----------------------------------------------------------------------------- (no Ray bug)
_TUNE_CALLBACKS = {"SchedulerState": _SchedulerState, "ReleaseOrphanedPlacementGroups": _ReleaseOrphanedPlacementGroups}


def __getattr__(name: str):
    """The Tune callbacks, made (subclassing ``ray.tune.Callback``) on first use: importing ray.tune
    takes a second, and ``crnn.runtime.init_ray`` and jobs/cluster.py import this module too. They
    keep their module-level names, so pickle finds them."""
    if name not in _TUNE_CALLBACKS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ray.tune import Callback

    mixin = _TUNE_CALLBACKS[name]
    cls = globals()[name] = type(name, (mixin, Callback), {"__module__": __name__, "__doc__": mixin.__doc__})
    return cls

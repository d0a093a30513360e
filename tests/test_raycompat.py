"""crnn/raycompat.py: the Ray-bug workarounds' version check, the scheduler state carried through Tune's
callback state (ray#30838), and the release of orphaned placement groups (ray#54305) on a local Ray."""

import os
import pickle
import time
import warnings
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from crnn import raycompat
from crnn.raycompat import CHECKED_RAY, ISSUES, SchedulerState, check_ray_version


def test_workarounds_were_checked_on_the_installed_ray():
    """Fails on a Ray upgrade until CHECKED_RAY moves: re-check ISSUES on the new Ray first."""
    import ray

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_ray_version(), f"Ray {ray.__version__}: re-check crnn/raycompat.py (checked on {CHECKED_RAY})"


def test_another_ray_warns_once_naming_the_issues(monkeypatch):
    monkeypatch.setattr(raycompat, "_warned", set())
    assert check_ray_version(CHECKED_RAY + ".9")  # any patch release of the checked one
    with pytest.warns(UserWarning, match=r"checked on Ray \d+\.\d+, not 99\.1\.0") as rec:
        assert not check_ray_version("99.1.0")
    assert all(url in str(rec[0].message) for url in ISSUES.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not check_ray_version("99.1.0")  # once per version
    with pytest.raises(ValueError, match="'nightly'"):
        check_ray_version("nightly")


def test_tune_callbacks_are_made_on_first_use_and_pickle():
    """Importing raycompat does not import ray.tune (init_ray and jobs/cluster.py import it); the
    callbacks are ray.tune Callbacks under their own names, so Tune can pickle them."""
    import subprocess
    import sys

    code = "import sys, crnn.raycompat; print('ray.tune' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    from ray.tune import Callback

    cb = pickle.loads(pickle.dumps(raycompat.ReleaseOrphanedPlacementGroups(every_s=3.0)))
    assert type(cb) is raycompat.ReleaseOrphanedPlacementGroups and isinstance(cb, Callback) and cb.every_s == 3.0
    assert isinstance(SchedulerState(_asha()), Callback)


def _asha():
    return ASHAScheduler(time_attr="epochs_done", metric="val_loss", mode="min", max_t=4, grace_period=1,
                         reduction_factor=2)


def test_scheduler_state_survives_a_restore():
    """The rungs of a running ASHA, carried through Tune's callback state into a scheduler rebuilt
    from scratch (as Tuner.restore rebuilds it): a poor new trial is stopped at the first rung, as
    the original would stop it; the rebuilt scheduler without the state lets it run on."""
    good, poor = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="poor")
    original = _asha()
    original.on_trial_add(None, good)
    assert original.on_trial_result(None, good, {"epochs_done": 1, "val_loss": 0.1}) == TrialScheduler.CONTINUE
    state = pickle.loads(pickle.dumps(SchedulerState(original).get_state()))  # Tune pickles it to disk

    for restore, expected in ((True, TrialScheduler.STOP), (False, TrialScheduler.CONTINUE)):
        rebuilt = _asha()
        if restore:
            SchedulerState(rebuilt).set_state(state)
        rebuilt.on_trial_add(None, poor)
        assert rebuilt.on_trial_result(None, poor, {"epochs_done": 1, "val_loss": 5.0}) == expected


def test_orphaned_placement_group_is_released(ray_local):
    """A placement group whose creating actor died (as a Train worker group's, when Tune kills a stopped
    trial) is removed; the driver's own groups (Tune's trial groups) are left alone."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    @ray.remote(num_cpus=0)
    class Creator:
        def make(self):
            pg = placement_group([{"CPU": 0.5}])
            ray.get(pg.ready())
            return pg.id.hex()

    own = placement_group([{"CPU": 0.1}])
    ray.get(own.ready())
    creator = Creator.remote()
    orphan = ray.get(creator.make.remote())
    assert raycompat.release_orphaned_placement_groups() == 0  # its creator lives
    ray.kill(creator)
    released = 0
    for _ in range(50):  # the GCS learns of the actor's death shortly after
        released += raycompat.release_orphaned_placement_groups()
        if released:
            break
        time.sleep(0.2)
    table = placement_group_table()
    assert released == 1 and table[orphan]["state"] == "REMOVED"  # Ray itself left it in place
    assert table[own.id.hex()]["state"] == "CREATED"
    raycompat.settle_placement_groups(timeout_s=1)  # nothing left to wait for
    assert raycompat._orphaned_placement_groups(include_alive_creators=True) == []
    remove_placement_group(own)


def test_every_workaround_names_its_issue():
    """Each workaround in ISSUES exists here; on a Ray upgrade the version check names them all."""
    assert {"pin_state_api", "job_agent_ready", "restore_address_file"} <= set(ISSUES)
    assert all(callable(getattr(raycompat, name)) for name in ISSUES)


def test_pin_state_api_only_while_ray_starts(monkeypatch):
    monkeypatch.delenv(raycompat.API_SERVER_ENV, raising=False)
    assert not raycompat.state_api_pinned()
    with raycompat.pin_state_api("http://127.0.0.1:1"):
        assert os.environ[raycompat.API_SERVER_ENV] == "http://127.0.0.1:1" and raycompat.state_api_pinned()
    assert not raycompat.state_api_pinned()


def test_restore_address_file_touches_only_its_own_cluster(tmp_path):
    path = str(tmp_path / "ray_current_cluster")
    assert raycompat.read_address_file(path) is None
    with open(path, "w") as f:
        f.write("127.0.0.1:6379")  # what `ray start --port=6379` left behind; absent before it
    raycompat.restore_address_file(7000, None, path)  # another cluster's address: left alone
    assert raycompat.read_address_file(path) == "127.0.0.1:6379"
    raycompat.restore_address_file(6379, None, path)
    assert raycompat.read_address_file(path) is None
    with open(path, "w") as f:
        f.write("127.0.0.1:6379\n")
    raycompat.restore_address_file(6379, "10.0.0.1:6380", path)  # put back what was there before
    assert raycompat.read_address_file(path) == "10.0.0.1:6380"

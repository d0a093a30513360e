"""Connecting to Ray the same way from every job: a cluster when there is one, else embedded."""

from __future__ import annotations

import os


def init_ray(num_cpus: int | None = None, **kwargs):
    """``ray.init`` for jobs: joins ``RAY_ADDRESS`` (set by ``ray job submit``) or starts a local Ray.

    Usage stats are off unless the user turned them on. Idempotent inside one process.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return ray

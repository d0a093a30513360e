"""Connecting to Ray the same way from every job: a cluster when there is one, else embedded."""

from __future__ import annotations

import os


def init_ray(num_cpus: int | None = None, **kwargs):
    """``ray.init`` for jobs: joins ``RAY_ADDRESS`` (set by ``ray job submit``; ``auto`` joins a
    cluster started on this machine with ``ray start``) or else starts an embedded local Ray, even
    when some other Ray runs on the machine. Usage stats are off unless the user turned them on.
    Idempotent inside one process.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    return ray


ALLOW_LOCAL_STORAGE_ENV = "CRNN_ALLOW_LOCAL_STORAGE"


def check_shared_storage(paths: dict[str, str], use_gpu: bool = False) -> None:
    """Refuse node-local paths (``paths``: what -> path) when the work may run on other nodes.

    On a cluster with more than one alive node (or when GPU workers are requested but this node
    has no GPU, so they will run elsewhere, e.g. on autoscaled workers) Ray Data read tasks, Train
    workers and the Train controller run on other machines, which cannot see this machine's disk:
    data, run directories and models must then be URIs such as ``s3://bucket/prefix``. A path that
    *is* shared (an NFS or EFS mount at the same path on every node) is allowed with
    ``CRNN_ALLOW_LOCAL_STORAGE=1`` (set it in the job's runtime_env so every node sees it).
    """
    from crnn.shards import is_local

    if os.environ.get(ALLOW_LOCAL_STORAGE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    local = {what: p for what, p in paths.items() if p and is_local(p)}
    import ray

    if not local or not ray.is_initialized():
        return
    alive = [n for n in ray.nodes() if n.get("Alive")]
    why = None
    if len(alive) > 1:
        why = f"this Ray cluster has {len(alive)} nodes"
    elif use_gpu:
        here = ray.get_runtime_context().get_node_id()
        if not any(n.get("NodeID") == here and n.get("Resources", {}).get("GPU", 0) > 0 for n in alive):
            why = "GPU workers were requested but this node has no GPU, so they can only run on other nodes"
    if why is None:
        return
    listed = ", ".join(f"{what}={p!r}" for what, p in local.items())
    one = len(local) == 1
    raise ValueError(
        f"{why}, but {listed} {'is a node-local path' if one else 'are node-local paths'}: other nodes "
        f"cannot read or write {'it' if one else 'them'}. Use shared storage, e.g. s3://BUCKET/..., or, if "
        f"{'it is a shared mount' if one else 'they are on a shared mount'} (NFS/EFS) at the same place on "
        f"every node, set {ALLOW_LOCAL_STORAGE_ENV}=1 (in the job's runtime_env env_vars).")

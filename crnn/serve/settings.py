"""Serve settings: the app's args, both deployments' options and the reconfigurable limits.

Deployment options are Ray's own public schemas -- :class:`ray.serve.schema.DeploymentSchema`,
:class:`ray.serve.schema.RayActorOptionsSchema`, :class:`ray.serve.config.AutoscalingConfig` -- and a
Serve config file (``serve.yaml``) is read with :class:`ray.serve.schema.ServeDeploySchema`, the
schema ``serve run``/``serve deploy`` validate it with. Only what Serve does not know is ours: the
model directory, device, torch threads, PNG background and the limits (``user_config``).

Two deployments (see :mod:`crnn.serve.app`): ``CRNNIngress`` (FastAPI, CPU: reads, validates and
decodes requests, encodes responses) and ``CRNNForecaster`` (the model, ``@serve.batch``, CPU or GPU).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import DeploymentSchema, RayActorOptionsSchema, ServeDeploySchema

from crnn import images
from crnn.inference import MAX_HORIZON

MODEL_DEPLOYMENT = "CRNNForecaster"
INGRESS_DEPLOYMENT = "CRNNIngress"
DEPLOYMENT_NAME = MODEL_DEPLOYMENT  # the name before the split; the model deployment kept it
ActorOptions = RayActorOptionsSchema  # ``ray_actor_options`` of a replica: Ray's schema
Autoscaling = AutoscalingConfig  # ``autoscaling_config``: Ray's schema


class BatchLimits(BaseModel):
    """``user_config`` of the model deployment: its ``@serve.batch`` queue (reconfigurable)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(64, ge=1, description="series per forward pass (@serve.batch)")
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, description="longest wait to fill a batch")


class RequestLimits(BaseModel):
    """``user_config`` of the ingress deployment: what one request may hold (reconfigurable)."""

    model_config = ConfigDict(extra="forbid")

    max_series_per_request: int = Field(256, ge=1, description="more series in one request -> 413")
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="larger request bodies -> 413")
    max_horizon: int = Field(MAX_HORIZON, ge=1, description="largest 'horizon' a request may ask for "
                                                            "(default: crnn.inference.MAX_HORIZON)")
    max_targets: int = Field(16, ge=1, description="most target ages per series ('target_ages'); a grid model "
                                                   "also rolls out at most max_horizon steps")


class Limits(BatchLimits, RequestLimits):
    """Both deployments' ``user_config`` in one object (:attr:`ServeSettings.user_config`);
    :func:`crnn.serve.app.build_app` gives each deployment its part."""

    def batch(self) -> BatchLimits:
        return BatchLimits(**{k: getattr(self, k) for k in BatchLimits.model_fields})

    def request(self) -> RequestLimits:
        return RequestLimits(**{k: getattr(self, k) for k in RequestLimits.model_fields})


def _default_ingress() -> DeploymentSchema:
    return DeploymentSchema(name=INGRESS_DEPLOYMENT, num_replicas=1, max_ongoing_requests=256,
                            ray_actor_options={"num_cpus": 1})


class ServeSettings(BaseModel):
    """Everything that configures the app; the args of :func:`crnn.serve.app.app_builder`.

    The flat deployment fields (``name`` ... ``ray_actor_options``) are the model deployment's;
    ``ingress`` is the FastAPI deployment's, as a Ray :class:`DeploymentSchema`. The model's own
    config (size, in_frames) comes from the model directory, never from here. Raises pydantic's
    ``ValidationError`` (a ``ValueError``) naming the bad field.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model directory (local path or URI) or the published model location")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda iff the model replica has a GPU")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads per model replica; 0: ceil(its CPUs)")
    name: str = Field(MODEL_DEPLOYMENT, description="model deployment name (its 'name' in serve.yaml deployments)")
    num_replicas: Optional[Union[int, Literal["auto"]]] = Field(
        None, description="fixed model replica count; None or 'auto': autoscale with autoscaling_config")
    autoscaling_config: Optional[AutoscalingConfig] = Field(
        default_factory=lambda: AutoscalingConfig(min_replicas=1, max_replicas=2, target_ongoing_requests=32))
    max_ongoing_requests: int = Field(256, ge=1, description="requests in flight per model replica "
                                                             "(>= max_batch_size)")
    ray_actor_options: RayActorOptionsSchema = Field(default_factory=lambda: RayActorOptionsSchema(num_cpus=1))
    user_config: Limits = Field(default_factory=Limits)
    ingress: DeploymentSchema = Field(default_factory=_default_ingress,
                                      description="the FastAPI ingress deployment's options (CPU only)")
    tta: Literal["none", "hflip"] = Field(
        "none", description="test-time augmentation: hflip = the mean of each forecast and the mirrored forecast "
                            "of the mirrored series (twice the work; for mirror-symmetric scenes)")
    mirror_axis: Optional[float] = Field(
        None, description="with tta hflip: the pixel column (a multiple of 0.5) to mirror about; default: the "
                          "model's training data's (the pines' trunk column width // 2)")
    background: Union[str, list[int]] = Field(
        "white", description="colour transparent PNG pixels are composited over: a name, '#rrggbb', "
                             "'R,G,B' or [R, G, B]; keep it the one the training data was ingested with "
                             "(jobs/ingest.py --background, default white)")

    @field_validator("ray_actor_options", mode="before")
    @classmethod
    def _known_actor_options(cls, v: Any) -> Any:
        # Ray's RayActorOptionsSchema ignores unknown keys; a typo ("num_cpu") would be silently dropped.
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(RayActorOptionsSchema.model_fields))
            if unknown:
                raise ValueError(f"unknown ray_actor_options {unknown}")
        return v

    @field_validator("ingress", mode="before")
    @classmethod
    def _ingress_name(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {"name": INGRESS_DEPLOYMENT, **v}
        return v

    @model_validator(mode="after")
    def _check(self) -> "ServeSettings":
        images.parse_color(self.background)  # ValueError naming the value
        if isinstance(self.num_replicas, int) and self.num_replicas < 1:
            raise ValueError(f"num_replicas={self.num_replicas}: expected >= 1 (or 'auto'/None to autoscale)")
        if self.max_ongoing_requests < self.user_config.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests} is smaller than user_config.max_batch_size="
                f"{self.user_config.max_batch_size}: a replica could never fill a batch")
        if self.device == "cuda" and not (self.ray_actor_options.num_gpus or 0) > 0:
            raise ValueError("device='cuda' needs ray_actor_options.num_gpus > 0")
        if self.ingress.name == self.name:
            raise ValueError(f"ingress.name and name are both {self.name!r}: the deployments need two names")
        if "user_config" in self.ingress.model_fields_set:
            raise ValueError("ingress.user_config: set the request limits in user_config")
        return self

    def deployment_options(self) -> dict[str, Any]:
        """``Deployment.options`` keyword arguments of the model deployment."""
        opts: dict[str, Any] = {
            "name": self.name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": self.ray_actor_options.model_dump(exclude_unset=True),
            "user_config": self.user_config.batch().model_dump(),
        }
        if isinstance(self.num_replicas, int):
            opts["num_replicas"] = self.num_replicas
        elif self.autoscaling_config is not None:
            opts["autoscaling_config"] = self.autoscaling_config.model_dump(exclude_unset=True)
        else:
            opts["num_replicas"] = 1
        return opts

    def ingress_options(self) -> dict[str, Any]:
        """``Deployment.options`` keyword arguments of the ingress: the options set in ``ingress``
        (Ray's DeploymentSchema marks the others unset) plus the request limits."""
        opts = self.ingress.model_dump(exclude_unset=True)
        return {**opts, "user_config": self.user_config.request().model_dump()}

    def replica_args(self) -> dict[str, Any]:
        """Constructor args of the model deployment. ``device`` "auto" and ``torch_threads`` 0 are
        resolved in the replica from the resources Ray gave it (config-file overrides included)."""
        return {"model": self.model, "device": self.device, "torch_threads": self.torch_threads,
                "tta": self.tta, "mirror_axis": self.mirror_axis,
                "background": list(images.parse_color(self.background))}


def load_serve_config(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings args, http_options) from a Serve config file such as ``serve.yaml``.

    The file is validated with Ray's :class:`ServeDeploySchema` (what ``serve run``/``serve deploy``
    accept). Takes the application whose ``import_path`` is this package's builder (else the first):
    its ``args``, plus its ``deployments`` entries -- the model deployment's options as the flat
    fields, the ingress's as ``ingress``, both ``user_config`` parts as ``user_config`` -- so
    ``jobs/serve.py --config`` and ``serve run`` read the same file the same way. Raises
    ``OSError`` or ``ValueError`` (pydantic's ValidationError) naming the problem.
    """
    from crnn.config import read_yaml  # a local path or a URI (file://, s3://, ...)

    doc = read_yaml(path) or {}
    if not isinstance(doc, dict) or not doc.get("applications"):
        raise ValueError(f"{path}: no 'applications' list (expected a Serve config file)")
    config = ServeDeploySchema.model_validate(doc)
    app = next((a for a in config.applications if a.import_path.startswith("crnn.serve:")), config.applications[0])
    args = dict(app.args)
    name = args.get("name", MODEL_DEPLOYMENT)
    limits: dict[str, Any] = dict(args.get("user_config") or {})
    for dep in app.deployments:
        opts = dep.model_dump(exclude_unset=True)
        limits.update(opts.pop("user_config", None) or {})
        if dep.name == name:
            if "num_replicas" in opts and "autoscaling_config" not in opts and opts["num_replicas"] != "auto":
                args["autoscaling_config"] = None
            args.update(opts)
        elif dep.name == args.get("ingress", {}).get("name", INGRESS_DEPLOYMENT):
            args["ingress"] = {**args.get("ingress", {}), **opts}
        else:
            raise ValueError(f"{path}: deployments: unknown deployment {dep.name!r}; this app has "
                             f"{name!r} (the model) and {INGRESS_DEPLOYMENT!r} (the ingress)")
    if limits:
        args["user_config"] = limits
    http = config.http_options.model_dump(exclude_unset=True)
    return args, http


def default_model_from_env(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with ``model`` from ``$CRNN_MODEL`` when not given (``serve run`` without args.model)."""
    if "model" not in args and os.environ.get("CRNN_MODEL"):
        return {**args, "model": os.environ["CRNN_MODEL"]}
    return args

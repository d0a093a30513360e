"""TimeVP: a time-aware SimVP that forecasts frames at any requested age from an irregular history.

Issue #14 ("Forecast any future age from an irregular history"). The network is SimVP's (Gao et al.,
"SimVP: Simpler yet Better Video Prediction", CVPR 2022): a per-frame conv **encoder**, a
**translator** of gSTA blocks (Tan et al., SimVP v2 / TAU, CVPR 2023, Sec. 3) over the latents of a
window of frames stacked in channels, and a conv **decoder** with a skip connection -- reused from
:mod:`crnn.models.simvp`. What is new is that time enters twice, as FiLM (Perez et al., "FiLM: Visual
Reasoning with a General Conditioning Layer", AAAI 2018) from embeddings of real-valued ages:

* **per input slot** s (what each frame is, relative to the requested target age T):
  ``z_s <- (z_s * (1 + gamma_s) + beta_s) * real_s`` with ``(gamma_s, beta_s) = MLP([e(a_s), e(T - a_s)])``
  -- the frame's age and its gap to the target;
* **per translator block** (what is asked): the hidden maps are FiLM-modulated by
  ``MLP([e(T - a_last), e(a_last)])`` -- the lead time from the last real input and that input's age.

``e(x)`` is the Transformer's sinusoidal encoding (Vaswani et al., NeurIPS 2017, Sec. 3.5) of a real
number instead of a position: ``[x/u, sin(2 pi x / P_k), cos(2 pi x / P_k)]`` with ``u = grid_step``
(the time unit) and ``time_dim / 2`` periods ``P_k`` geometric from ``u`` to ``max_period * u``; the
linear term lets a motion that is linear in time be read off directly.

The window is the ``window`` most recent real frames, right-aligned in slots (slot ``window - 1`` is
always the last real frame); unused slots are zeros with a 0 "real" channel, exactly as SimVP's
causal windows. Padded frames are multiplied out by the mask before anything reads them, so their
content cannot change the output. The decoder adds the predicted change to the last real frame
(``residual=True``; its readout starts at zero, so an untrained model is persistence)::

    frames (B, N, C, H, W), ages (B, N), mask (B, N), target_ages (B, M)
      -> last `window` real frames, right-aligned (B, W, C, H, W) -> encoder -> (B, W, hid_s, h, w)
      -> per target: slot FiLM (age, gap) -> translator (W*(hid_s+1) -> hid_t ... -> hid_s) with
         target FiLM (lead, last age) -> decoder (+ skip of the last real frame) -> (B, M, C, H, W)

Two calls, one network:

* ``model(frames, ages, mask, target_ages) -> (B, M, C, H, W)``: the irregular interface. Padding:
  the data layer should right-pad (real frames first, then padding), but only ``mask`` is read, so
  left padding works as well; the real frames must be in order of strictly increasing age.
* ``model(x) -> (B, T, C, H, W)``: the regular grid every other family answers (training loop,
  evaluate, Serve): frame t has age ``grid_start + t * grid_step`` and output t forecasts age
  ``grid_start + (t + 1) * grid_step`` from frames <= t -- causal, step 0 from one frame.

Every layer is a convolution or acts on time features only: parameters do not grow with image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from crnn.models.base import Forecaster, causal_windows, check_input, check_positive_int
from crnn.models.simvp import Decoder, Encoder, SimVPBackbone, Translator


@dataclass
class TimeVPConfig(SimVPBackbone):
    """``model.timevp.*``: the time-aware family's fields (used when ``model.kind=timevp``): SimVP's
    backbone fields (hid_s, hid_t, n_s, n_t, spatio_kernel, mlp_ratio) and these."""

    # Most recent real frames the translator sees (older ones are ignored; fewer are zero slots).
    window: int = 6
    # Sinusoidal time features per embedded time value (even; plus one linear term).
    time_dim: int = 16
    # Longest period of the time embedding, in units of grid_step.
    max_period: float = 64.0
    # The regular grid of model(x): frame t has age grid_start + t * grid_step (dataset unit, e.g.
    # years for pines: 10, 15, 20, 25). grid_step is also the time unit of the embedding.
    grid_start: float = 10.0
    grid_step: float = 5.0
    # Output = last real frame + predicted change (True) or the predicted frame itself.
    residual: bool = True

    def validate(self, height: int, width: int) -> None:
        s = "model.timevp"
        self.validate_backbone(s, height, width)
        for name in ("window", "time_dim"):
            check_positive_int(s, name, getattr(self, name))
        if self.time_dim % 2:
            raise ValueError(f"{s}.time_dim={self.time_dim}: expected an even number (sin and cos pairs)")
        if isinstance(self.grid_step, bool) or not isinstance(self.grid_step, (int, float)) or not self.grid_step > 0:
            raise ValueError(f"{s}.grid_step={self.grid_step!r}: expected a number > 0")
        if isinstance(self.max_period, bool) or not isinstance(self.max_period, (int, float)) or self.max_period < 1:
            raise ValueError(f"{s}.max_period={self.max_period!r}: expected a number >= 1 (grid steps)")
        if isinstance(self.grid_start, bool) or not isinstance(self.grid_start, (int, float)) \
                or not math.isfinite(self.grid_start):
            raise ValueError(f"{s}.grid_start={self.grid_start!r}: expected a finite number")
        if not isinstance(self.residual, bool):
            raise ValueError(f"{s}.residual={self.residual!r}: expected a bool")


class TimeEmbedding(nn.Module):
    """Sinusoidal encoding of real time values (Vaswani et al. 2017, Sec. 3.5, with real-valued
    positions): (...,) in dataset units -> (..., 1 + time_dim) = [x/u, sin(2 pi x/P_k), cos(2 pi x/P_k)],
    periods P_k geometric from u to max_period * u (u = grid_step)."""

    def __init__(self, time_dim: int, unit: float, max_period: float) -> None:
        super().__init__()
        k = time_dim // 2
        periods = unit * max_period ** (torch.arange(k, dtype=torch.float64) / max(k - 1, 1))
        self.register_buffer("freq", (2 * math.pi / periods).float(), persistent=False)
        self.unit = float(unit)
        self.dim = 1 + time_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        phase = x[..., None] * self.freq  # (..., k)
        return torch.cat([x[..., None] / self.unit, phase.sin(), phase.cos()], dim=-1)


def _film(dim_in: int, channels: int) -> nn.Sequential:
    """Time features (N, dim_in) -> FiLM parameters (N, 2 * channels): (gamma, beta). The last layer
    starts at zero, so an untrained FiLM is the identity (gamma = beta = 0) and training starts from
    the plain SimVP backbone -- the "zero" initialisation of adaLN-Zero (Peebles & Xie, "Scalable
    Diffusion Models with Transformers", ICCV 2023, Sec. 3.2). With a random last layer TimeVP
    trailed SimVP early on the regular grid (validation MSE 119.9 vs 97.2 after two epochs)."""
    hidden = max(32, channels)
    out = nn.Linear(hidden, 2 * channels)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.SiLU(), out)


def _rename_old_block_keys(module, state_dict, prefix, *args) -> None:
    """Checkpoints written before TimeVP used ``simvp.Translator`` name its gSTA blocks
    ``blocks.<i>.*``; they load as ``translator.blocks.<i>.*`` (the same weights, in place)."""
    old = prefix + "blocks."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "translator.blocks." + key[len(old):]] = state_dict.pop(key)


class TimeVP(Forecaster):
    """Time-conditioned SimVP (see the module docstring).

    ``forward(frames, ages, mask, target_ages)``: frames float (B, N, C, H, W) in [0, 1]; ages float
    (B, N) in the dataset's unit; mask bool (B, N), True = real frame (>= 2 per series, in order of
    strictly increasing age); target_ages float (B, M), each after the series' last real age ->
    (B, M, C, H, W). ``forward(x)``: x (B, T, C, H, W) on the regular grid -> (B, T, C, H, W), output
    t = forecast of frame t + 1 from frames <= t; ``forward(x, ages)``: the same window at T + 1 ages
    shared by the batch (a regular dataset off the grid: :meth:`forward_grid`). Raises ValueError
    naming the problem for a bad config or bad inputs (shapes, dtypes, too few real frames, ages out
    of order, a target age not after the last input, non-finite ages).
    """

    def __init__(self, cfg) -> None:  # cfg: crnn.model.ModelConfig with kind="timevp"
        super().__init__(cfg, "timevp")
        tc: TimeVPConfig = cfg.timevp
        self.window, self.hid_s, self.hid_t = tc.window, tc.hid_s, tc.hid_t
        self.grid_start, self.grid_step = float(tc.grid_start), float(tc.grid_step)
        self.embed = TimeEmbedding(tc.time_dim, tc.grid_step, tc.max_period)
        self.slot_film = _film(2 * self.embed.dim, tc.hid_s)          # [e(a_s), e(T - a_s)]
        self.encoder = Encoder(cfg.channels, tc.hid_s, tc.n_s, tc.spatio_kernel)
        # SimVP's gSTA translator; _translate runs its blocks one by one to put a FiLM between them
        self.translator = Translator(tc.window * (tc.hid_s + 1), tc.hid_s, tc.hid_t, tc.n_t, tc.mlp_ratio, 0.0)
        self.register_load_state_dict_pre_hook(_rename_old_block_keys)
        # one FiLM after every block but the last, from [e(T - a_last), e(a_last)]
        self.target_film = _film(2 * self.embed.dim, (tc.n_t - 1) * tc.hid_t)
        self.decoder = Decoder(tc.hid_s, cfg.channels, tc.n_s, tc.spatio_kernel)
        if self.residual:  # start as persistence: the change is learned from zero
            nn.init.zeros_(self.decoder.readout.weight)
            nn.init.zeros_(self.decoder.readout.bias)

    # ------------------------------------------------------------------ the shared core
    def _translate(self, z, ages, real, target, skip, last):
        """One forecast per query q: z (Q, W, hid_s, h, w) slot latents, ages (Q, W), real (Q, W) float
        (1 = real slot), target (Q,) age asked for, skip (Q, hid_s, H, W) encoder features of the last
        real frame, last (Q, C, H, W) that frame -> (Q, C, H, W)."""
        q, w = ages.shape
        a_last = ages[:, -1]                                                # slot W-1 is the last real frame
        slot_t = torch.cat([self.embed(ages), self.embed(target[:, None] - ages)], dim=-1)  # (Q, W, 2E)
        gamma, beta = self.slot_film(slot_t).chunk(2, dim=-1)              # (Q, W, hid_s) each
        z = (z * (1 + gamma[..., None, None]) + beta[..., None, None]) * real[:, :, None, None, None]
        flag = real[:, :, None, None, None].expand(q, w, 1, *z.shape[-2:])
        h = torch.cat([z, flag], dim=2).flatten(1, 2)                      # (Q, W*(hid_s+1), h, w)
        query = torch.cat([self.embed(target - a_last), self.embed(a_last)], dim=-1)  # (Q, 2E)
        blocks = self.translator.blocks
        films = self.target_film(query).view(q, len(blocks) - 1, 2, self.hid_t, 1, 1)
        for i, block in enumerate(blocks):
            h = block(h)
            if i < len(blocks) - 1:
                h = h * (1 + films[:, i, 0]) + films[:, i, 1]
        out = self.decoder(h, skip)                                        # (Q, C, H, W)
        return last + out if self.residual else out

    # ------------------------------------------------------------------ the two calls
    def forward(self, frames: torch.Tensor, ages: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                target_ages: torch.Tensor | None = None) -> torch.Tensor:
        given = [a is not None for a in (ages, mask, target_ages)]
        if not any(given[1:]):  # the regular window: at the grid ages, or at the T + 1 ``ages`` given
            return self.forward_grid(frames, ages)
        if not all(given):
            raise ValueError("timevp: pass ages, mask and target_ages together (or ages alone, or none: the "
                             "regular window)")
        return self.forward_irregular(frames, ages, mask, target_ages)

    def forward_grid(self, x: torch.Tensor, ages: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
        """(B, T, C, H, W) at ages grid_start + t * grid_step -> (B, T, C, H, W); output t forecasts
        the next grid age from frames <= t (causal, like :class:`crnn.models.simvp.SimVP`).

        ``ages``: the window forecast at other ages shared by every series (a regular dataset off the
        grid: :class:`crnn.timeaware.AtAges`, the training loop): T + 1 strictly increasing finite ages
        in the dataset's unit, frame t at ``ages[t]`` and output t the forecast of age ``ages[t + 1]``.
        A sequence of numbers is checked here (ValueError naming the problem); a tensor's shape only,
        its values being the caller's (the training loop's come from the dataset card): a value check
        would sync the device and break torch.compile's graph at every step."""
        check_input(x, self.shape)
        b, t = x.shape[:2]
        if ages is None:
            grid = self.grid_start + self.grid_step * torch.arange(t, device=x.device, dtype=torch.float32)
            target = grid + self.grid_step
        else:
            if not isinstance(ages, torch.Tensor):
                values = [float(a) for a in ages]
                if not all(math.isfinite(a) for a in values) or any(b <= a for a, b in zip(values, values[1:])):
                    raise ValueError(f"timevp: ages {values} must be finite and strictly increasing")
            given = torch.as_tensor(ages, dtype=torch.float32, device=x.device)
            if given.shape != (t + 1,):
                raise ValueError(f"timevp: ages of shape {tuple(given.shape)} for {t} frames; expected {t + 1} "
                                 f"(each frame's age, then the age the last output forecasts)")
            grid, target = given[:t], given[1:]
        z, skip = self.encoder(x.flatten(0, 1))                            # (B*T, hid_s, h, w), (B*T, hid_s, H, W)
        win, valid = causal_windows(z.unflatten(0, (b, t)), self.window)   # (B, T, W, hid_s, h, w), (T, W)
        ages = causal_windows(grid.expand(b, t)[..., None], self.window)[0][..., 0]  # (B, T, W)
        real = valid.expand(b, t, self.window).flatten(0, 1)
        out = self._translate(win.flatten(0, 1), ages.flatten(0, 1), real, target.repeat(b),
                              skip, x.flatten(0, 1))
        return out.unflatten(0, (b, t))

    def forward_irregular(self, frames: torch.Tensor, ages: torch.Tensor, mask: torch.Tensor,
                          target_ages: torch.Tensor) -> torch.Tensor:
        """The irregular interface (see the class docstring) -> (B, M, C, H, W)."""
        check_irregular(frames, ages, mask, target_ages, self.shape)
        b, n = mask.shape
        m = target_ages.shape[1]
        w = self.window
        # right-align the last `w` real frames: slot = w - 1 - (real frames after this one)
        after = mask.flip(1).long().cumsum(1).flip(1) - mask.long()       # (B, N)
        slot = w - 1 - after
        slots = torch.arange(w, device=mask.device)[None, :, None]
        pick = (mask & (slot >= 0))[:, None, :] & (slot[:, None, :] == slots)  # (B, W, N) one-hot rows (or none)
        real = pick.any(-1)                                               # (B, W) slot holds a real frame
        src = (pick.long() * torch.arange(n, device=mask.device)).sum(-1)  # (B, W) its index in N (0 if none)
        rows = torch.arange(b, device=mask.device)[:, None]
        sel = frames[rows, src].masked_fill(~real[:, :, None, None, None], 0.0)   # (B, W, C, H, W)
        sel_ages = ages[rows, src].masked_fill(~real, 0.0).to(frames.dtype)     # (B, W)
        real = real.to(frames.dtype)
        z, skip = self.encoder(sel.flatten(0, 1))                         # (B*W, hid_s, h, w), (B*W, hid_s, H, W)
        z, skip = z.unflatten(0, (b, w)), skip.unflatten(0, (b, w))[:, -1]

        def rep(t: torch.Tensor) -> torch.Tensor:                         # (B, ...) -> (B*M, ...), one per target
            return t.repeat_interleave(m, dim=0)

        out = self._translate(rep(z), rep(sel_ages), rep(real), target_ages.reshape(-1).to(frames.dtype),
                              rep(skip), rep(sel[:, -1]))
        return out.unflatten(0, (b, m))


def check_irregular(frames: torch.Tensor, ages: torch.Tensor, mask: torch.Tensor, target_ages: torch.Tensor,
                    shape: tuple[int, int, int] | None = None) -> None:
    """Raise ValueError naming the problem unless the irregular inputs are consistent: frames
    (B, N, C, H, W) (with (C, H, W) == ``shape``), ages float (B, N) finite, mask bool (B, N) with >= 2
    real frames per series whose ages strictly increase, target_ages float (B, M), M >= 1, finite and
    each after the series' last real age."""
    check_input(frames, shape)
    b, n = frames.shape[:2]
    for name, t in (("ages", ages), ("mask", mask)):
        if tuple(t.shape) != (b, n):
            raise ValueError(f"{name}: expected shape (B, N) = {(b, n)} to match frames, got {tuple(t.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: expected dtype torch.bool (True = real frame), got {mask.dtype}")
    if target_ages.dim() != 2 or target_ages.shape[0] != b or target_ages.shape[1] < 1:
        raise ValueError(f"target_ages: expected shape (B, M) with B={b}, M >= 1, got {tuple(target_ages.shape)}")
    if not ages.is_floating_point() or not target_ages.is_floating_point():
        raise ValueError(f"ages and target_ages: expected float tensors, got {ages.dtype} and {target_ages.dtype}")
    if not torch.isfinite(ages[mask]).all() or not torch.isfinite(target_ages).all():
        raise ValueError("ages/target_ages: expected finite values (NaN or inf found)")
    count = mask.sum(1)
    if (count < 2).any():
        i = int(torch.nonzero(count < 2)[0])
        raise ValueError(f"mask: series {i} has {int(count[i])} real frame(s); at least 2 are needed")
    real = ages.masked_fill(~mask, float("-inf"))
    before = torch.cat([real.new_full((b, 1), float("-inf")), real.cummax(1).values[:, :-1]], dim=1)
    if (mask & (ages <= before)).any():
        i = int(torch.nonzero((mask & (ages <= before)).any(1))[0])
        raise ValueError(f"ages: the real frames' ages of series {i} are not strictly increasing "
                         f"({ages[i][mask[i]].tolist()})")
    last = real.max(1).values                                            # (B,)
    bad = (target_ages <= last[:, None]).any(1)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"target_ages: series {i} asks for {target_ages[i].tolist()}, but every target age "
                         f"must be after its last real input age {float(last[i])}")

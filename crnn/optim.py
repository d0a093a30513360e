"""Muon for the weight matrices and convolution kernels, AdamW for the rest: ``train.optimizer=muon``.

Muon (Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024) replaces each
weight matrix's momentum-SGD update by its nearest semi-orthogonal matrix (five Newton-Schulz
iterations): every direction of the update moves at the same rate, not only the few that dominate
the gradient. Here it is :class:`torch.optim.Muon`, with ``adjust_lr_fn="match_rms_adamw"`` (Liu et
al., "Muon is scalable for LLM training", 2025, section 2.2: the update scaled to AdamW's typical
RMS, 0.2 * sqrt(max(rows, cols))), so one ``train.lr`` serves both halves and a recipe tuned for
AdamW keeps its learning rate. Biases, norm gains and other vectors (which Muon is not for) go to
:class:`torch.optim.AdamW` -- also those shaped for broadcasting, such as SimVP's layer scales (C, 1, 1):
a matrix with a side of 1 is a vector, and orthogonalising it would only normalise it.

Why a wrapper and not torch's Muon alone: it takes 2-D parameters only, and a convolution kernel is
4-D (out, in, kh, kw). Muon's reference implementation and its CIFAR-10 results treat a kernel as the
matrix (out, in * kh * kw); this class hands torch's Muon such 2-D views, which share memory with the
kernels, and views each kernel's gradient the same way before every step. One object, so the trainers,
the learning-rate schedule (its ``param_groups`` are the two optimizers' groups) and the checkpoints
(``state_dict`` holds both) treat it as any other optimizer.

On the pines (BENCHMARKS.md, "Why the best model is still far above the floor", part 13): the
``convlstm-cpu`` recipe learns far more per step with it. Its cost: the orthogonalisation is
~2 * 5 * 3 * rows^2 * cols FLOP per matrix and step -- small for convolution kernels (~25 % of a
ConvLSTM step at batch 8 on a CPU), large for the paper CRNN's 1536 x 10752 LSTM matrix (keep
``adam`` there).
"""
from __future__ import annotations

import torch

__all__ = ["MuonAdamW", "is_matrix", "load_optimizer_state"]


def is_matrix(p: torch.Tensor) -> bool:
    """Whether Muon updates ``p``: 2 or more dimensions, and its ``(shape[0], -1)`` matrix has both
    sides > 1 -- not a vector shaped for broadcasting (a layer scale (C, 1, 1), a (1, C) or (C, 1) row
    or column), which goes to AdamW with the biases and norm gains."""
    return p.ndim >= 2 and p.shape[0] > 1 and p.numel() > p.shape[0]


class MuonAdamW(torch.optim.Optimizer):
    """Muon on every trainable parameter with 2 or more dimensions whose ``(shape[0], -1)`` matrix has
    both sides > 1 (:func:`is_matrix`), as that matrix; AdamW on the others (fused where torch allows).

    ``params``: the model's parameters (an iterable of tensors). ``lr``: both halves' learning rate
    (Muon's scaled to AdamW's update size, see the module docstring); ``weight_decay``: decoupled, both
    halves; ``momentum``: Muon's (Nesterov), AdamW keeps its betas. ``param_groups`` lists Muon's group
    first, then AdamW's (either may be absent when the model has no such parameters): a scheduler
    scales both. Make it after the model is on its device. ValueError for an empty parameter list, a
    parameter given twice, a non-contiguous kernel, or ``lr <= 0``; RuntimeError from :meth:`step` when
    a parameter was given new memory since (``model.to(...)`` after the optimizer was made).
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.95,
                 fused: bool | None = None):
        params = [p for p in params]
        if not params:
            raise ValueError("MuonAdamW got an empty parameter list")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("MuonAdamW: a parameter appears twice")
        if not lr > 0:
            raise ValueError(f"MuonAdamW: lr={lr!r}: expected > 0")
        matrices = [p for p in params if is_matrix(p)]
        vectors = [p for p in params if not is_matrix(p)]
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        for p in matrices:
            if not p.is_contiguous():  # a view of it would not share its memory
                raise ValueError(f"MuonAdamW: a parameter of shape {tuple(p.shape)} is not contiguous "
                                 "(channels_last?); Muon updates it through a 2-D view")
        # torch's Muon updates each 2-D view in place, i.e. the kernel it shares memory with
        self._views = [(p, p.detach().view(p.shape[0], -1)) for p in matrices]
        self.muon = (torch.optim.Muon([v for _, v in self._views], lr=lr, weight_decay=weight_decay,
                                      momentum=momentum, adjust_lr_fn="match_rms_adamw")
                     if matrices else None)
        self.adamw = (torch.optim.AdamW(vectors, lr=lr, weight_decay=weight_decay,
                                        **({"fused": fused} if fused is not None else {}))
                      if vectors else None)
        self.param_groups = [g for o in self._parts() for g in o.param_groups]

    def _parts(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.muon, self.adamw) if o is not None]

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient. ``closure`` (re-evaluates the loss) is
        called once, before the update, as torch's optimizers do."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for p, v in self._views:
            if v.data_ptr() != p.data_ptr():  # the parameter got new memory (a .to() after this was made)
                raise RuntimeError(f"MuonAdamW: a parameter of shape {tuple(p.shape)} no longer shares memory with "
                                   "its 2-D view: make the optimizer after moving the model to its device")
            v.grad = None if p.grad is None else p.grad.reshape(v.shape)
        for o in self._parts():
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p, v in self._views:  # the kernels' own gradients (the views only borrow them)
            v.grad = None
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()
        if self.adamw is not None:
            self.adamw.zero_grad(set_to_none)

    def __getstate__(self) -> dict:
        # torch's Optimizer.__getstate__ keeps defaults, state and param_groups only: a copy (copy.deepcopy,
        # pickle) without the two halves and the kernels' 2-D views had no ``_views`` (AttributeError)
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        """After ``copy.deepcopy`` or unpickling: the copied kernels and their copied 2-D views no longer
        share memory (a Parameter's copy is a clone), so each view is made again from its copied kernel
        and put in Muon's place of the old one (its parameter list and its momentum state)."""
        super().__setstate__(state)
        views = []
        for p, old in self._views:
            new = p.detach().view(p.shape[0], -1)
            if self.muon is not None:
                for g in self.muon.param_groups:
                    g["params"] = [new if q is old else q for q in g["params"]]
                if old in self.muon.state:
                    self.muon.state[new] = self.muon.state.pop(old)
            views.append((p, new))
        self._views = views

    def state_dict(self) -> dict:
        return {"muon": None if self.muon is None else self.muon.state_dict(),
                "adamw": None if self.adamw is None else self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`'s output. ValueError when it is not a MuonAdamW state (another
        optimizer's, or one of a model with other parameters)."""
        if not _is_muon_state(state_dict):
            raise ValueError(f"not a MuonAdamW optimizer state: found {_kind_of(state_dict)} (was the checkpoint "
                             f"written with another train.optimizer?)")
        halves = (("muon", self.muon), ("adamw", self.adamw))
        for name, opt in halves:  # both checked before either loads
            if (opt is None) != (state_dict[name] is None) or (opt is not None
                                                                and not _fits(opt, state_dict[name])):
                raise ValueError(f"MuonAdamW state: the {name} half does not match this model's parameters")
        for name, opt in halves:
            if opt is not None:
                opt.load_state_dict(state_dict[name])
        self.param_groups = [g for o in self._parts() for g in o.param_groups]


def _fits(opt: torch.optim.Optimizer, state: dict) -> bool:
    """Whether an optimizer state (torch's ``state_dict`` layout) is one of ``opt``'s parameters: as
    many in each group, and every state tensor (momentum, moments; not the scalar step) of its
    parameter's shape -- torch checks the counts only, and a tensor of another shape fails at a step."""
    try:
        groups = state["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
            return False
        params = dict(zip((i for g in groups for i in g["params"]), (p for g in opt.param_groups for p in g["params"])))
        return all(k in params and all(not torch.is_tensor(t) or t.ndim == 0 or t.shape == params[k].shape
                                       for t in st.values())
                   for k, st in state["state"].items())
    except (KeyError, TypeError, AttributeError):
        return False


def _is_muon_state(state) -> bool:
    return isinstance(state, dict) and set(state) == {"muon", "adamw"}


def _is_torch_state(state) -> bool:
    return isinstance(state, dict) and {"state", "param_groups"} <= set(state) and "muon" not in state


def _kind_of(state) -> str:
    """What an optimizer state looks like, for messages."""
    if _is_muon_state(state):
        return "a MuonAdamW state (train.optimizer=muon)"
    if _is_torch_state(state):
        return "a torch optimizer state (train.optimizer=adam, nadam or adamw)"
    if isinstance(state, dict):
        return f"a dict with keys {sorted(map(str, state))}"
    return f"a {type(state).__name__}"


def load_optimizer_state(opt: torch.optim.Optimizer, state, where: str = "optimizer state") -> None:
    """``opt.load_state_dict(state)`` (a resumed run's optimizer from its checkpoint), refusing a state
    of the other kind first: a MuonAdamW state given to torch's Adam/NAdam/AdamW failed with a bare
    ``KeyError: 'param_groups'``; among torch's own, Adam's or AdamW's state in a NAdam failed at the
    first step (``KeyError: 'mu_product'``) and AdamW's in an Adam silently became AdamW. Raises ValueError naming ``where``, the optimizer expected and the
    kind of state found (:meth:`MuonAdamW.load_state_dict` checks its own halves' shapes too)."""
    if isinstance(opt, MuonAdamW):
        ok, want = _is_muon_state(state), "a MuonAdamW state (train.optimizer=muon)"
    else:
        ok, want = _is_torch_state(state), f"a {type(opt).__name__} state (torch's layout: state, param_groups)"
    if not ok:
        raise ValueError(f"{where}: expected {want}, found {_kind_of(state)}: was the checkpoint written with "
                         f"another train.optimizer?")
    if not isinstance(opt, MuonAdamW):  # torch's kinds share one layout: told apart by their groups' fields
        mine, found = _torch_kind(opt.param_groups), _torch_kind(state.get("param_groups"))
        if mine and found and mine != found:
            raise ValueError(f"{where}: expected {want}, found a{'n' * found.startswith('A')} {found} state "
                             f"(train.optimizer={found.lower()}): was the checkpoint written with another "
                             f"train.optimizer?")
    opt.load_state_dict(state)


def _torch_kind(groups) -> str | None:
    """Which of torch's Adam, AdamW and NAdam wrote these ``param_groups`` (None when they do not say:
    a state of an older torch without ``decoupled_weight_decay`` is not told Adam from AdamW). NAdam
    alone has ``momentum_decay`` (and needs ``mu_product`` per parameter: Adam's state in a NAdam
    failed at the first step with a bare KeyError); Adam and AdamW differ in ``decoupled_weight_decay``,
    which torch would take from the saved groups (silently turning one into the other)."""
    if not isinstance(groups, (list, tuple)) or not groups or not isinstance(groups[0], dict):
        return None
    g = groups[0]
    if "momentum_decay" in g:
        return "NAdam"
    if "amsgrad" in g and isinstance(g.get("decoupled_weight_decay"), bool):
        return "AdamW" if g["decoupled_weight_decay"] else "Adam"
    return None

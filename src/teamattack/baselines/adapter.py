"""One adapter over torchattacks / foolbox / adv-lib: every peer becomes a teamattack `Attack`.

`make(name, model, targeted=False, **overrides)` returns a `PeerAttack`; calling it,
`attack(x, y, target=None)`, returns the same `AttackResult` as TEAM: x_adv clipped to [0, 1],
success from a fresh forward pass, distances, and counters measured through the `CountingModel`
that `Attack.__call__` hands to `run` (the peers are given that counting model, never the bare
one, so every forward and every backward through the logits is counted; see docs/peers.md).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack
from ..counting import CountingModel
from ..goal import Goal
from ..result import AttackResult
from ..validation import InputError, check_number
from . import _imports
from .presets import BOUNDS, FIXED_EPS, PRESETS, Preset

# ASCII spellings accepted for the libraries' Greek keyword names (adv-lib), and `steps` for ALMA.
ALIASES = {
    "gamma": "γ", "alpha": "α", "alpha_init": "α_init", "alpha_final": "α_final",
    "gamma_init": "γ_init", "gamma_final": "γ_final", "mu_init": "μ_init", "rho_init": "ρ_init",
    "tau": "τ", "alpha_rms": "α_rms", "steps": "num_steps",
}
# arguments the adapter itself supplies
_RESERVED = {"self", "model", "inputs", "labels", "targeted", "callback", "images", "criterion",
             "epsilons", "starting_points", "return_unsuccessful", "return_targets"}
_NORMS = {"l2": 2, "2": 2, "linf": float("inf"), "inf": float("inf"), "l0": 0, "0": 0, "l1": 1, "1": 1}


def _library_callable(preset: Preset) -> Callable:
    lib, _, fn = preset.algorithm.partition(":")
    if lib == "ta":
        return getattr(_imports.torchattacks(), fn)
    if lib == "fb":
        return getattr(_imports.foolbox().attacks, fn)
    return getattr(_imports.adv_lib_attacks(), fn)


def _resolve_kwargs(preset: Preset, overrides: dict[str, Any]) -> dict[str, Any]:
    fn = _library_callable(preset)
    accepted = set(inspect.signature(fn).parameters) - _RESERVED
    params = dict(preset.kwargs)
    for key, value in overrides.items():
        name = key
        if name not in accepted and ALIASES.get(key) in accepted:
            name = ALIASES[key]
        if name not in accepted:
            raise TypeError(
                f"{preset.name} ({preset.function}) has no option {key!r}; "
                f"it takes {sorted(accepted) + ['seed']}"
            )
        params[name] = _check_option(preset, key, name, value)
    if preset.algorithm == "al:fmn" and isinstance(params.get("norm"), str):
        try:
            params["norm"] = _NORMS[params["norm"].lower()]
        except KeyError:
            raise ValueError(f"fmn norm must be one of {sorted(_NORMS)}") from None
    return params


def _check_option(preset: Preset, key: str, name: str, value: Any) -> Any:
    """A numeric option's value checked against `presets.BOUNDS` (InputError naming `key`)."""
    bound = BOUNDS.get(name)
    if bound is None or (name == "norm" and isinstance(value, str)):
        return value
    label = key if key == name else f"{key} ({name})"
    # a count whose preset default is 0 means "the library's automatic choice" (BIM's steps=0)
    low = 0 if bound.integer and preset.kwargs.get(name, None) == 0 else bound.low
    allow_none = bound.none or (name in preset.kwargs and preset.kwargs[name] is None)
    out = check_number(label, value, low=low, strict=bound.strict, high=bound.high, integer=bound.integer,
                       allow_none=allow_none)
    return out


class PeerAttack(Attack):
    """A peer library's attack behind the teamattack `Attack` protocol.

    Attributes: `preset` (the registry entry), `params` (the keyword arguments passed to the
    library, defaults merged with overrides), `seed` (torch RNG seed set inside `run`, in a forked
    RNG state so the caller's random stream is untouched; None leaves the RNG alone).
    """

    def __init__(self, model: nn.Module, preset: Preset, targeted: bool = False,
                 seed: int | None = 0, **overrides: Any) -> None:
        super().__init__(model, targeted)
        if targeted and not preset.targeted:
            raise InputError(f"{preset.name} ({preset.function}) has no targeted mode; use targeted=False")
        if not targeted and not preset.untargeted:
            raise InputError(
                f"{preset.name} ({preset.function}) is targeted only (its untargeted default would pick "
                "an arbitrary target); use targeted=True and pass target="
            )
        self.preset = preset
        self.name = preset.name
        self.library = preset.library
        self.norm = preset.norm
        self.budget = preset.budget
        self.seed = check_number("seed", seed, low=0, integer=True, allow_none=True)
        self.overrides = dict(overrides)  # what the user gave (teamattack.preprocessing rescales these)
        self.params = _resolve_kwargs(preset, overrides)

    @property
    def eps(self) -> float | None:
        return float(self.params["eps"]) if self.budget == FIXED_EPS else None

    # ------------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        result = super().__call__(x, y, target)
        result.info.update(
            attack=self.name, library=self.library, function=self.preset.function, budget=self.budget,
            params={k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                    for k, v in self.params.items()},
            seed=self.seed, counts="measured through CountingModel",
        )
        return result

    def run(self, model: CountingModel, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        # CountingModel is a fresh nn.Module (training=True by default). torchattacks restores the
        # mode it found after an attack (model.train() would switch the user's model to training)
        # and foolbox warns about it; the wrapper's own flag is what they read, so clear only it.
        model.training = False
        runner = _RUNNERS[self.preset.algorithm.partition(":")[0]]
        if self.seed is None:
            raw = runner(self, model, x, y, target)
        else:
            devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] \
                if x.is_cuda else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                raw = runner(self, model, x, y, target)
        raw = raw.detach().to(dtype=x.dtype).reshape(x.shape)
        radius = None
        if self.budget == FIXED_EPS:
            radius = torch.full((x.shape[0],), float(self.params["eps"]), device=x.device)
        return raw, radius

    def __repr__(self) -> str:
        return f"PeerAttack({self.name!r}, library={self.library!r}, targeted={self.targeted}, params={self.params})"


# ---- runners ---------------------------------------------------------------------------------

def _batch_view(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *[1] * (x.dim() - 1))


def _run_torchattacks(atk: PeerAttack, model, x, y, target):
    ta = _imports.torchattacks()
    name = atk.preset.algorithm.partition(":")[2]
    params = dict(atk.params)
    if name == "DIFGSM":
        if x.dim() != 4:
            raise InputError(f"{atk.name}: input diversity (resize + pad) needs NCHW images; got shape {tuple(x.shape)}")
        if params.get("alpha") is None:
            params["alpha"] = float(params["eps"]) / int(params["steps"])
    attack = getattr(ta, name)(model, **params)
    if target is not None:
        attack.set_mode_targeted_by_label(quiet=True)  # the labels passed are the targets
        out = attack(x, target)
    else:
        out = attack(x, y)
    if atk.budget != FIXED_EPS:
        # JSMA returns its last iterate where it gave up; the minimum-norm convention is x there.
        # Deciding that takes one more (counted) forward pass.
        with torch.no_grad():
            ok = Goal(y, target).reached(model(out))
        out = torch.where(_batch_view(ok, x), out, x)
    return out


def _run_foolbox(atk: PeerAttack, model, x, y, target):
    fb = _imports.foolbox()
    name = atk.preset.algorithm.partition(":")[2]
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
    criterion = fb.criteria.TargetedMisclassification(target) if target is not None \
        else fb.criteria.Misclassification(y)
    attack = getattr(fb.attacks, name)(**atk.params)
    raw, clipped, success = attack(fmodel, x, criterion, epsilons=None)
    success = success.bool()
    if name == "L2CarliniWagnerAttack":
        # foolbox's C&W starts its best-so-far at all-zero images and returns them where it found
        # nothing; its `success` is then a pass on the black image, which may well be misclassified.
        # A found adversarial is (tanh(w) + 1) / 2 for finite w: never exactly all zero (unless x is).
        failed = (raw.flatten(1) == 0).all(dim=1) & (x.flatten(1) != 0).any(dim=1)
        success = success & ~failed
    # minimum-norm convention (as adv-lib): the original input where the attack failed
    # (foolbox's DeepFool returns its last, non-adversarial iterate there).
    return torch.where(_batch_view(success, x), clipped, x)


def _run_adv_lib(atk: PeerAttack, model, x, y, target):
    attacks = _imports.adv_lib_attacks()
    name = atk.preset.algorithm.partition(":")[2]
    params = dict(atk.params)
    if name == "alma" and isinstance(params.get("penalty"), str):
        params["penalty"] = _imports.adv_lib_penalty(params["penalty"])
    labels = target if target is not None else y
    fn = getattr(attacks, name)
    if name == "fmn" and params.get("norm") == 2:
        return _with_fixed_fmn_l2_projection(fn, model, x, labels, targeted=target is not None, **params)
    return fn(model, x, labels, targeted=target is not None, **params)


def _fixed_l2_projection_(δ: torch.Tensor, ε: torch.Tensor) -> torch.Tensor:
    """Projection onto the L2 ball of radius ε, in place: δ * min(1, ε / ||δ||).

    adv-lib 0.2.8's `fast_minimum_norm.l2_projection_` computes `δ.mul_(ε / ||δ||).clamp_(max=1)`:
    it rescales δ onto the *sphere* of radius ε and clamps δ's entries (not the factor) to <= 1; at
    the start ε = inf, which turns δ into inf / NaN, so FMN-L2 never leaves x (0% success on the
    digits MLP). adv-lib's earlier out-of-place version clamped the factor, as here.
    """
    δ = δ.flatten(1)
    norms = δ.norm(p=2, dim=1, keepdim=True).clamp_(min=1e-12)
    δ.mul_((ε.unsqueeze(1) / norms).clamp_(max=1))
    return δ


def _with_fixed_fmn_l2_projection(fn, *args, **kwargs):
    import adv_lib.attacks.fast_minimum_norm as fmn_module

    original = fmn_module.l2_projection_
    fmn_module.l2_projection_ = _fixed_l2_projection_  # looked up by name at each fmn call
    try:
        return fn(*args, **kwargs)
    finally:
        fmn_module.l2_projection_ = original


_RUNNERS = {"ta": _run_torchattacks, "fb": _run_foolbox, "al": _run_adv_lib}


# ---- public entry points ---------------------------------------------------------------------

def make(name: str, model: nn.Module, targeted: bool = False, **overrides: Any) -> PeerAttack:
    """Build the peer attack `name` (a key of `PRESETS`) on `model`.

    `overrides` replace the preset's keyword arguments (library names; ASCII aliases such as
    `gamma`, `alpha_init` and `steps` for ALMA's `num_steps` are accepted) and may include `seed`
    (default 0; None to leave torch's RNG alone). Fixed-budget attacks take `eps` (and `steps`).
    `bounds=(lo, hi)` and `preprocessing=(mean, std)` put the inputs on the user's scale (as for
    every attack: teamattack.preprocessing); `eps` / `alpha` given here are then on that scale.
    Raises KeyError for an unknown name, InputError for an unsupported mode or a numeric option
    out of its range (`presets.BOUNDS`: eps > 0, steps an integer >= 1, ...), TypeError for an
    unknown option, and PeerUnavailable (an ImportError) when the library is not installed.
    """
    try:
        preset = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown baseline {name!r}; choose one of {sorted(PRESETS)}") from None
    seed = overrides.pop("seed", 0)
    if "eps" in overrides and preset.budget != FIXED_EPS:
        raise TypeError(f"{name} is a minimum-norm attack and takes no eps")
    return PeerAttack(model, preset, targeted=targeted, seed=seed, **overrides)


def names(library: str | None = None, targeted: bool | None = None, budget: str | None = None) -> list[str]:
    """Preset names, optionally filtered by library, targeted capability and budget kind."""
    out = []
    for p in PRESETS.values():
        if library is not None and p.library != library:
            continue
        if targeted is not None and (p.targeted if targeted else p.untargeted) is False:
            continue
        if budget is not None and p.budget != budget:
            continue
        out.append(p.name)
    return out

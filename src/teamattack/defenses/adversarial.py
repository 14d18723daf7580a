"""Adversarial training with any attack of the library, on the zoo's training loop.

    from teamattack import defenses
    spec = defenses.AttackSpec("pgd", eps=0.1, steps=5)          # PGD-5, step 2.5 eps / 5, random start
    card = defenses.adversarial_train("digits-cnn", spec, "digits", epochs=10, out="runs/at.safetensors")
    card = defenses.adversarial_train("digits-cnn", spec, "digits", epochs=10, offline=True,
                                      out="runs/offline.safetensors")          # the paper's protocol

Two modes, both :func:`teamattack.zoo.train.train` with its ``perturb`` hook (seeded, a checkpoint
per epoch, resumable after ``kill -9`` to the same weights):

- **online** (Madry et al. 2018): every batch is attacked against the current weights (the model
  in eval mode while it is attacked, back in train mode after); the loss is
  ``(1 - mix) * CE(clean) + mix * CE(adversarial)``; with ``ramp_epochs`` the budget grows
  linearly from 0 to eps over the first epochs (per step). The attack's randomness is seeded by
  (seed, epoch, step), so a resumed run repeats the uninterrupted one.
- **offline** (seed 000 Sec. 4-5): the attack's examples of a seeded subset of the training set
  are crafted once against the natural model and added to the training data (each epoch sees the
  training set and the adversarial set once; every step trains on a clean batch plus its share
  of the adversarial set). They are cached beside ``out`` (``<stem>.offline.safetensors``).

Under ``torchrun --nproc-per-node K`` (teamattack.zoo.train's "Several processes") each rank
attacks its own slice of every global batch against the current weights; the attack's seed also
depends on the rank (K = 1: the seeds above), so only attacks without randomness (PGD without
random start, FGSM, ...) give the examples of one process. Offline: rank 0 crafts (and caches) the
adversarial set, the other ranks read the cache; each step's share of it is split like the batch.

``attack`` is an :class:`AttackSpec` (a library attack by name, rebuilt at any eps: needed for
the eps ramp), an :class:`~teamattack.attacks.base.Attack` (its ``model`` is pointed at the model
it attacks), or a factory ``model -> Attack``. Examples of an attack not built at the budget (a
minimum-norm attack, or a ramp with an attack that cannot be rebuilt at a smaller eps) are
brought into it (:func:`within`: projected onto the ball; L0: the clean image beyond it).
"""
from __future__ import annotations

import inspect
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from ..attacks.base import Attack
from ..attacks.fixed_budget import project
from ..checks import SaturationWarning
from ..metrics import l0
from ..validation import check_number
from ..zoo import registry
from ..zoo.architectures import ARCHITECTURES, dataset_of
from ..zoo.train import TrainBatch, _batch_to_float, train

TEAM_NAMES = {"team-linf": "linf", "team-l2": "l2"}

def _derived_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """One seed per (seed, epoch, step, rank); epoch -1 is the offline crafting."""
    return (seed * 1_000_003 + (epoch + 1) * 100_003 + step + rank * 15_485_863) % (2**31 - 1)


def _shard():
    """This process's Shard (rank, world): joins torchrun's process group if launched, else Shard(0, 1)."""
    from ..bench.distributed import init_from_env

    return init_from_env(torch.device("cpu"))[0]


@dataclass(frozen=True)
class AttackSpec:
    """A library attack by name, built against any model at any eps (a factory ``model -> Attack``).

    name: a peer preset (``teamattack.baselines.PRESETS``: "pgd", "fgsm", "mdi2fgsm", "cw-9x100",
        "deepfool", "jsma", ...) or "team-linf" / "team-l2" (TEAM, fixed budget with eps, else
        its minimum-norm walk).
    eps: the budget (None: the preset's own, or none for minimum-norm attacks).
    steps: iterations (None: the attack's default). The PGD presets ("pgd", "pgd-l2") step
        2.5 eps / steps (Madry et al.) with a random start.
    Targeted-only presets (JSMA) aim at a random other class, drawn under the caller's seed.
    """

    name: str
    eps: float | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        from ..baselines import PRESETS

        if self.name not in TEAM_NAMES and self.name not in PRESETS:
            raise ValueError(f"unknown attack {self.name!r}; choose team-linf, team-l2 or a peer preset "
                             f"({', '.join(sorted(PRESETS))})")
        object.__setattr__(self, "eps", check_number("eps", self.eps, strict=True, allow_none=True))
        object.__setattr__(self, "steps", check_number("steps", self.steps, low=1, integer=True, allow_none=True))

    @property
    def norm(self) -> str:
        from ..baselines import PRESETS

        return TEAM_NAMES.get(self.name) or PRESETS[self.name].norm

    @property
    def targeted(self) -> bool:
        from ..baselines import PRESETS

        return self.name not in TEAM_NAMES and not PRESETS[self.name].untargeted

    def __call__(self, model: nn.Module, eps: float | None = None) -> Attack:
        """The attack against ``model`` at ``eps`` (default ``self.eps``)."""
        eps = self.eps if eps is None else eps
        if self.name in TEAM_NAMES:
            from ..attacks.team import TEAM

            kw = {} if self.steps is None else {"steps": self.steps}
            return TEAM(model, norm=TEAM_NAMES[self.name], eps=eps, **kw)
        from ..baselines import FIXED_EPS, PRESETS, make

        preset = PRESETS[self.name]
        kw: dict = {}
        if preset.budget == FIXED_EPS and eps is not None:
            kw["eps"] = float(eps)
        if self.steps is not None:
            kw["steps"] = self.steps
        if "alpha" in preset.kwargs and preset.kwargs.get("alpha") is not None and "random_start" in preset.kwargs:
            e = float(kw.get("eps", preset.kwargs["eps"]))
            k = int(kw.get("steps", preset.kwargs["steps"]))
            kw["alpha"] = 2.5 * e / k
        return make(self.name, model, targeted=self.targeted, **kw)

    def bounded(self, eps: float | None = None) -> bool:
        """Whether the attack built at ``eps`` (default ``self.eps``) stays within it (fixed budget)."""
        from ..baselines import FIXED_EPS, PRESETS

        eps = self.eps if eps is None else eps
        if self.name in TEAM_NAMES:
            return eps is not None
        return PRESETS[self.name].budget == FIXED_EPS

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _describe(attack) -> dict:
    if isinstance(attack, AttackSpec):
        return attack.describe()
    if isinstance(attack, Attack):
        d = {"name": getattr(attack, "name", type(attack).__name__), "norm": attack.norm}
        eps = getattr(attack, "eps", None)
        return d if eps is None else {**d, "eps": float(eps)}
    return {"name": getattr(attack, "__name__", repr(attack))}


def _bind(attack, model: nn.Module, eps: float | None) -> tuple[Attack, bool]:
    """(the attack against ``model``, whether it was built at ``eps``)."""
    if isinstance(attack, AttackSpec):
        return attack(model, eps), attack.bounded(eps)
    if isinstance(attack, Attack):  # pointed at the model attacked (train() trains its own copy)
        attack.model = model
        return attack, False
    if eps is not None and "eps" in inspect.signature(attack).parameters:
        return attack(model, eps=eps), True
    return attack(model), False


def _targets(y: torch.Tensor, classes: int, g: torch.Generator) -> torch.Tensor:
    return (y + torch.randint(1, classes, y.shape, generator=g)) % classes


def craft(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, eps: float | None = None,
          norm: str | None = None, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_adv, success) of ``attack`` against ``model`` (put in eval mode, restored), seeded per batch.

    Each batch b runs under ``torch.manual_seed(_derived_seed(seed, -1, b))`` (peers: their ``seed``).
    ``eps`` with an attack that was not built at it: the examples are brought into the budget of
    ``norm`` (:func:`within`). Targeted-only attacks aim at a random other class.
    """
    was_training = model.training
    model.eval()
    outs, oks = [], []
    try:
        for b, i in enumerate(range(0, len(y), batch_size)):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            xa, ok = _attack_batch(attack, model, xb, yb, _derived_seed(seed, -1, b), eps, norm)
            outs.append(xa)
            oks.append(ok)
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(oks)


def _attack_batch(attack, model, xb, yb, s: int, eps, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded attack call, model already in eval mode; returns (x_adv, success)."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", SaturationWarning)
        torch.manual_seed(s)
        atk, at_eps = _bind(attack, model, eps)
        if hasattr(atk, "seed"):
            atk.seed = s
        target = None
        if atk.targeted:
            with torch.no_grad():
                classes = model(xb[:1]).shape[1]
            target = _targets(yb, classes, torch.Generator().manual_seed(s))
        r = atk(xb, yb, target)
    x_adv = r.x_adv.detach()
    if eps is not None and not at_eps:
        x_adv = within(xb, x_adv, float(eps), norm or atk.norm)
        with torch.no_grad():
            pred = model(x_adv).argmax(1)
        ok = pred == target if target is not None else pred != yb
        return x_adv, ok
    return x_adv, r.success.detach()


def within(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x_adv brought into the budget: L2 / Linf projected onto the eps-ball; L0: x where it changes more
    than eps pixel positions."""
    if norm == "l0":
        far = l0(x, x_adv) > eps
        return torch.where(far.view(-1, *[1] * (x.dim() - 1)), x, x_adv)
    return project(x, x_adv, eps, norm)


class OnlinePerturb:
    """The ``perturb`` hook of online adversarial training (see the module docstring)."""

    def __init__(self, attack, eps: float | None, mix: float, ramp_epochs: float, seed: int,
                 norm: str | None = None, rank: int = 0) -> None:
        if not 0.0 < mix <= 1.0:
            raise ValueError(f"mix must be in (0, 1]; got {mix}")
        if ramp_epochs < 0:
            raise ValueError(f"ramp_epochs must be >= 0; got {ramp_epochs}")
        if ramp_epochs > 0 and eps is None:
            raise ValueError("an eps ramp needs eps")
        self.attack, self.eps, self.mix, self.ramp, self.seed, self.norm = attack, eps, mix, ramp_epochs, seed, norm
        self.rank = rank  # the process's rank (its attacks' seeds differ from the other ranks')

    def eps_at(self, epoch: int, step: int, steps_per_epoch: int) -> float | None:
        """The budget of this step: eps, or eps * (position / ramp_epochs) during the ramp."""
        if self.eps is None or self.ramp == 0:
            return self.eps
        t = (epoch + (step + 1) / steps_per_epoch) / self.ramp
        return self.eps * min(1.0, t)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int,
                 steps_per_epoch: int) -> TrainBatch:
        eps = self.eps_at(epoch, step, steps_per_epoch)
        model.eval()
        try:
            x_adv, ok = _attack_batch(self.attack, model, x, y, _derived_seed(self.seed, epoch, step, self.rank), eps,
                                      self.norm)
            extra = {"adv_success": float(ok.float().mean())}
            if self.ramp:
                extra["eps"] = float(eps)
            if self.mix == 1.0:
                with torch.no_grad():
                    extra["clean_loss"] = float(F.cross_entropy(model(x), y))
        finally:
            model.train()
        b = len(y)
        if self.mix == 1.0:
            return TrainBatch(x_adv, y, torch.full((b,), 1.0 / b), {"adv": torch.ones(b, dtype=torch.bool)}, extra)
        w = torch.cat([torch.full((b,), (1.0 - self.mix) / b), torch.full((b,), self.mix / b)])
        clean = torch.arange(2 * b) < b
        return TrainBatch(torch.cat([x, x_adv]), torch.cat([y, y]), w, {"clean": clean, "adv": ~clean}, extra)


class OfflinePerturb:
    """The ``perturb`` hook of offline training: each step adds its share of a fixed adversarial set
    (split over ``world`` processes like the batch: rank ``rank`` adds its slice of the share)."""

    def __init__(self, x_adv: torch.Tensor, y_adv: torch.Tensor, seed: int, rank: int = 0, world: int = 1) -> None:
        self.x_adv, self.y_adv, self.seed, self.rank, self.world = x_adv, y_adv, seed, rank, world

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int,
                 steps_per_epoch: int) -> TrainBatch:
        m = len(self.y_adv)
        k = math.ceil(m / steps_per_epoch)
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(_derived_seed(self.seed, epoch, -1)))
        idx = perm[step * k : (step + 1) * k]
        if self.world > 1:
            from ..zoo.train import rank_slice

            idx = rank_slice(idx, self.rank, self.world)
        xb, yb = torch.cat([x, self.x_adv[idx]]), torch.cat([y, self.y_adv[idx]])
        clean = torch.arange(len(yb)) < len(y)
        return TrainBatch(xb, yb, torch.full((len(yb),), 1.0 / len(yb)), {"clean": clean, "adv": ~clean})


def offline_examples(attack, natural: nn.Module, dataset: str, n: int | None, seed: int,
                     root: str | Path | None = None, eps: float | None = None, norm: str | None = None,
                     cache: str | Path | None = None, log=print) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The successful adversarial examples of a seeded n-subset of the train split against ``natural``.

    Returns (x_adv, y, info); ``cache`` (a .safetensors path) is reused when its description matches.
    """
    from safetensors import safe_open

    desc = {"attack": _describe(attack), "dataset": dataset, "n": n, "seed": seed, "eps": eps,
            "natural": getattr(natural, "card", {}).get("name")}
    if cache is not None and Path(cache).is_file():
        with safe_open(str(cache), framework="pt") as f:
            meta = f.metadata() or {}
            if json.loads(meta.get("desc", "null")) == desc:
                info = json.loads(meta["info"])
                log(f"offline examples: reusing {cache} ({info['n_adversarial']} examples)")
                return f.get_tensor("x_adv"), f.get_tensor("y"), info
    images, labels = data.load_arrays(dataset, "train", root)
    idx = torch.from_numpy(data.subset_indices(len(labels), n, seed)).long()
    x = _batch_to_float(torch.from_numpy(images[idx.numpy()].copy()))
    y = torch.from_numpy(labels[idx.numpy()].copy()).long()
    with torch.no_grad():
        correct = data.predict(natural.eval(), x) == y
    log(f"offline examples: attacking {int(correct.sum())} correctly classified of {len(y)} training images")
    x_adv, ok = craft(attack, natural, x[correct], y[correct], seed, eps=eps, norm=norm)
    info = {"n_subset": len(y), "n_attacked": int(correct.sum()), "n_adversarial": int(ok.sum())}
    x_adv, y_adv = x_adv[ok], y[correct][ok]
    if cache is not None:
        registry.save_state({"x_adv": x_adv, "y": y_adv}, cache,
                            metadata={"desc": json.dumps(desc), "info": json.dumps(info)})
    return x_adv, y_adv, info


def _weights_path(out: str | Path) -> Path:
    out = Path(out)
    return out if out.suffix == ".safetensors" else out.with_name(out.name + ".safetensors")


def adversarial_train(
    model_or_arch: str | nn.Module,
    attack,
    dataset: str | None = None,
    epochs: int = 10,
    out: str | Path = "runs/adversarial.safetensors",
    *,
    eps: float | None = None,
    mix: float = 1.0,
    ramp_epochs: float = 0.0,
    offline: bool = False,
    offline_n: int | None = None,
    natural: str | nn.Module | None = None,
    seed: int = 0,
    resume: bool = False,
    root: str | Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
    log=print,
    **train_kwargs,
) -> dict:
    """Adversarially train a zoo architecture; write ``out`` and its card; return the card.

    model_or_arch: an architecture name (trained from its seeded initialisation) or a zoo model
        (``card["arch"]`` names its architecture; training starts from its weights).
    attack: an :class:`AttackSpec`, an Attack (pointed at each model it attacks), or a factory
        ``model -> Attack`` (``model, eps=`` for a ramp that rebuilds it).
    eps: the budget (default: the spec's / the attack's ``eps``); examples of attacks built
        without it are projected onto the eps-ball.
    mix: the weight R of the adversarial loss, ``(1 - R) CE(clean) + R CE(adv)`` (online).
    ramp_epochs: eps grows linearly from 0 over this many epochs (online).
    offline: the paper's protocol: ``offline_n`` training images (seeded; None: all) attacked once
        against ``natural`` (a model or zoo name; default the zoo's model of this architecture,
        or the given model) and added to the training data.
    ``train_kwargs`` go to :func:`teamattack.zoo.train.train` (lr, batch_size, optimizer, ...).
    """
    eps = check_number("eps", eps, strict=True, allow_none=True)
    offline_n = check_number("offline_n", offline_n, low=1, integer=True, allow_none=True)
    threads = check_number("threads", threads, low=1, integer=True, allow_none=True)
    if isinstance(model_or_arch, str):
        if model_or_arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {model_or_arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        arch, init = model_or_arch, None
    else:
        arch = (getattr(model_or_arch, "card", {}) or {}).get("arch")
        if arch not in ARCHITECTURES:
            raise ValueError("a model needs card['arch'] naming a zoo architecture (teamattack.zoo.load sets it)")
        init = model_or_arch
    dataset = dataset or dataset_of(arch)
    if threads:
        torch.set_num_threads(threads)
    if eps is None:
        eps = attack.eps if isinstance(attack, AttackSpec) else getattr(attack, "eps", None)
    norm = attack.norm if isinstance(attack, (AttackSpec, Attack)) else None
    out = _weights_path(out)
    shard = _shard()
    extra: dict = {"adversarial": {"mode": "offline" if offline else "online", "attack": _describe(attack),
                                   "eps": eps}}
    if init is not None:
        extra["init"] = init.card.get("name", "given model")
    if offline:
        if natural is None:
            natural = init if init is not None else arch
        nat = registry.load(natural) if isinstance(natural, (str, Path)) else natural
        stem = out.name[: -len(".safetensors")]
        cache = out.with_name(stem + ".offline.safetensors")
        if shard.world > 1:  # rank 0 crafts and caches; the others read its cache
            if shard.is_main:
                offline_examples(attack, nat, dataset, offline_n, seed, root, eps=eps, norm=norm, cache=cache, log=log)
            shard.broadcast(None)  # a barrier
        x_adv, y_adv, info = offline_examples(attack, nat, dataset, offline_n, seed, root, eps=eps, norm=norm,
                                              cache=cache, log=log if shard.is_main else (lambda _m: None))
        extra["adversarial"].update(natural=(getattr(nat, "card", {}) or {}).get("name", "given model"),
                                    offline_n=offline_n, **info)
        hook = OfflinePerturb(x_adv, y_adv, seed, shard.rank, shard.world)
    else:
        extra["adversarial"].update(mix=mix, ramp_epochs=ramp_epochs)
        hook = OnlinePerturb(attack, eps, mix, ramp_epochs, seed, norm, shard.rank)
    return train(arch, out, dataset=dataset, epochs=epochs, seed=seed, resume=resume, root=root, threads=threads,
                 progress=progress, command=command, log=log, card_extra=extra, perturb=hook, init=init,
                 **train_kwargs)


def robust_accuracy(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                    eps: float | None = None, norm: str | None = None, batch_size: int = 128) -> float:
    """Accuracy on ``attack``'s examples of all n images (clean errors count as broken).

    The simple local helper of the cards and tests (``teamattack.evaluate`` is the full one).
    """
    model.eval()
    x_adv, _ = craft(attack, model, x, y, seed, eps=eps, norm=norm, batch_size=batch_size)
    with torch.no_grad():
        clean_ok = data.predict(model, x) == y
        adv_ok = data.predict(model, x_adv) == y
    return float((clean_ok & adv_ok).float().mean())


def record_robustness(weights: str | Path, eps: list[float], steps: int = 40, n: int | None = None, seed: int = 0,
                      root: str | Path | None = None, command: str | None = None) -> list[dict]:
    """Measure clean and PGD-``steps`` (Linf, step 2.5 eps / steps, random start) accuracy of a weights
    file on its dataset's test split (``n`` seeded images, default all) and write them into its card
    under ``robust_accuracy``; returns those entries."""
    import time

    model = registry.load(weights)
    card = registry.read_card(weights)
    x, y = data.load(card["dataset"], "test", n=n, seed=seed, root=root)
    clean = _accuracy(model, x, y)
    rows = []
    for e in eps:
        t0 = time.perf_counter()
        acc = robust_accuracy(model, AttackSpec("pgd", eps=e, steps=steps), x, y, seed=seed)
        rows.append({"attack": f"pgd-{steps} linf (step 2.5 eps / {steps}, random start)", "eps": e,
                     "clean_accuracy": clean, "robust_accuracy": acc, "n": len(y),
                     "seconds": round(time.perf_counter() - t0, 1), "command": command})
    card["robust_accuracy"] = rows
    registry.write_card(registry.card_path(registry.resolve(weights)), card)
    return rows


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((data.predict(model.eval(), x) == y).float().mean())


__all__ = ["AttackSpec", "OfflinePerturb", "OnlinePerturb", "adversarial_train", "craft", "offline_examples",
           "record_robustness", "robust_accuracy", "within"]

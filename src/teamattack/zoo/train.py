"""Deterministic, resumable training of the zoo's architectures (``teamattack train``).

- Deterministic given the seed: the initialisation uses ``torch.manual_seed(seed)``, and each
  epoch's shuffle and augmentation use a generator seeded by (seed, epoch), so a run resumed
  after an interruption follows the same path as an uninterrupted one (same thread count).
- A checkpoint is written atomically after every epoch: one file, ``<out stem>.ckpt.safetensors``,
  with the model and optimizer tensors and, in its metadata, the JSON (epoch, optimizer settings,
  history), so a crash leaves either the previous checkpoint or the new one (``<out stem>.ckpt.json``
  beside it is a readable copy of that JSON, not used to resume). Both are deleted when
  training completes (``keep_checkpoint=True`` keeps it). Nothing is pickled.
- The learning rate is a pure function of the step (``constant``, ``cosine``, or ``onecycle`` =
  linear warm-up over the first 15% of steps from lr/10, then cosine to 0), so it needs no state.
- Augmentation (``augment=True``): random crop after zero-padding (4 px for 32x32, 2 px for
  28x28, 1 px for 8x8) and, for CIFAR-10 only, a random horizontal flip.
- ``perturb`` (adversarial training, teamattack.defenses.adversarial): a per-batch hook that
  replaces the batch by the one to train on (:class:`TrainBatch`); its running losses per part
  (e.g. clean / adversarial) and extra numbers go to the progress bar and the history.
- Several processes (``torchrun --nproc-per-node K``; teamattack.bench.distributed.init_from_env):
  every rank builds the same seeded model and draws the same permutation (and augmentation) of
  each global batch, then takes its contiguous slice (:func:`rank_slice`); the ``perturb`` hook
  sees only that slice. Each rank's loss is scaled by its share of the step's rows and the
  gradients are summed with one all_reduce, so a step is one process's full-batch step up to the
  order of float additions (BatchNorm statistics stay per rank, as under DDP without
  SyncBatchNorm; rank 0's buffers are sent to every rank after each epoch). Only rank 0 logs
  and writes the checkpoint, the weights and the card (``world_size``).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from .. import data
from .architectures import build, dataset_of
from .registry import save, save_state, write_card

DEFAULTS: dict[str, dict] = {
    "digits": {"optimizer": "adam", "lr": 3e-3, "batch_size": 64, "weight_decay": 0.0, "schedule": "cosine"},
    "mnist": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "weight_decay": 0.0, "schedule": "cosine"},
    "cifar10": {"optimizer": "sgd", "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4, "schedule": "onecycle"},
}
SCHEDULES = ("constant", "cosine", "onecycle")
OPTIMIZERS = ("adam", "sgd")


def lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    if schedule == "constant" or total <= 0:
        return lr
    t = min(step, total) / total
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "onecycle":
        w = 0.15
        if t < w:
            return lr * (0.1 + 0.9 * t / w)
        return lr * 0.5 * (1.0 + math.cos(math.pi * (t - w) / (1 - w)))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def augment_batch(x: torch.Tensor, g: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random crop of the zero-padded batch (offsets in [0, 2 pad]) and optional horizontal flip."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    i = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    j = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (i[:, None] + torch.arange(h))[:, None, :, None]
    cols = (j[:, None] + torch.arange(w))[:, None, None, :]
    out = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        m = torch.rand(b, generator=g) < 0.5
        out[m] = out[m].flip(3)
    return out


@dataclass
class TrainBatch:
    """The batch a ``perturb`` hook hands back to :func:`train`.

    The loss is ``sum(weight * cross_entropy(model(x), y))`` (``weight``: one non-negative number
    per row). ``parts`` names groups of rows (boolean masks, e.g. "clean" / "adv"): the mean
    cross-entropy of each is recorded as ``<name>_loss``; ``extra`` holds other per-batch numbers
    (averaged over the epoch under their own name).
    """

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


# perturb(model, x, y, epoch, step, steps_per_epoch) -> TrainBatch; called with the model in train mode
Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor, int, int, int], TrainBatch]


def rank_slice(idx: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of a global batch's rows (sizes differ by at most one)."""
    return torch.tensor_split(idx, world)[rank]


def _all_reduce_grads(model: nn.Module) -> None:
    """Sum every parameter's gradient over the ranks (one flat buffer; a missing gradient counts as 0)."""
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p))


def _broadcast_buffers(model: nn.Module) -> None:
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b, src=0)


def _sum_over_ranks(values: list[float]) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _batch_to_float(images: torch.Tensor) -> torch.Tensor:
    t = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    return t.permute(0, 3, 1, 2).contiguous()


def temperature_loss_scale(optimizer: str, temperature: float) -> float:
    """The factor on a loss computed at temperature G: G for SGD, 1 for Adam.

    The loss of softmax(Z / G) has gradients G times smaller at the logits Z than at G = 1. Adam
    is invariant to that scale; SGD is not, so its loss is multiplied by G to keep the step size a
    learning rate tuned at G = 1 assumes (without it a CIFAR-10 net at G = 100 does not leave chance
    accuracy in a few epochs).
    """
    return float(temperature) if optimizer == "sgd" else 1.0


def _make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _ckpt_paths(out: Path) -> tuple[Path, Path]:
    """The checkpoint (``<stem>.ckpt.safetensors``, the one file resuming trusts) and a readable copy of
    its JSON (``<stem>.ckpt.json``; read only for checkpoints of the older two-file format)."""
    stem = out.name.removesuffix(".safetensors")
    return out.with_name(stem + ".ckpt.safetensors"), out.with_name(stem + ".ckpt.json")


CKPT_META_KEY = "checkpoint"  # safetensors metadata entry holding the checkpoint's JSON


class CheckpointError(ValueError):
    """A training checkpoint that cannot be resumed from (unreadable, or its parts disagree)."""


def _save_checkpoint(out: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    """One atomic file: model and optimizer tensors, with the JSON (epoch, settings, history,
    optimizer settings) in the safetensors metadata, so a crash leaves the old checkpoint or the new
    one, never a mixture."""
    tpath, jpath = _ckpt_paths(out)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    meta = dict(meta, optim_param_groups=sd["param_groups"], optim_scalars=scalars)
    save_state(tensors, tpath, metadata={"epoch": str(meta["epoch"]), CKPT_META_KEY: json.dumps(meta)})
    write_card(jpath, meta)  # a readable copy for people; resuming reads the metadata above


def _read_checkpoint(tpath: Path, jpath: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """(meta, tensors) of the checkpoint, None when there is none; CheckpointError when it is unusable."""
    if not tpath.is_file():
        return None  # (a lone .ckpt.json is the leftover of a finished run's clean-up)
    try:
        with safe_open(str(tpath), framework="pt") as f:
            md = f.metadata() or {}
        tensors = load_file(str(tpath), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{tpath}: unreadable checkpoint ({err}); delete it to start again") from None
    if CKPT_META_KEY in md:
        return json.loads(md[CKPT_META_KEY]), tensors
    # the older two-file format: the JSON beside it must describe the same epoch
    if not jpath.is_file():
        raise CheckpointError(f"{tpath}: a checkpoint without its {jpath.name}; delete it to start again")
    meta = json.loads(jpath.read_text())
    if str(meta.get("epoch")) != md.get("epoch"):
        raise CheckpointError(f"{tpath} (epoch {md.get('epoch')}) and {jpath.name} (epoch {meta.get('epoch')}) "
                              "disagree: the run was interrupted between them; delete both to start again")
    return meta, tensors


def _load_checkpoint(out: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    got = _read_checkpoint(*_ckpt_paths(out))
    if got is None:
        return None
    meta, tensors = got
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, st in meta["optim_scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["optim_param_groups"]})
    return meta


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> tuple[int, int]:
    """(number correct, number of examples) with the model in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    correct = int((data.predict(model, x, batch_size) == y).sum())
    model.train(was_training)
    return correct, len(y)


def train(
    arch: str,
    out: str | Path,
    dataset: str | None = None,
    epochs: int = 10,
    seed: int = 0,
    resume: bool = False,
    lr: float | None = None,
    batch_size: int | None = None,
    augment: bool = False,
    optimizer: str | None = None,
    schedule: str | None = None,
    weight_decay: float | None = None,
    root: str | Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    keep_checkpoint: bool = False,
    command: str | None = None,
    log=print,
    temperature: float = 1.0,
    soft_targets: torch.Tensor | None = None,
    card_extra: dict | None = None,
    perturb: Perturb | None = None,
    init: nn.Module | None = None,
) -> dict:
    """Train ``arch`` on ``dataset``'s train split, write ``out`` (.safetensors) and its card; return the card.

    ``temperature`` G trains on softmax(Z / G) (defensive distillation); ``soft_targets`` (one
    probability row per training image, in the train split's order) replaces the hard labels by a
    soft cross-entropy at G. The saved model outputs Z (deployed at temperature 1).
    ``card_extra`` is merged into the card (and must match on ``resume``). ``perturb`` (a
    :data:`Perturb` hook) replaces every batch by the one it returns (adversarial training);
    ``init`` is a model of the same architecture whose weights training starts from.
    """
    from tqdm import tqdm

    from ..validation import check_number

    dataset_of(arch)  # ValueError naming the architectures
    epochs = check_number("epochs", epochs, low=1, integer=True)
    seed = check_number("seed", seed, low=0, integer=True)
    lr = check_number("lr", lr, strict=True, allow_none=True)
    batch_size = check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
    weight_decay = check_number("weight_decay", weight_decay, allow_none=True)
    threads = check_number("threads", threads, low=1, integer=True, allow_none=True)
    temperature = check_number("temperature", temperature, strict=True)
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    dataset = dataset or dataset_of(arch)
    if data.input_shape(dataset) != data.input_shape(dataset_of(arch)):
        raise ValueError(f"architecture {arch} takes {dataset_of(arch)} inputs, not {dataset}")
    d = DEFAULTS[data._check_name(dataset)]
    optimizer = optimizer or d["optimizer"]
    lr = d["lr"] if lr is None else lr
    batch_size = batch_size or d["batch_size"]
    weight_decay = d["weight_decay"] if weight_decay is None else weight_decay
    schedule = schedule or d["schedule"]
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    from ..bench.distributed import init_from_env

    shard, _ = init_from_env(torch.device("cpu"))  # Shard(0, 1) without a launcher
    if batch_size < shard.world:
        raise ValueError(f"batch_size {batch_size} is smaller than the {shard.world} processes sharing each batch")
    if not shard.is_main:
        log, progress = (lambda _m: None), False

    images, labels = data.load_arrays(dataset, "train", root)
    x_all = torch.from_numpy(images.copy())
    y_all = torch.from_numpy(labels.copy()).long()
    x_test, y_test = data.load(dataset, "test", root=root)
    n = len(y_all)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    side = data.input_shape(dataset)[1]
    pad = {32: 4, 28: 2}.get(side, 1)
    flip = data._check_name(dataset) == "cifar10"

    torch.manual_seed(seed)
    model = build(arch)
    opt = _make_optimizer(model, optimizer, lr, weight_decay)
    settings = {"arch": arch, "dataset": dataset, "seed": seed, "epochs": epochs, "optimizer": optimizer,
                "lr": lr, "schedule": schedule, "weight_decay": weight_decay, "batch_size": batch_size,
                "augment": augment}
    if temperature != 1.0 or soft_targets is not None or card_extra:
        settings["temperature"] = float(temperature)
        settings["soft_labels"] = soft_targets is not None
    scale = temperature_loss_scale(optimizer, temperature)
    if scale != 1.0:
        settings["loss_scale"] = scale
    if card_extra:
        settings.update(card_extra)
    if perturb is not None and soft_targets is not None:
        raise ValueError("perturb and soft_targets cannot be combined")
    if init is not None:
        model.load_state_dict(init.state_dict(), strict=True)
    if soft_targets is not None and soft_targets.shape[0] != n:
        raise ValueError(f"soft_targets has {soft_targets.shape[0]} rows; the train split has {n} images")
    start_epoch, history, elapsed, runs = 0, [], 0.0, []
    if resume:
        meta = _load_checkpoint(out, model, opt)
        if meta is None:
            log(f"no checkpoint beside {out}; starting from scratch")
        else:
            changed = {k: (meta["settings"].get(k), v) for k, v in settings.items()
                       if k != "epochs" and meta["settings"].get(k) != v}
            if changed:
                raise ValueError(f"--resume with settings that differ from the checkpoint's: {changed}")
            start_epoch, history, elapsed = meta["epoch"], meta["history"], meta["training_time_s"]
            runs = meta.get("runs") or [{"command": None, "from_epoch": 0, "epochs": meta["settings"]["epochs"]}]
            log(f"resuming {arch} after epoch {start_epoch} ({elapsed:.0f} s of training so far)")

    runs = runs + [{"command": command, "from_epoch": start_epoch, "epochs": epochs, "world_size": shard.world}]
    tty = sys.stderr.isatty()
    model.train()
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        loss_sum, correct, seen = 0.0, 0, 0
        terms: dict[str, list[float]] = {}  # name -> [sum, count] of the perturb hook's losses / numbers
        bar = tqdm(range(steps_per_epoch), desc=f"{arch} epoch {epoch + 1}/{epochs}", disable=not progress,
                   mininterval=1.0 if tty else 60.0, leave=tty, file=sys.stderr)
        for s in bar:
            idx = perm[s * batch_size : (s + 1) * batch_size]
            xb, yb = _batch_to_float(x_all[idx]), y_all[idx]
            if augment:  # the whole global batch, so that every rank draws the same numbers
                xb = augment_batch(xb, g, pad, flip)
            if shard.world > 1:
                mine = rank_slice(torch.arange(len(idx)), shard.rank, shard.world)
                idx, xb, yb = idx[mine], xb[mine], yb[mine]
            step_lr = lr_at(epoch * steps_per_epoch + s, total_steps, lr, schedule)
            for group in opt.param_groups:
                group["lr"] = step_lr
            if len(idx) == 0:  # more ranks than rows in this (last) batch: this rank adds nothing
                loss = logits = None
            else:
                if perturb is not None:
                    tb = perturb(model, xb, yb, epoch, s, steps_per_epoch)
                    xb, yb = tb.x, tb.y
                logits = model(xb)
                if soft_targets is not None:
                    loss = -(soft_targets[idx] * F.log_softmax(logits / temperature, dim=1)).sum(1).mean() * scale
                elif perturb is not None:
                    per = F.cross_entropy(logits / temperature, yb, reduction="none")
                    loss = (per * tb.weight).sum() * scale
                    per = per.detach()
                    for name, mask in tb.parts.items():
                        t = terms.setdefault(f"{name}_loss", [0.0, 0])
                        t[0], t[1] = t[0] + float(per[mask].sum()), t[1] + int(mask.sum())
                    for name, v in tb.extra.items():
                        t = terms.setdefault(name, [0.0, 0])
                        t[0], t[1] = t[0] + float(v) * len(idx), t[1] + len(idx)
                else:
                    loss = F.cross_entropy(logits / temperature, yb) * scale
            rows = 0 if logits is None else len(yb)
            opt.zero_grad(set_to_none=True)  # (after the hook: an attack may leave gradients behind)
            if shard.world > 1:
                # the losses are means over this rank's rows: weighted by its share of the step's
                # rows, their gradients summed over the ranks are the full batch's gradient
                (total,) = _sum_over_ranks([float(rows)])
                if loss is not None:
                    (loss * (rows / total)).backward()
                _all_reduce_grads(model)
            else:
                loss.backward()
            opt.step()
            if loss is not None:
                loss_sum += float(loss.detach()) / scale * rows  # reported unscaled
                correct += int((logits.argmax(1) == yb).sum())
                seen += rows
            if shard.is_main and (s % 20 == 0 or perturb is not None):
                running = {k: f"{v[0] / max(v[1], 1):.4f}" for k, v in terms.items()}
                bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", acc=f"{correct / max(seen, 1):.4f}",
                                **running, lr=f"{step_lr:.2e}", refresh=False)
        bar.close()
        if shard.world > 1:  # the epoch's numbers over every rank's rows; rank 0's buffers everywhere
            names = sorted(terms)
            sums = _sum_over_ranks([loss_sum, correct, seen] + [v for k in names for v in terms[k]])
            loss_sum, correct, seen = sums[0], int(sums[1]), int(sums[2])
            terms = {k: [sums[3 + 2 * i], sums[4 + 2 * i]] for i, k in enumerate(names)}
            _broadcast_buffers(model)
        tc, tn = evaluate(model, x_test, y_test)
        dt = time.time() - t0
        elapsed += dt
        running = {k: v[0] / max(v[1], 1) for k, v in terms.items()}
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                        **running, "test_accuracy": tc / tn, "seconds": round(dt, 1)})
        log(f"{arch} epoch {epoch + 1}/{epochs}: train loss {loss_sum / seen:.4f} acc {correct / seen:.4f} | "
            + "".join(f"{k} {v:.4f} | " for k, v in running.items())
            + f"test acc {tc / tn:.4f} ({tc}/{tn}) | {dt:.1f} s")
        if shard.is_main:
            _save_checkpoint(out, model, opt, {"epoch": epoch + 1, "settings": settings, "history": history, "runs": runs,
                                               "training_time_s": elapsed})

    model.eval()
    tc, tn = evaluate(model, x_test, y_test)
    test_set = f"{dataset} test split, all {tn} images"
    if data._check_name(dataset) == "cifar10" and tn == 1017:
        test_set = "CIFAR-10 test set: only its first 1017 images (the complete test set is not available here)"
    if data._check_name(dataset) == "digits":
        test_set = f"sklearn digits, fixed test third ({tn} images; teamattack.data.digits_split_indices)"
    card = {
        "name": out.name[: -len(".safetensors")],
        **settings,
        "test_accuracy": tc / tn,
        "test_correct": tc,
        "test_n": tn,
        "test_set": test_set,
        "train_accuracy_last_epoch": history[-1]["train_accuracy"] if history else None,
        "command": command,
        # every invocation that contributed epochs (a resume appends one); when a resume changed
        # --epochs, the epochs before its from_epoch followed the earlier schedule
        "runs": runs,
        "schedule_changed_on_resume": len({r["epochs"] for r in runs}) > 1,
        "training_time_s": round(elapsed, 1),
        "threads": torch.get_num_threads(),
        "world_size": shard.world,  # processes that shared each batch (teamattack.bench.distributed)
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "history": history,
    }
    if shard.is_main:
        save(model, out, card)
        if not keep_checkpoint:
            for p in _ckpt_paths(out):
                p.unlink(missing_ok=True)
        log(f"wrote {out} and {out.with_suffix('.json')}: test accuracy {tc / tn:.4f} ({tc}/{tn})")
    shard.broadcast(None)  # the ranks leave together (a rank tearing the process group down early aborts)
    return card

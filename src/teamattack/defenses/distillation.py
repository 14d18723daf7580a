"""Defensive distillation (Papernot et al. 2016), trained with the zoo's training loop.

    result = teamattack.defenses.distill("digits-cnn", "digits", temperature=100, epochs=20,
                                         out="runs/digits-G100.safetensors")
    model = teamattack.zoo.load(result.student)      # deployed at temperature 1: outputs Z

The four steps: (1) the teacher is trained on the hard labels with softmax(Z / G); (2) its soft
labels softmax(Z_teacher / G) are computed on the training set; (3) a student of the same
architecture is trained on them at G (soft cross-entropy); (4) the student is deployed at
temperature 1, that is its logits Z are used as they are. Training G-times-smaller logits makes
the deployed logits about G times larger, so softmax(Z) saturates in float32 at high G.

Both trainings are :func:`teamattack.zoo.train.train` (seeded, a checkpoint per epoch, resumable
after ``kill -9`` with the same final weights). The teacher is written beside the student as
``<stem>-teacher.safetensors``; a finished teacher (or student) whose card matches is reused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data
from ..zoo import registry
from ..zoo.train import DEFAULTS, _batch_to_float, temperature_loss_scale, train


@dataclass(frozen=True)
class Distilled:
    """The two trained models of a distillation run: weights paths and their cards."""

    teacher: Path
    student: Path
    teacher_card: dict
    student_card: dict
    temperature: float


@torch.no_grad()
def soft_labels(model: nn.Module, dataset: str, temperature: float, root: str | Path | None = None,
                batch_size: int = 500) -> torch.Tensor:
    """softmax(Z / G) of ``model`` on ``dataset``'s train split, in the split's order (float32)."""
    images, _ = data.load_arrays(dataset, "train", root)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        xb = _batch_to_float(torch.from_numpy(images[i : i + batch_size].copy()))
        out.append(torch.softmax(model(xb).double() / temperature, dim=1).float())
    model.train(was_training)
    return torch.cat(out)


def _weights_path(out: str | Path) -> Path:
    out = Path(out)
    return out if out.suffix == ".safetensors" else out.with_name(out.name + ".safetensors")


def teacher_path(student_out: str | Path) -> Path:
    """Where :func:`distill` writes the teacher of the student ``student_out``."""
    s = _weights_path(student_out)
    return s.with_name(s.name[: -len(".safetensors")] + "-teacher.safetensors")


def _scale_of(dataset: str, g: float, train_kwargs: dict) -> dict:
    """The card's ``loss_scale`` entry that a training at G with these settings writes (none if 1)."""
    optimizer = train_kwargs.get("optimizer") or DEFAULTS[data._check_name(dataset)]["optimizer"]
    scale = temperature_loss_scale(optimizer, g)
    return {"loss_scale": scale} if scale != 1.0 else {}


def distill(
    teacher: str | nn.Module,
    dataset: str | None = None,
    temperature: float = 100.0,
    epochs: int = 10,
    seed: int = 0,
    out: str | Path = "runs/distilled.safetensors",
    teacher_epochs: int | None = None,
    resume: bool = True,
    root: str | Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
    log=print,
    **train_kwargs,
) -> Distilled:
    """Defensive distillation at temperature ``temperature`` (G); returns the two weights files and cards.

    teacher: a zoo architecture name (a teacher is trained at G for ``teacher_epochs``, default
    ``epochs``) or a trained model (its soft labels at G are used as they are; its ``card["arch"]``
    names the student's architecture). The student has the teacher's architecture and is trained
    for ``epochs`` on the soft labels at G, seeded with ``seed + 1``. ``resume``: continue from a
    checkpoint and reuse finished models with matching cards. ``train_kwargs`` go to both
    trainings (lr, batch_size, optimizer, schedule, weight_decay).
    """
    from ..zoo.architectures import ARCHITECTURES, dataset_of

    g = float(temperature)
    if not g > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    student_out = _weights_path(out)
    t_out = teacher_path(student_out)
    if isinstance(teacher, str):
        if teacher not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {teacher!r}; choose one of {', '.join(ARCHITECTURES)}")
        arch = teacher
        dataset = dataset or dataset_of(arch)
        t_epochs = teacher_epochs or epochs
        t_expect = {"arch": arch, "dataset": dataset, "seed": seed, "epochs": t_epochs, "temperature": g,
                    **_scale_of(dataset, g, train_kwargs), **train_kwargs}
        t_card = registry.finished_card(t_out, t_expect) if resume else None
        if t_card is None:
            log(f"distillation G={g:g}: training the teacher ({arch}, {t_epochs} epochs)")
            t_card = train(arch, t_out, dataset=dataset, epochs=t_epochs, seed=seed, resume=resume, root=root,
                           threads=threads, progress=progress, command=command, log=log, temperature=g,
                           card_extra={"distillation_role": "teacher"}, **train_kwargs)
        else:
            log(f"distillation G={g:g}: reusing the teacher {t_out}")
        teacher_model = registry.load(t_out)
        teacher_name = t_out.name
    else:
        card = getattr(teacher, "card", {}) or {}
        arch = card.get("arch")
        if arch not in ARCHITECTURES:
            raise ValueError("a teacher model needs card['arch'] naming a zoo architecture (teamattack.zoo.load sets it)")
        dataset = dataset or card.get("dataset") or dataset_of(arch)
        teacher_model, t_card, t_out = teacher, card, None
        teacher_name = card.get("name", "given model")
    if threads:
        torch.set_num_threads(threads)

    extra = {"distillation_role": "student", "teacher": teacher_name,
             "teacher_test_accuracy": t_card.get("test_accuracy")}
    s_expect = {"arch": arch, "dataset": dataset, "seed": seed + 1, "epochs": epochs, "temperature": g, **extra,
                **_scale_of(dataset, g, train_kwargs), **train_kwargs}
    s_card = registry.finished_card(student_out, s_expect) if resume else None
    if s_card is None:
        targets = soft_labels(teacher_model, dataset, g, root)
        log(f"distillation G={g:g}: training the student ({arch}, {epochs} epochs) on the teacher's soft labels")
        s_card = train(arch, student_out, dataset=dataset, epochs=epochs, seed=seed + 1, resume=resume, root=root,
                       threads=threads, progress=progress, command=command, log=log, temperature=g,
                       soft_targets=targets, card_extra=extra, **train_kwargs)
    else:
        log(f"distillation G={g:g}: reusing the student {student_out}")
    return Distilled(teacher=t_out if t_out is not None else Path(teacher_name), student=student_out,
                     teacher_card=t_card, student_card=s_card, temperature=g)


__all__ = ["Distilled", "distill", "soft_labels", "teacher_path"]

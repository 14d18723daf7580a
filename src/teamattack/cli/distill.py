"""`teamattack distill`: defensive distillation (teacher at G, soft labels, student at G, deployed at 1)."""
from __future__ import annotations

from .common import UsageError, command_line, dataset_name, load_model, nonneg_int, positive_float, positive_int, progress


def register(sub) -> None:
    from ..zoo.architectures import ARCHITECTURES

    p = sub.add_parser(
        "distill",
        help="defensive distillation at temperature G (teacher + student, resumable)",
        description="Train a teacher with softmax(Z/G), label the training set with its soft labels at G, "
                    "train a student of the same architecture on them at G; the student (OUT) is deployed at "
                    "temperature 1. The teacher goes beside OUT as <stem>-teacher.safetensors. Both trainings "
                    "write a checkpoint every epoch; --resume continues after an interruption and reuses a "
                    "finished teacher.",
    )
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=None,
                   help="architecture of teacher and student (a teacher is trained)")
    p.add_argument("--teacher", default=None, help="use this trained model (zoo name or weights) as the teacher")
    p.add_argument("--temperature", "-G", type=positive_float, required=True, help="distillation temperature G (> 0)")
    p.add_argument("--dataset", default=None, type=dataset_name, help="digits | mnist | cifar10 (default: the architecture's)")
    p.add_argument("--data-root", default=None, help="folder with the datasets (default: $TEAMATTACK_DATA)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs of the student (and of the teacher)")
    p.add_argument("--teacher-epochs", type=positive_int, default=None, help="epochs of the teacher (default --epochs)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate of both (default per dataset)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="teacher seed; the student uses seed + 1")
    p.add_argument("--out", required=True, help="student weights (.safetensors; cards beside)")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints / reuse finished models")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..defenses import distill

    if (args.arch is None) == (args.teacher is None):
        raise UsageError("give exactly one of --arch (train a teacher) or --teacher (use a trained one)")
    teacher = args.arch
    if args.teacher is not None:
        teacher = load_model(args.teacher)
    kw = {} if args.lr is None else {"lr": args.lr}
    d = distill(teacher, args.dataset, temperature=args.temperature, epochs=args.epochs, seed=args.seed,
                out=args.out, teacher_epochs=args.teacher_epochs, resume=args.resume, root=args.data_root,
                threads=args.threads, progress=progress(args), command=command_line(),
                log=lambda m: print(m, flush=True), **kw)
    print(f"G={d.temperature:g}: teacher {d.teacher} test accuracy {d.teacher_card.get('test_accuracy', float('nan')):.4f}; "
          f"student {d.student} test accuracy {d.student_card['test_accuracy']:.4f}")
    return 0

"""`teamattack train`: train a zoo architecture, write safetensors + a JSON card."""
from __future__ import annotations

from .common import UsageError, command_line, dataset_name, nonneg_float, nonneg_int, positive_float, positive_int, prob


def register(sub) -> None:
    from ..zoo.architectures import ARCHITECTURES
    from ..zoo.train import OPTIMIZERS, SCHEDULES

    p = sub.add_parser(
        "train",
        help="train a zoo architecture (deterministic, checkpoint every epoch, --resume)",
        description="Train a zoo architecture on a dataset's train split; writes OUT (.safetensors) "
                    "and OUT's card (.json) with the test accuracy and this command. A checkpoint "
                    "beside OUT is written every epoch; --resume continues from it.",
    )
    p.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES), help="architecture")
    p.add_argument("--dataset", default=None, type=dataset_name, help="digits | mnist | cifar10 (default: the architecture's)")
    p.add_argument("--data-root", default=None, help="folder with the datasets (default: $TEAMATTACK_DATA)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--out", required=True, help="weights file to write (.safetensors; the card goes beside it)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default per dataset)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="adam | sgd (momentum 0.9, Nesterov); default adam, sgd for cifar10")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning-rate schedule per step (default cosine, onecycle for cifar10)")
    p.add_argument("--weight-decay", type=nonneg_float, default=None)
    p.add_argument("--augment", action="store_true",
                   help="random crop after zero padding (+ horizontal flip on cifar10)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: $OMP_NUM_THREADS if set, else one per core)")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after the last epoch")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    a = p.add_argument_group("adversarial training (teamattack.defenses.adversarial_train)")
    a.add_argument("--adversarial", metavar="ATTACK", default=None,
                   help="train on ATTACK's examples: team-linf | team-l2 | a peer preset (pgd, fgsm, mdi2fgsm, ...)")
    a.add_argument("--eps", type=positive_float, default=None, help="the attack's budget (default: the preset's)")
    a.add_argument("--adv-steps", type=positive_int, default=None,
                   help="the attack's iterations (PGD: step 2.5 eps / steps, random start)")
    a.add_argument("--mix", type=prob, default=1.0,
                   help="weight R of the adversarial loss: (1-R) CE(clean) + R CE(adv) (online; default 1)")
    a.add_argument("--ramp-epochs", type=nonneg_float, default=0.0,
                   help="eps grows linearly from 0 over this many epochs (online; default 0: no ramp)")
    a.add_argument("--offline", action="store_true",
                   help="the paper's protocol: examples of the natural model crafted once, added to the data")
    a.add_argument("--offline-n", type=positive_int, default=None,
                   help="training images attacked for --offline (seeded subset; default all)")
    a.add_argument("--natural", default=None,
                   help="natural model attacked for --offline (zoo name or weights; default the zoo's --arch)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Under torchrun the ranks share each batch (teamattack.zoo.train); only rank 0 prints and writes."""
    import os
    import sys

    from ..bench import distributed

    try:
        rc = _run(args)
    finally:
        distributed.shutdown()
    if distributed.launched():
        # torch 2.13 + gloo: about one launched run in four aborted at interpreter exit, after its work
        # was done and the group destroyed ("terminate called without an active exception", no Python
        # frame), failing the torchrun; 0 of 10 did when the process leaves at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _print_result(card: dict) -> None:
    from ..bench import distributed

    if (distributed.current() or distributed.Shard()).is_main:
        print(f"test accuracy {card['test_accuracy']:.4f} ({card['test_correct']}/{card['test_n']})")


def _run(args) -> int:
    from ..zoo.train import train

    if args.adversarial is None:
        given = [o for o, v in (("--eps", args.eps), ("--adv-steps", args.adv_steps), ("--offline", args.offline),
                                ("--offline-n", args.offline_n), ("--natural", args.natural),
                                ("--ramp-epochs", args.ramp_epochs or None),
                                ("--mix", None if args.mix == 1.0 else args.mix)) if v]
        if given:
            raise UsageError(f"{', '.join(given)} need(s) --adversarial ATTACK")
    else:
        return _run_adversarial(args)
    card = train(
        args.arch, args.out, dataset=args.dataset, epochs=args.epochs, seed=args.seed, resume=args.resume,
        lr=args.lr, batch_size=args.batch_size, augment=args.augment, optimizer=args.optimizer,
        schedule=args.schedule, weight_decay=args.weight_decay, root=args.data_root, threads=args.threads,
        progress=not args.no_progress, keep_checkpoint=args.keep_checkpoint, command=command_line(),
        log=lambda m: print(m, flush=True),
    )
    _print_result(card)
    return 0


def _run_adversarial(args) -> int:
    from ..defenses.adversarial import AttackSpec, adversarial_train

    if args.augment:
        raise UsageError("--augment is not combined with --adversarial")
    spec = AttackSpec(args.adversarial, eps=args.eps, steps=args.adv_steps)
    card = adversarial_train(
        args.arch, spec, args.dataset, epochs=args.epochs, out=args.out, mix=args.mix, ramp_epochs=args.ramp_epochs,
        offline=args.offline, offline_n=args.offline_n, natural=args.natural, seed=args.seed, resume=args.resume,
        root=args.data_root, threads=args.threads, progress=not args.no_progress, command=command_line(),
        log=lambda m: print(m, flush=True), lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
        schedule=args.schedule, weight_decay=args.weight_decay, keep_checkpoint=args.keep_checkpoint,
    )
    _print_result(card)
    return 0

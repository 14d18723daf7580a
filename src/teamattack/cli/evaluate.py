"""`teamattack evaluate`: clean accuracy of a zoo model (or weights file) on a dataset's test split."""
from __future__ import annotations

import time

from .common import (add_data_options, dataset_for, device, device_name, load_model, nonneg_int, positive_int,
                     write_json)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="clean test accuracy of a model",
                       description="Accuracy of a zoo model (name or .safetensors path with its card) "
                                   "on the test split; prints and optionally writes {accuracy, n}.")
    p.add_argument("--model", required=True, help="zoo name (e.g. digits-cnn) or path to a .safetensors file")
    add_data_options(p, dataset_default=None)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("-n", type=positive_int, default=None, help="evaluate on a seeded random subset of n images")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--device", default=None, type=device_name, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--json", default=None, help="write the result here as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import data

    t0 = time.time()
    model = load_model(args.model, args.weights, device(args.device))
    dataset = dataset_for(model, args.dataset, args.model)  # --dataset, else the card's; checked to fit
    x, y = data.load(dataset, args.split, n=args.n, seed=args.seed, root=args.data_root)
    correct = int((data.predict(model, x, args.batch_size) == y).sum())
    result = {"model": str(args.model), "dataset": dataset, "split": args.split,
              "accuracy": correct / len(y), "correct": correct, "n": len(y),
              "seconds": round(time.time() - t0, 2)}
    print(f"{args.model} on {dataset} {args.split}: accuracy {result['accuracy']:.4f} ({correct}/{len(y)})")
    if args.json:
        write_json(args.json, result)
    return 0

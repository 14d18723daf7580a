"""The results of `evaluate` and `robustness_curve`: dataclasses with to_dict and a Markdown table."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


def fmt_eps(e: float) -> str:
    return f"{float(e):.6g}"


@dataclass
class AttackRun:
    """One attack at one eps.

    robust:   per image (all n, in order): still robust after this attack (clean errors: False).
              Cascade: after this attack and the ones before it; otherwise this attack alone.
    attacked: images the attack ran on; broken: how many of them it broke within eps;
    outside:  successes that left the eps-ball (not counted as broken).
    seconds, gradients, forwards, ran_on: the work of this run and the images it was spent on
              (0 where a single run is reused at a further eps: its work counts at the first eps).
    """

    attack: str
    eps: float
    robust: list[bool]
    attacked: int
    broken: int
    outside: int = 0
    seconds: float = 0.0
    gradients: int = 0
    forwards: int = 0
    ran_on: int = 0
    reused: bool = False  # carried over from an earlier evaluation (`evaluate(..., reuse=)`)

    @property
    def accuracy(self) -> float:
        return sum(self.robust) / len(self.robust) if self.robust else float("nan")


@dataclass
class RobustAccuracy:
    """`teamattack.evaluate`'s answer: clean and robust accuracy over ALL n images, per eps.

    clean / clean_correct: the clean accuracy and per-image correctness (clean errors count as
    broken at every eps, as in AutoAttack / RobustBench). runs: one `AttackRun` per (eps, attack).
    per_attack[a][i]: attack a's robust accuracy at eps[i] (cascade: after a and the ones before
    it, as AutoAttack prints); worst[i]: an image is robust only if every attack failed.
    """

    norm: str
    eps: list[float]
    n: int
    clean: float
    clean_correct: list[bool]
    attacks: list[str]
    cascade: bool
    runs: list[AttackRun] = field(default_factory=list)

    @classmethod
    def from_dict(cls, doc: dict) -> RobustAccuracy:
        """The evaluation a `to_dict` document (an `evaluate --json` file) holds."""
        try:
            runs = [AttackRun(**r) for r in doc["runs"]]
            return cls(doc["norm"], [float(e) for e in doc["eps"]], int(doc["n"]), float(doc["clean_accuracy"]),
                       [bool(c) for c in doc["clean_correct"]], list(doc["attacks"]), bool(doc["cascade"]), runs)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a robust-accuracy document ({type(e).__name__}: {e})") from None

    def run(self, attack: str, eps: float) -> AttackRun:
        for r in self.runs:
            if r.attack == attack and r.eps == eps:
                return r
        raise KeyError((attack, eps))

    @property
    def per_attack(self) -> dict[str, list[float]]:
        return {a: [self.run(a, e).accuracy for e in self.eps] for a in self.attacks}

    def worst_flags(self, eps: float, attacks: Sequence[str] | None = None) -> list[bool]:
        """Per image: robust against every attack (or every one of `attacks`) at eps."""
        flags = list(self.clean_correct)
        for a in self.attacks if attacks is None else attacks:
            flags = [f and r for f, r in zip(flags, self.run(a, eps).robust)]
        return flags

    def worst_of(self, attacks: Sequence[str]) -> list[float]:
        """Per eps: the accuracy when an image counts as broken if any of `attacks` broke it
        (independent runs; in a cascade only the prefixes of the attack order mean that)."""
        return [sum(self.worst_flags(e, attacks)) / self.n if self.n else float("nan") for e in self.eps]

    @property
    def worst(self) -> list[float]:
        return self.worst_of(self.attacks)

    @property
    def groups(self) -> dict[str, list[str]]:
        """TEAM's attacks and the peers, where either group has two or more (independent runs only)."""
        team = [a for a in self.attacks if a.startswith("team")]
        peers = [a for a in self.attacks if not a.startswith("team")]
        if self.cascade:
            return {}
        return {name: g for name, g in (("team, every mode", team), ("peers, worst case", peers))
                if len(g) > 1 and len(g) < len(self.attacks)}

    def seconds(self, attack: str) -> float:
        """Wall seconds the attack took, summed over eps."""
        return sum(r.seconds for r in self.runs if r.attack == attack)

    def gradients(self, attack: str) -> int:
        return sum(r.gradients for r in self.runs if r.attack == attack)

    def to_dict(self) -> dict:
        """JSON-ready: the accuracies, the per-image flags and the work of every run."""
        return {"kind": "robust-accuracy", "norm": self.norm, "eps": list(self.eps), "n": self.n,
                "clean_accuracy": self.clean, "cascade": self.cascade, "attacks": list(self.attacks),
                "robust_accuracy": {a: {fmt_eps(e): v for e, v in zip(self.eps, accs)}
                                    for a, accs in self.per_attack.items()},
                "worst_case": {fmt_eps(e): v for e, v in zip(self.eps, self.worst)},
                "groups": {g: {"attacks": m, "robust_accuracy": {fmt_eps(e): v for e, v in zip(self.eps, self.worst_of(m))},
                               "seconds": sum(self.seconds(a) for a in m)} for g, m in self.groups.items()},
                "cost": {a: {"seconds": self.seconds(a), "gradients": self.gradients(a)} for a in self.attacks},
                "clean_correct": list(self.clean_correct),
                "runs": [asdict(r) for r in self.runs]}

    def plot(self, path, curve: RobustnessCurve | None = None):
        """PNG of accuracy vs eps (markers per attack and the worst case; `curve` drawn as steps)."""
        from .plots import evaluation_plot

        doc = self.to_dict()
        if curve is not None:
            doc["curve"] = curve.to_dict()
        return evaluation_plot(doc, path)

    def markdown(self) -> str:
        """Robust accuracy per attack (rows) and eps (columns), the worst case, wall seconds."""
        head = ["attack"] + [f"eps={fmt_eps(e)}" for e in self.eps] + ["seconds", "grads/img"]
        rows = [["clean"] + [_pct(self.clean)] * len(self.eps) + ["-", "-"]]
        for a, accs in self.per_attack.items():
            ran_on = sum(r.ran_on for r in self.runs if r.attack == a)
            rows.append([a] + [_pct(v) for v in accs] +
                        [f"{self.seconds(a):.3g}", f"{self.gradients(a) / ran_on:.4g}" if ran_on else "-"])
        for g, members in self.groups.items():
            rows.append([g] + [_pct(v) for v in self.worst_of(members)] +
                        [f"{sum(self.seconds(a) for a in members):.3g}", "-"])
        rows.append(["worst case"] + [_pct(v) for v in self.worst] + ["-", "-"])
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        reused = sorted({r.attack for r in self.runs if r.reused})
        note = (f"\nRobust accuracy ({self.norm}) over all {self.n} images (clean errors count as broken); "
                + ("cascade: each attack ran on the images the ones before it left, and its row is the "
                   "accuracy after it." if self.cascade else "each attack ran on every clean-correct image.")
                + " grads/img: per attacked image."
                + (f" Carried over from an earlier run on the same images: {', '.join(reused)}." if reused else "")
                + "\n")
        head = ["wall seconds"] + [f"eps={fmt_eps(e)}" for e in self.eps]
        secs = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        secs += ["| " + " | ".join([a] + [f"{self.run(a, e).seconds:.3g}" for e in self.eps]) + " |"
                 for a in self.attacks]
        return "\n".join(lines) + "\n" + note + "\n" + "\n".join(secs) + "\n"


@dataclass
class RobustnessCurve:
    """Robust accuracy against eps from one minimum-norm run (`robustness_curve`).

    distances[i]: the attack's distance on image i where it succeeded on a clean-correct image,
    None where it failed or the image is a clean error. An image is robust at eps iff it is
    clean-correct and (the attack failed or its distance > eps).
    """

    norm: str
    attack: str
    n: int
    clean_correct: list[bool]
    distances: list[float | None]
    seconds: float = 0.0
    gradients: int = 0

    def robust(self, eps: float) -> list[bool]:
        return [c and (d is None or d > eps) for c, d in zip(self.clean_correct, self.distances)]

    def accuracy(self, eps: float) -> float:
        return sum(self.robust(eps)) / self.n if self.n else float("nan")

    def curve(self, eps: Sequence[float]) -> list[float]:
        return [self.accuracy(e) for e in eps]

    def grid(self, points: int = 101) -> list[float]:
        """eps from 0 to just past the largest distance found (every step of the curve in range)."""
        top = max((d for d in self.distances if d is not None), default=1.0) * 1.05 or 1.0
        return [top * i / (points - 1) for i in range(points)]

    @property
    def clean(self) -> float:
        return sum(self.clean_correct) / self.n if self.n else float("nan")

    def plot(self, path):
        """PNG of this curve (accuracy vs eps, steps) with the clean accuracy."""
        from .plots import evaluation_plot

        doc = {"norm": self.norm, "n": self.n, "clean_accuracy": self.clean, "curve": self.to_dict()}
        return evaluation_plot(doc, path)

    def to_dict(self, eps: Sequence[float] | None = None) -> dict:
        grid = list(eps) if eps is not None else self.grid()
        return {"kind": "robustness-curve", "norm": self.norm, "attack": self.attack, "n": self.n,
                "clean_accuracy": self.clean,
                "seconds": self.seconds, "gradients": self.gradients,
                "eps": grid, "accuracy": self.curve(grid),
                "clean_correct": list(self.clean_correct), "distances": list(self.distances)}


def _pct(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"

"""The numbers the papers print (seed 001, the journal version; seed 000, the earlier one).

Not our results: the published values, transcribed so that the experiments' Markdown can put
them beside ours. Each entry: (distance, PSNR, ASR) with the distance in the table's own norm
(L2 for the objective tables; L0 / L2 / Linf rows in the targeted comparison; 000 Table 3 prints
its "epsilon" column), None where the paper prints "-". Keys: (row, case) per dataset.
"""
from __future__ import annotations

Entry = tuple[float | None, float | None, float | None]
Table = dict[str, dict[tuple[str, str], Entry]]   # dataset -> (row, case) -> entry

_U = "untargeted"

# 001 Table II = 000 Table 1 (identical), untargeted objectives
OBJ_UNTARGETED: Table = {
    "mnist": {("T1", _U): (0.91, 73.03, 1.0), ("T4", _U): (1.40, 71.46, 1.0)},
    "cifar10": {("T1", _U): (0.29, 87.41, 1.0), ("T4", _U): (0.30, 87.45, 1.0)},
}


def _cases(rows: dict[str, list[Entry]]) -> dict[tuple[str, str], Entry]:
    """{row: [best, average, worst]} -> {(row, case): entry}."""
    out = {}
    for row, entries in rows.items():
        for case, e in zip(("best", "average", "worst"), entries):
            out[(row, case)] = e
    return out


# 001 Table III, targeted objectives (best, average, worst)
OBJ_TARGETED_001: Table = {
    "mnist": _cases({
        "T2": [(1.12, 77.21, 1.0), (1.84, 67.21, 1.0), (2.64, 58.75, 1.0)],
        "T3": [(4.45, 50.13, 1.0), (5.12, 45.26, 0.752), (6.54, 39.17, 0.745)],
        "T5": [(1.23, 65.31, 1.0), (2.1, 69.15, 1.0), (3.41, 55.12, 1.0)],
        "T6": [(4.87, 45.32, 1.0), (5.31, 41.74, 0.785), (5.80, 40.12, 0.756)],
    }),
    "cifar10": _cases({
        "T2": [(0.65, 74.83, 1.0), (0.70, 72.86, 1.0), (0.75, 73.12, 1.0)],
        "T3": [(3.74, 56.17, 1.0), (4.52, 46.71, 0.701), (5.62, 45.13, 0.697)],
        "T5": [(0.73, 70.12, 1.0), (1.3, 67.26, 1.0), (2.50, 60.73, 1.0)],
        "T6": [(4.17, 50.16, 1.0), (4.50, 48.34, 0.735), (5.17, 46.25, 0.712)],
    }),
}

# 000 Table 2, targeted objectives (best, average, worst)
OBJ_TARGETED_000: Table = {
    "mnist": _cases({
        "T2": [(1.24, 71.60, 1.0), (1.69, 68.38, 1.0), (2.49, 65.95, 1.0)],
        "T3": [(1.74, 70.27, 1.0), (1.74, 69.10, 0.752), (2.50, 67.43, 0.745)],
        "T5": [(0.99, 71.41, 1.0), (1.70, 67.21, 1.0), (2.24, 63.75, 1.0)],
        "T6": [(1.24, 70.45, 1.0), (1.61, 67.98, 0.785), (2.25, 65.04, 0.756)],
    }),
    "cifar10": _cases({
        "T2": [(0.39, 84.83, 1.0), (0.66, 82.86, 1.0), (0.54, 82.13, 1.0)],
        "T3": [(0.41, 71.70, 1.0), (0.39, 81.14, 0.701), (0.57, 80.08, 0.697)],
        "T5": [(0.54, 82.16, 1.0), (0.54, 81.30, 1.0), (0.56, 80.52, 1.0)],
        "T6": [(0.42, 84.75, 1.0), (0.62, 80.12, 0.735), (0.61, 82.14, 0.712)],
    }),
}

# 001 Table IV, targeted comparison; rows: TEAM-L0, JSMA, TEAM-L2, C&W, TEAM-Linf, FGSM
TARGETED_001: Table = {
    "mnist": _cases({
        "TEAM-L0": [(20, 71.21, 1.0), (56, 53.23, 1.0), (180, 43.16, 1.0)],
        "JSMA": [(25, 68.54, 1.0), (76, 51.49, 1.0), (183, 40.19, 1.0)],
        "TEAM-L2": [(1.12, 77.21, 1.0), (1.84, 67.21, 1.0), (2.64, 58.75, 1.0)],
        "C&W": [(1.40, 61.66, 1.0), (2.21, 60.68, 0.962), (3.30, 50.80, 0.937)],
        "TEAM-Linf": [(1.34, 70.86, 1.0), (2.32, 70.90, 1.0), (3.10, 61.34, 1.0)],
        "FGSM": [(0.27, 85.47, 0.80), (0.36, 83.10, 0.453), (None, None, 0.0)],
    }),
    "cifar10": _cases({
        "TEAM-L0": [(21, 74.32, 1.0), (93, 66.73, 1.0), (256, 53.19, 1.0)],
        "JSMA": [(25, 70.16, 1.0), (115, 63.12, 1.0), (271, 51.23, 1.0)],
        "TEAM-L2": [(0.65, 74.83, 1.0), (0.70, 72.86, 1.0), (0.75, 66.13, 1.0)],
        "C&W": [(0.7, 73.26, 1.0), (0.75, 68.52, 0.992), (0.83, 69.54, 0.988)],
        "TEAM-Linf": [(1.32, 70.56, 1.0), (2.10, 69.74, 1.0), (3.2, 65.12, 1.0)],
        "FGSM": [(0.036, 91.72, 0.853), (0.085, 89.0, 0.317), (0.34, 80.12, 0.01)],
    }),
}

# 000 Table 3, targeted comparison (its distance column is headed "epsilon"; no JSMA / TEAM-L0 on CIFAR-10)
TARGETED_000: Table = {
    "mnist": _cases({
        "TEAM-L0": [(239.1, 71.21, 1.0), (243.4, 74.04, 1.0), (332.4, 72.13, 1.0)],
        "JSMA": [(183.5, 58.54, 1.0), (199.6, 58.66, 1.0), (265.4, 57.67, 1.0)],
        "TEAM-L2": [(1.70, 67.21, 1.0), (1.84, 67.21, 1.0), (2.24, 69.75, 1.0)],
        "C&W": [(1.04, 61.66, 1.0), (2.21, 60.68, 0.962), (3.30, 58.80, 1.0)],
        "TEAM-Linf": [(1.34, 70.86, 1.0), (2.32, 70.90, 1.0), (2.20, 61.34, 1.0)],
        "FGSM": [(4.12, 74.47, 0.622), (5.09, 73.10, 0.453), (5.21, 65.24, 0.382)],
    }),
    "cifar10": _cases({
        "TEAM-L2": [(0.39, 84.83, 1.0), (0.50, 82.86, 1.0), (0.54, 82.13, 1.0)],
        "C&W": [(0.28, 63.26, 1.0), (0.62, 65.52, 1.0), (0.35, 59.54, 1.0)],
        "TEAM-Linf": [(1.32, 70.56, 1.0), (2.10, 69.74, 1.0), (3.2, 65.12, 1.0)],
        "FGSM": [(1.72, 64.72, 1.0), (1.78, 63.75, 0.895), (1.92, 61.80, 0.763)],
    }),
}

# 001 Table V, untargeted comparison (L2)
UNTARGETED_001: Table = {
    "mnist": {("T1", _U): (0.91, 73.03, 1.0), ("T4", _U): (1.40, 71.46, 1.0),
              ("DeepFool", _U): (2.21, 73.80, 1.0), ("M-DI2-FGSM", _U): (3.14, 65.12, 1.0)},
    "cifar10": {("T1", _U): (0.29, 87.41, 1.0), ("T4", _U): (0.30, 87.45, 1.0),
                ("DeepFool", _U): (0.9, 85.20, 0.996), ("M-DI2-FGSM", _U): (1.85, 75.12, 0.994)},
}

# 000 Table 4, untargeted comparison (L2), with PGD
UNTARGETED_000: Table = {
    "mnist": {("T1", _U): (0.91, 73.03, 1.0), ("T4", _U): (1.40, 71.46, 1.0),
              ("PGD", _U): (5.17, 67.72, 1.0), ("DeepFool", _U): (1.66, 73.80, 0.8812),
              ("M-DI2-FGSM", _U): (3.14, 65.12, 0.566)},
    "cifar10": {("T1", _U): (0.29, 87.41, 1.0), ("T4", _U): (0.30, 87.45, 1.0),
                ("PGD", _U): (1.63, 78.76, 0.8649), ("DeepFool", _U): (0.16, 85.20, 0.8144),
                ("M-DI2-FGSM", _U): (1.85, 75.12, 0.481)},
}

"""The math paper's attacks (Dou, Osher and Wang, "Mathematical Analysis of Adversarial Attacks"), as that paper defines them.

    from teamattack.paper import CWL2, FGSM, IFGSM

- `FGSM`, `IFGSM`: eq. 2.2-2.5, a step of size `step` along the sign of the cross-entropy
  gradient, IFGSM clipped to the L_inf ball of radius `radius` and to [0, 1] after every step.
- `CWL2`: eq. 2.9-2.10, a fixed number of Adam steps in tanh space (no search over c), then the
  eq. 2.10 scaling. Not Carlini and Wagner's full attack (peers: `teamattack.baselines`).

See docs/math_paper.md for where the paper is silent and what was chosen.
"""
from .attacks.cw import CWL2, cw_hinge
from .attacks.fgsm import FGSM, IFGSM

__all__ = ["CWL2", "FGSM", "IFGSM", "cw_hinge"]

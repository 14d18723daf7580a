"""The quadratic subproblems of TEAM, batched over examples and usable on their own.

phi(d) = g.d + 1/2 d.H d per example; g (B, n); H dense (B, n, n) symmetric (any sign) or an
hvp callable V (B, n) -> (B, n); radii (B,) tensors or numbers. See docs/subproblems.md.

- trust_region / solve_trust_region / trust_region_eig: global TRS (ball), hard case included.
- lanczos / trust_region_lanczos / trust_region_krylov: Hessian-free TRS in a Krylov space.
- project_ball_box / trust_region_box: exact ball-box projection; TRS with the [0,1] box.
- box_qp: the L_inf box QP from the FGSM vertex (never worse than FGSM on phi).
- l0_search / l0_path: at most k changed coordinates / pixel positions (greedy pruning; the
  path serves every k at once).
- min_norm / solve_min_norm / min_norm_eig: min ||d|| s.t. c + phi(d) <= 0 (exact dual).
- min_norm_box: min ||d|| s.t. c + g.d <= 0 and the box (exact, sorted breakpoints).
- reduce_low_rank / lift / low_rank_hvp: exact reduction for H = U diag(s) U^T.
"""
from .box import box_qp, fgsm_vertex, project_ball_box, trust_region_box
from .l0 import L0Path, l0_path, l0_search
from .lanczos import (
                      LanczosBasis,
                      LanczosTRSolution,
                      lanczos,
                      trust_region_krylov,
                      trust_region_lanczos,
)
from .low_rank import lift, low_rank_hvp, reduce_low_rank
from .min_norm import (
                      MinNormSolution,
                      min_norm,
                      min_norm_box,
                      min_norm_eig,
                      solve_min_norm,
                      solve_min_norm_eig,
)
from .trust_region import (
                      TRSolution,
                      eigh_batched,
                      solve_trust_region,
                      solve_trust_region_eig,
                      trust_region,
                      trust_region_eig,
)

__all__ = [
    "L0Path", "LanczosBasis", "LanczosTRSolution", "MinNormSolution", "TRSolution", "box_qp",
    "eigh_batched", "fgsm_vertex", "l0_path", "l0_search", "lanczos", "lift", "low_rank_hvp", "min_norm",
    "min_norm_box", "min_norm_eig", "project_ball_box", "reduce_low_rank", "solve_min_norm", "solve_min_norm_eig",
    "solve_trust_region", "solve_trust_region_eig", "trust_region", "trust_region_box",
    "trust_region_eig", "trust_region_krylov", "trust_region_lanczos",
]

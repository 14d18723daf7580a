"""Drop-in wrappers of TEAM for the peer libraries' own pipelines.

* `teamattack.compat.torchattacks.TEAM`: a `torchattacks.Attack` (MultiAttack, normalisation,
  targeted modes, `save(loader)`).
* `teamattack.compat.foolbox.TEAM`: a foolbox `MinimizationAttack`
  (`raw, clipped, success = attack(fmodel, x, criterion, epsilons=[...])`).

Each submodule imports its library on import (`teamattack.baselines.PeerUnavailable`, an
ImportError, where it is missing; install with `./run.sh peers`, docs/peers.md).
"""
from __future__ import annotations


def team_kwargs(norm: str, eps: float | None, mode: str | None) -> dict:
    """The `teamattack.TEAM` arguments for a wrapper: minimum-norm unless a fixed `eps` is given.

    mode None picks TEAM's boundary walk ("min-norm") for L2 / Linf without eps, "iterated"
    otherwise (L0, or a fixed budget).
    """
    if mode is None:
        mode = "min-norm" if eps is None and norm != "l0" else "iterated"
    return {"norm": norm, "eps": eps, "mode": mode}


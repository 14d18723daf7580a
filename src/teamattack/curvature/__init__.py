"""Curvature: second-order expansions of an objective w.r.t. the input (docs/engine.md)."""
from .expansion import Expansion
from .sources import SOURCES, choose, curvature_is_zero, expand, has_smooth_top, hvp_operator

__all__ = ["SOURCES", "Expansion", "choose", "curvature_is_zero", "expand", "has_smooth_top", "hvp_operator"]

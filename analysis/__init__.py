"""Symbolic analysis of linear multistep methods (sympy): installed as linmultistep.analysis.

- :func:`derive_belm` derives variable-step k-step BELM coefficients from the Taylor conditions.
- :func:`local_error` gives the order and leading LTE term of any coefficient rule or relation;
  :func:`lm_x_error` / :func:`edict_x_error` the error in model coordinates x = alpha xbar.
- :func:`is_zero_stable` decides the root condition exactly; :func:`convergence` adds consistency;
  :func:`grid_growth` measures companion-matrix growth on a real grid, in both directions.
- :func:`table1` reproduces the seed's Table 1 by computation; :func:`search_zero_stable`
  searches the lower-order 3- and 4-step BELM families for zero-stable members.
"""

from .derive import BELMDerivation, derive_belm
from .relation import LMRelation, LocalError, local_error, order_condition, relation_from_method, relation_from_rule
from .rootcond import RootCondition, root_condition
from .stability import Convergence, GridGrowth, ZeroStability, convergence, grid_growth, is_zero_stable

__all__ = [
    "BELMDerivation", "derive_belm",
    "LMRelation", "LocalError", "local_error", "order_condition", "relation_from_method", "relation_from_rule",
    "RootCondition", "root_condition",
    "ZeroStability", "Convergence", "GridGrowth", "is_zero_stable", "convergence", "grid_growth",
]

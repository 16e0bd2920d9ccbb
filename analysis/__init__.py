"""Symbolic analysis of linear multistep methods (sympy): installed as linmultistep.analysis."""

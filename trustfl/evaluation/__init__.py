"""Attack-versus-defense evaluation matrices (``trustfl eval MATRIX.toml``)."""

from trustfl.evaluation.matrix import AttackSpec, Cell, DefenseSpec, GridSpec, MatrixSpec, load_matrix
from trustfl.evaluation.report import markdown_table, write_report
from trustfl.evaluation.runner import run_cell, run_matrix

__all__ = sorted([
    "AttackSpec",
    "Cell",
    "DefenseSpec",
    "GridSpec",
    "MatrixSpec",
    "load_matrix",
    "markdown_table",
    "run_cell",
    "run_matrix",
    "write_report",
])

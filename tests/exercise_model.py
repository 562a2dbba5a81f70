"""The exercises as the tests see them: each source notebook's answer cells, test cells with points, which
learner names each cell defines and reads, and what a class of simulated students scores from that.
"""

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from conftest import SOURCE

ASSIGNMENTS = sorted(p.name for p in SOURCE.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))
DELIMITERS = re.compile(r"(BEGIN|END) (SOLUTION|HIDDEN TESTS)")


def strip_delimiters(source: str) -> str:
    """The source with nbgrader's BEGIN/END lines removed: the solution (or hidden test) as written."""
    return "\n".join(line for line in source.splitlines() if not DELIMITERS.search(line))


def regions(source: str, kind: str) -> list[str]:
    """The lines strictly between BEGIN <kind> and END <kind>."""
    return re.findall(rf"BEGIN {kind}[^\n]*\n(.*?)\n[^\n]*END {kind}", source, flags=re.S)


def names_read(source: str) -> set[str]:
    """Every name a piece of code mentions."""
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def names_bound(source: str) -> set[str]:
    """The names a cell defines at top level: functions, classes, assigned variables."""
    names = set()
    for stmt in ast.parse(source).body:
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


@dataclass
class Assignment:
    """One source notebook: its answer cells, test cells with points, and what depends on what."""

    name: str
    path: Path
    nb: nbformat.NotebookNode = field(repr=False)
    answers: dict[str, str] = field(default_factory=dict)  # grade_id -> solution source (code and written)
    tests: dict[str, float] = field(default_factory=dict)  # autograded test cell -> points
    manual: dict[str, float] = field(default_factory=dict)  # written answer -> points
    binds: dict[str, set[str]] = field(default_factory=dict)  # code answer cell -> names it defines
    uses: dict[str, set[str]] = field(default_factory=dict)  # answer or test cell -> learner names it reads

    @classmethod
    def load(cls, name: str) -> "Assignment":
        (path,) = (SOURCE / name).glob("*.ipynb")
        a = cls(name, path, nbformat.read(path, as_version=4))
        for cell in a.nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            gid = meta.get("grade_id")
            if meta.get("solution"):
                a.answers[gid] = strip_delimiters(cell.source)
                if cell.cell_type == "markdown":
                    a.manual[gid] = float(meta["points"])
                else:
                    a.binds[gid] = names_bound(a.answers[gid])
            elif meta.get("grade") and cell.cell_type == "code":
                a.tests[gid] = float(meta["points"])
        defined = set().union(*a.binds.values())
        for cell in a.nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in a.binds or gid in a.tests:
                a.uses[gid] = names_read(strip_delimiters(cell.source)) & defined
        return a

    @property
    def notebook_name(self) -> str:
        return self.path.name

    @property
    def functions(self) -> list[str]:
        """The learner's functions in notebook order."""
        ordered = []
        for gid, names in self.binds.items():
            tree = ast.parse(self.answers[gid])
            ordered += [s.name for s in tree.body if isinstance(s, ast.FunctionDef) and s.name in names]
        return ordered

    def depends_on(self, gid: str) -> set[str]:
        """The learner names a cell needs, directly or through the answer cells that define them."""
        needed, todo = set(), list(self.uses[gid])
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo += [n for cell, names in self.binds.items() if name in names for n in self.uses[cell]]
        return needed

    def expected_cells(self, broken: set[str]) -> dict[str, float]:
        """Points of each autograded test cell when the names in ``broken`` are missing or wrong."""
        return {gid: 0.0 if self.depends_on(gid) & broken else points for gid, points in self.tests.items()}

    def broken_by(self, cells: set[str]) -> set[str]:
        return set().union(*(self.binds.get(gid, set()) for gid in cells))


LOADED = {name: Assignment.load(name) for name in ASSIGNMENTS}


def perturbing_wrapper(function: str) -> str:
    """Code that replaces a right function by a wrong one: every number it returns is off."""
    return f"""

def _perturb(out):
    if isinstance(out, (tuple, list)):
        return type(out)(_perturb(o) for o in out)
    if isinstance(out, dict):
        return {{k: _perturb(v) for k, v in out.items()}}
    return out * 1.5 + 0.5

_right_{function} = {function}

def {function}(*args, **kwargs):
    return _perturb(_right_{function}(*args, **kwargs))
"""

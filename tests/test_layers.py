"""The import graph shows the pipeline: no stage imports a later one, and the pure stages
import no edge (state, wiring, daemon, command line). Type-only imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "daemon" / "taskwarden"

CORE = 0
STAGES: dict[str, int] = {
    # shared vocabulary: every stage may use it
    "taskwarden.errors": CORE,
    "taskwarden.timeutil": CORE,
    "taskwarden.httputil": CORE,
    "taskwarden.model": CORE,
    "taskwarden.alerts": CORE,
    "taskwarden.matchers": CORE,
    "taskwarden.logs": CORE,
    "taskwarden.yamlfile": CORE,
    "taskwarden.links": CORE,
    # the pipeline, in order
    "taskwarden.sources": 1,
    "taskwarden.diff": 2,
    "taskwarden.rules": 3,
    "taskwarden.templates": 3,
    "taskwarden.health": 3,
    "taskwarden.routing": 4,
    "taskwarden.alerting": 4,
    "taskwarden.delivery": 5,
    "taskwarden.outbox": 5,
    "taskwarden.notify": 6,
}
EDGE = 10
"""Everything else: state backends, the poll cycle's orchestration, configuration, the
runtime, the daemon, the command line, the simulator. They may use any stage."""


def stage(module: str) -> int:
    for prefix, value in sorted(STAGES.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return value
    return EDGE


def modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imports: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("taskwarden"):
                imports.add(node.module or "")
            elif isinstance(node, ast.Import):
                imports.update(a.name for a in node.names if a.name.startswith("taskwarden"))
        found[name] = imports
    return found


def test_no_stage_imports_a_later_one() -> None:
    wrong = [
        f"{name} (stage {stage(name)}) imports {imported} (stage {stage(imported)})"
        for name, imports in modules().items()
        if stage(name) < EDGE
        for imported in imports
        if stage(imported) > stage(name)
    ]
    assert wrong == []


def test_the_pipeline_has_every_stage() -> None:
    names = modules()
    for prefix in STAGES:
        assert any(n == prefix or n.startswith(prefix + ".") for n in names), prefix

"""The layers contract: imports run one way, down the stack, and the test fails on any arrow running back up.

import-linter's `layers` contract would state this, but its graph builder walks one package folder, and the design
card maps four more folders (`signatures/`, `stores/`, `programs/`, `optimizers/`, `evaluation/`) into the
`persona_agent` namespace; so this reads every module's imports itself, those inside functions and under
`TYPE_CHECKING` included (a deferred import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {  # import prefix -> folder, as pyproject.toml maps them
    "persona_agent.signatures": "signatures",
    "persona_agent.stores": "stores",
    "persona_agent.programs": "programs",
    "persona_agent.optimizers": "optimizers",
    "persona_agent.evaluation": "evaluation",
    "persona_agent": "persona_agent",
}
ENTRY = (
    "workspace",
    "lifecycle",
    "answering",
    "compiling",
    "loading",
    "forgetting",
    "reconciling",
    "ingest",
    "demo_huffpost",
    "persona_space",
    "program_cache",
    "testing",
    "runners",
    "fanout",
    "fanout_worker",
    "fanout_report",
    "deferred_tracking",
)
LAYERS: tuple[tuple[str, ...], ...] = (  # bottom to top; a module may import its own layer and those below
    ("persona_agent.core",),
    ("persona_agent.lm",),
    ("persona_agent.signatures",),
    ("persona_agent.stores",),
    ("persona_agent.programs",),
    ("persona_agent.optimizers",),
    ("persona_agent.tracking",),
    tuple(f"persona_agent.{name}" for name in ENTRY),
    ("persona_agent.service",),
    ("persona_agent.demo",),  # the sample demo answers through the service in-process
    ("persona_agent.evaluation",),
    ("persona_agent.cli",),
)


def layer_of(module: str) -> int | None:
    """The layer of a module, by the longest matching prefix; None for the package root itself."""
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            found.setdefault(name, path)
    return found


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file that names a `persona_agent` module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in out if name.startswith("persona_agent.")]


def violations() -> list[str]:
    found = []
    for module, path in modules().items():
        own = layer_of(module)
        if own is None:
            continue
        for line, target in imports(path, module):
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                found.append(
                    f"{path.relative_to(ROOT)}:{line}: {module} (layer {own}) imports {target} (layer {theirs})"
                )
    return found


def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if layer_of(m) is None and m != "persona_agent"]
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


def test_imports_run_down_the_layers():
    found = violations()
    assert not found, "imports running up the layers:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "target", "upward"),
    [
        ("persona_agent.stores.memory", "persona_agent.programs.tools", True),
        ("persona_agent.cli", "persona_agent.core.errors", False),
    ],
)
def test_layer_order_itself(module, target, upward):
    assert (layer_of(target) > layer_of(module)) is upward

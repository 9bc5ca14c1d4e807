"""The package's imports run one way, down the layers of docs/architecture.md, without cycles.

Every module of `dreamrelation` is parsed with `ast` (nothing is imported), including the
imports inside functions and under `if TYPE_CHECKING:`. Three rules:
(a) a module imports only from its own layer or the layers below it;
(b) no import cycle between modules (within a layer too);
(c) an import inside a function (or class) is allowed only to defer a heavy or optional
    dependency, and says so with a `# deferred` comment on one of its lines; its direction is
    still checked by (a) and (b).
Each failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "dreamrelation"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: Bottom to top; a module may import from its own layer and the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leaves", ("dreamrelation", "dreamrelation.configbase")),
    ("data", ("dreamrelation.data",)),
    ("model", ("dreamrelation.model",)),
    ("perception", ("dreamrelation.perception",)),
    ("evaluation", ("dreamrelation.evaluation",)),
    ("stages", ("dreamrelation.stages",)),
    ("pipeline", ("dreamrelation.config", "dreamrelation.plan", "dreamrelation.preflight")),
    ("tasks", ("dreamrelation.tasks",)),
    ("flows", ("dreamrelation.flows",)),
)
DEFERRED = "# deferred"


@dataclass(frozen=True)
class Import:
    """One import statement of a module, as written."""

    file: str  # path relative to the repository, for messages
    line: int
    text: str  # the statement's source
    target: str | None  # the package module it loads (None: outside the package)
    local: bool  # inside a function or class body
    deferred: bool  # carries a `# deferred` comment

    def where(self) -> str:
        return f"{self.file}:{self.line}: `{self.text}`"


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a module: its longest matching prefix (the package itself is a leaf)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = module == prefix
            inside = prefix != PACKAGE and module.startswith(prefix + ".")
            if (exact or inside) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> list[str | None]:
    """The modules a statement loads: package modules by name, None for anything else."""
    if isinstance(node, ast.Import):
        return list(dict.fromkeys(a.name if a.name.split(".")[0] == PACKAGE else None for a in node.names))
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != PACKAGE:
        return [None]
    # `from pkg import name` loads pkg.name when that is a module, else pkg itself
    return list(dict.fromkeys(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names))


def collect(sources: dict[str, tuple[str, str, bool]]) -> dict[str, list[Import]]:
    """module -> its imports, from {module: (file for messages, source, is_package)}."""
    modules = set(sources)
    found: dict[str, list[Import]] = {}
    for module, (file, source, is_package) in sources.items():
        lines = source.splitlines()
        found[module] = []

        def visit(node: ast.AST, local: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    written = lines[child.lineno - 1 : (child.end_lineno or child.lineno)]
                    deferred = any(DEFERRED in part for part in written)
                    for target in resolve(child, module, is_package, modules):
                        found[module].append(Import(file, child.lineno, ast.unparse(child), target, local, deferred))
                scope = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
                visit(child, local or scope)

        visit(ast.parse(source, filename=file), False)
    return found


def package_sources(root: Path = PACKAGE_DIR) -> dict[str, tuple[str, str, bool]]:
    return {
        module_name(path, root): (
            str(path.relative_to(root.parent)),
            path.read_text(encoding="utf-8"),
            path.name == "__init__.py",
        )
        for path in sorted(root.rglob("*.py"))
    }


def layer_violations(imports: dict[str, list[Import]]) -> list[str]:
    """Rule (a), plus modules no layer claims."""
    problems = []
    for module, statements in imports.items():
        own = layer_of(module)
        if own is None:
            problems.append(f"{module}: no layer claims it; add it to LAYERS here and to docs/architecture.md")
            continue
        for imp in statements:
            if imp.target is None:
                continue
            theirs = layer_of(imp.target)
            if theirs is not None and theirs > own:
                problems.append(
                    f"{imp.where()} imports {imp.target} ({LAYERS[theirs][0]}, layer {theirs}) from "
                    f"{LAYERS[own][0]} (layer {own}): imports must run down the layers"
                )
    return problems


def cycles(imports: dict[str, list[Import]]) -> list[str]:
    """Rule (b): every group of modules that import each other, with the imports that close it."""
    graph = {m: sorted({i.target for i in s if i.target in imports}) for m, s in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    problems = []
    for group in groups:
        inside = set(group)
        edges = [imp.where() for m in group for imp in imports[m] if imp.target in inside]
        problems.append(f"import cycle between {', '.join(group)}: " + "; ".join(edges))
    return problems


def undeclared_local_imports(imports: dict[str, list[Import]]) -> list[str]:
    """Rule (c)."""
    return [
        f"{imp.where()} is a function-local import without a `{DEFERRED}: <why>` comment; import it at the "
        "top of the module (a local import may only defer a heavy or optional dependency, and says so)"
        for statements in imports.values()
        for imp in statements
        if imp.local and not imp.deferred
    ]


# -- the package --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imports() -> dict[str, list[Import]]:
    return collect(package_sources())


def test_every_import_runs_down_the_layers(imports) -> None:
    problems = layer_violations(imports)
    assert not problems, "\n".join(problems)


def test_no_import_cycles(imports) -> None:
    problems = cycles(imports)
    assert not problems, "\n".join(problems)


def test_function_local_imports_say_why(imports) -> None:
    problems = undeclared_local_imports(imports)
    assert not problems, "\n".join(problems)


def test_the_documented_layers_are_the_tested_ones() -> None:
    doc = (PACKAGE_DIR.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name, prefixes in LAYERS[1:]:
        for prefix in prefixes:
            path = prefix.removeprefix(PACKAGE + ".").replace(".", "/")
            folder = (PACKAGE_DIR / path).is_dir()
            assert f"`{path}/`" in doc if folder else f"`{path}.py`" in doc, f"docs/architecture.md does not name {path}"


# -- the checker itself, on made-up packages --------------------------------------------------------
def _fake(**modules: str) -> dict[str, list[Import]]:
    sources = {}
    for name, source in modules.items():
        module = f"{PACKAGE}.{name.replace('__', '.')}"
        sources[module] = (module.replace(".", "/") + ".py", source, False)
    return collect(sources)


def test_checker_finds_an_upward_import_even_inside_a_function() -> None:
    found = _fake(
        data__masks="def load():\n    from dreamrelation.model import segment  # deferred: heavy\n",
        model__segment="import torch\n",
    )
    [problem] = layer_violations(found)
    assert problem.startswith("dreamrelation/data/masks.py:2: `from dreamrelation.model import segment`")
    assert "dreamrelation.model.segment (model, layer 2) from data (layer 1)" in problem
    assert undeclared_local_imports(found) == []


def test_checker_finds_a_cycle_within_a_layer() -> None:
    found = _fake(
        model__train="from dreamrelation.model.sample import TrainingSampler\n",
        model__sample="from dreamrelation.model import train\n",
        model__lora="import dreamrelation.model.train\n",
    )
    [problem] = cycles(found)
    assert problem.startswith("import cycle between dreamrelation.model.sample, dreamrelation.model.train: ")
    assert "dreamrelation/model/sample.py:1: `from dreamrelation.model import train`" in problem
    assert layer_violations(found) == []


def test_checker_wants_a_reason_for_a_local_import() -> None:
    found = _fake(
        stages__latents=(
            "import numpy\n"
            "def encode():\n"
            "    import torch\n"
            "    from dreamrelation.model.mochi import (  # deferred: heavy\n"
            "        load_vae,\n"
            "    )\n"
        ),
        model__mochi="",
    )
    assert undeclared_local_imports(found) == [
        "dreamrelation/stages/latents.py:3: `import torch` is a function-local import without a "
        "`# deferred: <why>` comment; import it at the top of the module (a local import may only defer "
        "a heavy or optional dependency, and says so)"
    ]
    assert layer_violations(found) == [] and cycles(found) == []


def test_checker_resolves_relative_imports_and_unknown_modules() -> None:
    found = _fake(data__video="from ..tasks import ui\n", tasks__ui="", extra="")
    problems = layer_violations(found)
    assert any("`from ..tasks import ui` imports dreamrelation.tasks.ui (tasks, layer 7)" in p for p in problems)
    assert any(p.startswith("dreamrelation.extra: no layer claims it") for p in problems)

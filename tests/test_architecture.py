"""The package's layers, read from its source with `ast`: no import cycle between emofusion's modules,
no pipeline package importing another, nothing below the pipelines importing one, and no import of an
emofusion module placed inside a function except to keep TensorFlow, openSMILE or MLflow out of the
processes that do not need them."""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "emofusion"
PIPELINES = f"{PACKAGE}.pipelines."
# Third-party packages heavy enough to import only where they are used (scikit-learn: 0.6 s more of
# start-up in each worker process of the per-clip stages, which do not use it).
HEAVY = {"tensorflow", "keras", "opensmile", "mlflow", "kedro_mlflow", "sklearn"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SOURCE / PACKAGE).rglob("*.py"))}


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def imported(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The absolute names an import statement of `module` imports (for `from X import Y`: X.Y when
    that is a module, else X)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module if is_package(module) else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(module: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(module-level imports, function-local imports) of `module`: (imported name, line). Imports
    under `if TYPE_CHECKING:` are left out: they never run."""
    tree = ast.parse(MODULES[module].read_text())
    top: list[tuple[str, int]] = []
    local: list[tuple[str, int]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and type_checking_only(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found = [(name, child.lineno) for name in imported(module, child)]
                (local if in_function else top).extend(found)
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    walk(tree, False)
    return top, local


def own(name: str) -> str | None:
    """The emofusion module `name` is, or is in (an imported name that is not a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def with_parents(module: str, importer: str) -> list[str]:
    """Importing a module first runs its packages' __init__ modules, but for the importer's own
    packages: they are being imported already."""
    parts = module.split(".")
    own_packages = set(with_parents_of(importer))
    return [name for end in range(1, len(parts) + 1) if (name := ".".join(parts[:end])) not in own_packages]


def with_parents_of(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


IMPORTS = {module: imports(module) for module in MODULES}
GRAPH = {module: {parent for name, _ in top if (target := own(name))
                  for parent in with_parents(target, module)}
         for module, (top, _) in IMPORTS.items()}


def cycles() -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while (top := stack.pop()) != module:
                group.append(top)
            group.append(module)
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return groups


def heavy(module: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether importing `module` imports one of HEAVY, itself or through emofusion's modules."""
    top, _ = IMPORTS[module]
    if any(name.split(".")[0] in HEAVY for name, _ in top):
        return True
    return any(heavy(target, seen | {module}) for target in GRAPH[module] if target not in seen | {module})


def pipeline_of(module: str) -> str | None:
    return module[len(PIPELINES):].split(".")[0] if module.startswith(PIPELINES) else None


def test_the_import_graph_sees_the_package():
    assert "emofusion.errors" in MODULES and "emofusion.pipelines.modelling.pipeline" in MODULES
    assert "emofusion.errors" in GRAPH["emofusion.clip_array"]


def test_no_import_cycle():
    assert cycles() == []


def test_pipelines_do_not_import_each_other():
    crossing = {(module, target) for module, targets in GRAPH.items() for target in targets
                if pipeline_of(module) and pipeline_of(target) and pipeline_of(module) != pipeline_of(target)}
    assert crossing == set(), "import what pipelines share from below them"


def test_nothing_below_the_pipelines_imports_one():
    """What a pipeline imports from outside the pipelines is below them: it imports no pipeline."""
    below, todo = set(), [module for module in GRAPH if pipeline_of(module)]
    while todo:
        for target in GRAPH[todo.pop()]:
            if not target.startswith(PIPELINES) and target != PIPELINES.rstrip(".") and target not in below:
                below.add(target)
                todo.append(target)
    upward = {(module, target) for module in below for target in GRAPH[module] if pipeline_of(target)}
    assert upward == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_local_imports_only_keep_heavy_packages_out(module):
    """An emofusion module imported inside a function must import a heavy package, or be a pipeline
    package's wiring, which its `__getattr__` imports so that the per-clip workers, which import
    its nodes, do without it; and say why in a comment on the import's line or the line above."""
    lines = MODULES[module].read_text().splitlines()
    for name, line in IMPORTS[module][1]:
        target = own(name)
        if target is None:
            continue
        wiring = pipeline_of(module) is not None and is_package(module) and target == f"{module}.pipeline"
        assert heavy(target) or wiring, \
            f"{module}:{line} imports {target} inside a function; import it at the top"
        assert "#" in lines[line - 1] + lines[line - 2], f"{module}:{line}: say why in a comment"

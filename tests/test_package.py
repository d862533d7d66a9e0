"""The package's shape: an import graph layered as the README's module list, without
cycles, with imports inside functions only where they put off a heavy package (TensorFlow,
MLflow, ONNX, librosa, ...) until it is needed; modules and functions small enough to read.

The graph is read from the source (``ast``), so an import that a function hides is seen
like any other.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "speechrnn"

# what a function may import lazily: slow to import, or needing hardware or a server
HEAVY = {"tensorflow", "keras", "mlflow", "onnx", "onnxruntime", "flashlight", "librosa",
         "matplotlib", "uvicorn", "scipy", "soxr", "pandas", "numba", "kenlm",
         "fcntl"}  # POSIX only (the training lock)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node, module: str, package: bool) -> list[str]:
    """The names an import statement brings in (absolute)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        return [node.module]
    base = module.split(".")[:len(module.split(".")) + (0 if package else -1)]
    base = base[:len(base) - node.level + 1]
    prefix = ".".join(base + ([node.module] if node.module else []))
    return [f"{prefix}.{a.name}" for a in node.names] if node.module is None else [prefix]


def _collect(node, module: str, package: bool, found: dict, in_function: bool) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found["lazy" if in_function else "top"].update(_imported(child, module, package))
        _collect(child, module, package, found, in_function or isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def read_imports() -> dict[str, dict[str, set[str]]]:
    """module -> {"top": imported at import time, "lazy": imported inside a function}
    (names as written: packages, modules or names in them; TYPE_CHECKING blocks left
    out)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module, found = module_name(path), {"top": set(), "lazy": set()}
        _collect(ast.parse(path.read_text()), module, path.name == "__init__.py", found, False)
        graph[module] = found
    return graph


def lazy_names() -> dict[str, str]:
    """speechrnn.tracking's names that load their MLflow-backed submodule on first use:
    importing one through the package imports that submodule."""
    tree = ast.parse((PACKAGE / "tracking" / "__init__.py").read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", "") == "_LAZY")
    return {f"speechrnn.tracking.{k}": f"speechrnn.tracking.{v}"
            for k, v in ast.literal_eval(table).items()}


GRAPH = read_imports()
# entry points nothing imports: python -m speechrnn, and the model MLflow runs from its file
SCRIPTS = {"speechrnn.__main__", "speechrnn.tracking.pyfunc"}
MODULES = set(GRAPH) - SCRIPTS
LAZY = lazy_names()


def own(name: str) -> str | None:
    """The package module an imported name belongs to (None: not ours)."""
    name = LAZY.get(name, name)
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def heavy_modules() -> set[str]:
    """Our modules that import a heavy package when they are imported."""
    heavy = {m for m, i in GRAPH.items() if {n.split(".")[0] for n in i["top"]} & HEAVY}
    while True:
        more = {m for m, i in GRAPH.items()
                if m not in heavy and {own(n) for n in i["top"]} & heavy}
        if not more:
            return heavy
        heavy |= more


def layers() -> list[str]:
    """The README's module list, bottom up: what may import what."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("\nerrors.py"):]
    block = block[:block.index("```")]
    return [line.split()[0] for line in block.strip().splitlines()]


def listed_name(module: str) -> str:
    """How the README lists a module: ``name.py``, or ``package/`` for a package's."""
    name = module.split(".")[1]
    return name + "/" if (PACKAGE / name).is_dir() else name + ".py"


def test_the_readme_lists_every_module_once():
    listed = layers()
    assert len(listed) == len(set(listed))
    ours = {listed_name(m) for m in MODULES if m != "speechrnn"}
    assert ours == set(listed), "README module list vs speechrnn/"


def test_no_module_imports_one_listed_after_it():
    """Layering: each module imports only modules listed above it in the README; a
    package's modules also import the package's own."""
    order = {name: i for i, name in enumerate(layers())}
    upward = []
    for module, found in GRAPH.items():
        if module not in MODULES or module == "speechrnn":
            continue
        for name in found["top"] | found["lazy"]:
            target = own(name)
            if target in (None, "speechrnn") or listed_name(target) == listed_name(module):
                continue
            if order[listed_name(target)] > order[listed_name(module)]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports of a module listed below:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycle():
    edges = {m: {own(n) for n in i["top"] | i["lazy"]} - {None, m, "speechrnn"}
             for m, i in GRAPH.items() if m in MODULES}
    # a package imports its submodules (lazily, names on demand); they import the package's
    # own modules, never the package
    done, active, cycles = set(), [], []

    def walk(m):
        active.append(m)
        for t in sorted(edges.get(m, ())):
            if t in active:
                cycles.append(" -> ".join(active[active.index(t):] + [t]))
            elif t not in done:
                walk(t)
        active.pop()
        done.add(m)

    for m in sorted(edges):
        if m not in done:
            walk(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_functions_import_only_what_is_heavy():
    heavy = heavy_modules()
    hidden = []
    for module, found in GRAPH.items():
        for name in found["lazy"]:
            target = own(name)
            if target is None and name.split(".")[0] not in HEAVY:
                hidden.append(f"{module}: {name}")
            elif target is not None and target not in heavy:
                hidden.append(f"{module}: {target} (imports nothing heavy)")
    assert not hidden, ("imports inside functions of what is not heavy (import it at the "
                        "top):\n" + "\n".join(sorted(hidden)))


@pytest.mark.parametrize("module", ["speechrnn.cli", "speechrnn.tracking"])
def test_the_command_line_starts_without_tensorflow_or_mlflow(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_relative_imports_are_read_as_absolute_names():
    tree = ast.parse("from .a import b\nfrom . import c\ndef f():\n    from ..d import e\n")
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    got = [_imported(n, "speechrnn.pkg.mod", False) for n in nodes]
    assert got == [["speechrnn.pkg.a"], ["speechrnn.pkg.c"], ["speechrnn.d"]]


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
TABLES = {("speechrnn/cli.py", "build_parser")}  # argument-parser tables


def test_modules_and_functions_are_small_enough_to_read():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(ROOT))
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    (name, node.name) not in TABLES and \
                    node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{name}:{node.lineno} {node.name}: "
                            f"{node.end_lineno - node.lineno + 1} lines")
    assert not long, "longer than the limits:\n" + "\n".join(long)

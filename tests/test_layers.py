"""Imports point one way: every folder imports only the layers below it (lazy imports inside functions included),
no circle among testbed's modules, and the layers that read files or sweep specs (the entry point, the analysis
commands, a sweep's spec) load neither torch nor Lightning, so `testbed collect`, `plot` and `report` start
without them."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from fake_runs import aggregate_metrics, write_manifest, write_run

# Where each importable package's files are (testbed.envs and testbed.baselines live in their own folders).
PACKAGES = {"testbed": ROOT / "testbed", "testbed.envs": ROOT / "envs", "testbed.baselines": ROOT / "baselines"}
# The layers, top to bottom: a module may import its own package and the layers below its own, never above, and
# never a package beside it in its layer (the sweep and the analysis know nothing of each other).
LAYERS = [["testbed.__main__"], ["testbed.cli"], ["testbed.sweep", "testbed.analysis"], ["testbed.run"],
          ["testbed.baselines"], ["testbed.training"], ["testbed.envs"], ["testbed"]]
LIGHT = ["testbed.cli.main", "testbed.cli.commands", "testbed.quiet", "testbed.errors", "testbed.files",
         "testbed.training.trainer", "testbed.analysis.collect", "testbed.analysis.select",
         "testbed.analysis.endpoints", "testbed.analysis.fits", "testbed.analysis.line",
         "testbed.analysis.fit_plots", "testbed.analysis.plots", "testbed.analysis.report",
         "testbed.analysis.dose", "testbed.analysis.continual", "testbed.analysis.checks", "testbed.sweep",
         "testbed.sweep.spec", "testbed.sweep.stages", "testbed.sweep.folders"]


def import_graph() -> dict[str, set[str]]:
    """Each testbed module and the testbed modules it imports anywhere in its file."""
    files = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            files[".".join([package, *parts])] = path
    graph = {}
    for module, path in files.items():
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[module] = {name for name in names if name in files and name != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: each a path that comes back to where it started."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for nxt in sorted(graph[module]):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = "closed"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_another_that_imports_it_back():
    graph = import_graph()
    assert {"testbed.cli.main", "testbed.cli.lightning", "testbed.sweep.executors", "testbed.sweep.resolve"} <= set(
        graph)
    assert circles(graph) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the check finds one


def package_of(module: str) -> tuple[int, str]:
    """The layer (0 at the top) and the package of a module: the longest package of LAYERS it lies in."""
    found = [(layer, pkg) for layer, pkgs in enumerate(LAYERS) for pkg in pkgs
             if module == pkg or module.startswith(pkg + ".")]
    return max(found, key=lambda lp: len(lp[1]))


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a layer above its own, or from a package beside its own in its layer."""
    bad = []
    for module, imported in graph.items():
        layer, pkg = package_of(module)
        for other in imported:
            other_layer, other_pkg = package_of(other)
            if other_layer < layer or (other_layer == layer and other_pkg != pkg):
                bad.append(f"{module} -> {other}")
    return sorted(bad)


def test_every_folder_imports_only_the_layers_below_it():
    graph = import_graph()
    assert {package_of(m)[1] for m in graph} == {pkg for pkgs in LAYERS for pkg in pkgs}  # every layer has modules
    assert upward(graph) == []
    assert upward({"testbed.envs.base": {"testbed.training.hf"}, "testbed.training.hf": set()}) == [
        "testbed.envs.base -> testbed.training.hf"]  # the check finds one
    assert upward({"testbed.sweep.job": {"testbed.analysis.fits"}, "testbed.analysis.fits": set()}) == [
        "testbed.sweep.job -> testbed.analysis.fits"]


def test_the_light_layers_load_neither_torch_nor_lightning():
    code = ("import importlib, sys\n"
            f"for name in {LIGHT!r}:\n"
            "    importlib.import_module(name)\n"
            "    heavy = sorted(m for m in ('torch', 'lightning', 'torchvision', 'jsonargparse') if m in sys.modules)\n"
            "    if heavy:\n"
            "        sys.exit(f'{name} loads {heavy}')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_collect_runs_without_torch(tmp_path: Path):
    sweep = tmp_path / "s"
    for seed in range(2):
        write_run(sweep, f"r{seed}", baseline="ERM", seed=seed, width=8, params=100,
                  metrics=aggregate_metrics(0.9, 0.6, 0.5))
    write_manifest(sweep)
    code = (f"import sys\nfrom testbed.cli.main import main\nmain(['collect', {str(sweep)!r}])\n"
            "print('loaded', sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "loaded []" in result.stdout and (sweep / "results.csv").exists()

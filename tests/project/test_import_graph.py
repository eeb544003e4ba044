"""gmnerf-ns is layered: each package under ``gmnerf_ns/`` is one layer, and a module imports only its own package
and the layers below it (docs/architecture.md). Function-local imports count; so do imports for type checking only.
The imports form no cycle (a cycle means two modules that are really one), and a module's import path is its file
path in the repository (no package-dir mapping)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Set, Tuple

import tomllib

from tests.fixtures.import_graph import import_graph, module_files

ROOT = Path(__file__).resolve().parents[2]

LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("cli",),  # the gmnerf-* commands
    ("training",),  # nerfstudio's side: methods, dataparser registry, pipeline, trainer, viewer controls, patches
    ("eval",),  # ns-eval's breakdown, meshes and their metrics
    ("data",),  # dataset records, parsers, protocols, the datamanager
    ("model", "synth"),  # the network and its image metrics; the synthetic dataset generator (peers: neither imports
    # the other)
    ("geometry",),  # camera maths, rasteriser, framing
    ("core",),  # errors, options, device, RNG state, run folders, checkpoints, pretrained weights
)
"""Top to bottom; the packages of a tuple are peers, which may not import each other. The package root
(``gmnerf_ns/__init__.py``, the version) is below them all."""


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> Tuple[int, str]:
    """(rank from the top, package) of a gmnerf_ns module; the package root ranks below every layer.

    Raises:
        KeyError: the module is in no layer (a module directly under gmnerf_ns/, or an unlisted package).
    """
    if module == "gmnerf_ns":
        return len(LAYERS), ""
    package = module.split(".")[1]
    for rank, peers in enumerate(LAYERS):
        if package in peers:
            return rank, package
    raise KeyError(f"{module} is in no layer: put it in one of the packages of LAYERS")


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    """Each import that runs up the layers or sideways to a peer, as a sentence naming it."""
    found = []
    for module, imported in sorted(graph.items()):
        rank, package = layer_of(module)
        for other in sorted(imported):
            other_rank, other_package = layer_of(other)
            if other_rank < rank or (other_rank == rank and other_package != package):
                found.append(f"{module} imports {other}: layer {package or 'gmnerf_ns'} may only import its own "
                             f"package and the layers below it")
    return found


def test_no_import_cycles():
    modules = module_files()
    assert len(modules) > 50
    assert cycles(import_graph(modules)) == []


def test_every_module_is_in_a_layer_and_imports_only_downward():
    modules = module_files()
    unplaced = []
    for name in modules:
        try:
            layer_of(name)
        except KeyError as err:
            unplaced.append(str(err))
    assert unplaced == []
    assert {p.name for p in (ROOT / "gmnerf_ns").iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        package for peers in LAYERS for package in peers}
    assert upward_imports(import_graph(modules)) == []


def test_the_layer_check_names_an_upward_or_sideways_import():
    graph = {"gmnerf_ns.core.errors": {"gmnerf_ns.data.human_record"}, "gmnerf_ns.data.human_record": set(),
             "gmnerf_ns.model.field": {"gmnerf_ns.synth.body", "gmnerf_ns.geometry.camera_math", "gmnerf_ns"},
             "gmnerf_ns.synth.body": set(), "gmnerf_ns.geometry.camera_math": set(), "gmnerf_ns": set(),
             "gmnerf_ns.cli.doctor": {"gmnerf_ns.cli.overlay", "gmnerf_ns.training.trainer"},
             "gmnerf_ns.cli.overlay": set(), "gmnerf_ns.training.trainer": set()}
    assert upward_imports(graph) == [
        "gmnerf_ns.core.errors imports gmnerf_ns.data.human_record: layer core may only import its own package and "
        "the layers below it",
        "gmnerf_ns.model.field imports gmnerf_ns.synth.body: layer model may only import its own package and the "
        "layers below it",
    ]


def test_a_module_outside_the_layers_is_refused():
    for name in ("gmnerf_ns.pipeline", "gmnerf_ns.tools.render"):
        try:
            layer_of(name)
        except KeyError as err:
            assert str(err) == f"'{name} is in no layer: put it in one of the packages of LAYERS'"
        else:
            raise AssertionError(f"{name} was given a layer")


def test_import_paths_are_file_paths():
    """Each module imports from the file its name spells, and setuptools maps no package to another folder."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in setuptools and set(setuptools["packages"]) == {"find"}
    for name, path in module_files().items():
        spelt = ROOT.joinpath(*name.split("."))
        assert path in (spelt.with_suffix(".py"), spelt / "__init__.py"), (name, path)
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(spec.origin) == path, (name, spec and spec.origin)
    assert not (ROOT / "dataparsers").exists() and not (ROOT / "configs").exists()


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_camera_maths_is_a_leaf():
    graph = import_graph(module_files())
    assert graph["gmnerf_ns.geometry.camera_math"] == set()
    assert "gmnerf_ns.model.sources" not in graph["gmnerf_ns.geometry.rasterize"]

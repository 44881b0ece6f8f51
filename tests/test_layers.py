"""The package's layers import one way: the paper's core knows nothing of data, stages or
commands; the commands never import one another; no import cycle anywhere. Every module
(imports inside functions included) is read with ``ast``, nothing is executed."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmarnn_min"

# Lowest first: a module may import modules of its own layer and of the layers before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("utilities", ("__init__", "errors", "checks", "cli", "cache", "tables", "files", "progress", "runtime", "cli_config")),
    ("paper core", ("affect", "gru", "routing", "extension", "mma", "mrnn", "mrnn_variants", "losses", "metrics", "baselines",
                    "optim")),
    ("library", ("faces", "detectors", "video", "media", "video_faces", "checkpoints", "frame_table", "timeline_plot",
                 "inference", "data.*")),
    ("stages", ("stages.*",)),
    ("pipeline", ("config", "rundir", "pipeline")),
    ("commands", ("train", "predict", "ablate", "ceiling", "gpucheck", "bench.*")),
]
COMMANDS = ("train", "predict", "ablate", "ceiling", "gpucheck", "bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def layer_of(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".*") and (module == member[:-2] or module.startswith(member[:-1]))):
                return index
    raise AssertionError(f"mmarnn_min.{module} belongs to no layer: add it to LAYERS in {__file__}")


def imports_of(path: Path) -> set[str]:
    """The mmarnn_min modules ``path`` imports (without the ``mmarnn_min.`` prefix)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmarnn_min"):
            base = node.module.removeprefix("mmarnn_min").lstrip(".")
            for alias in node.names:  # `from mmarnn_min import extension` names a module
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if (PACKAGE / f"{candidate.replace('.', '/')}.py").exists() or
                          (PACKAGE / candidate.replace(".", "/")).is_dir() else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name.removeprefix("mmarnn_min.") for alias in node.names
                      if alias.name.startswith("mmarnn_min.")}
    return {name for name in found if name}


GRAPH = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def command_of(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in COMMANDS else None


def test_every_module_has_a_layer_and_imports_only_downwards():
    wrong = []
    for module, imported in GRAPH.items():
        for other in imported:
            if layer_of(other) > layer_of(module):
                wrong.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {other} ({LAYERS[layer_of(other)][0]})")
    assert not wrong, "\n".join(wrong)


def test_the_paper_core_imports_nothing_from_data_stages_or_commands():
    core = [module for module in GRAPH if layer_of(module) <= 1]
    assert {"gru", "mrnn", "routing", "mma", "losses"} <= set(core)
    for module in core:
        assert not {m for m in GRAPH[module] if m.startswith(("data", "stages")) or command_of(m)}, module


def test_commands_never_import_one_another():
    for module, imported in GRAPH.items():
        mine = command_of(module)
        others = {command_of(m) for m in imported} - {None, mine}
        assert not others, f"{module} imports the command(s) {others}"


def test_no_import_cycle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(GRAPH.get(module, ())):
            if state.get(other) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(other):] + [other]))
            if other not in state:
                visit(other, path + [other])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [module])

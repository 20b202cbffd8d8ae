"""The shape of the package: no import cycle (imports inside functions count), no module over 400
lines, and a model module that can be imported without side effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lmguide"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the lmguide modules it imports, from every ``import`` / ``from … import`` at any depth
    (module level, inside functions, under ``if``); ``from a import b`` points at ``a.b`` when that
    is a module, else at ``a``."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from package parents
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for name in names:
                target = owner(name)
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, …, a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_sees_an_import_inside_a_function():
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "lmguide.viz.sources" in graph["lmguide.evaluation.run_report"]  # imported inside report_sources()
    assert "lmguide.training.checkpoint" in graph["lmguide.predict"]  # imported inside predict()


def test_no_import_cycle_among_lmguide_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_module_is_longer_than_400_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


_PROBE = """
import json, os, sys
before = dict(os.environ)
import lmguide.models.heads
print(json.dumps({"omegaconf": any(m == "omegaconf" or m.startswith("omegaconf.") for m in sys.modules),
                  "hydra": "hydra" in sys.modules, "environ_same": dict(os.environ) == before}))
"""


def test_importing_a_model_module_has_no_side_effects():
    """``import lmguide.models.heads`` pulls in neither OmegaConf nor Hydra and leaves os.environ alone
    (environment defaults and resolvers belong to the entry points: lmguide.runs.runtime)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "omegaconf": False,
        "hydra": False,
        "environ_same": True,
    }


def test_a_mistyped_marker_is_an_error_not_a_test_left_out(tmp_path):
    """``--strict-markers`` in the ini options: ``@pytest.mark.slwo`` stops the run at collection."""
    (tmp_path / "test_typo.py").write_text("import pytest\n\n@pytest.mark.slwo\ndef test_x():\n    pass\n")
    ini = PACKAGE.parent / "pyproject.toml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "'slwo' not found in `markers`" in proc.stdout + proc.stderr, proc.stdout


def command_modules() -> dict[str, str]:
    """module -> the command it belongs to: each module with a ``__main__`` guard is a command, and a
    package with a ``__main__.py`` (``lmguide.bench``) is one command made of all its modules."""
    out: dict[str, str] = {}
    for mod, path in _modules().items():
        if path.name == "__main__.py":
            package = mod.rpartition(".")[0]
            out.update({m: package for m in _modules() if m == package or m.startswith(package + ".")})
        elif 'if __name__ == "__main__":' in path.read_text():
            out.setdefault(mod, mod)
    return out


def test_the_top_level_holds_only_commands():
    """``lmguide/*.py`` are the ``python -m lmguide.X`` commands; their machinery lives in packages."""
    commands = command_modules()
    top = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    assert {"train", "eval", "predict", "export", "app", "prepare", "sweep_report"} <= set(top)
    assert not [m for m in top if f"lmguide.{m}" not in commands]


def test_no_command_imports_another_command():
    commands, graph = command_modules(), import_graph()
    found = {
        (mod, dep)
        for mod, deps in graph.items()
        for dep in deps
        if dep in commands and commands[dep] != commands.get(mod, mod)
    }
    assert not found, sorted(found)


def test_the_command_finder_knows_commands_from_machinery():
    graph = import_graph()
    assert "lmguide.bench.run" in command_modules()  # the bench package is one command
    assert command_modules()["lmguide.bench.run"] == "lmguide.bench"
    assert "lmguide.training.fit" in graph["lmguide.bench.run"]  # machinery: allowed
    commands = command_modules()
    assert "lmguide.predict" in commands and "lmguide.inference.scorer" not in commands

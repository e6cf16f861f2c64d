"""The package's shape: imports follow the notebooks' order (no circles), functions stay readable."""
import ast
import json
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "smollm2"


def notebook_of(module: str) -> int:
    """The number of the (first) notebook a generated module comes from: 1 for layers, 3 for model, ..."""
    header = (PKG / f"{module}.py").read_text().splitlines()[0]
    return int(re.search(r"notebooks/(\d+)_", header).group(1))


def modules() -> list[str]:
    return sorted(p.stem for p in PKG.glob("*.py") if not p.stem.startswith("__"))


def smollm2_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a smollm2 module in `path`, at the top or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = node.module.split(".")
            if names[0] == "smollm2":
                found += [(node.lineno, names[1])] if len(names) > 1 else [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "smollm2":
                    found.append((node.lineno, names[1] if len(names) > 1 else "smollm2 (everything)"))
    return found


# the command line: its framework (cli_base, notebook 03), each notebook's commands (cli_train, 04, ...
# cli_serve, 09) and cli itself, the composition root that imports them all
COMMAND_LINE = tuple(m for m in modules() if m == "cli" or m.startswith("cli_"))


@pytest.mark.parametrize("module", [m for m in modules() if m != "cli"])
def test_imports_follow_the_notebook_order(module):
    """A module imports only modules of its own or earlier notebooks; only the command modules (cli_*) import
    the command line; cli, the composition root, may import all."""
    later = [f"{module}.py:{line} imports {target}" for line, target in smollm2_imports(PKG / f"{module}.py")
             if target not in modules() or (target in COMMAND_LINE and module not in COMMAND_LINE)
             or target == "cli" or notebook_of(target) > notebook_of(module)]
    assert not later, "a module may only import modules of earlier notebooks (attach methods with patch_to), " \
        "and only the command modules import the command line:\n" + "\n".join(later)


def test_cli_composes_every_command_module():
    """`smollm2/cli.py` imports each notebook's command module (that registers its commands), so that
    `python -m smollm2` offers them all; each command module comes from one notebook."""
    composed = {t for _, t in smollm2_imports(PKG / "cli.py")}
    commands = [m for m in COMMAND_LINE if m not in ("cli", "cli_base")]
    assert len(commands) >= 6 and set(commands) <= composed, set(commands) - composed
    for m in commands:
        header = (PKG / f"{m}.py").read_text().splitlines()[0]
        assert len(re.findall(r"notebooks/\d+_", header)) == 1, header


def test_the_import_graph_has_no_circles():
    graph = {m: {t for _, t in smollm2_imports(PKG / f"{m}.py") if t in modules() and t != m} for m in modules()}
    state = {}

    def visit(m, path):
        if state.get(m) == "open":
            raise AssertionError("import circle: " + " -> ".join(path + [m]))
        if state.get(m) is None:
            state[m] = "open"
            for t in sorted(graph[m]):
                visit(t, path + [m])
            state[m] = "done"

    for m in modules():
        visit(m, [])


def test_import_rule_catches_a_circle(tmp_path):
    bad = tmp_path / "model.py"
    bad.write_text("def generate(self):\n    from smollm2.generation import generate\n    import smollm2\n")
    assert [t for _, t in smollm2_imports(bad)] == ["generation", "smollm2 (everything)"]


def private_imports(path: Path) -> list[str]:
    """`module.name` for every private name (one leading underscore, not a dunder) `path` imports from smollm2."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "smollm2":
            found += [f"{node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_name_is_imported_across_modules():
    """A name another module needs is public, with a docstring (issue #24): `check_int`, not `_check_int`."""
    found = {m: private_imports(PKG / f"{m}.py") for m in modules()}
    assert not {m: names for m, names in found.items() if names}


def test_private_import_rule_catches_one(tmp_path):
    bad = tmp_path / "speculative.py"
    bad.write_text("from smollm2.train import _check_int, ModelTrainer\nfrom smollm2 import __version__\n\n"
                   "def f():\n    from smollm2.data import _plays_dir\n")
    assert private_imports(bad) == ["smollm2.train._check_int", "smollm2.data._plays_dir"]


# Functions longer than this are hard to read in one screen. Known exceptions may only shrink.
MAX_LINES = 60
KNOWN_LONG: dict[str, int] = {}


def long_functions() -> dict[str, int]:
    found = {}
    for path in sorted(PKG.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        item.qualname = f"{path.stem}.{node.name}.{item.name}"
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = getattr(node, "qualname", f"{path.stem}.{node.name}")
                if node.end_lineno - node.lineno + 1 > MAX_LINES:
                    found[name] = node.end_lineno - node.lineno + 1
    return found


def test_functions_fit_on_a_screen():
    found = long_functions()
    grown = {k: v for k, v in found.items() if v > KNOWN_LONG.get(k, MAX_LINES)}
    assert not grown, f"functions over {MAX_LINES} lines (split them): {grown}"


# Issue #25: on a notebook's teaching path (the cells before its "Appendix" heading) a learner meets a minimal
# version first; the production code (validation, caches, locks, CLI, HTTP) sits in the appendix. So the teaching
# path has no code cell over 40 lines (no exemption), at most 500 exported lines and at most 15 `raise`.
MAX_CELL_LINES, MAX_EXPORTED_LINES, MAX_RAISES = 40, 500, 15
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def teaching_path(cells: list[dict]) -> list[str]:
    """The sources of the code cells before the first markdown heading that names the appendix."""
    sources = []
    for cell in cells:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and re.search(r"^#+ .*Appendix", src, re.M):
            break
        if cell["cell_type"] == "code":
            sources.append(src)
    return sources


def teaching_path_problems(cells: list[dict]) -> list[str]:
    sources = teaching_path(cells)
    problems = [f"a {len(s.splitlines())}-line code cell" for s in sources if len(s.splitlines()) > MAX_CELL_LINES]
    exported = [s for s in sources if s.startswith("#| export")]
    n_lines = sum(len(s.splitlines()) for s in exported)
    n_raise = sum(len(re.findall(r"^\s*raise\b", s, re.M)) for s in exported)
    if n_lines > MAX_EXPORTED_LINES:
        problems.append(f"{n_lines} exported lines (at most {MAX_EXPORTED_LINES})")
    if n_raise > MAX_RAISES:
        problems.append(f"{n_raise} raise statements in exported cells (at most {MAX_RAISES})")
    return problems


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9]*.ipynb")), ids=lambda p: p.stem)
def test_teaching_path_is_minimal(path):
    problems = teaching_path_problems(json.loads(path.read_text(encoding="utf-8"))["cells"])
    assert not problems, f"{path.name}'s teaching path: {problems} (move production code to the appendix)"


def test_teaching_path_rule_catches_a_long_path():
    def cell(kind, src):
        return {"cell_type": kind, "source": [src]}

    checks = "#| export\n" + "def f(x):\n    if x:\n        raise ValueError(x)\n" * 16      # 49 lines, 16 raise
    cells = [cell("markdown", "# 99 · Made up"), cell("code", checks), cell("code", "#| export\n" + "x = 1\n" * 480),
             cell("markdown", "## Appendix · production"), cell("code", "#| export\n" + "y = 2\n" * 900)]
    assert teaching_path_problems(cells) == ["a 49-line code cell", "a 481-line code cell",
                                             "530 exported lines (at most 500)",
                                             "16 raise statements in exported cells (at most 15)"]
    assert teaching_path_problems([cells[0], cell("code", "#| export\nz = 3"), *cells[3:]]) == []


@pytest.mark.parametrize("module", modules())
def test_generated_modules_import_at_the_top(module):
    """tools/export.py hoists every top-level import of a module's cells to its top, each once: no import
    statement after the first definition (imports inside functions are the lazy ones and stay)."""
    body = ast.parse((PKG / f"{module}.py").read_text()).body
    first = next((i for i, node in enumerate(body) if not isinstance(node, (ast.Import, ast.ImportFrom))), len(body))
    late = [node.lineno for node in body[first:] if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not late, f"{module}.py imports below its first definition, at lines {late}"
    seen = [ast.dump(node) for node in body[:first]]
    assert len(seen) == len(set(seen)), f"{module}.py repeats an import"


def test_the_exporter_hoists_and_merges_imports(tmp_path):
    """The exporter's own behaviour on a made-up module: imports from several cells end up once, merged, on top."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_tool", PKG.parent / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    imports, body = tool._split_imports("import torch\nfrom smollm2.model import patch_to  # why\n\n\nx = 1\n")
    assert imports == ["import torch", "from smollm2.model import patch_to  # why"] and body == "x = 1"
    block = tool._import_block(imports + ["import os", "import torch", "from smollm2.model import LlamaMLP"])
    assert block == "import os\n\nimport torch\n\nfrom smollm2.model import LlamaMLP, patch_to  # why"


def export_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_tool", PKG.parent / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_the_exporter_folds_patched_methods_into_their_class():
    """A notebook adds a class's methods one cell at a time with `@patch_to(C)`; the generated module holds one
    real class: the methods move into C's body (renamed by `name=`, `as_classmethod` kept), nothing at module level."""
    code = ("class C:\n    def a(self):\n        return 1\n\n\n"
            "@patch_to(C)\n# -- b\ndef b(self):\n    return 2\n\n\n"
            "@patch_to(C, name='c')\ndef _c_impl(self):\n    return 3\n\n\n"
            "@patch_to(C, as_classmethod=True)\ndef make(cls):\n    return cls()\n\n\n"
            "@patch_to(Other)\ndef d(self):\n    pass\n")
    folded, moved = export_tool()._folded(code)
    assert moved == {"b", "_c_impl", "make"}
    ns = {"patch_to": lambda cls: (lambda fn: fn), "Other": object}
    exec(folded, ns)
    c = ns["C"].make()
    assert (c.a(), c.b(), c.c()) == (1, 2, 3) and "b" not in ns and "_c_impl" not in ns and "d" in ns
    assert "    # -- b\n    def b(self):" in folded
    with pytest.raises(SystemExit, match="b .* has a multi-line string"):   # indenting it would change its value
        export_tool()._folded('class C:\n    pass\n\n\n@patch_to(C)\ndef b(self):\n    """doc\n    ok"""\n'
                              '    return """two\nlines"""\n')
    docstring_only = 'class C:\n    pass\n\n\n@patch_to(C)\ndef b(self):\n    """doc\n    on two lines"""\n'
    assert export_tool()._folded(docstring_only)[1] == {"b"}


def test_the_exporter_drops_unused_imports_and_refuses_a_name_in_two_modules():
    tool = export_tool()
    kept = tool._without_unused(["import os", "import json", "from typing import Any, Iterator",
                                 "import torch.nn.functional as F"],
                                "def f(x: 'Iterator[int]'):\n    return json.dumps(F)\n")
    assert kept == ["import json", "from typing import Iterator", "import torch.nn.functional as F"]
    composed = ["from smollm2.cli_train import train_command", "from smollm2.cli_base import command",
                "from smollm2.cli_generation import chat_command", "import sys"]
    assert tool._without_unused(composed, "x = 1\n") == composed[:1] + composed[2:3]   # registering imports stay
    assert tool._import_block(composed).splitlines()[-2:] == composed[:1] + composed[2:3]  # last, in cell order
    modules = {"a": {"all": ["x", "y"]}, "b": {"all": ["y"]}}
    with pytest.raises(SystemExit, match="'y' is public in both smollm2/a.py and smollm2/b.py"):
        tool._check_one_home(modules, ["a", "b"])
    tool._check_one_home({"a": {"all": ["x"]}, "b": {"all": ["y"]}}, ["a", "b"])


@pytest.mark.parametrize("module", modules())
def test_modules_stay_small_and_hold_real_classes(module):
    """No module over 700 lines; no module patches a class it defines itself (the exporter folds those)."""
    text = (PKG / f"{module}.py").read_text()
    assert len(text.splitlines()) <= 700, f"{module}.py has {len(text.splitlines())} lines (at most 700)"
    tree = ast.parse(text)
    own = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    patched = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) for d in n.decorator_list
               if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "patch_to"
               and isinstance(d.args[0], ast.Name) and d.args[0].id in own]
    assert not patched, f"{module}.py patches its own class with {patched}"


def test_no_public_name_is_exported_twice():
    import smollm2

    homes = {}
    for module in modules():
        for name in getattr(__import__(f"smollm2.{module}", fromlist=["__all__"]), "__all__", []):
            if module not in COMMAND_LINE:
                homes.setdefault(name, []).append(module)
    assert not {n: m for n, m in homes.items() if len(m) > 1}
    assert all(hasattr(smollm2, n) for n in homes)


def test_one_decode_step_core():
    """Every decoder (the trainer's samples, generate/stream's `decode_loop`, speculative decoding's target and
    draft, the server's continuous batching and its chunked prefill) runs the model over a KV cache through
    notebook 03's `DecodeState`: nothing else calls `prefill` or `decode_one_token`, nothing else passes a
    `cache=` to a model, and there is one decode loop."""
    callers, cached_calls, loops = [], [], []
    for module in modules():
        tree = ast.parse((PKG / f"{module}.py").read_text())
        for top in tree.body:
            for node in ast.walk(top):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("prefill", "decode_one_token"):
                    callers.append((module, top.name, node.func.id))
                if isinstance(node, ast.Call) and any(k.arg == "cache" for k in node.keywords) \
                        and module not in ("model", "attention"):            # the model's own layers
                    cached_calls.append((module, top.name))
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "feed" \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "state":
                    loops.append((module, top.name))
    assert sorted(set(callers)) == [("model", "DecodeState", "decode_one_token"), ("model", "DecodeState", "prefill")]
    assert cached_calls == [], cached_calls
    assert loops == [("model", "decode_loop")]                                  # the one token-by-token loop
    import smollm2.batching as batching
    import smollm2.speculative as speculative
    import smollm2.train as train
    from smollm2.model import DecodeState

    assert issubclass(batching._Batch, DecodeState)
    for module in (batching, speculative, train):
        assert "DecodeState" in vars(module) or "decode_loop" in vars(module), module.__name__


def later_references(source: str, module: str, exports: dict[str, set]) -> list[str]:
    """Names in `source` (of `module`) that belong to a later notebook: a public name a later module exports,
    used as a name, or a later module's name given to a parameter, keyword or field (`speculative=`)."""
    tree, found = ast.parse(source), []
    names, slots = {}, {}                                                    # name -> its first line
    for n in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
        if isinstance(n, ast.Name):
            names.setdefault(n.id, n.lineno)
        if isinstance(n, (ast.arg, ast.keyword)) and n.arg:
            slots.setdefault(n.arg, n.lineno)
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            slots.setdefault(n.target.id, n.lineno)
    for later, public in exports.items():
        if notebook_of(later) > notebook_of(module):
            found += [f"{module}.py:{names[n]} uses {later}.{n}" for n in sorted(public) if n in names]
            found += [f"{module}.py:{slots[later]} has a slot named {later!r}"] if later in slots else []
    return found


def public_exports() -> dict[str, set]:
    import importlib

    return {m: set(importlib.import_module(f"smollm2.{m}").__all__) for m in modules() if m not in COMMAND_LINE}


def test_no_module_holds_a_hook_for_a_later_notebook():
    """Later notebooks extend earlier ones by registration or composition in cli.py (issue #24): no earlier
    module names what a later one defines (notebook 05 once kept `QUANTIZERS` for 08 and
    `GenerationConfig.speculative`)."""
    exports = public_exports()
    found = [hit for m in modules() if m not in COMMAND_LINE
             for hit in later_references((PKG / f"{m}.py").read_text(), m, exports)]
    assert not found, "\n".join(found)


def test_later_reference_rule_catches_the_old_hooks():
    old = ("QUANTIZERS: dict = {}\n\n@dataclass\nclass GenerationConfig:\n    speculative: object = None\n\n"
           "def load_model(weights, quantize=None):\n    return QUANTIZERS[quantize](weights)\n")
    found = later_references(old, "generation", public_exports())
    assert found == ["generation.py:1 uses quantize.QUANTIZERS", "generation.py:8 uses quantize.quantize",
                     "generation.py:7 has a slot named 'quantize'", "generation.py:5 has a slot named 'speculative'"]

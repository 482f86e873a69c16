"""The two ways of building the course environment agree, and committed notebooks are clean.

- ``environment.yml`` (conda, Binder, read with PyYAML) and ``requirements/constraints.txt`` (pip, ``make``)
  must name the same key packages at the same versions, with torch exactly 2.13.0 (CPU).
- Every notebook in ``notebooks/`` is committed from one fresh top-to-bottom run
  (``make notebooks``): execution counts 1, 2, 3, ... and no error output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT_YML = ROOT / "environment.yml"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
NOTEBOOK_DIR = ROOT / "notebooks"

TORCH_VERSION = "2.13.0"

# conda-forge name -> pip name, for the packages both files must pin.
KEY_PACKAGES = {
    "pytorch": "torch",
    "numpy": "numpy",
    "matplotlib-base": "matplotlib",
    "ipywidgets": "ipywidgets",
    "jupyterlab": "jupyterlab",
    "jupyterlab-rise": "jupyterlab-rise",  # conda-forge spells it jupyterlab_rise
    "voila": "voila",
    "scikit-learn": "scikit-learn",  # lesson 08's digits
    "ipykernel": "ipykernel",
    "nbval": "nbval",
    "tqdm": "tqdm",
    "tensorboard": "tensorboard",
    "pytest": "pytest",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_conda_dependencies(text: str) -> dict[str, tuple[str | None, str | None]]:
    """Read the conda specs of an environment.yml with PyYAML: ``{name: (version, build)}``.

    Only the ``name=version=build`` strings directly under ``dependencies:`` count; a nested
    ``- pip:`` list (a mapping in YAML) is skipped.
    """
    doc = yaml.safe_load(text)
    deps: dict[str, tuple[str | None, str | None]] = {}
    for spec in doc.get("dependencies") or []:
        if not isinstance(spec, str):
            continue  # the {"pip": [...]} mapping
        parts = re.split(r"\s*=\s*", spec.strip(), maxsplit=2)
        name = parts[0].split("::")[-1]
        version = parts[1] if len(parts) > 1 and parts[1] else None
        build = parts[2] if len(parts) > 2 else None
        deps[_normalise(name)] = (version, build)
    return deps


def parse_constraints(text: str) -> dict[str, str]:
    """Read ``name==version`` pins from a pip constraints file: ``{name: version}``."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        assert m, f"constraints.txt: {line!r} is not an exact 'name==version' pin"
        pins[_normalise(m.group(1))] = m.group(2)
    return pins


@pytest.fixture(scope="module")
def conda() -> dict[str, tuple[str | None, str | None]]:
    return parse_conda_dependencies(ENVIRONMENT_YML.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return parse_constraints(CONSTRAINTS.read_text(encoding="utf-8"))


def test_environment_names_conda_forge_channels_and_string_specs():
    doc = yaml.safe_load(ENVIRONMENT_YML.read_text(encoding="utf-8"))
    assert doc["channels"] == ["conda-forge", "nodefaults"], "conda-forge only"
    specs = [d for d in doc["dependencies"] if isinstance(d, str)]
    assert len(specs) > 10 and "python" in parse_conda_dependencies(ENVIRONMENT_YML.read_text(encoding="utf-8"))


def test_parser_reads_specs_and_skips_nested_pip_list():
    text = (
        "name: x\nchannels:\n  - conda-forge\ndependencies:\n"
        "  - python=3.11\n  - pytorch=2.13.0=cpu_*  # comment\n  - pip\n"
        "  - pip:\n      - -e .\n      - requests==1.0\n"
    )
    assert parse_conda_dependencies(text) == {
        "python": ("3.11", None),
        "pytorch": ("2.13.0", "cpu_*"),
        "pip": (None, None),
    }


def test_constraints_are_all_exact_pins(pins):
    assert len(pins) > 20
    assert "gradcourse" not in pins, "the package itself must not be pinned"


def test_torch_is_exactly_2_13_0_cpu_in_both(conda, pins):
    assert pins["torch"] == TORCH_VERSION
    version, build = conda["pytorch"]
    assert version == TORCH_VERSION
    assert build is not None and build.startswith("cpu"), (
        "environment.yml must select conda-forge's CPU build of pytorch explicitly "
        f"(build string cpu_*), found build {build!r}"
    )
    assert "torch" not in conda, "conda-forge's package is called pytorch, not torch"


def test_python_versions_agree(conda):
    header = re.search(r"^# python: (\d+\.\d+)", CONSTRAINTS.read_text(encoding="utf-8"), re.M)
    assert header, "constraints.txt must say which Python its pins were resolved on"
    version, _ = conda["python"]
    assert version == header.group(1)
    major, minor = (int(p) for p in version.split("."))
    assert (major, minor) >= (3, 10), "pyproject.toml promises Python >= 3.10"


@pytest.mark.parametrize("conda_name,pip_name", sorted(KEY_PACKAGES.items()))
def test_key_package_pinned_to_same_version(conda, pins, conda_name, pip_name):
    assert conda_name in conda, f"environment.yml does not name {conda_name}"
    assert pip_name in pins, f"constraints.txt does not pin {pip_name}"
    conda_version, _ = conda[conda_name]
    pip_version = pins[pip_name].split("+", 1)[0]
    assert conda_version, f"environment.yml must pin a version of {conda_name}"
    # conda's "name=1.2" means 1.2.*, so a shorter conda version is a prefix match.
    assert pip_version == conda_version or pip_version.startswith(conda_version + "."), (
        f"{conda_name}={conda_version} (environment.yml) vs {pip_name}=={pins[pip_name]} "
        "(constraints.txt)"
    )


def test_environment_yml_is_conda_forge_only():
    text = ENVIRONMENT_YML.read_text(encoding="utf-8")
    channels = re.search(r"^channels:\n((?:\s+-.*\n)+)", text, re.M)
    assert channels
    names = [c.strip()[2:].strip() for c in channels.group(1).splitlines()]
    assert names == ["conda-forge", "nodefaults"]
    assert "::" not in text, "no package may come from another channel"


# ---------------------------------------------------------------------------------------
# Committed notebooks: one clean top-to-bottom run.

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NOTEBOOK_PARAMS = [pytest.param(p, id=p.name) for p in NOTEBOOKS] or [
    pytest.param(None, id="none", marks=pytest.mark.skip(reason="no notebooks in notebooks/ yet"))
]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("path", NOTEBOOK_PARAMS)
def test_notebook_committed_from_one_clean_run(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code" and _source(c).strip()]
    counts = [c.get("execution_count") for c in code_cells]
    expected = list(range(1, len(code_cells) + 1))
    assert counts == expected, (
        f"{path.name}: execution counts {counts} are not 1, 2, 3...: re-run `make notebooks`"
    )
    errors = [
        (i, out.get("ename"), out.get("evalue"))
        for i, c in enumerate(code_cells, start=1)
        for out in c.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs in code cells {errors}"

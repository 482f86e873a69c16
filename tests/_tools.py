"""Load a script of ``tools/`` as a module, for the tests of the classroom kit.

``tools/`` holds command-line scripts, not a package, so they are loaded from their path.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as the module ``gradcourse_tools_<name>``."""
    spec = importlib.util.spec_from_file_location(f"gradcourse_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and doctest look a module up by name
    spec.loader.exec_module(module)
    return module

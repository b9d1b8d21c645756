"""Files the installed package ships besides its modules: the `py.typed` marker (PEP 561), so type checkers read the
package's type hints."""

import sys
from importlib import resources
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_py_typed_marker_is_in_the_package_folder():
    marker = resources.files("flash_vstream_hf") / "py.typed"
    assert marker.is_file() and marker.read_text() == ""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_py_typed_marker_is_package_data():
    """Without a package-data entry setuptools leaves the marker out of wheels."""
    import tomllib

    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data.get("flash_vstream_hf", [])

"""``import ddia_ray`` offers the headline names lazily, and stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import ddia_ray


@pytest.mark.parametrize("name", sorted(ddia_ray._HEADLINES))
def test_each_headline_name_is_the_subpackage_export(name):
    module = importlib.import_module(ddia_ray._HEADLINES[name])
    assert getattr(ddia_ray, name) is getattr(module, name)
    assert name in getattr(module, "__all__", [name]) and name in dir(ddia_ray) and name in ddia_ray.__all__


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ddia_ray.Nope  # noqa: B018


def test_importing_the_package_loads_neither_ray_nor_pyarrow():
    code = "import sys, ddia_ray; print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

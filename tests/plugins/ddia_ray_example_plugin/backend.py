"""A minimal PEP 517 build backend for this one package: a pure-Python wheel from ``src/``.

Why not setuptools: installing offline with ``--no-build-isolation`` then needs whatever setuptools
and wheel versions the environment happens to have (setuptools before 70.1 cannot build a wheel
without the separate ``wheel`` package). A wheel of pure Python is a zip file with three metadata
files and a manifest (PEP 427), which this writes in a few lines.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip, which runs this backend, carries tomli
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

_HERE = os.path.dirname(os.path.abspath(__file__))


def _project() -> dict:
    with open(os.path.join(_HERE, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _dist_info(project: dict) -> tuple[str, dict[str, str]]:
    name = project["name"].replace("-", "_")
    info = f"{name}-{project['version']}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
                f"Summary: {project.get('description', '')}\nRequires-Python: {project.get('requires-python', '')}\n")
    entry_points = ""
    for group, entries in project.get("entry-points", {}).items():
        entry_points += f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
    wheel = "Wheel-Version: 1.0\nGenerator: ddia-ray-example-backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    return info, {"METADATA": metadata, "WHEEL": wheel, "entry_points.txt": entry_points}


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """Build ``<name>-<version>-py3-none-any.whl`` into ``wheel_directory``; returns its file name."""
    project = _project()
    info, meta = _dist_info(project)
    filename = f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"
    src = os.path.join(_HERE, "src")
    record = ""
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as whl:
        for root, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in sorted(files):
                if file.endswith(".py"):
                    path = os.path.join(root, file)
                    arcname = os.path.relpath(path, src).replace(os.sep, "/")
                    with open(path, "rb") as f:
                        data = f.read()
                    whl.writestr(arcname, data)
                    record += _record_line(arcname, data)
        for file, text in meta.items():
            data = text.encode()
            whl.writestr(f"{info}/{file}", data)
            record += _record_line(f"{info}/{file}", data)
        whl.writestr(f"{info}/RECORD", record + f"{info}/RECORD,,\n")
    return filename


def get_requires_for_build_wheel(config_settings=None):
    """Nothing: this backend uses the standard library only."""
    return []

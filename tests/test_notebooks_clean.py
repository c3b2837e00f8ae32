"""Notebooks are committed without outputs and without execution counts."""

from __future__ import annotations

import json

from conftest import ROOT


def _notebooks():
    for base in (ROOT / "notebooks", ROOT / "tests" / "notebooks"):
        if base.is_dir():
            yield from sorted(p for p in base.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_notebooks_are_stripped():
    checked, dirty = 0, []
    for path in _notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        checked += 1
        for i, cell in enumerate(nb.get("cells", [])):
            if cell.get("cell_type") != "code":
                continue
            if cell.get("outputs"):
                dirty.append(f"{path.relative_to(ROOT)} cell {i}: has outputs")
            if cell.get("execution_count") is not None:
                dirty.append(f"{path.relative_to(ROOT)} cell {i}: execution_count {cell['execution_count']}")
        if "papermill" in nb.get("metadata", {}):
            dirty.append(f"{path.relative_to(ROOT)}: papermill metadata (an executed copy?)")
    assert checked >= 10  # the fixtures at least: a wrong root would check nothing
    assert not dirty, "strip these notebooks (jupyter nbconvert --clear-output --inplace):\n" + "\n".join(dirty)

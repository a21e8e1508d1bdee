"""tools/mutate.py keeps mutation results in the repository and resumes from them (issue 16).

The resume rule is mutmut's own: a mutant keeps its result while the source hash of its
function is unchanged; these tests hold the driver to putting kept results where mutmut reads
them, and to mutmut then applying that rule.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = "src/consentry/engine/hmac.py"  # small, and one of the mutated modules


def _driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("consentry_mutate", ROOT / "tools" / "mutate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    mutate = _driver()
    monkeypatch.setattr(mutate, "WORK", tmp_path / "build" / "mutate")
    monkeypatch.setattr(mutate, "KEPT", tmp_path / "kept")
    return mutate


def _generate(mutate: ModuleType) -> dict[str, int | None]:
    """Write the engine package's mutants as a run would, and return their results."""
    with mutate.in_package_root("engine"):
        mutate._write_mutants(MODULE)
    meta = mutate._meta_path("engine", MODULE)
    codes: dict[str, int | None] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    return codes


def _forget_work(mutate: ModuleType) -> None:
    """A fresh machine: nothing under build/mutate but what restore puts there."""
    import shutil

    shutil.rmtree(mutate.WORK)


def test_kept_results_come_back_on_a_fresh_machine(driver: ModuleType) -> None:
    codes = _generate(driver)
    assert codes
    assert all(code is None for code in codes.values())
    meta = driver._meta_path("engine", MODULE)
    data = json.loads(meta.read_text("utf-8"))
    judged = {name: (1 if i % 3 else 0) for i, name in enumerate(sorted(codes))}
    data["exit_code_by_key"] = judged
    meta.write_text(json.dumps(data), "utf-8")
    (driver.WORK / "engine.run.json").write_text(
        json.dumps({"started": "2026-12-07 03:00 UTC", "seconds": 60.0, "exit": 0}), "utf-8"
    )
    driver.keep_results("engine")
    kept = json.loads((driver.KEPT / "consentry.engine.hmac.json").read_text("utf-8"))
    assert kept["module"] == MODULE
    assert kept["exit_code_by_key"] == judged

    _forget_work(driver)
    driver.restore_results("engine")
    assert _generate(driver) == judged  # unchanged functions keep their results
    assert json.loads((driver.WORK / "engine.run.json").read_text("utf-8"))["seconds"] == 60.0


def test_a_changed_function_is_run_again(driver: ModuleType) -> None:
    codes = _generate(driver)
    meta = driver._meta_path("engine", MODULE)
    data = json.loads(meta.read_text("utf-8"))
    data["exit_code_by_key"] = dict.fromkeys(codes, 1)
    changed = sorted(data["hash_by_function_name"])[0]
    data["hash_by_function_name"][changed] = "0" * 64  # as if its source had changed since
    meta.write_text(json.dumps(data), "utf-8")
    driver.keep_results("engine")

    _forget_work(driver)
    driver.restore_results("engine")
    after = _generate(driver)
    again = {n for n, c in after.items() if c is None}
    assert again
    assert all(f"{changed}__mutmut_" in n for n in again)
    assert all(c == 1 for n, c in after.items() if n not in again)


def test_restore_leaves_a_run_in_progress_alone(driver: ModuleType) -> None:
    _generate(driver)
    meta = driver._meta_path("engine", MODULE)
    driver.keep_results("engine")
    data = json.loads(meta.read_text("utf-8"))
    data["durations_by_key"] = {"marker": 1.0}
    meta.write_text(json.dumps(data), "utf-8")
    driver.restore_results("engine")  # build/ has results: they win over the kept ones
    assert json.loads(meta.read_text("utf-8"))["durations_by_key"] == {"marker": 1.0}


def test_data_files_are_brought_up_to_date_and_mutmuts_own_kept(driver: ModuleType) -> None:
    """mutmut refreshes only Python modules in its copy of src/: a template changed since the
    first run must not be read stale (the unmutated test pass failed on one)."""
    copy = driver.WORK / "web" / "src" / "consentry"
    template = "web/templates/base.html"
    (copy / template).parent.mkdir(parents=True)
    (copy / template).write_text("<p>stale</p>", "utf-8")
    (copy / "web" / "templates" / "gone.html").write_text("removed from src", "utf-8")
    for own in ("pages.py.meta", "pages.py.spans", "pages.py"):
        (copy / "web" / own).write_text("mutmut's", "utf-8")

    driver.refresh_data_files("web")

    source = ROOT / "src" / "consentry"
    assert (copy / template).read_bytes() == (source / template).read_bytes()
    assert (copy / "web" / "static" / "consentry.css").exists()  # missing ones are copied
    assert not (copy / "web" / "templates" / "gone.html").exists()
    for own in ("pages.py.meta", "pages.py.spans", "pages.py"):
        assert (copy / "web" / own).read_text("utf-8") == "mutmut's"

"""Mutation testing of the rule and verification modules, one package at a time (issue 16).

`make mutate` runs `python tools/mutate.py`; docs/testing.md says how to read its report.

The modules come from `[tool.mutmut] only_mutate` in pyproject.toml, grouped by package
(src/consentry/<pkg>/...). mutmut itself selects, for each mutant, the tests that reach the
mutated function; this driver narrows that choice to tests/<pkg>/, so a mutant of a ledger rule
is judged by the ledger's tests only, and a full run fits in about an hour on two cores.

1. For each package, point `mutants` (the directory mutmut works in) at build/mutate/<pkg>,
   and run mutmut in a child process with only that package's modules and tests, under the
   Hypothesis profile `mutate` (few, derandomized examples: tests/conftest.py).
2. `[tool.consentry.mutate] functions` limits large modules to their rule functions.
3. Results are kept in tests/mutation_results/ (one JSON file per module: each mutant's exit
   code and each function's source hash, and per package its run's start and duration), put
   back into build/mutate/ before a package runs. mutmut then resumes by its own rule: a
   function whose source hash changed has its mutants run again, the others keep their
   results. So a run cut short on one machine goes on from where it stopped on another, and
   the report can be rebuilt anywhere. `--fresh` ignores the kept results.
4. Read every mutant's result, drop the ones recorded in tests/mutation_equivalents.toml as
   equivalent (an entry whose mutated line no longer matches is stale and does not count),
   and write docs/mutation-report.md: date, duration, counts per module, the overall share
   killed, and each survivor with file:line and its diff.
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutate"
REPORT = ROOT / "docs" / "mutation-report.md"
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.toml"
KEPT = ROOT / "tests" / "mutation_results"
SEPARATOR = "ǁ"  # mutmut's separator between class and method in a mutant's name

# mutmut's exit codes, by what they mean for a mutant (mutmut/stats.py).
KILLED = {1, 3, 37}
SURVIVED = {0}
TIMEOUT = {24, -24, 36, 152, 255}
NO_TESTS = {5, 33}


@dataclass(frozen=True)
class Mutant:
    """One mutant's result, with where it is in the source and what it changes."""

    name: str
    module: str  # src/consentry/<pkg>/<mod>.py
    status: str  # killed, survived, timeout, no tests, not checked, equivalent, ...
    line: int
    diff: str
    mutated: str  # the first changed line of the mutant, stripped


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def modules_by_package() -> dict[str, list[str]]:
    """The configured modules grouped by package, in the order pyproject.toml lists them."""
    out: dict[str, list[str]] = {}
    for module in _pyproject()["tool"]["mutmut"]["only_mutate"]:
        package = Path(module).parts[2]
        out.setdefault(package, []).append(module)
    return out


def _table() -> dict[str, Any]:
    """`[tool.consentry.mutate]` of pyproject.toml."""
    return dict(_pyproject()["tool"].get("consentry", {}).get("mutate", {}))


def function_filters() -> dict[str, list[str]]:
    """Per module, the functions (name or Class.method, with wildcards) that are mutated."""
    table = _pyproject()["tool"].get("consentry", {}).get("mutate", {})
    return dict(table.get("functions", {}))


def dotted(module: str) -> str:
    """src/consentry/ledger/rules.py -> consentry.ledger.rules (mutmut's module part)."""
    return ".".join(Path(module).with_suffix("").parts[1:])


def mangled(function: str) -> str:
    """A function or Class.method as mutmut mangles it (x_f, xǁCǁm)."""
    if "." in function:
        cls, _, method = function.partition(".")
        return f"x{SEPARATOR}{cls}{SEPARATOR}{method}"
    return f"x_{function}"


def mutant_globs(modules: list[str]) -> list[str]:
    """The mutmut name patterns that select the configured mutants of these modules."""
    filters = function_filters()
    globs: list[str] = []
    for module in modules:
        functions = filters.get(module)
        if functions is None:
            globs.append(f"{dotted(module)}.*")
        else:
            globs += [f"{dotted(module)}.{mangled(f)}__mutmut_*" for f in functions]
    return globs


def package_root(package: str) -> Path:
    """build/mutate/<package>-root, where mutmut runs for one package.

    Its src, tests and pyproject.toml are links to the repository's, and its `mutants` (mutmut's
    working directory) is a link to build/mutate/<package>: packages can run side by side.
    """
    root = WORK / f"{package}-root"
    root.mkdir(parents=True, exist_ok=True)
    (WORK / package).mkdir(parents=True, exist_ok=True)
    for name, target in [
        ("src", ROOT / "src"),
        ("tests", ROOT / "tests"),
        ("pyproject.toml", ROOT / "pyproject.toml"),
        ("mutants", WORK / package),
    ]:
        link = root / name
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=target.is_dir())
    return root


@contextmanager
def in_package_root(package: str) -> Iterator[Path]:
    """Work in the package's root for as long as the block runs."""
    before = Path.cwd()
    root = package_root(package)
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(before)


def _meta_path(package: str, module: str) -> Path:
    """mutmut's results file for one module in the package's working directory."""
    return WORK / package / (module + ".meta")


def _kept_path(module: str) -> Path:
    return KEPT / (dotted(module) + ".json")


def keep_results(package: str) -> None:
    """Copy the package's results (exit codes, function hashes, run record) into
    tests/mutation_results/ (step 3): atomically, sorted, without mutmut's timings."""
    KEPT.mkdir(parents=True, exist_ok=True)
    for module in modules_by_package()[package]:
        meta = _meta_path(package, module)
        if not meta.exists():
            continue
        data = json.loads(meta.read_text("utf-8"))
        kept = {
            "module": module,
            "exit_code_by_key": dict(sorted(data["exit_code_by_key"].items())),
            "hash_by_function_name": dict(sorted(data["hash_by_function_name"].items())),
        }
        _write_atomic(_kept_path(module), json.dumps(kept, indent=1) + "\n")
    record = WORK / f"{package}.run.json"
    if record.exists():
        _write_atomic(KEPT / f"{package}.run.json", record.read_text("utf-8"))


def restore_results(package: str) -> None:
    """Put kept results back where mutmut reads them, for modules that have none yet."""
    for module in modules_by_package()[package]:
        kept, meta = _kept_path(module), _meta_path(package, module)
        if meta.exists() or not kept.exists():
            continue
        data = json.loads(kept.read_text("utf-8"))
        meta.parent.mkdir(parents=True, exist_ok=True)
        restored = {
            "exit_code_by_key": data["exit_code_by_key"],
            "hash_by_function_name": data["hash_by_function_name"],
            "type_check_error_by_key": {},
            "durations_by_key": {},
            "estimated_durations_by_key": {},
        }
        _write_atomic(meta, json.dumps(restored))
    record, kept_record = WORK / f"{package}.run.json", KEPT / f"{package}.run.json"
    if not record.exists() and kept_record.exists():
        record.write_text(kept_record.read_text("utf-8"), "utf-8")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def run_package(
    package: str, max_children: int, timeout: float, survivors: bool = False
) -> tuple[float, int]:
    """Run mutmut for one package in a child process; its duration in seconds and exit code."""
    env = dict(os.environ, HYPOTHESIS_PROFILE="mutate", PYTHONHASHSEED="0")
    log = WORK / f"{package}{'-survivors' if survivors else ''}.log"
    start = time.monotonic()
    with log.open("w") as out:
        cmd = [sys.executable, __file__, "_package", package, "--max-children", str(max_children)]
        cmd += ["--survivors"] if survivors else []
        # Its own session, so that a timeout ends mutmut's forked workers too (an orphaned
        # worker would hold the package's lock).
        child = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            code = -1
    return time.monotonic() - start, code


def _survivors(package: str) -> list[str]:
    """The mutants of the package's last runs that survived, found no test or were not
    reached, but for those recorded as equivalent and those outside the configured functions.
    A timed-out mutant counts as killed and is not run again: a rerun costs its whole CPU
    limit and can only find it killed again (the limit is generous: docs/testing.md)."""
    from mutmut.mutation.data import SourceFileMutationData

    # A mutant recorded as equivalent cannot be killed by any test: not worth running again;
    # a mutant outside the configured functions is never run (mutmut lists it unchecked).
    equivalent = {e["mutant"] for e in load_equivalents()}
    selected = mutant_globs(modules_by_package()[package])
    names: list[str] = []
    for module in modules_by_package()[package]:
        data = SourceFileMutationData(path=module)
        data.load()
        again = SURVIVED | NO_TESTS
        names += [
            n
            for n, c in data.exit_code_by_key.items()
            if (c is None or c in again)
            and n not in equivalent
            and any(fnmatch.fnmatchcase(n, glob) for glob in selected)
        ]
    return names


def refresh_data_files(package: str) -> None:
    """Bring the package's copy of src/ up to date for files that are not Python modules.

    mutmut copies src/ into its working directory once and, on later runs, refreshes only
    Python modules: a template, stylesheet or policy file changed since would otherwise be
    read stale by every test of the run (and the unmutated test pass would fail on it).
    1. Copy every non-Python file under src/ whose bytes differ (or that is missing).
    2. Remove non-Python files that src/ no longer has.
    """
    source_root, copy_root = ROOT / "src", WORK / package / "src"
    if not copy_root.exists():
        return  # mutmut's first run copies everything itself
    for source in source_root.rglob("*"):
        if not source.is_file() or source.suffix in {".py", ".pyc"}:
            continue
        target = copy_root / source.relative_to(source_root)
        if not target.exists() or target.read_bytes() != source.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for target in copy_root.rglob("*"):
        if not target.is_file() or target.suffix in {".py", ".pyc", ".meta", ".spans"}:
            continue
        if "__pycache__" in target.parts:
            continue
        if not (source_root / target.relative_to(copy_root)).exists():
            target.unlink()


def _package_main(package: str, max_children: int, survivors: bool = False) -> None:
    """Inside the child: configure mutmut for one package and run it (step 1)."""
    os.chdir(package_root(package))
    # One run per package at a time: a second would write into the same mutants directory.
    lock = (WORK / f"{package}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"{package} is being mutated by another run") from None
    refresh_data_files(package)
    from mutmut import __main__ as mutmut_main
    from mutmut import configuration

    modules = modules_by_package()[package]
    cfg = configuration.config()
    # A mutant `mypy --strict` rejects would fail `make test`: it is killed without running a
    # test (mutmut maps each type error to its mutant). Unused ignores are not the mutant's.
    mypy = [sys.executable, "-m", "mypy", "-O", "json", "--no-warn-unused-ignores"]
    mypy += ["--cache-dir", str(WORK / ".mypy_cache"), *modules]
    # A package may choose its own marker expression (`[tool.consentry.mutate] markers`):
    # engine runs its Spark test, the only one that checks the Spark dialect of its SQL.
    add_args = list(cfg.pytest_add_cli_args)
    markers = _table().get("markers", {}).get(package)
    if markers is not None and "-m" in add_args:
        add_args[add_args.index("-m") + 1] = markers
    configuration._config = replace(
        cfg,
        pytest_add_cli_args=add_args,
        only_mutate=modules,
        pytest_add_cli_args_test_selection=_table()
        .get("tests", {})
        .get(package, [f"tests/{package}"]),
        type_check_command=[] if package in _table().get("skip_type_check", []) else mypy,
    )
    # Fresh stats on every run: they run the package's tests once on the unmutated code (a
    # failing test stops the run), which makes mutmut's second full pass over the same
    # tests ("clean tests") redundant; on a loaded machine it costs minutes per package.
    (Path("mutants") / "mutmut-stats.json").unlink(missing_ok=True)
    from mutmut.workers import isolation

    make_runner = isolation.get_mutant_runner

    def runner_without_clean_pass(max_workers: int = 1) -> isolation.MutantRunner:
        runner = make_runner(max_workers)
        runner.run_clean_tests = lambda tests: 0  # type: ignore[method-assign]
        return runner

    mutmut_main.get_mutant_runner = runner_without_clean_pass  # type: ignore[attr-defined,unused-ignore]
    # Without names mutmut resumes: a mutant with a result is not run again (mutmut clears the
    # results of a function whose source changed). With names it runs every named mutant, so
    # a function filter would make each run start over: drop the named mutants that already
    # have a result, and a filtered run resumes too.
    filtered = any(m in function_filters() for m in modules)
    names = mutant_globs(modules) if filtered else []
    if survivors:
        # After new tests: run again only what survived, against the current tests.
        names = _survivors(package)
        if not names:
            return
    elif names:
        collect = mutmut_main.collect_source_file_mutation_data

        def without_results(
            *, mutant_names: tuple[str, ...] | list[str]
        ) -> tuple[list[tuple[Any, str, int | None]], dict[str, Any]]:
            mutants, by_path = collect(mutant_names=mutant_names)
            return [m for m in mutants if m[2] is None], by_path

        mutmut_main.collect_source_file_mutation_data = without_results
    mutmut_main._run(names, max_children)


def _status(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in TIMEOUT:
        return "timeout"
    if code in NO_TESTS:
        return "no tests"
    return "suspicious"


def _def_lines(module: str) -> dict[str, int]:
    """Line of each function and Class.method in a source module, by mutmut's mangled name."""
    tree = ast.parse((ROOT / module).read_text("utf-8"))
    lines: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines[mangled(node.name)] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines[mangled(f"{node.name}.{item.name}")] = item.lineno
    return lines


def _mutant_source(package: str, module: str, name: str, def_line: int) -> tuple[int, str, str]:
    """The source line a mutant changes, its diff, and the mutated line (read in its workdir)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    with in_package_root(package):
        diff = get_diff_for_mutant(name, path=Path(module))
    offset, mutated, index = 0, "", 0
    for raw in diff.splitlines():
        if raw.startswith(("---", "+++")):
            continue
        if raw.startswith("@@"):
            index = int(raw.split()[1].split(",")[0].lstrip("-")) - 1
            continue
        if raw.startswith("-") and not offset:
            offset = index
        if raw.startswith("+") and not mutated:
            mutated = raw[1:].strip()
        if not raw.startswith("+"):
            index += 1
    return def_line + offset, diff, mutated


def load_equivalents() -> list[dict[str, str]]:
    """The recorded equivalent mutants: module, mutant, mutated (the changed line), reason."""
    if not EQUIVALENTS.exists():
        return []
    return list(tomllib.loads(EQUIVALENTS.read_text("utf-8")).get("equivalent", []))


def _write_mutants(module: str) -> None:
    """mutmut's mutated copy of one module, its kept results merged by function hash."""
    from mutmut.__main__ import create_mutants_for_file

    output = Path("mutants", module)
    output.parent.mkdir(parents=True, exist_ok=True)
    result = create_mutants_for_file(Path(module), output)
    if result.error is not None:
        raise result.error


def collect(packages: list[str]) -> list[Mutant]:
    """Every configured mutant's result, equivalents applied (step 4)."""
    from mutmut.mutation.data import SourceFileMutationData

    equivalents = {e["mutant"]: e for e in load_equivalents()}
    by_package = modules_by_package()
    filters = function_filters()
    out: list[Mutant] = []
    for package in packages:
        for module in by_package[package]:
            meta = _meta_path(package, module)
            if not meta.exists():
                continue
            with in_package_root(package):
                if not Path("mutants", module).exists():
                    # Results restored from tests/mutation_results/ on a machine that has not
                    # run mutmut: write the mutants (the diffs come from them).
                    _write_mutants(module)
                data = SourceFileMutationData(path=module)
                data.load()
            globs = mutant_globs([module])
            def_lines = _def_lines(module)
            for name, code in sorted(data.exit_code_by_key.items()):
                if module in filters and not any(fnmatch.fnmatch(name, g) for g in globs):
                    continue
                status = _status(code)
                func = name.partition("__mutmut_")[0].rpartition(".")[2]
                line, diff, mutated = def_lines.get(func, 0), "", ""
                if status not in {"killed", "not checked"}:
                    line, diff, mutated = _mutant_source(package, module, name, line)
                    known = equivalents.get(name)
                    if known is not None and known.get("mutated", "").strip() == mutated:
                        status = "equivalent"
                out.append(Mutant(name, module, status, line, diff, mutated))
    return out


def write_report(
    mutants: list[Mutant], runs: dict[str, tuple[float, int]], starts: dict[str, str]
) -> str:
    """docs/mutation-report.md from the mutants' results; returns the overall line."""
    counts: dict[str, Counter[str]] = {}
    for m in mutants:
        counts.setdefault(m.module, Counter())[m.status] += 1
    columns = ["killed", "survived", "equivalent", "timeout", "no tests", "not checked"]
    total = Counter[str]()
    for c in counts.values():
        total.update(c)
    # Equivalent mutants cannot be killed; a timeout is a kill (the mutant never finishes);
    # a mutant not checked (the package's run was cut short) is left out and counted apart.
    considered = sum(total.values()) - total["equivalent"] - total["not checked"]
    killed = total["killed"] + total["timeout"]
    share = 100.0 * killed / considered if considered else 0.0
    duration = sum(d for d, _ in runs.values())
    overall = (
        f"{killed} of {considered} checked non-equivalent mutants killed ({share:.1f} %; "
        f"{total['timeout']} of them by a timeout)"
    )
    if total["not checked"]:
        overall += f"; {total['not checked']} not checked"
    lines = [
        "# Mutation report",
        "",
        "Written by `make mutate` (tools/mutate.py); how to read it: [testing.md](testing.md).",
        "",
        f"- Runs started: {min(starts.values(), default='never')} (the first package)",
        f"- Duration: {duration / 60:.1f} min over {len(runs)} package(s): "
        + "; ".join(
            f"{p} {d / 60:.1f} min from {starts[p]} (exit {c})" for p, (d, c) in runs.items()
        ),
        f"- mutmut {_mutmut_version()}, Hypothesis profile `mutate`, each mutant against "
        "tests/<package>/ only",
        f"- **{overall}**",
        "",
        "| module | " + " | ".join(columns) + " | % killed |",
        "| --- | " + " | ".join("---:" for _ in columns) + " | ---: |",
    ]
    for module, c in counts.items():
        n = sum(c.values()) - c["equivalent"] - c["not checked"]
        pct = f"{100.0 * (c['killed'] + c['timeout']) / n:.1f}" if n else "—"
        lines.append(f"| {module} | " + " | ".join(str(c[k]) for k in columns) + f" | {pct} |")
    lines += ["", "## Survivors", ""]
    left = [
        m for m in mutants if m.status not in {"killed", "timeout", "equivalent", "not checked"}
    ]
    if not left:
        lines.append("None.")
    for m in left:
        lines += [f"### {m.module}:{m.line} — {m.status}", "", f"`{m.name}`", "", "```diff"]
        lines += [m.diff, "```", ""]
    stale = {e["mutant"] for e in load_equivalents()} - {
        m.name for m in mutants if m.status == "equivalent"
    }
    seen = {m.name for m in mutants}
    stale &= seen
    if stale:
        lines += [
            "## Stale equivalents",
            "",
            "Recorded as equivalent, but the mutated line no longer matches; check them again:",
            "",
        ]
        lines += [f"- `{s}`" for s in sorted(stale)] + [""]
    REPORT.write_text("\n".join(lines).rstrip() + "\n", "utf-8")
    return overall


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run mutmut per package, then write the report (default)")
    run.add_argument("packages", nargs="*", help="packages to run (default: all configured)")
    run.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds per package")
    report = sub.add_parser("report", help="rewrite the report from the last run's results")
    report.add_argument("packages", nargs="*")
    one = sub.add_parser("_package")
    one.add_argument("package")
    one.add_argument("--max-children", type=int, default=2)
    one.add_argument("--survivors", action="store_true")
    run.add_argument(
        "--survivors", action="store_true", help="run again only the last run's survivors"
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start over: ignore the results kept in tests/mutation_results/",
    )
    args = parser.parse_args(argv)

    if args.command == "_package":
        _package_main(args.package, args.max_children, args.survivors)
        return 0
    packages = list(getattr(args, "packages", None) or modules_by_package())
    WORK.mkdir(parents=True, exist_ok=True)
    if args.command in (None, "run"):
        max_children = getattr(args, "max_children", os.cpu_count() or 2)
        timeout = getattr(args, "timeout", 3600.0)
        survivors = bool(getattr(args, "survivors", False))
        for package in packages:
            print(f"== mutating {package}", flush=True)
            if getattr(args, "fresh", False):
                shutil.rmtree(WORK / package, ignore_errors=True)
                (WORK / f"{package}.run.json").unlink(missing_ok=True)
            else:
                restore_results(package)
            record = WORK / f"{package}.run.json"
            started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            spent, code = run_package(package, max_children, timeout, survivors)
            if survivors and record.exists():
                # A survivors' run adds its time to the package's full run.
                before = json.loads(record.read_text("utf-8"))
                started, spent = before["started"], before["seconds"] + spent
            record.write_text(
                json.dumps({"started": started, "seconds": spent, "exit": code}), "utf-8"
            )
            print(f"   {spent / 60:.1f} min, exit {code}", flush=True)
            keep_results(package)
    else:
        for package in packages:
            restore_results(package)
            keep_results(package)
    runs: dict[str, tuple[float, int]] = {}
    starts: dict[str, str] = {}
    for package in modules_by_package():
        record = WORK / f"{package}.run.json"
        if record.exists():
            saved = json.loads(record.read_text("utf-8"))
            runs[package] = (saved["seconds"], saved["exit"])
            starts[package] = saved["started"]
    reported = [p for p in modules_by_package() if p in runs]
    print(write_report(collect(reported), {p: runs[p] for p in reported}, starts))
    print(f"report: {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

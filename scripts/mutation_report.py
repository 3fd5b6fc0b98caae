"""Scores of the mutation runs of ``scripts/mutation.sh`` (read from each clone's mutmut cache).

    python scripts/mutation_report.py [MUTATION_DIR]        # a Markdown table
    python scripts/mutation_report.py --survivors MODULE    # the surviving mutants' diffs

A module run with ``SAMPLE=`` (a hash-chosen fraction of its mutants; the others are marked
skipped) gets the score of its sample with a 95 % Wilson interval.

Survivors are sorted into two kinds read off the source line: **message text** (a string of a
``raise`` statement: mutmut wraps it in ``XX``, and the tests match the message's words, which
stay) and **other** (each needs a reason in benchmarks/MUTATION.md or a test).
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path


def _raise_lines(source: str) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def module_rows(clone: Path) -> list[tuple[int, str, str, int, str]]:
    """``(id, file, status, line number, line)`` of every mutant in ``clone``'s cache."""
    db = sqlite3.connect(clone / ".mutmut-cache")
    return db.execute(
        "select m.id, s.filename, m.status, l.line_number, l.line from mutant m "
        "join line l on m.line = l.id join sourcefile s on l.sourcefile = s.id").fetchall()


def summary(clone: Path) -> dict:
    rows = module_rows(clone)
    raises: dict[str, set[int]] = {}
    counts = {"killed": 0, "timeout": 0, "message": 0, "other": 0, "untested": 0, "skipped": 0}
    for _, name, status, number, _ in rows:
        if name not in raises:
            source = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=clone, text=True,
                                    capture_output=True, check=True).stdout
            raises[name] = _raise_lines(source)
        if status == "ok_killed":
            counts["killed"] += 1
        elif status == "bad_timeout":
            counts["timeout"] += 1
        elif status in ("bad_survived", "ok_suspicious"):
            counts["message" if number + 1 in raises[name] else "other"] += 1
        elif status == "skipped":
            counts["skipped"] += 1
        else:
            counts["untested"] += 1
    return counts


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion ``killed / n`` (a sample's score)."""
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return centre - half, centre + half


def _score(killed: int, n: int, sampled: bool) -> str:
    if not n:
        return "-"
    if not sampled:
        return f"{100 * killed / n:.1f} %"
    low, high = wilson(killed, n)
    return f"{100 * killed / n:.1f} % ({100 * low:.0f}-{100 * high:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="/tmp/tf_lrp_mutation")
    parser.add_argument("--survivors", metavar="MODULE", help="clone name, e.g. runs_shards")
    args = parser.parse_args()
    root = Path(args.directory)
    if args.survivors:
        clone = root / args.survivors
        rows = module_rows(clone)
        # ``mutmut show`` rewrites the cache's lines from the file as it is on disk: on a run
        # in progress (a mutant in place) that breaks the run, so it reads a copy
        copy = Path(tempfile.mkdtemp())
        shutil.copy(clone / ".mutmut-cache", copy / ".mutmut-cache")
        for name in {name for _, name, _, _, _ in rows}:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_text(subprocess.run(
                ["git", "show", f"HEAD:{name}"], cwd=clone, text=True, capture_output=True,
                check=True).stdout)
        for mutant, name, status, number, _line in rows:
            if status in ("bad_survived", "ok_suspicious"):
                diff = subprocess.run(["mutmut", "show", str(mutant)], cwd=copy, text=True,
                                      capture_output=True, check=False).stdout
                changed = [d for d in diff.splitlines() if d[:1] in "+-" and d[:3] not in
                           ("+++", "---")]
                print(f"{mutant:5d} {name}:{number + 1}: " + " | ".join(changed))
        shutil.rmtree(copy)
        return
    print("| module | mutants | tested | killed | survived: message text | survived: other | "
          "score | score without message text |")
    print("|---|---|---|---|---|---|---|---|")
    for clone in sorted(p for p in root.iterdir() if (p / ".mutmut-cache").exists()):
        c = summary(clone)
        tested = c["killed"] + c["timeout"] + c["message"] + c["other"]
        total = tested + c["untested"] + c["skipped"]
        killed = c["killed"] + c["timeout"]
        sampled = c["skipped"] > 0
        score = _score(killed, tested, sampled)
        score2 = _score(killed, tested - c["message"], sampled)
        print(f"| {clone.name} | {total} | {tested} | {killed} | {c['message']} | {c['other']} "
              f"| {score} | {score2} |")


if __name__ == "__main__":
    main()

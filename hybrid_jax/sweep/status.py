"""`sweep status`: each run's state, progress (from its metrics.jsonl) and ETA; `sweep merge`.

Rows are counted as `sweep run` will keep them: a last line of results.jsonl without its
newline (a write cut by a kill) is dropped at the next append, so it is not counted, and a done
run whose rows the file lacks shows them missing, with the command that restores them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
from pathlib import Path

from hybrid_jax.sweep.ladder import LADDER_DIR
from hybrid_jax.sweep.runner import Sweep, attempts_started
from hybrid_jax.sweep.state import append_rows, read_json, read_rows, row_key


def tail_records(path: Path, nbytes: int = 32_768) -> list[dict]:
    """The last complete JSON lines of a (possibly large, possibly growing) JSONL file."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - nbytes))
            lines = f.read().decode(errors="replace").splitlines()[1 if end > nbytes else 0:]
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def progress(run_dir: Path) -> tuple[int, float | None]:
    """(tokens done, tokens/s over the recent steps) from metrics.jsonl."""
    train = [r for r in tail_records(run_dir / "metrics.jsonl") if r.get("kind") == "train"]
    if not train:
        return 0, None
    rates = [r["tokens_per_s"] for r in train[-50:] if r.get("step", 0) > 1
             and isinstance(r.get("tokens_per_s"), (int, float))]
    return int(train[-1]["tokens"]), (statistics.median(rates) if rates else None)


def read_results(path: Path) -> tuple[list[dict], int]:
    """(the complete rows of results.jsonl, bytes in a torn last line, 0 if none)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], 0
    torn = len(data) - (data.rfind(b"\n") + 1)
    rows = []
    for line in data[:len(data) - torn].decode(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "run_id" in row and "tokens" in row:
            rows.append(row)
    return rows, torn


def status_rows(sweep: Sweep) -> list[dict]:
    complete, _ = read_results(sweep.results)
    results, keys = {}, {row_key(r) for r in complete}
    for r in complete:
        results[r["run_id"]] = results.get(r["run_id"], 0) + 1
    rows = []
    for spec in sweep.runs:
        state = sweep.state(spec)
        done_tokens, rate = progress(spec.run_dir)
        total = spec.config.total_tokens
        if state == "done":
            done_tokens = total
        eta = (total - done_tokens) / rate if state == "running" and rate else None
        holder = sweep.lock(spec).holder() if state == "running" else None
        done = read_json(spec.run_dir / "done.json") if state == "done" else None
        missing = sum(1 for r in (done or {}).get("rows", []) if row_key(r) not in keys)
        failed = read_json(spec.run_dir / "failed.json") if state in ("failed", "refused") else None
        rows.append({"run_id": spec.run_id, "family": spec.family, "size": spec.size,
                     "n_params": spec.n_params, "state": state, "tokens": done_tokens,
                     "total_tokens": total, "rows": results.get(spec.run_id, 0),
                     "rows_missing": missing, "points": len(spec.hyper.decay_tokens),
                     "attempts": attempts_started(spec.run_dir), "eta_s": eta, "holder": holder,
                     "error": (failed or {}).get("message") or (failed or {}).get("error")})
    for bad in sweep.invalid:
        rows.append({"run_id": f"{bad.family}-{bad.size}", "family": bad.family,
                     "size": bad.size, "state": "invalid", "error": bad.error})
    return rows


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 100 * 3600:
        return f"{s / 86400:.1f}d"
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def format_status(sweep: Sweep, rows: list[dict]) -> str:
    head = (f"{'run':<34}{'state':<9}{'N':>10}{'tokens done / total':>28}{'%':>6}"
            f"{'rows':>7}{'tries':>6}{'eta':>9}  note")
    lines = [f"sweep {sweep.ladder.name}  root {sweep.root}", head, "-" * len(head)]
    for r in rows:
        if r["state"] == "invalid":
            lines.append(f"{r['run_id']:<34}{'invalid':<9}  {r['error'][:150]}")
            continue
        pct = 100 * r["tokens"] / r["total_tokens"]
        note = ""
        if r["holder"]:
            h = r["holder"]
            note = f"{h.get('host')} pid {h.get('worker_pid') or h.get('runner_pid')}"
        if r["error"]:
            note = r["error"].splitlines()[0][:120] if r["error"].strip() else ""
        if r["rows_missing"]:
            note = f"{r['rows_missing']} row(s) missing from results.jsonl"
        lines.append(f"{r['run_id']:<34}{r['state']:<9}{r['n_params']:>10,}"
                     f"{r['tokens']:>14,} / {r['total_tokens']:<11,}{pct:>5.0f}%"
                     f"{str(r['rows']) + '/' + str(r['points']):>7}{r['attempts']:>6}"
                     f"{duration(r['eta_s']):>9}  {note}")
    states = [r["state"] for r in rows]
    counts = ", ".join(f"{states.count(s)} {s}" for s in
                       ("done", "running", "pending", "failed", "refused", "invalid")
                       if states.count(s))
    n_rows = sum(r.get("rows", 0) for r in rows)
    n_points = sum(r.get("points", 0) for r in rows)
    lines.append(f"{len(rows)} runs: {counts}; {n_rows}/{n_points} result rows in {sweep.results}")
    hint = repair_hint(sweep, rows)
    return "\n".join(lines + ([hint] if hint else []))


def repair_hint(sweep: Sweep, rows: list[dict]) -> str | None:
    """One line when results.jsonl has a torn last line or lacks rows of done runs, naming the
    command that repairs it (`sweep run` drops the torn line and re-appends rows from each
    done run's done.json, training nothing that is done)."""
    _, torn = read_results(sweep.results)
    missing = sum(r.get("rows_missing", 0) for r in rows)
    if not torn and not missing:
        return None
    problems = [f"a torn last line ({torn} bytes)"] if torn else []
    if missing:
        problems.append(f"{missing} row(s) of done runs missing")
    shipped = sweep.ladder.path.resolve() == (LADDER_DIR / f"{sweep.ladder.name}.yaml").resolve()
    ladder = sweep.ladder.name if shipped else str(sweep.ladder.path)
    command = f"hybrid-jax sweep run {shlex.quote(ladder)} --root {shlex.quote(str(sweep.root))}"
    return (f"{sweep.results.name} has {' and '.join(problems)}: `{command}` repairs it "
            "(rows are restored from done.json)")


def merge(sweep: Sweep, others: list[str | Path], say=print) -> int:
    """Copy rows and completed-run markers of this ladder's runs from other roots into
    sweep.root, so a later `sweep run` trains none of them again. Returns rows added."""
    ids = {s.run_id: s for s in sweep.runs}
    sweep.root.mkdir(parents=True, exist_ok=True)
    added = 0
    for other in map(Path, others):
        if not other.is_dir():
            raise FileNotFoundError(f"sweep root {other} does not exist")
        rows = [r for r in read_rows(other / "results.jsonl") if r["run_id"] in ids]
        skipped = len(read_rows(other / "results.jsonl")) - len(rows)
        n = append_rows(sweep.results, rows)
        markers = 0
        for run_id, spec in ids.items():
            done = other / "runs" / run_id / "done.json"
            if done.is_file() and not (spec.run_dir / "done.json").exists():
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                for name in ("config.json", "run_meta.json", "summary.json", "metrics.jsonl",
                             "attempts.jsonl"):
                    if (done.parent / name).is_file():
                        shutil.copy2(done.parent / name, spec.run_dir / name)
                append_rows(sweep.results, read_json(done)["rows"])
                shutil.copy2(done, spec.run_dir / "done.json")  # last: the marker
                markers += 1
        added += n
        say(f"merged {other}: {n} new row(s) of {len(rows)}, {markers} completed run(s)"
            + (f"; {skipped} row(s) of runs not in this ladder skipped" if skipped else ""))
    return added

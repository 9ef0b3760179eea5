"""`sweep status`: each run's state, progress (from its metrics.jsonl) and ETA; `sweep merge`.

Rows are counted from results.d (storage/results.py), as `sweep run` keeps them. A done run
whose rows results.d lacks shows them missing, with the command that restores them, as does a
results.jsonl that lacks rows of results.d (an export that another runner's overtook).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics

from hybrid_jax.storage import gcs, objects, results
from hybrid_jax.storage.paths import as_path, is_object_store, read_text_or_none
from hybrid_jax.sweep.ladder import LADDER_DIR
from hybrid_jax.sweep.root import Sweep
from hybrid_jax.sweep.runner import attempts_started
from hybrid_jax.sweep.state import read_json


def tail_records(path: os.PathLike, nbytes: int = 32_768) -> list[dict]:
    """The last complete JSON lines of a (possibly large, possibly growing) JSONL file; on
    gs:// one ranged read of the object's tail."""
    try:
        if is_object_store(path):
            tail = gcs.read_tail(path, nbytes)
            if tail is None:
                return []
            data, end = tail
        else:
            with open(path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(0, end - nbytes))
                data = f.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()[1 if end > nbytes else 0:]
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def progress(run_dir: os.PathLike) -> tuple[int, float | None]:
    """(tokens done, tokens/s over the recent steps) from metrics.jsonl."""
    train = [r for r in tail_records(as_path(run_dir) / "metrics.jsonl")
             if r.get("kind") == "train"]
    if not train:
        return 0, None
    rates = [r["tokens_per_s"] for r in train[-50:] if r.get("step", 0) > 1
             and isinstance(r.get("tokens_per_s"), (int, float))]
    return int(train[-1]["tokens"]), (statistics.median(rates) if rates else None)


def _exported(sweep: Sweep) -> int:
    """How many rows results.jsonl holds."""
    return len((read_text_or_none(sweep.results) or "").splitlines())


def status_rows(sweep: Sweep) -> list[dict]:
    complete = results.read_rows(sweep.root)
    counts, keys = {}, {results.row_key(r) for r in complete}
    for r in complete:
        counts[r["run_id"]] = counts.get(r["run_id"], 0) + 1
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
        missing = sum(1 for r in (done or {}).get("rows", []) if results.row_key(r) not in keys)
        failed = read_json(spec.run_dir / "failed.json") if state in ("failed", "refused") else None
        rows.append({"run_id": spec.run_id, "family": spec.family, "size": spec.size,
                     "n_params": spec.n_params, "state": state, "tokens": done_tokens,
                     "total_tokens": total, "rows": counts.get(spec.run_id, 0),
                     "rows_missing": missing, "points": len(spec.hyper.decay_tokens),
                     "attempts": attempts_started(spec.run_dir), "eta_s": eta,
                     "tokens_per_s": rate if state == "running" else None, "holder": holder,
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
            note = f"{r['rows_missing']} row(s) missing from results.d"
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
    lines.append(f"{len(rows)} runs: {counts}; {n_rows}/{n_points} result rows in "
                 f"{sweep.root / results.ROWS_DIR}")
    hint = repair_hint(sweep, rows)
    return "\n".join(lines + ([hint] if hint else []))


def overview(sweep: Sweep) -> str:
    """One line for a driver to print as it goes: runs by state and the ladder's ETA, the
    training FLOPs left over the FLOP/s of the runs training now (their recent tokens/s), so
    it assumes the slots stay as busy as they are."""
    from hybrid_jax.flops import train_flops

    rows = status_rows(sweep)
    left = rate = 0.0
    for spec, r in zip(sweep.runs, rows):
        if r["state"] in ("done", "failed", "refused"):
            continue
        total = r["total_tokens"]
        per_token = train_flops(spec.config.model, spec.config.train.seq_len, total) / total
        left += per_token * (total - r["tokens"])
        rate += per_token * (r["tokens_per_s"] or 0.0)
    states = [r["state"] for r in rows]
    counts = ", ".join(f"{states.count(s)} {s}" for s in
                       ("done", "running", "pending", "failed", "refused", "invalid"))
    eta = duration(left / rate) if rate else ("0:00" if not left else "?")
    return f"[sweep] {counts}; eta {eta}"


def repair_hint(sweep: Sweep, rows: list[dict]) -> str | None:
    """One line when results.d lacks rows of done runs, or results.jsonl lacks rows of
    results.d, naming the command that repairs it (`sweep run` re-adds rows from each done
    run's done.json and exports results.jsonl, training nothing that is done)."""
    missing = sum(r.get("rows_missing", 0) for r in rows)
    stale = len(results.read_rows(sweep.root)) - _exported(sweep)
    if not missing and stale <= 0:
        return None
    problems = [f"{missing} row(s) of done runs missing from results.d"] if missing else []
    if stale > 0:
        problems.append(f"results.jsonl lacks {stale} row(s) of results.d")
    shipped = (sweep.ladder.path.resolve()
               == (LADDER_DIR / f"{sweep.ladder.name}.yaml").resolve())
    ladder = sweep.ladder.name if shipped else str(sweep.ladder.path)
    command = f"hybrid-jax sweep run {shlex.quote(ladder)} --root {shlex.quote(str(sweep.root))}"
    return (f"{' and '.join(problems)}: `{command}` repairs it (rows are restored from "
            f"done.json)")


def merge(sweep: Sweep, others: list[str | os.PathLike], say=print) -> int:
    """Copy rows and completed-run markers of this ladder's runs from other roots (local or
    gs://) into sweep.root, so a later `sweep run` trains none of them again. Returns rows
    added."""
    ids = {s.run_id: s for s in sweep.runs}
    if not sweep.remote:
        sweep.root.mkdir(parents=True, exist_ok=True)
    added = 0
    for other in map(as_path, others):
        if not other.is_dir():
            raise FileNotFoundError(f"sweep root {other} does not exist")
        theirs = results.read_rows(other)
        rows = [r for r in theirs if r["run_id"] in ids]
        n = results.append_rows(sweep.root, rows)
        markers = 0
        for run_id, spec in ids.items():
            done = other / "runs" / run_id / "done.json"
            if done.exists() and not (spec.run_dir / "done.json").exists():
                for name in ("config.json", "run_meta.json", "summary.json", "metrics.jsonl",
                             "attempts.jsonl"):
                    data = objects.read_bytes(done.parent / name)
                    if data is not None:
                        objects.write_atomic(spec.run_dir / name, data)
                results.append_rows(sweep.root, read_json(done)["rows"])
                objects.write_atomic(spec.run_dir / "done.json", objects.read_bytes(done))
                markers += 1  # the marker last
        added += n
        say(f"merged {other}: {n} new row(s) of {len(rows)}, {markers} completed run(s)"
            + (f"; {len(theirs) - len(rows)} row(s) of runs not in this ladder skipped"
               if len(theirs) > len(rows) else ""))
    sweep.export_results()
    return added

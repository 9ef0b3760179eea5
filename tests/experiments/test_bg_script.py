"""experiments/scripts/bg.sh: a job that outlives its caller, its exit status, a graceful stop
through its process group, and the refusals."""

import subprocess
import time
from tests.helpers import REPO

BG = REPO / "experiments" / "scripts" / "bg.sh"


def bg(cwd, *args, timeout=60):
    return subprocess.run(["bash", str(BG), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_start_wait_records_output_and_exit_status(tmp_path):
    assert bg(tmp_path, "start", "a", "--", "bash", "-c", "echo hi; sleep 1; exit 7").returncode == 0
    assert bg(tmp_path, "status", "a").stdout.strip() == "running"
    assert bg(tmp_path, "start", "a", "--", "true").returncode == 2      # already running
    done = bg(tmp_path, "wait", "a", "30")
    assert done.returncode == 1 and "hi" in done.stdout and "done rc=7" in done.stdout
    ok = (bg(tmp_path, "start", "b", "--", "true"), bg(tmp_path, "wait", "b", "30"))
    assert ok[1].returncode == 0 and (tmp_path / "bg/b/rc").read_text().strip() == "0"


def test_wait_deadline_and_graceful_stop_through_the_process_group(tmp_path):
    script = 'trap "echo saving; exit 75" TERM; sleep 60 & wait'
    bg(tmp_path, "start", "s", "--", "bash", "-c", script)
    time.sleep(0.5)
    assert bg(tmp_path, "wait", "s", "1").returncode == 3               # still running
    assert "SIGTERM" in bg(tmp_path, "stop", "s").stdout
    done = bg(tmp_path, "wait", "s", "30")
    assert "saving" in done.stdout and "done rc=75" in done.stdout      # the job's own status


def test_unknown_job_and_bad_arguments(tmp_path):
    assert bg(tmp_path, "wait", "nope", "1").returncode == 4
    assert bg(tmp_path, "start", "x").returncode == 2                   # no command
    assert bg(tmp_path, "frobnicate", "x").returncode == 2

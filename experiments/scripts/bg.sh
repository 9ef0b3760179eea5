#!/usr/bin/env bash
# A job that outlives the shell that started it, watched through files only: for rented machines
# reached by short calls (a GPU lent for 10-minute commands), where a call must start work, come
# back within its limit, and a later call must find the same work still running.
#
#   bash experiments/scripts/bg.sh start NAME -- make ladder-gpu   # returns at once
#   bash experiments/scripts/bg.sh wait NAME 540                   # until done or 540 s; tail
#   bash experiments/scripts/bg.sh status NAME                     # running | done rc=N | absent
#   bash experiments/scripts/bg.sh stop NAME                       # SIGTERM to the job's group
#
# State lives in bg/NAME/{pid,log,rc}. The job runs in its own session (setsid), so it survives
# the caller, and `stop` signals its process group by the recorded pid: never `pkill -f PATTERN`,
# which also matches any shell whose command line happens to contain the pattern (the caller's).
# `start` refuses while NAME is running; `wait` exits 0 when the job has ended with rc 0, 1 when
# it ended otherwise, 3 when it is still running at the deadline, 4 when there is no such job.
set -euo pipefail
cmd=${1:-}; name=${2:-}
[[ -n "$cmd" && -n "$name" ]] || { sed -n '2,17p' "$0" >&2; exit 2; }
dir="bg/$name"

alive() { [[ -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

state() {
  if alive; then echo running
  elif [[ -f "$dir/rc" ]]; then echo "done rc=$(cat "$dir/rc")"
  elif [[ -f "$dir/pid" ]]; then echo "died (no exit status: killed with the machine?)"
  else echo absent; fi
}

case "$cmd" in
  start)
    shift 2; [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || { echo "bg.sh start $name: no command after --" >&2; exit 2; }
    if alive; then echo "bg.sh: $name is already running (pid $(cat "$dir/pid"))" >&2; exit 2; fi
    mkdir -p "$dir"; rm -f "$dir/rc"
    # The job writes its own exit status; `setsid` puts it in a new session and process group.
    # Its wrapper shell traps TERM (a handler, so the job itself keeps the default action) and
    # so outlives a `stop`, to record the job's own exit status (75 from a sweep that saved).
    setsid bash -c 'trap : TERM; echo $$ > "$0/pid"; "${@}" >> "$0/log" 2>&1; echo $? > "$0/rc"' \
      "$dir" "$@" < /dev/null > /dev/null 2>&1 &
    for _ in $(seq 50); do [[ -s "$dir/pid" ]] && break; sleep 0.1; done
    echo "bg.sh: started $name (pid $(cat "$dir/pid")), log $dir/log" ;;
  wait)
    deadline=$(( $(date +%s) + ${3:-540} ))
    while alive && (( $(date +%s) < deadline )); do sleep 1; done
    [[ -f "$dir/log" ]] && tail -n "${TAIL:-30}" "$dir/log"
    s=$(state); echo "bg.sh: $name $s"
    case "$s" in "done rc=0") exit 0 ;; running) exit 3 ;; absent) exit 4 ;; *) exit 1 ;; esac ;;
  status) state ;;
  stop)
    if alive; then kill -TERM -- "-$(cat "$dir/pid")"; echo "bg.sh: sent SIGTERM to $name"
    else echo "bg.sh: $name is not running ($(state))"; fi ;;
  *) echo "bg.sh: unknown command $cmd (start | wait | status | stop)" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Start or stop a fleet of clients: scripts/clients.sh start|stop aws|ow [N]
# Clients fork from one launcher (shared torch pages), listen on consecutive
# ports from FL_CLIENT_BASE_PORT (5001), log to logs/<transport>/, and are
# listed in run/clients_<transport>.pid (FL_RUN_DIR, FL_LOG_DIR move them) so that stop kills exactly those.
set -euo pipefail
cmd=${1:?usage: clients.sh start|stop aws|ow [N]}
transport=${2:?usage: clients.sh start|stop aws|ow [N]}
count=${3:-20}
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
rundir=${FL_RUN_DIR:-run}
pidfile=$rundir/clients_${transport}.pid
logdir=${FL_LOG_DIR:-logs}/${transport}

ours() { # is $1 still one of our client processes (not a reused pid, not a zombie)? Builtins only:
  # stop asks this of every client every 50 ms, and forking for it took cores from the clients
  local args=()
  { mapfile -d '' -t args < "/proc/$1/cmdline"; } 2>/dev/null || return 1
  [[ " ${args[*]} " == *" clients.launcher "* ]]
}

case $cmd in
start)
  if [ -f "$pidfile" ] && ours "$(head -n1 "$pidfile")"; then
    echo "clients are already running ($pidfile); run scripts/stop_clients_${transport}.sh first" >&2
    exit 1
  fi
  mkdir -p "$rundir" "$logdir"
  rm -f "$pidfile"
  # two malloc arenas per client instead of one per thread that allocates: freed memory is
  # reused rather than kept apart in each (see clients/memory.py)
  MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2} nohup "$PY" -m clients.launcher --count "$count" --transport "$transport" --log-dir "$logdir" \
    --pid-file "$pidfile" ${FL_PRELOAD:+--preload "$FL_PRELOAD"} > "$logdir/launcher.log" 2>&1 &
  launcher=$!
  for _ in $(seq 1 600); do
    [ -s "$pidfile" ] && break
    if ! kill -0 "$launcher" 2>/dev/null; then cat "$logdir/launcher.log" >&2; exit 1; fi
    sleep 0.1
  done
  [ -s "$pidfile" ] || { echo "clients did not start; see $logdir/launcher.log" >&2; exit 1; }
  cat "$logdir/launcher.log"
  ;;
stop)
  if [ ! -f "$pidfile" ]; then echo "no clients running ($pidfile not found)"; exit 0; fi
  pids=""
  for p in $(cat "$pidfile"); do ours "$p" && pids="$pids $p"; done
  [ -n "$pids" ] && kill -TERM $pids 2>/dev/null || true
  # 30 s for each to write its state and call log (a busy 2-core machine can take more than 10)
  for _ in $(seq 1 600); do
    alive=""
    for p in $pids; do ours "$p" && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.05
  done
  if [ -n "${alive:-}" ]; then
    echo "killed$alive: still running 30 s after SIGTERM (see $logdir/)" >&2
    kill -KILL $alive 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "stopped $(echo $pids | wc -w) client processes"
  ;;
*) echo "usage: clients.sh start|stop aws|ow [N]" >&2; exit 2 ;;
esac

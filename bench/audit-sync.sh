#!/usr/bin/env bash
# Benchmark: `renkei audit sync` over a relay log of N receipts (default
# 100,000) against the bare limit — a ring Ed25519 verify loop over the same
# number of signatures on all cores — in the same run. Reports the medians of
# RUNS runs (default 3), the ratio, and peak memory (GNU time %M).
#
#   bench/audit-sync.sh [N] [RUNS]
#
# The log is filled by examples/fill_log.rs straight through the relay's
# store (real signed submission/acceptance/delivery receipts, one Merkle
# append and one signed checkpoint each); the relay then serves it with
# `renkei relay serve` on a loopback port, and each run syncs a fresh
# auditor (empty audit.db) over mutual TLS. Needs python3 and /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
runs=${2:-3}
cargo build --release -q --bin renkei --example fill_log --example ed25519_baseline
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=$target/release/renkei
ex=$target/release/examples
# tmpfs when available: the fill is fsync-bound otherwise (synchronous=FULL).
work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
relay_pid=
cleanup() { [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== fill the log with $n receipts ($work)"
timeout 420 "$ex/fill_log" "$work" "$n"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" relay serve --profile "$work/relay" --data "$work/data" --listen "127.0.0.1:$port" >"$work/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

echo "== load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
relay_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$relay_pid/stat"; }
relay_cpu0=$(relay_cpu)
echo "== $runs × renkei audit sync (fresh audit.db each) and $runs × bare ring Ed25519 loop"
for i in $(seq "$runs"); do
  rm -f "$work"/auditor/audit.db*
  /usr/bin/time -f "%e %M %U %S" -o "$work/time.$i" \
    timeout 300 "$bin" audit sync --profile "$work/auditor" --relay "https://localhost:$port" --json >"$work/sync.$i.json"
  /usr/bin/time -f "%e %M" -o "$work/btime.$i" "$ex/ed25519_baseline" "$n" >"$work/base.$i.json"
  echo "  run $i: sync $(cat "$work/time.$i") (wall s, KiB, user s, sys s); baseline $(cat "$work/base.$i.json"); load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "== relay CPU (user + sys) serving the $runs syncs: $(python3 -c "print(f'{($(relay_cpu) - $relay_cpu0) / $runs:.2f}')") s per sync"
echo "== load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" "$runs" <<'PY'
import json, sys, statistics as st
w, runs = sys.argv[1], int(sys.argv[2])
sync = [json.load(open(f"{w}/sync.{i}.json")) for i in range(1, runs + 1)]
base = [json.load(open(f"{w}/base.{i}.json")) for i in range(1, runs + 1)]
wall = [float(open(f"{w}/time.{i}").read().split()[0]) for i in range(1, runs + 1)]
mem = [int(open(f"{w}/time.{i}").read().split()[1]) for i in range(1, runs + 1)]
cpu = [sum(map(float, open(f"{w}/time.{i}").read().split()[2:4])) for i in range(1, runs + 1)]
bmem = [int(open(f"{w}/btime.{i}").read().split()[1]) for i in range(1, runs + 1)]
rate = [s["receipts_verified"] / s["verify_seconds"] for s in sync]
e2e = [s["receipts_verified"] / t for s, t in zip(sync, wall)]
brate = [b["per_second"] for b in base]
m, bm = st.median(rate), st.median(brate)
print(f"log size {sync[0]['to_size']}, receipts verified per run {sync[0]['receipts_verified']}")
print(f"audit sync verify phase: median {m:,.0f} receipts/s (verify {st.median(s['verify_seconds'] for s in sync):.3f} s)")
print(f"audit sync end to end:   median {st.median(e2e):,.0f} receipts/s (wall {st.median(wall):.2f} s incl. TLS fetch of tiles, tree, store)")
print(f"audit sync CPU (user + sys): median {st.median(cpu):.2f} s (min {min(cpu):.2f}, max {max(cpu):.2f})")
print(f"bare ring Ed25519 loop:  median {bm:,.0f} verifies/s on {base[0]['threads']} threads")
print(f"ratio verify phase / bare loop = {m / bm:.1%} (target >= 80%)")
print(f"ratio end to end / bare loop   = {st.median(e2e) / bm:.1%}")
print(f"peak memory: audit sync median {st.median(mem)} KiB (max {max(mem)}), baseline {st.median(bmem)} KiB")
PY

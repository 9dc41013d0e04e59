#!/usr/bin/env bash
# Benchmark: relay load. Two `renkei relay serve` instances on one fresh
# PostgreSQL database and one shared data (ciphertext) folder, CLIENTS
# concurrent clients for DURATION seconds each sealing and submitting
# envelopes of about SIZE bytes, spread over both instances; then an audit
# (`renkei audit sync`) of the resulting log. Then the same against ONE
# relay on its embedded SQLite, in the same run, and, as a control, one
# relay on PostgreSQL (is a second instance worth it?). Prints submissions/s,
# p50/p99 latency, errors, whether the audit passed (and how long it
# took), the ratio, the peak RSS (VmHWM) and CPU time of every relay
# process, the CPU time of the load generator, and the load average.
#
#   bench/relay-load.sh                      (60 s, 32 clients, 64 KiB)
#   DURATION=5 bench/relay-load.sh           (smoke run)
#   DURATION=60 CLIENTS=32 SIZE=65536 PGURL=postgres://postgres@127.0.0.1:5432 bench/relay-load.sh
#
# The load generator is examples/relay_load.rs (sealing happens in the
# client loop, outside the timed part; one mutual-TLS connection per
# upload, like `renkei send`). Everything runs on this machine over
# loopback: the clients compete with the relays and the database for the
# same cores. Needs psql, python3, a PostgreSQL that accepts PGURL (trust
# auth) and may create databases.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-60}
clients=${CLIENTS:-32}
size=${SIZE:-65536}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432}
command -v psql >/dev/null || { echo "missing psql: apt-get install -y postgresql-client" >&2; exit 1; }
cargo build --release -q --bin renkei --example relay_load
bin=$PWD/target/release/renkei
load=$PWD/target/release/examples/relay_load
# On disk, not tmpfs: the relay fsyncs ciphertext and SQLite before it
# signs an acceptance, and PostgreSQL's own data folder is on disk too.
work=$(mktemp -d "${TMPDIR:-/tmp}/relay-load.XXXXXX")
db="renkei_load_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "${db}_a" "${db}_b"; do
    psql "$pgurl/postgres" -qAt -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "relay on port $1 did not start; see $work/*.log" >&2; exit 1
}
# start_relay NAME DATA [DATABASE_URL]: writes $work/NAME.{pid,port,log}.
start_relay() {
  local port; port=$(free_port)
  local extra=()
  [ -n "${3:-}" ] && extra=(--database-url "$3")
  RUST_LOG=warn "$bin" relay serve --profile "$work/region/relay" --data "$2" \
    --listen "127.0.0.1:$port" "${extra[@]}" >"$work/$1.log" 2>&1 &
  pids+=("$!")
  echo "$!" >"$work/$1.pid"
  echo "$port" >"$work/$1.port"
  wait_port "$port"
}
peak_rss() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$work/$1.pid")/status"; }
# CPU seconds (user + system) of a running relay.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$(cat "$work/$1.pid")/stat"; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
stop_relays() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
audit() { # audit NAME PORT: fresh auditor state, one full sync
  rm -f "$work"/region/auditor/audit.db*
  local t0; t0=$(date +%s.%N)
  if timeout 600 "$bin" audit sync --profile "$work/region/auditor" \
      --relay "https://localhost:$2" --json >"$work/$1.audit.json" 2>"$work/$1.audit.err"; then
    echo pass >"$work/$1.audit"
  else
    echo "FAIL ($(tr '\n' ' ' <"$work/$1.audit.err"))" >"$work/$1.audit"
  fi
  echo "$t0 $(date +%s.%N)" >"$work/$1.audit.secs"
}

# run_case NAME LABEL RELAY_NAME... : load through the running relays named,
# then audit through the last one; record figures under $work/NAME.*.
run_case() {
  local name=$1 label=$2; shift 2
  local urls=() r
  for r in "$@"; do urls+=("https://localhost:$(cat "$work/$r.port")"); done
  echo "== $label: $clients clients for ${duration} s, ~$size-byte envelopes"
  loadavg >"$work/$name.load"
  /usr/bin/time -f "%U %S" -o "$work/$name.gen" timeout $((duration + 300)) "$load" run "$work/region" \
    "$(IFS=,; echo "${urls[*]}")" "$clients" "$duration" "$size" >"$work/$name.json"
  local cpu=() rss=()
  for r in "$@"; do cpu+=("$(cpu_secs "$r")"); done
  echo "   $(cat "$work/$name.json")"
  audit "$name" "$(cat "$work/${*: -1}.port")"
  echo "   audit: $(cat "$work/$name.audit")"
  for r in "$@"; do rss+=("$(peak_rss "$r")"); done
  echo "${cpu[*]}" >"$work/$name.cpu"
  echo "${rss[*]}" >"$work/$name.rss"
  stop_relays
}

echo "== region ($work)"
"$load" setup "$work/region" >/dev/null
# Each case starts from an empty database and data folder; the facilities
# publish their certificates again at the start of every run.
psql "$pgurl/postgres" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE ${db}_a" -c "CREATE DATABASE ${db}_b" >/dev/null
start_relay pg1 "$work/pgdata" "$pgurl/${db}_a"
start_relay pg2 "$work/pgdata" "$pgurl/${db}_a"
run_case pg "2 relays on PostgreSQL (database ${db}_a, one shared data folder)" pg1 pg2
start_relay sq "$work/sqdata"
run_case sq "1 relay on SQLite" sq
start_relay pgone "$work/pgonedata" "$pgurl/${db}_b"
run_case pgone "control: 1 relay on PostgreSQL (database ${db}_b)" pgone

python3 - "$work" <<'PY'
import json, os, sys
w = sys.argv[1]
rows = []
for name, label in (("pg", "2 relays, PostgreSQL"), ("sq", "1 relay, SQLite"), ("pgone", "control: 1 relay, PostgreSQL")):
    r = json.load(open(f"{w}/{name}.json"))
    a = open(f"{w}/{name}.audit").read().strip()
    if a == "pass":
        s = json.load(open(f"{w}/{name}.audit.json"))
        # 2 certificate entries + (submission + acceptance) per accepted envelope
        want = 2 + 2 * r["submissions"]
        a = f"pass, {s['to_size']} entries" + ("" if s["to_size"] == want or r["errors"] else f" (expected {want}!)")
        t0, t1 = map(float, open(f"{w}/{name}.audit.secs").read().split())
        a += f", {t1 - t0:.1f} s"
    rss = " + ".join(f"{int(k) / 1024:.0f}" for k in open(f"{w}/{name}.rss").read().split())
    cpu = " + ".join(open(f"{w}/{name}.cpu").read().split())
    gen = sum(float(x) for x in open(f"{w}/{name}.gen").read().split()[-2:])
    load = open(f"{w}/{name}.load").read().strip()
    rows.append((label, r, a, rss, cpu, gen, load))
print()
print(f"clients {rows[0][1]['clients']}, {rows[0][1]['seconds']:.1f} s, ciphertext {rows[0][1]['mean_ciphertext_bytes']} bytes per envelope")
print("| setup | submissions/s | MiB/s | p50 | p99 | max | submissions | errors | audit | relay peak RSS (MiB) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for label, r, a, rss, *_ in rows:
    print(f"| {label} | {r['per_second']:.1f} | {r['mib_per_second']:.2f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms | {r['submissions']} | {r['errors']} | {a} | {rss} |")
for label, r, _, _, cpu, gen, load in rows:
    print(f"{label}: CPU time relay {cpu} s, load generator {gen:.1f} s, in {r['seconds']:.0f} s on {os.cpu_count()} cores; load average before the run {load}")
pg, sq, one = rows[0][1], rows[1][1], rows[2][1]
if sq["per_second"] > 0 and one["per_second"] > 0:
    print(f"ratio PostgreSQL (2 relays) / SQLite (1 relay) submissions/s = {pg['per_second'] / sq['per_second']:.2f}")
    print(f"ratio PostgreSQL 2 relays / 1 relay submissions/s = {pg['per_second'] / one['per_second']:.2f}")
for label, r, *_ in rows:
    for e in r["error_samples"]:
        print(f"error sample ({label}): {e}")
ok = all(r["errors"] == 0 and a.startswith("pass") for _, r, a, *_ in rows)
sys.exit(0 if ok else 1)
PY

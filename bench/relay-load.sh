#!/usr/bin/env bash
# Benchmark: the relay against a peer, in one run (issue #13).
#
# The peer is Debian's nginx with TLS and `ssl_verify_client on` against
# the region's CA (and its CRL), accepting the same bodies as plain HTTPS
# PUTs and writing them to disk (ngx_http_dav_module). It presents the
# relay's own certificate and key, so the same client stack (renkei's
# RelayClient: rustls, hyper), the same certificates, concurrency and
# connection policy are used against both.
#
# Cases, each CLIENTS concurrent clients for DURATION seconds, sealing and
# uploading envelopes of about SIZE bytes (sealing outside the timed part):
#   per-connection: nginx; 1 relay on SQLite; 2 relays on one PostgreSQL;
#                   1 relay on PostgreSQL (the control)
#   keep-alive:     the same four
#   1 GiB:          one upload of about 1 GiB to nginx and to the SQLite relay,
#                   BIG_RUNS times each (default 3), alternately; medians
# The first two each ROUNDS times (default 3), the servers taking turns in a rotating
# order (round 1: nginx first, round 2: the SQLite relay first, ...), every
# round on fresh servers; each case's figures are the round with its
# median rate, and the ratios are ratios of medians (the per-round ratios
# are printed too). Rounds spread the machine's drift over every server
# instead of letting it land on one.
# Every case starts after a `sync`; every relay case on a fresh database and
# data folder, on disk; its log is audited afterwards (`renkei audit sync`
# from an empty state).
#
# Prints a table per case (uploads/s, MiB/s, p50, p99, max, errors, audit,
# peak RSS and CPU time of the servers, sequencer batches and statements),
# the load average, and ends with exactly one line:
#   relay/nginx per-connection X.XX (sqlite) X.XX (postgres x2); keep-alive X.XX (sqlite) X.XX (postgres x2); 1GiB X.XX
#
#   bench/relay-load.sh                      (3 rounds of 20 s, 32 clients, 64 KiB)
#   DURATION=5 ROUNDS=1 bench/relay-load.sh  (smoke run)
#   CASES="big" bench/relay-load.sh          (some cases only: per-connection,
#                                             keep-alive, big; the closing line
#                                             needs all three)
#   SERVERS="nginx sqlite" bench/relay-load.sh
#                                            (some servers only: nginx, sqlite,
#                                             pg2 (two PostgreSQL relays), pg1
#                                             (the one-relay control); the
#                                             closing line needs all four)
#   RELAY_TOML=$'batch_wait_ms = 5' bench/relay-load.sh
#                                            (more relay settings)
#   RENKEI_BIN=/tmp/renkei-old bench/relay-load.sh
#                                            (another build of the relay, to
#                                             compare two in alternating runs)
#   SETTLE=70 bench/relay-load.sh            (wait only 70 s, not 370, after
#                                             the previous run's cleanup; see
#                                             below why it waits)
#   DURATION=20 ROUNDS=3 CLIENTS=32 SIZE=65536 BIG=1073741824 PGURL=postgres://postgres@127.0.0.1:5432 bench/relay-load.sh
#
# Needs nginx (apt-get install -y nginx), psql, python3, and a PostgreSQL
# that accepts PGURL (trust auth) and may create databases. Everything runs
# on this machine over loopback: clients, servers and the database share
# the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-20}
rounds=${ROUNDS:-3}
clients=${CLIENTS:-32}
size=${SIZE:-65536}
big=${BIG:-1073741824}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432}
cases=${CASES:-per-connection keep-alive big}
servers=${SERVERS:-nginx sqlite pg2 pg1}
want() { [[ " $servers " == *" $1 "* ]]; }
command -v psql >/dev/null || { echo "missing psql: apt-get install -y postgresql-client" >&2; exit 1; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "missing nginx: apt-get install -y nginx" >&2; exit 1; }
cargo build --release -q --bin renkei --example relay_load
bin=${RENKEI_BIN:-$PWD/target/release/renkei}
load=$PWD/target/release/examples/relay_load
# On disk, not tmpfs: the relay fsyncs ciphertext and its database before
# it signs an acceptance; nginx writes to the same disk (without fsync).
work=$(mktemp -d "${TMPDIR:-/tmp}/relay-load.XXXXXX")
db="renkei_load_$$"
pids=()
dbs=()
# When the last run's clean-up ended (see below).
cleaned=${TMPDIR:-/tmp}/relay-load.cleaned
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "${dbs[@]}"; do
    psql "$pgurl/postgres" -qAt -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  date +%s >"$cleaned"
}
trap cleanup EXIT
# ext4 without a journal (this machine's) does not reuse an inode for a
# minute after it is freed, and scans past every such inode whenever it
# allocates one: a run started right after another one's cleanup (some
# 10^5 files deleted) pays that scan on every file it creates, on
# whichever server's folder shares a block group with them (in a profile,
# 5 % of the relay's CPU in `recently_deleted` under `open`). The minute
# becomes six (RECENTCY_MIN 60 s + RECENTCY_DIRTY 300 s in
# fs/ext4/ialloc.c) while the freed inode's table block is dirty, and
# every file created in that block dirties it again. Wait it out; a large
# build just before a run (cargo deletes many temporary files) does the
# same, and is not waited for.
settle=${SETTLE:-370}
if [ -f "$cleaned" ]; then
  left=$(( $(cat "$cleaned" 2>/dev/null || echo 0) + settle - $(date +%s) ))
  if [ "$left" -gt 0 ]; then
    echo "== waiting ${left} s: the previous run deleted its files less than ${settle} s ago"
    sleep "$left"
  fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "server on port $1 did not start; see $work/*.log" >&2; exit 1
}
# Relay settings for the load: no per-facility quotas (two facilities send
# everything), defaults otherwise.
cat >"$work/relay.toml" <<EOF
quota_uploads_per_day = 0
quota_bytes_per_day = 0
quota_concurrent_uploads = 0
${RELAY_TOML:-}
EOF
# start_relay NAME DATA [DATABASE_URL]: writes $work/NAME.{pid,port,log}.
start_relay() {
  local port; port=$(free_port)
  local extra=()
  [ -n "${3:-}" ] && extra=(--database-url "$3")
  NO_COLOR=1 RUST_LOG=warn,renkei::relay::stats=info "$bin" relay serve --profile "$work/region/relay" --data "$2" \
    --config "$work/relay.toml" --listen "127.0.0.1:$port" "${extra[@]}" >"$work/$1.log" 2>&1 &
  pids+=("$!")
  echo "$!" >"$work/$1.pid"
  echo "$port" >"$work/$1.port"
  wait_port "$port"
}
start_nginx() { # start_nginx NAME
  local port; port=$(free_port)
  local dir="$work/$1"
  rm -rf "$dir"; mkdir -p "$dir/root/upload" "$dir/tmp" "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  client_max_body_size 2g;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $work/region/relay/cert.pem;
    ssl_certificate_key $work/region/relay/tls-key.pem;
    ssl_client_certificate $work/region/relay/ca.pem;
    ssl_crl $work/region/relay/crl.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /upload/ {
      root $dir/root;
      dav_methods PUT;
      create_full_put_path on;
    }
  }
}
EOF
  "$nginx" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$work/$1.log" 2>&1 &
  pids+=("$!")
  echo "$!" >"$work/$1.pid"
  echo "$port" >"$work/$1.port"
  wait_port "$port"
}
# Peak RSS (KiB) and CPU seconds of a server and its children (nginx workers).
tree_pids() { local p=$1; echo "$p"; for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done; }
peak_rss() { local t=0; for p in $(tree_pids "$(cat "$work/$1.pid")"); do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo "$t"; }
cpu_secs() { local hz; hz=$(getconf CLK_TCK); for p in $(tree_pids "$(cat "$work/$1.pid")"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk -v hz="$hz" '{s+=$1} END {printf "%.1f", s / hz}'; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
# Bytes written to storage so far by every PostgreSQL process.
pg_written() { for p in $(pgrep -x postgres); do awk '/^write_bytes/ {print $2}' "/proc/$p/io" 2>/dev/null; done | awk '{s+=$1} END {printf "%d", s}'; }
# CPU seconds used so far by every PostgreSQL process (server and backends).
pg_cpu() { local hz; hz=$(getconf CLK_TCK); for p in $(pgrep -x postgres); do awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null; done | awk -v hz="$hz" '{s+=$1} END {printf "%.1f", s / hz}'; }
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
audit() { # audit NAME PORT: fresh auditor state, one full sync
  rm -f "$work"/region/auditor/audit.db*
  if timeout 900 "$bin" audit sync --profile "$work/region/auditor" \
      --relay "https://localhost:$2" --json >"$work/$1.audit.json" 2>"$work/$1.audit.err"; then
    echo pass >"$work/$1.audit"
  else
    echo "FAIL ($(tr '\n' ' ' <"$work/$1.audit.err"))" >"$work/$1.audit"
  fi
}
# new_db SUFFIX: a fresh database (called without a subshell, so that
# cleanup knows to drop it).
new_db() { local d="${db}_$1"; psql "$pgurl/postgres" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $d" >/dev/null; dbs+=("$d"); }

# run_case NAME LABEL FLAGS SERVER... : load through the running servers,
# then (relays) audit through the last one; figures under $work/NAME.*.
run_case() {
  local name=$1 label=$2 flags=$3; shift 3
  local urls=() r
  for r in "$@"; do urls+=("https://localhost:$(cat "$work/$r.port")"); done
  echo "== $label"
  # Every case starts with the disk's queue empty: nginx does not fsync, so
  # without this the ~1 GiB it leaves in the page cache would be written
  # back during the next case, on the disk that case's fsyncs wait for.
  sync
  loadavg >"$work/$name.load"
  local pg0; pg0=$(pg_cpu)
  local pgw0; pgw0=$(pg_written)
  # shellcheck disable=SC2086
  local bytes=$size
  [[ $flags == *--once* ]] && bytes=$big
  /usr/bin/time -f "%U %S" -o "$work/$name.gen" timeout $((duration + 600)) "$load" run "$work/region" \
    "$(IFS=,; echo "${urls[*]}")" "$clients" "$duration" "$bytes" $flags >"$work/$name.json"
  local cpu=() rss=()
  for r in "$@"; do cpu+=("$(cpu_secs "$r")"); rss+=("$(peak_rss "$r")"); done
  echo "$(pg_cpu) - $pg0" | bc >"$work/$name.pgcpu"
  echo "$(( ($(pg_written) - pgw0) >> 20 ))" >"$work/$name.pgwritten"
  echo "   $(cat "$work/$name.json")"
  if [[ $flags != *--nginx* ]]; then
    audit "$name" "$(cat "$work/${*: -1}.port")"
    echo "   audit: $(cat "$work/$name.audit")"
  else
    echo "n/a" >"$work/$name.audit"
  fi
  echo "${cpu[*]}" >"$work/$name.cpu"
  echo "${rss[*]}" >"$work/$name.rss"
  stop_servers
  : >"$work/$name.seq"
  for r in "$@"; do grep -ho 'log sequencer totals.*' "$work/$r.log" >>"$work/$name.seq" 2>/dev/null || true; done
  # One line per case, to tell a slow round's cause: CPU per upload
  # (servers, client) and, for relays, the time per batch and its COMMIT.
  python3 - "$work" "$name" <<'PY'
import json, re, sys
w, name = sys.argv[1], sys.argv[2]
r = json.load(open(f"{w}/{name}.json"))
n = max(r["submissions"], 1)
srv = sum(float(x) for x in open(f"{w}/{name}.cpu").read().split())
gen = sum(float(x) for x in open(f"{w}/{name}.gen").read().split()[-2:] if x[0].isdigit())
seq = [dict(re.findall(r"(\w+)=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", l))) for l in open(f"{w}/{name}.seq").read().splitlines()]
b = sum(int(s.get("batches", 0)) for s in seq)
batch = ""
if b:
    busy = sum(int(s.get("busy_us", 0)) for s in seq) / b / 1000
    commit = sum(int(s.get("commit_us", 0)) for s in seq) / b / 1000
    batch = f"; {busy:.1f} ms per batch, COMMIT {commit:.1f} ms"
pgw = open(f"{w}/{name}.pgwritten").read().strip()
print(f"   {r['per_second']:.1f}/s, p50 {r['p50_ms']:.0f} ms; CPU per upload: server {srv / n * 1000:.2f} ms, client {gen / n * 1000:.2f} ms, both {(srv + gen) / r['seconds']:.2f} cores{batch}; PostgreSQL wrote {pgw} MiB meanwhile")
PY
}

echo "== region ($work); load average $(loadavg)"
"$load" setup "$work/region" >/dev/null
# run_server SERVER POLICY ROUND: one case (names end in .rROUND).
run_server() {
  local policy=$2 r=".r$3" flags=""
  [ "$policy" = keep-alive ] && flags="--keep-alive"
  case $1 in
    nginx)
      start_nginx "nginx-$policy$r"
      run_case "nginx-$policy$r" "nginx, $policy, round $3" "--nginx $flags" "nginx-$policy$r" ;;
    sqlite)
      start_relay "sq-$policy$r" "$work/sq-$policy$r-data"
      run_case "sq-$policy$r" "1 relay on SQLite, $policy, round $3" "$flags" "sq-$policy$r" ;;
    pg2)
      local d="${policy//-/_}_$3"
      new_db "$d"
      start_relay "pga-$policy$r" "$work/pg-$policy$r-data" "$pgurl/${db}_$d"
      start_relay "pgb-$policy$r" "$work/pg-$policy$r-data" "$pgurl/${db}_$d"
      run_case "pg-$policy$r" "2 relays on PostgreSQL, $policy, round $3" "$flags" "pga-$policy$r" "pgb-$policy$r" ;;
    pg1)
      # Control: one relay on PostgreSQL (does a second instance add anything?)
      local d="one_${policy//-/_}_$3"
      new_db "$d"
      start_relay "pgone-$policy$r" "$work/pgone-$policy$r-data" "$pgurl/${db}_$d"
      run_case "pgone-$policy$r" "control: 1 relay on PostgreSQL, $policy, round $3" "$flags" "pgone-$policy$r" ;;
  esac
}
order=()
for s in nginx sqlite pg2 pg1; do want "$s" && order+=("$s"); done
for round in $(seq "$rounds"); do
  for policy in per-connection keep-alive; do
    [[ " $cases " == *" $policy "* ]] || continue
    n=${#order[@]}
    for i in $(seq 0 $((n - 1))); do
      run_server "${order[$(( (i + round - 1) % n ))]}" "$policy" "$round"
    done
  done
done
# One large upload each, BIG_RUNS times (default 3), alternating between
# the two servers, each after a `sync` (the previous upload's dirty pages
# written), medians reported.
big_runs=${BIG_RUNS:-3}
if [[ " $cases " == *" big "* ]]; then
  start_nginx nginx-big
  start_relay sq-big "$work/sq-big-data"
  echo "== one upload of ~$((big >> 20)) MiB, $big_runs times each, nginx and 1 relay on SQLite alternately"
  loadavg >"$work/nginx-big.load"; cp "$work/nginx-big.load" "$work/sq-big.load"
  for i in $(seq "$big_runs"); do
    for s in nginx-big sq-big; do
      f=""; [ $s = nginx-big ] && f="--nginx"
      sync
      # shellcheck disable=SC2086
      timeout 900 "$load" run "$work/region" "https://localhost:$(cat "$work/$s.port")" 1 1 "$big" --once $f >"$work/$s.$i.json"
      echo "   $s: $(cat "$work/$s.$i.json")"
    done
  done
  for s in nginx-big sq-big; do
    python3 - "$work" "$s" "$big_runs" <<'PY'
import json, statistics, sys
w, s, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.load(open(f"{w}/{s}.{i}.json")) for i in range(1, n + 1)]
med = dict(runs[0])
for k in ("seconds", "mib_per_second", "seal_seconds"):
    med[k] = statistics.median(r[k] for r in runs)
med["errors"] = sum(r["errors"] for r in runs)
med["error_samples"] = [e for r in runs for e in r["error_samples"]]
med["runs"] = [round(r["mib_per_second"], 1) for r in runs]
json.dump(med, open(f"{w}/{s}.json", "w"))
PY
    cpu_secs "$s" >"$work/$s.cpu"; peak_rss "$s" >"$work/$s.rss"; echo 0 >"$work/$s.pgcpu"
    : >"$work/$s.gen"; : >"$work/$s.seq"
  done
  echo n/a >"$work/nginx-big.audit"
  audit sq-big "$(cat "$work/sq-big.port")"
  echo "   audit: $(cat "$work/sq-big.audit")"
  stop_servers
fi

python3 - "$work" "$size" "$big" <<'PY'
import json, os, re, sys
w, size, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    r = json.load(open(f"{w}/{name}.json"))
    r["name"] = name
    r["audit"] = open(f"{w}/{name}.audit").read().strip()
    r["rss"] = " + ".join(f"{int(k) / 1024:.0f}" for k in open(f"{w}/{name}.rss").read().split())
    r["cpu"] = " + ".join(open(f"{w}/{name}.cpu").read().split())
    r["gen"] = sum(float(x) for x in open(f"{w}/{name}.gen").read().split()[-2:] if x[0].isdigit())
    r["load"] = open(f"{w}/{name}.load").read().strip()
    r["pgcpu"] = open(f"{w}/{name}.pgcpu").read().strip()
    seq = [dict(re.findall(r"(\w+)=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", l))) for l in open(f"{w}/{name}.seq").read().splitlines()]
    tot = {k: sum(int(s.get(k, 0)) for s in seq) for k in ("batches", "jobs", "leaves", "statements", "round_trips", "busy_us", "commit_us", "acquire_us")}
    r["seq"] = tot
    return r
print()
print(f"clients {os.environ.get('CLIENTS', '32')} per case; envelopes of ~{size} bytes; {os.cpu_count()} cores shared by clients, servers and PostgreSQL")
print("| case | uploads/s | MiB/s | p50 | p99 | max | uploads | errors | audit | server peak RSS (MiB) | server CPU s | PostgreSQL CPU s | client CPU s | load before | batches | jobs/batch | statements/batch | round trips/batch | ms/batch (BEGIN..COMMIT) | of which COMMIT | ms/batch waiting for a connection | uploads/s by round |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
rows = {}
rounds = {}
for policy in ("per-connection", "keep-alive"):
    for kind, label in (("nginx", "nginx"), ("sq", "relay, SQLite"), ("pg", "2 relays, PostgreSQL"), ("pgone", "control: 1 relay, PostgreSQL")):
        name = f"{kind}-{policy}"
        runs, i = [], 1
        while os.path.exists(f"{w}/{name}.r{i}.json"):
            runs.append(load(f"{name}.r{i}")); i += 1
        if not runs:
            continue
        rounds[name] = runs
        # The round with the median rate (the lower middle one of an even count).
        r = sorted(runs, key=lambda x: x["per_second"])[(len(runs) - 1) // 2]
        r = dict(r, errors=sum(x["errors"] for x in runs),
                 error_samples=[e for x in runs for e in x["error_samples"]],
                 audit=r["audit"] if all(x["audit"] in ("pass", "n/a") for x in runs) else "; ".join(x["audit"] for x in runs))
        rows[name] = r
        s = r["seq"]; b = s["batches"] or 1
        seqcols = f"{s['batches']} | {s['jobs'] / b:.1f} | {s['statements'] / b:.1f} | {s['round_trips'] / b:.1f} | {s['busy_us'] / b / 1000:.1f} | {s['commit_us'] / b / 1000:.1f} | {s['acquire_us'] / b / 1000:.1f}" if s["batches"] else "- | - | - | - | - | - | -"
        audit = r["audit"]
        if audit == "pass":
            # Every round's log holds 2 entries per accepted upload plus the
            # 2 certificates; the row shows the median round's size.
            size = {x["name"]: json.load(open(f"{w}/{x['name']}.audit.json"))["to_size"] for x in runs}
            wrong = [f"{size[x['name']]} entries in {x['name']} (expected {2 + 2 * x['submissions']}!)"
                     for x in runs if size[x["name"]] != 2 + 2 * x["submissions"] and not x["errors"]]
            audit = f"pass, {size[r['name']]} entries" + "".join(f"; {m}" for m in wrong)
        by_round = ", ".join(f"{x['per_second']:.1f}" for x in runs)
        print(f"| {label}, {policy} | {r['per_second']:.1f} | {r['mib_per_second']:.2f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms | {r['submissions']} | {r['errors']} | {audit} | {r['rss']} | {r['cpu']} | {r['pgcpu']} | {r['gen']:.1f} | {r['load']} | {seqcols} | {by_round} |")
for name, l in (("nginx-big", "nginx"), ("sq-big", "relay, SQLite")):
    if not os.path.exists(f"{w}/{name}.json"):
        continue
    n = rows[name] = load(name)
    print(f"one upload, {l}: {n['bytes']} bytes, median of {len(n['runs'])} runs {n['seconds']:.2f} s = {n['mib_per_second']:.1f} MiB/s (runs: {', '.join(map(str, n['runs']))} MiB/s; sealing took {n['seal_seconds']:.1f} s, not timed); errors {n['errors']}; server peak RSS {n['rss']} MiB, CPU {n['cpu']} s over all runs; load before {n['load']}")
for name, r in rows.items():
    for e in r.get("error_samples", []):
        print(f"error sample ({name}): {e}")
def ratio(a, b):
    return a / b if b > 0 else 0.0
pc, ka = "per-connection", "keep-alive"
ok = all(r["errors"] == 0 and r["audit"] in ("pass", "n/a") for r in rows.values())
for policy in (pc, ka):
    for kind, label in (("sq", "sqlite"), ("pg", "postgres x2")):
        a, b = rounds.get(f"{kind}-{policy}"), rounds.get(f"nginx-{policy}")
        if a and b and len(a) == len(b) and len(a) > 1:
            each = ", ".join(f"{ratio(x['per_second'], y['per_second']):.2f}" for x, y in zip(a, b))
            print(f"{policy} relay/nginx by round ({label}): {each}")
if len(rows) < 10:
    print(f"(some cases only: {' '.join(rows)}; no closing line)")
    if "sq-big" in rows and "nginx-big" in rows:
        print(f"1GiB relay/nginx {ratio(rows['sq-big']['mib_per_second'], rows['nginx-big']['mib_per_second']):.2f}")
    for policy in (pc, ka):
        if "sq-" + policy in rows and "nginx-" + policy in rows:
            print(f"{policy} relay/nginx {ratio(rows['sq-'+policy]['per_second'], rows['nginx-'+policy]['per_second']):.2f} (sqlite)")
    sys.exit(0 if ok else 1)
nb, sb = rows["nginx-big"], rows["sq-big"]
for policy in (pc, ka):
    print(f"{policy}: 2 PostgreSQL relays / 1 PostgreSQL relay = {ratio(rows['pg-'+policy]['per_second'], rows['pgone-'+policy]['per_second']):.2f}; 2 PostgreSQL relays / 1 SQLite relay = {ratio(rows['pg-'+policy]['per_second'], rows['sq-'+policy]['per_second']):.2f}")
print(f"relay/nginx per-connection {ratio(rows['sq-'+pc]['per_second'], rows['nginx-'+pc]['per_second']):.2f} (sqlite) "
      f"{ratio(rows['pg-'+pc]['per_second'], rows['nginx-'+pc]['per_second']):.2f} (postgres x2); "
      f"keep-alive {ratio(rows['sq-'+ka]['per_second'], rows['nginx-'+ka]['per_second']):.2f} (sqlite) "
      f"{ratio(rows['pg-'+ka]['per_second'], rows['nginx-'+ka]['per_second']):.2f} (postgres x2); "
      f"1GiB {ratio(sb['mib_per_second'], nb['mib_per_second']):.2f}")
sys.exit(0 if ok else 1)
PY

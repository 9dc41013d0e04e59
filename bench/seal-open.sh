#!/usr/bin/env bash
# Benchmark: sealing and opening a large package with renkei against Debian's
# Go age encrypting/decrypting the same file, in the same run. Reports the
# median wall time of each (the commands run in turn, round after round),
# the speed relative to age (age time / renkei time: above 1 means renkei
# is faster), and peak memory (GNU time). renkei fsyncs what it writes and age does not: the same run
# also times age followed by an fsync of its output (`sync FILE`), the
# peer made as durable, and prints that ratio too. The last line is the
# summary (against plain age):
#
#   seal/age X.XX, open/age-d X.XX, peak RSS N MiB
#
#   bench/seal-open.sh [SIZE_MiB] [RUNS]     (defaults: 512 MiB, 5 runs)
#
# Files live in a fresh folder under ${TMPDIR:-/tmp} (on disk here).
# Needs: age, python3, /usr/bin/time (Debian packages age, time).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
runs=${2:-5}
for t in age python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y age python3 time" >&2; exit 1; }
done
cargo build --release -q
bin=$PWD/target/release/renkei
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r keys-example/clinic keys-example/hospital "$work/"
chmod 600 "$work"/*/*.key
head -c $((size * 1024 * 1024)) /dev/urandom > "$work/scan.dcm"
# The demo referral, naming the attachment (seal validates the document).
sed 's/検査結果\.csv/scan.dcm/g' examples/demo/referral.json > "$work/doc.json"
recipient=$(grep -o 'age1[0-9a-z]*' "$work/hospital/age.key" | head -1)

# The three commands of each comparison run in turn, round after round
# (the order rotating), not each in a block of its own: on a shared
# machine the speed drifts over minutes, and a block of age runs and a
# block of renkei runs a minute apart compared that drift as much as the
# programs. Before every run: the outputs removed and `sync`.
timed() { # NAME PREPARE, then lines "label<TAB>command" on stdin
  python3 -c '
import json, statistics, subprocess, sys, time
work, runs, name, prepare = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cmds = [l.split("\t", 1) for l in sys.stdin.read().splitlines() if l]
times = {label: [] for label, _ in cmds}
for r in range(runs + 1):  # round 0 warms up
    k = r % len(cmds)
    for label, cmd in cmds[k:] + cmds[:k]:
        subprocess.run(prepare, shell=True, check=True)
        t = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r > 0:
            times[label].append(time.perf_counter() - t)
for label, ts in times.items():
    print(f"  {label:10s} median {statistics.median(ts):.3f} s (min {min(ts):.3f}, max {max(ts):.3f}, {len(ts)} runs)")
json.dump({"results": [{"command": l, "median": statistics.median(ts), "times": ts} for l, ts in times.items()]},
          open(f"{work}/{name}.json", "w"))
' "$work" "$runs" "$@"
}

echo "== seal ${size} MiB: renkei seal vs age -e (same recipient set size: hospital + sender copy)"
sender_r=$(grep -o 'age1[0-9a-z]*' "$work/clinic/age.key" | head -1)
printf '%s\t%s\n' \
  renkei "$bin seal --profile $work/clinic --to $work/hospital/cert.pem --document $work/doc.json --attach $work/scan.dcm -o $work/p.age" \
  age "age -e -r $recipient -r $sender_r -o $work/a.age $work/scan.dcm" \
  age-fsync "age -e -r $recipient -r $sender_r -o $work/a.age $work/scan.dcm && sync $work/a.age" |
  timed seal "rm -f $work/p.age $work/a.age; sync"

rm -f "$work/p.age" "$work/a.age"
"$bin" seal --profile "$work/clinic" --to "$work/hospital/cert.pem" --document "$work/doc.json" --attach "$work/scan.dcm" -o "$work/p.age" 2>/dev/null
age -e -r "$recipient" -o "$work/a.age" "$work/scan.dcm"

echo "== open ${size} MiB: renkei open (decrypt + verify + write members) vs age -d (decrypt + write)"
printf '%s\t%s\n' \
  renkei "$bin open --profile $work/hospital $work/p.age -o $work/out" \
  age "age -d -i $work/hospital/age.key -o $work/a.out $work/a.age" \
  age-fsync "age -d -i $work/hospital/age.key -o $work/a.out $work/a.age && sync $work/a.out" |
  timed open "rm -rf $work/out $work/a.out; sync"

echo "== peak memory (max RSS)"
rm -rf "$work/out" "$work/a.out" "$work/p2.age"
/usr/bin/time -o "$work/rss-seal" -f "%M" "$bin" seal --profile "$work/clinic" --to "$work/hospital/cert.pem" --document "$work/doc.json" --attach "$work/scan.dcm" -o "$work/p2.age" >/dev/null 2>&1
/usr/bin/time -o "$work/rss-open" -f "%M" "$bin" open --profile "$work/hospital" "$work/p.age" -o "$work/out" >/dev/null 2>&1
/usr/bin/time -o "$work/rss-age-e" -f "%M" age -e -r "$recipient" -o "$work/a2.age" "$work/scan.dcm"
/usr/bin/time -o "$work/rss-age-d" -f "%M" age -d -i "$work/hospital/age.key" -o "$work/a.out" "$work/a.age"
for f in seal open age-e age-d; do printf '%-12s %6d KiB\n' "$f:" "$(tail -1 "$work/rss-$f")"; done

echo "== load: $(uptime)"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
speed = {}
for name in ("seal", "open"):
    r = {x["command"]: x for x in json.load(open(f"{w}/{name}.json"))["results"]}
    a, b, c = r["renkei"]["median"], r["age"]["median"], r["age-fsync"]["median"]
    speed[name] = b / a
    print(f"{name}: renkei median {a:.3f} s, age median {b:.3f} s, age/renkei = {b/a:.2f}")
    print(f"{name}: age then fsync of its output (as durable as renkei) median {c:.3f} s, (age+fsync)/renkei = {c/a:.2f}")
rss = max(int(open(f"{w}/rss-{n}").read().split()[-1]) for n in ("seal", "open"))
print(f"seal/age {speed['seal']:.2f}, open/age-d {speed['open']:.2f}, peak RSS {rss // 1024} MiB")
PY

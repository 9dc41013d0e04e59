#!/usr/bin/env bash
# Benchmark: sealing and opening a large package with renkei against Debian's
# Go age encrypting/decrypting the same file, in the same run. Reports the
# median wall time of each (hyperfine), the speed relative to age
# (age time / renkei time: above 1 means renkei is faster), and peak memory
# (GNU time). renkei fsyncs what it writes and age does not: the same run
# also times age followed by an fsync of its output (`sync FILE`), the
# peer made as durable, and prints that ratio too. The last line is the
# summary (against plain age):
#
#   seal/age X.XX, open/age-d X.XX, peak RSS N MiB
#
#   bench/seal-open.sh [SIZE_MiB] [RUNS]     (defaults: 512 MiB, 5 runs)
#
# Files live in a fresh folder under ${TMPDIR:-/tmp} (on disk here).
# Needs: age, hyperfine, /usr/bin/time (Debian packages age, hyperfine, time).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
runs=${2:-5}
for t in age hyperfine /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y age hyperfine time" >&2; exit 1; }
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

echo "== seal ${size} MiB: renkei seal vs age -e (same recipient set size: hospital + sender copy)"
sender_r=$(grep -o 'age1[0-9a-z]*' "$work/clinic/age.key" | head -1)
hyperfine -N --runs "$runs" --warmup 1 --export-json "$work/seal.json" \
  --prepare "sh -c 'rm -f $work/p.age $work/a.age; sync'" \
  -n renkei "$bin seal --profile $work/clinic --to $work/hospital/cert.pem --document $work/doc.json --attach $work/scan.dcm -o $work/p.age" \
  -n age "age -e -r $recipient -r $sender_r -o $work/a.age $work/scan.dcm" \
  -n age-fsync "sh -c 'age -e -r $recipient -r $sender_r -o $work/a.age $work/scan.dcm && sync $work/a.age'"

"$bin" seal --profile "$work/clinic" --to "$work/hospital/cert.pem" --document "$work/doc.json" --attach "$work/scan.dcm" -o "$work/p.age" 2>/dev/null
age -e -r "$recipient" -o "$work/a.age" "$work/scan.dcm"

echo "== open ${size} MiB: renkei open (decrypt + verify + write members) vs age -d (decrypt + write)"
hyperfine -N --runs "$runs" --warmup 1 --export-json "$work/open.json" \
  --prepare "sh -c 'rm -rf $work/out $work/a.out; sync'" \
  -n renkei "$bin open --profile $work/hospital $work/p.age -o $work/out" \
  -n age "age -d -i $work/hospital/age.key -o $work/a.out $work/a.age" \
  -n age-fsync "sh -c 'age -d -i $work/hospital/age.key -o $work/a.out $work/a.age && sync $work/a.out'"

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

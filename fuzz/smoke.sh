#!/usr/bin/env bash
# Bounded fuzz smoke run for CI: builds every cargo-fuzz target once, then
# runs each for $1 seconds (default 10), starting from the committed seeds
# in fuzz/seeds/<target>/ copied into a fresh, git-ignored scratch corpus
# (fuzz/corpus/smoke/<target>/), so nothing tracked by git changes.
# Exits non-zero if any target crashes, leaks, runs out of memory, takes
# over 20 s on one input, or fails to build. A failing input is saved in
# fuzz/artifacts/<target>/; each target's log is fuzz/corpus/smoke/<target>.log.
#
#   fuzz/smoke.sh          # 10 s per target
#   fuzz/smoke.sh 60       # 60 s per target
#
# Only a stable toolchain is needed: cargo-fuzz's nightly flags are enabled
# with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
case $secs in
  '' | *[!0-9]*) echo "usage: fuzz/smoke.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

mapfile -t targets < <(cargo fuzz list)
if [ ${#targets[@]} -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

echo "== building ${#targets[@]} fuzz targets: ${targets[*]}"
start=$SECONDS
cargo fuzz build
echo "== built in $((SECONDS - start)) s"

# Run the binaries just built (not `cargo fuzz run`, which would rebuild if
# a source file changed meanwhile and eat into the time budget).
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=fuzz/target/$triple/release

scratch=fuzz/corpus/smoke
failed=()
start=$SECONDS
for t in "${targets[@]}"; do
  corpus=$scratch/$t
  log=$scratch/$t.log
  rm -rf "$corpus"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  if [ -d "fuzz/seeds/$t" ]; then
    cp fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  fi
  printf '== %-16s %3s s: ' "$t" "$secs"
  if "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" \
      -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 "$corpus" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "ok (${runs:-?} runs)"
  else
    failed+=("$t")
    echo "FAILED"
    grep -E -m1 -A2 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" | sed 's/^/   /' || true
    grep -E 'Test unit written to' "$log" | sed 's/^/   /' || true
    echo "   (full log: $log)"
  fi
done
echo "== ran ${#targets[@]} targets in $((SECONDS - start)) s"

if [ ${#failed[@]} -gt 0 ]; then
  echo "FUZZ SMOKE FAILED: ${failed[*]}" >&2
  echo "replay one with: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-..." >&2
  exit 1
fi
echo "fuzz smoke: all ${#targets[@]} targets ran ${secs} s each without a failure"

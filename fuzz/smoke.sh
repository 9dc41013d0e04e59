#!/usr/bin/env bash
# Bounded fuzz smoke run for CI: builds every cargo-fuzz target once, then
# runs each for $1 seconds (default 10) from the committed seeds in
# fuzz/seeds/<target>/, copied into the git-ignored fuzz/corpus/<target>/.
# Exits non-zero if any target crashes, leaks, times out or fails to build.
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

failed=()
start=$SECONDS
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  if [ -d "fuzz/seeds/$t" ]; then
    cp -f fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  fi
  echo "== $t (${secs} s)"
  # -timeout: one input taking over 20 s is a finding (and a failure) too.
  if ! cargo fuzz run "$t" "$corpus" -- \
      -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 >"fuzz/corpus/$t.log" 2>&1; then
    failed+=("$t")
    echo "!! $t FAILED; last lines of fuzz/corpus/$t.log:"
    tail -n 40 "fuzz/corpus/$t.log"
  else
    grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "fuzz/corpus/$t.log" | tail -n 1 || true
  fi
done
echo "== ran ${#targets[@]} targets in $((SECONDS - start)) s"

if [ ${#failed[@]} -gt 0 ]; then
  echo "FUZZ SMOKE FAILED: ${failed[*]} (crash inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "fuzz smoke: all ${#targets[@]} targets ran ${secs} s without a crash"

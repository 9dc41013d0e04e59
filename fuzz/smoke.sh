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
# Only a stable toolchain is needed, and no cargo-fuzz: the targets are
# built with cargo directly, with the flags `cargo fuzz build` uses
# (libFuzzer coverage instrumentation, AddressSanitizer, debug assertions,
# `--cfg fuzzing`); the nightly-only ones are enabled with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
case $secs in
  '' | *[!0-9]*) echo "usage: fuzz/smoke.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1

# Every [[bin]] of fuzz/Cargo.toml is a target.
mapfile -t targets < <(awk '/^\[\[bin\]\]/ { bin = 1; next }
  bin && /^name *=/ { gsub(/[" ]/, "", $0); sub(/^name=/, "", $0); print; bin = 0 }' fuzz/Cargo.toml)
if [ ${#targets[@]} -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

# The flags of `cargo fuzz build` (release, debug assertions, ASan). The
# explicit --target keeps them off build scripts and proc macros.
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Zsanitizer=address"
export CARGO_TARGET_DIR=fuzz/target
echo "== building ${#targets[@]} fuzz targets: ${targets[*]}"
start=$SECONDS
cargo build --manifest-path fuzz/Cargo.toml --release --bins --target "$triple"
echo "== built in $((SECONDS - start)) s"
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

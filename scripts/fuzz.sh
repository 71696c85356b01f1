#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.cpp) with clang + ASan + UBSan and runs them on a seed
# corpus made from the real files in the shared folder. See docs/FUZZING.md.
#
#   scripts/fuzz.sh [options] [TARGET...]     long campaign (default 1 hour per target)
#   scripts/fuzz.sh --smoke                   every target for 20 s (the ctest `fuzz_smoke`)
#
# Options:
#   --smoke            short run of every target, in parallel, on a fresh seed corpus
#   --time SECONDS     run time per target (default 3600; 20 with --smoke)
#   --jobs N           parallel libFuzzer workers per target in a campaign (default 1)
#   --build-dir DIR    where to configure the clang build (default build-fuzz)
#   --shared DIR       the shared data folder (default $QFORGE_SHARED_DIR or ../shared)
#   --no-build         use the executables already in the build dir
# Exit status: 0 when no target found anything; 1 when one did (the crashing input is kept under
# BUILD/artifacts/TARGET/ and the command that reproduces it is printed); 2 on usage/build errors.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SMOKE=0
TIME=""
JOBS=1
BUILD=""
SHARED=${QFORGE_SHARED_DIR:-$ROOT/../shared}
DO_BUILD=1
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --time) TIME=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --build-dir) BUILD=$2; shift ;;
    --shared) SHARED=$2; shift ;;
    --no-build) DO_BUILD=0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1") ;;
  esac
  shift
done
BUILD=${BUILD:-$ROOT/build-fuzz}
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
if [ -z "$TIME" ]; then
  if [ $SMOKE = 1 ]; then TIME=${QFORGE_FUZZ_SMOKE_SECONDS:-20}; else TIME=3600; fi
fi
[ -d "$SHARED" ] || { echo "fuzz.sh: shared data folder $SHARED not found (use --shared)" >&2; exit 2; }
SHARED=$(cd "$SHARED" && pwd)
NPROC=$(nproc 2>/dev/null || echo 2)

# ---- build ------------------------------------------------------------------------------------
if [ $DO_BUILD = 1 ]; then
  CXX_CLANG=$(command -v clang++ || command -v clang++-14 || true)
  [ -n "$CXX_CLANG" ] || { echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
  GEN=()
  if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null; then GEN=(-G Ninja); fi
  echo "fuzz.sh: configuring $BUILD"
  if ! cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_CXX_COMPILER="$CXX_CLANG" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQFORGE_BUILD_FUZZ=ON -DQFORGE_BUILD_TESTS=OFF \
      -DQFORGE_BUILD_BENCH=OFF -DQFORGE_SHARED_DIR="$SHARED" >"$BUILD/configure.log" 2>&1; then
    tail -30 "$BUILD/configure.log" >&2
    echo "fuzz.sh: configure failed (log: $BUILD/configure.log)" >&2
    exit 2
  fi
  echo "fuzz.sh: building fuzz targets"
  if ! cmake --build "$BUILD" --target fuzz_all -j"$NPROC" >"$BUILD/build.log" 2>&1; then
    grep -E "error|undefined reference" "$BUILD/build.log" | head -30 >&2 || true
    echo "fuzz.sh: build failed (log: $BUILD/build.log)" >&2
    exit 2
  fi
fi
if [ ${#TARGETS[@]} -eq 0 ]; then
  read -r -a TARGETS <<<"$(tr ';' ' ' <"$BUILD/fuzz_targets.txt")"
fi
[ ${#TARGETS[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets (fuzz/fuzz_*.cpp)" >&2; exit 2; }

# ---- seed corpus ------------------------------------------------------------------------------
# Each fuzz/TARGET.cpp names its seeds on lines "// fuzz-seeds: PATH..." (paths inside the shared
# folder). Small files are copied whole; large ones as truncated copies (a parser meets those in
# practice, and libFuzzer mutates small inputs much faster). A safetensors file also yields a
# small but complete file with its smallest tensors, so the fuzzer starts from a valid input.
make_small_safetensors() {  # SRC DST
  python3 - "$1" "$2" <<'EOF' || true
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
out_header, out_data = {}, b""
if "__metadata__" in header:
    out_header["__metadata__"] = header.pop("__metadata__")
for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    b, e = t["data_offsets"]
    if e - b > 1024 or len(out_header) > 8:
        continue
    out_header[name] = dict(t, data_offsets=[len(out_data), len(out_data) + e - b])
    out_data += data[b:e]
text = json.dumps(out_header, separators=(",", ":"))
text += " " * (-len(text) % 8)
open(dst, "wb").write(struct.pack("<Q", len(text)) + text.encode() + out_data)
EOF
}

# A GGUF with its tensor count set to 0, cut at 64 KB: a complete file when the metadata fits, so the
# fuzzer starts from valid headers rather than only truncated ones.
make_metadata_only_gguf() {  # SRC DST
  # (head closing the pipe early is expected: ignore the SIGPIPE status under pipefail)
  { head -c 8 "$1"; head -c 8 /dev/zero; tail -c +17 "$1" | head -c 65520 || true; } >"$2"
}

make_seeds() {  # TARGET DIR
  local target=$1 dir=$2 src="$ROOT/fuzz/$1.cpp" rel f base size cut
  mkdir -p "$dir"
  local seeds
  seeds=$(sed -n 's|^// fuzz-seeds:||p' "$src" 2>/dev/null | tr '\n' ' ')
  for rel in $seeds; do
    f="$SHARED/$rel"
    case "$rel" in repo:*) rel=${rel#repo:}; f="$ROOT/$rel" ;; esac  # a seed kept in the repository
    if [ ! -f "$f" ]; then echo "fuzz.sh: $target: seed $f not found (skipped)" >&2; continue; fi
    base=$(echo "$rel" | tr '/' '_')
    size=$(stat -c %s "$f")
    if [ "$size" -le 65536 ]; then cp "$f" "$dir/$base"; chmod u+w "$dir/$base"; fi
    for cut in 16 256 4096 16384 65536; do
      if [ "$size" -gt "$cut" ]; then head -c "$cut" "$f" >"$dir/$base.first$cut"; fi
    done
    case "$f" in
      *.safetensors) make_small_safetensors "$f" "$dir/$base.small" ;;
      *.gguf) make_metadata_only_gguf "$f" "$dir/$base.meta" ;;
    esac
  done
  # A target without seeds still gets one input so that libFuzzer has somewhere to start.
  [ -n "$(ls -A "$dir")" ] || printf '\n' >"$dir/empty"
}

# ---- run --------------------------------------------------------------------------------------
run_target() {  # TARGET CORPUS -> writes BUILD/logs/TARGET.log, returns libFuzzer's status
  local target=$1 corpus=$2 exe="$BUILD/fuzz/$1"
  local args=(-max_total_time="$TIME" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$BUILD/artifacts/$target/")
  [ -f "$ROOT/fuzz/$target.dict" ] && args+=(-dict="$ROOT/fuzz/$target.dict")
  local max_len
  max_len=$(sed -n 's|^// fuzz-max-len: *\([0-9]*\).*|\1|p' "$ROOT/fuzz/$target.cpp" | head -1)
  [ -n "$max_len" ] && args+=(-max_len="$max_len")
  if [ "$SMOKE" = 0 ] && [ "$JOBS" -gt 1 ]; then args+=(-jobs="$JOBS" -workers="$JOBS"); fi
  mkdir -p "$BUILD/artifacts/$target" "$BUILD/logs"
  echo "+ $exe ${args[*]} $corpus" >"$BUILD/logs/$target.log"
  (cd "$BUILD/logs" && "$exe" "${args[@]}" "$corpus" >>"$BUILD/logs/$target.log" 2>&1)
}

summary() {  # TARGET STATUS
  local target=$1 status=$2 log="$BUILD/logs/$1.log" cov execs speed
  cov=$(grep -E '^#[0-9]+' "$log" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$status" = 0 ]; then
    echo "fuzz.sh: $target: OK  ${execs:-?} runs, ${speed:-?} exec/s, ${cov:-no coverage line}"
  else
    echo "fuzz.sh: $target: FAILED (status $status) after ${execs:-?} runs; log: $log" >&2
    grep -E 'ERROR|SUMMARY|invariant|==[0-9]+==|runtime error|Test unit written' "$log" | head -20 >&2 || true
    local crash
    crash=$(ls -t "$BUILD/artifacts/$target"/* 2>/dev/null | head -1 || true)
    [ -n "$crash" ] && echo "fuzz.sh: reproduce with: $BUILD/fuzz/$target $crash" >&2
  fi
}

failed=0
if [ $SMOKE = 1 ]; then
  # Fresh corpus every time so that the smoke test is the same test on every run; targets run
  # side by side, one per core.
  rm -rf "$BUILD/smoke-corpus"
  declare -A pids=()
  for t in "${TARGETS[@]}"; do
    make_seeds "$t" "$BUILD/smoke-corpus/$t"
    while [ "$(jobs -rp | wc -l)" -ge "$NPROC" ]; do sleep 1; done
    echo "fuzz.sh: running $t for ${TIME}s"
    run_target "$t" "$BUILD/smoke-corpus/$t" &
    pids[$t]=$!
  done
  for t in "${TARGETS[@]}"; do
    status=0
    wait "${pids[$t]}" || status=$?
    summary "$t" "$status"
    [ "$status" = 0 ] || failed=1
  done
else
  for t in "${TARGETS[@]}"; do
    corpus="$BUILD/corpus/$t"  # kept between campaigns: each run starts where the last stopped
    [ -d "$corpus" ] || make_seeds "$t" "$corpus"
    echo "fuzz.sh: running $t for ${TIME}s (corpus $corpus, log $BUILD/logs/$t.log)"
    status=0
    run_target "$t" "$corpus" || status=$?
    summary "$t" "$status"
    [ "$status" = 0 ] || failed=1
  done
fi
exit $failed

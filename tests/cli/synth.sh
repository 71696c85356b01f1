#!/usr/bin/env bash
# qforge synth at the command line: exit codes, messages, --list, --json, and the DIR.tmp discipline.
# Usage: synth.sh QFORGE_BINARY SHARED_DIR
set -uo pipefail
QF="$1"
SHARED="$2"
TMP="$(mktemp -d /tmp/qforge-cli-synth-XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # check NAME CONDITION...
  local name="$1"
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}

# Unknown shape: exit 2, the message names it and lists the valid shapes; nothing is written.
"$QF" synth --shape llama-9000 -o "$TMP/bad" >"$TMP/out" 2>"$TMP/err"
rc=$?
check "unknown shape exits 2 (got $rc)" test "$rc" -eq 2
check "message names the shape" grep -q "llama-9000" "$TMP/err"
check "message lists the valid shapes" grep -q "tinyllama-1.1b" "$TMP/err"
check "nothing written" test ! -e "$TMP/bad" -a ! -e "$TMP/bad.tmp"

# Missing --shape and bad --dtype: exit 2 with a message.
"$QF" synth -o "$TMP/bad" >/dev/null 2>"$TMP/err"
rc=$?
check "missing --shape exits 2 (got $rc)" test "$rc" -eq 2
check "missing --shape says so" grep -q -- "--shape" "$TMP/err"
"$QF" synth --shape tiny-llama3-test --dtype q4_0 -o "$TMP/bad" >/dev/null 2>"$TMP/err"
rc=$?
check "bad --dtype exits 2 (got $rc)" test "$rc" -eq 2
check "bad --dtype named" grep -q "q4_0" "$TMP/err"

# --list and --help show the public shapes with their sizes, not the internal test shapes.
"$QF" synth --list >"$TMP/list"
check "--list shows llama-2-7b" grep -q "llama-2-7b .*6.738 B params" "$TMP/list"
check "--list hides test shapes" bash -c "! grep -q tiny-llama-test '$TMP/list'"
"$QF" synth --help >"$TMP/help"
check "--help lists shapes" grep -q "gpt2-124m" "$TMP/help"

# A small shape with --json: one JSON object with the figures; the directory loads.
"$QF" synth --shape tiny-llama-test --shared-dir "$SHARED" -o "$TMP/m" --json >"$TMP/json" 2>"$TMP/err"
rc=$?
check "tiny synth exits 0 (got $rc)" test "$rc" -eq 0
check "json has params" grep -q '"params":4[0-9]*' "$TMP/json"
check "json has shape" grep -q '"shape":"tiny-llama-test"' "$TMP/json"
check "output complete" test -f "$TMP/m/model.safetensors" -a -f "$TMP/m/config.json" -a -f "$TMP/m/tokenizer.model"
check "no DIR.tmp left" test ! -e "$TMP/m.tmp"

# Existing output: exit 2 and untouched; --force replaces it.
"$QF" synth --shape tiny-llama-test --shared-dir "$SHARED" -o "$TMP/m" >/dev/null 2>"$TMP/err"
rc=$?
check "existing output exits 2 (got $rc)" test "$rc" -eq 2
check "existing output message" grep -q "already exists" "$TMP/err"
"$QF" synth --shape tiny-llama-test --shared-dir "$SHARED" -o "$TMP/m" --force --seed 5 >/dev/null 2>&1
check "--force replaces" grep -q "seed 5" "$TMP/m/README.md"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all synth CLI checks passed"

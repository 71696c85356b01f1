#!/usr/bin/env bash
# GGUF files at the command line: inspect and generate on the real stories260K GGUF (llama.cpp's
# converter output), the same text as run.c from BOS, and broken files rejected with exit 2 and a
# message naming the file and the key or tensor.   Usage: gguf.sh QFORGE_BINARY SHARED_DIR
set -uo pipefail
QF="$1"
SHARED="$2"
G="$SHARED/models/stories260K-gguf/stories260K.gguf"
TMP="$(mktemp -d /tmp/qforge-cli-gguf-XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # check NAME CONDITION...
  local name="$1"
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}

# inspect: format, architecture, shapes outermost first, tokenizer from the metadata.
"$QF" inspect "$G" >"$TMP/inspect" 2>"$TMP/err"
rc=$?
check "inspect exits 0 (got $rc)" test "$rc" -eq 0
check "inspect says gguf" grep -q "^format *gguf" "$TMP/inspect"
check "inspect shows the shape" grep -q "layers *5 *hidden 64 *ffn 172 *heads 8 (kv 4)" "$TMP/inspect"
check "inspect lists tensors" grep -q "blk.0.ffn_down.weight *f32 *\[64, 172\]" "$TMP/inspect"
check "inspect shows the tokenizer" grep -q "tokenizer *gguf-spm (512 tokens, bos 1, eos 2)" "$TMP/inspect"
"$QF" inspect --json --summary "$G" >"$TMP/json" 2>/dev/null
check "inspect --json has 48 tensors" grep -q '"tensor_count": *48' "$TMP/json"

# generate, greedy from BOS: the first words of run.c's reference output.
"$QF" generate "$G" -n 40 --temp 0 -t 1 >"$TMP/gen" 2>"$TMP/err"
rc=$?
check "generate exits 0 (got $rc)" test "$rc" -eq 0
want="$(head -c 100 "$SHARED/models/stories260K-hf/reference/greedy-from-bos.txt")"
check "greedy text matches run.c" grep -qF "$want" "$TMP/gen"
"$QF" generate "$G" -p "Once upon a time" -n 8 --temp 0 -t 1 >"$TMP/gen2" 2>/dev/null
check "generate with a prompt" grep -q "^Once upon a time" "$TMP/gen2"

# Broken files: exit 2, the file and the thing at fault named.
head -c 5000 "$G" >"$TMP/cut.gguf"
"$QF" inspect "$TMP/cut.gguf" >/dev/null 2>"$TMP/err"
rc=$?
check "truncated file exits 2 (got $rc)" test "$rc" -eq 2
check "truncated file named" grep -q "gguf: $TMP/cut.gguf: key 'tokenizer.ggml" "$TMP/err"

cp "$G" "$TMP/arch.gguf"
chmod u+w "$TMP/arch.gguf"
# general.architecture "llama" -> "llamb" (same length, so the file stays well-formed)
python3 - "$TMP/arch.gguf" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = b.find(b"general.architecture")
j = b.find(b"llama", i)
b[j:j + 5] = b"llamb"
open(p, "wb").write(bytes(b))
PY
"$QF" inspect "$TMP/arch.gguf" >/dev/null 2>"$TMP/err"
rc=$?
check "unknown architecture exits 2 (got $rc)" test "$rc" -eq 2
check "unknown architecture named" grep -q "key 'general.architecture': architecture 'llamb' is not supported" "$TMP/err"

printf 'GGUF\x07\x00\x00\x00' >"$TMP/ver.gguf"
"$QF" inspect "$TMP/ver.gguf" >/dev/null 2>"$TMP/err"
rc=$?
check "bad version exits 2 (got $rc)" test "$rc" -eq 2
check "bad version named" grep -q "ver.gguf: unknown GGUF version 7" "$TMP/err"

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all GGUF CLI checks passed"

#!/usr/bin/env bash
# qforge quantize end to end on stories260K: GGUF and HF outputs load back and score close to the
# original; every bad input exits 2 with a message naming what is wrong and leaves no output behind.
#   usage: quantize.sh QFORGE_BINARY SHARED_DIR
set -u
Q=$1
SHARED=$2
M=$SHARED/models/stories260K-hf
L2C=$SHARED/models/stories260K-llama2c/stories260K.bin
TEXT=$SHARED/text/tinystories/TinyStories-valid-1M.txt
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
passes=0
PY=/usr/bin/python3

check() {  # check NAME CONDITION-COMMAND...
  local name=$1
  shift
  if "$@"; then passes=$((passes + 1)); else echo "FAIL: $name"; fails=$((fails + 1)); fi
}

expect() {  # expect CODE PATTERN -- command...
  local code=$1 pattern=$2
  shift 3
  local out
  out=$("$@" 2>&1 >/dev/null)
  local rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -qiE -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> rc=$rc (want $code), stderr: $out (want /$pattern/)"
    fails=$((fails + 1))
  else
    passes=$((passes + 1))
  fi
}

json_field() {  # json_field FILE EXPR (python expression over j)
  $PY -c "import json,sys; j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print($2)" "$1"
}

# 1. GGUF q8_0 with the full report (speed and quality), as data.
"$Q" quantize "$M" --type q8_0 -o "$T/q8.gguf" -t 2 --eval-text "$TEXT" --eval-ctx 128 --eval-chunks 8 \
  --eval-runs 2 --eval-prompt-tokens 32 --eval-gen 8 --json >"$T/q8.json" 2>"$T/q8.err"
check "q8_0 quantize exits 0" test $? -eq 0
check "q8_0 output exists" test -s "$T/q8.gguf"
check "no temporary file left" test -z "$(ls "$T" | grep -i tmp)"
check "report has bits per weight" test "$(json_field "$T/q8.json" "round(j['bits_per_weight'],2) > 8")" = True
check "report has KL and top-1" test "$(json_field "$T/q8.json" "0 <= j['quality']['kl_mean'] < 0.01 and j['quality']['top1_agreement'] > 0.9")" = True
check "report has speed" test "$(json_field "$T/q8.json" "j['speed']['quantized']['gen_tps'] > 0")" = True
check "progress shown" grep -q "output_norm.weight" "$T/q8.err"
"$Q" perplexity "$T/q8.gguf" --text "$TEXT" -c 128 --chunks 8 --json >"$T/ppl.json" 2>/dev/null
"$Q" perplexity "$M" --text "$TEXT" -c 128 --chunks 8 --json >"$T/ppl0.json" 2>/dev/null
base=$(json_field "$T/ppl0.json" "j['ppl']")
check "q8_0 GGUF scores within 1% of the original ($base)" test "$(json_field "$T/ppl.json" "abs(j['ppl'] / $base - 1) < 0.01")" = True

# 2. HF bf16 output loads anywhere an HF checkpoint does: config.json says bfloat16, tokenizer copied.
"$Q" quantize "$M" --type bf16 --format hf -o "$T/bf16" --no-eval >/dev/null 2>&1
check "hf bf16 exits 0" test $? -eq 0
check "hf bf16 torch_dtype" grep -q '"torch_dtype": "bfloat16"' "$T/bf16/config.json"
check "hf bf16 tokenizer copied" test -s "$T/bf16/tokenizer.model"
"$Q" inspect "$T/bf16" --json >"$T/insp.json" 2>/dev/null
check "hf bf16 loads" test $? -eq 0

# 3. llama2.c and GGUF inputs.
"$Q" quantize "$L2C" --type f16 -o "$T/l2c.gguf" --no-eval >/dev/null 2>&1
check "llama2.c -> gguf f16" test -s "$T/l2c.gguf"
"$Q" quantize "$T/l2c.gguf" --type q4_0 -o "$T/l2c-q4.gguf" --no-eval >/dev/null 2>&1
check "gguf f16 -> q4_0" test -s "$T/l2c-q4.gguf"

# 4. Load-time quantization: nf4 (no file format holds it) runs in qforge's engine, near the original
#    (on the 256-wide TinyStories model: stories260K's 64-wide layers lose too much at 4 bits to judge).
M7=$SHARED/models/tinystories-llama-7M-hf
"$Q" perplexity "$M7" --text "$TEXT" -c 128 --chunks 10 --json >"$T/base7.json" 2>/dev/null
base7=$(json_field "$T/base7.json" "j['ppl']")
for extra in "" "--nf4-double-quant"; do
  "$Q" perplexity "$M7" --text "$TEXT" -c 128 --chunks 10 --quantize nf4 $extra --json >"$T/nf4.json" 2>"$T/nf4.err"
  check "nf4 $extra perplexity runs" test $? -eq 0
  check "nf4 $extra says what it did" grep -q "matrices in memory to nf4" "$T/nf4.err"
  check "nf4 $extra within 3% of the original ($base7)" test "$(json_field "$T/nf4.json" "abs(j['ppl'] / $base7 - 1) < 0.03")" = True
done
expect 2 "need --quantize" -- "$Q" perplexity "$M" --text "$TEXT" -c 128 --chunks 2 --nf4-double-quant

# 5. Bad input: exit 2, a clear message, no output file.
expect 2 "q9_0" -- "$Q" quantize "$M" --type q9_0 -o "$T/bad1.gguf"
check "no output after unknown type" test ! -e "$T/bad1.gguf"
expect 2 "already exists" -- "$Q" quantize "$M" --type q8_0 -o "$T/q8.gguf"
expect 2 "already quantized.*allow-requantize" -- "$Q" quantize "$T/q8.gguf" --type q4_0 -o "$T/bad2.gguf"
expect 2 "format hf.*q4_0" -- "$Q" quantize "$M" --type q4_0 --format hf -o "$T/bad3"
check "no directory after hf refusal" test -z "$(ls "$T" | grep bad3)"
expect 2 "format.*xyz" -- "$Q" quantize "$M" --type q8_0 --format xyz -o "$T/bad4.gguf"
expect 2 "nope" -- "$Q" quantize "$T/nope" --type q8_0 -o "$T/bad5.gguf"
expect 2 "keep" -- "$Q" quantize "$M" --type q8_0 --keep "output.weight" -o "$T/bad6.gguf"
expect 2 "q9" -- "$Q" quantize "$M" --type q8_0 --keep "token_embd.weight=q9" -o "$T/bad7.gguf"
expect 2 "regex|regular expression" -- "$Q" quantize "$M" --type q8_0 --keep "([=q8_0" -o "$T/bad8.gguf"
expect 2 "172" -- "$Q" quantize "$M" --type q8_0 --keep "blk\.0\.ffn_down\.weight=q4_k" -o "$T/bad9.gguf"
check "no output after bad overrides" test -z "$(ls "$T" | grep -E 'bad[0-9]')"

# 6. Importance matrices (llama-imatrix's output for tinystories-7M; byte-level checks: test_imatrix).
IM="$(dirname "$0")/../data/imatrix"
"$Q" quantize "$M7" --type q4_k_m --imatrix "$IM/ts7-imatrix.dat" -o "$T/im.gguf" --no-eval --json >"$T/im.json" 2>"$T/im.err"
check "--imatrix quantize exits 0" test $? -eq 0
check "--imatrix report counts the matrices" test "$(json_field "$T/im.json" "j['imatrix']['tensors'] == 56")" = True
expect 2 "q2_k_s needs an importance matrix.*--imatrix" -- "$Q" quantize "$M7" --type q2_k_s -o "$T/bad10.gguf" --no-eval
expect 2 "has 256 values, but the tensor's rows have 64" -- "$Q" quantize "$M" --type q8_0 --imatrix "$IM/ts7-imatrix.gguf" -o "$T/bad11.gguf" --no-eval
expect 2 "not an importance matrix" -- "$Q" quantize "$M7" --type q4_k_m --imatrix "$M7/config.json" -o "$T/bad12.gguf" --no-eval
check "no output after bad importance matrices" test -z "$(ls "$T" | grep -E 'bad1[0-2]')"
"$Q" imatrix "$M7" --text "$TEXT" -c 128 --chunks 4 -o "$T/own.imatrix" --json >"$T/own.json" 2>"$T/own.err"
check "imatrix exits 0" test $? -eq 0
check "imatrix measured every layer matrix" test "$(json_field "$T/own.json" "j['matrices'] == 56 and j['chunks'] == 4")" = True
check "imatrix shows progress" grep -q "chunk    4/4" "$T/own.err"
"$Q" quantize "$M7" --type q4_k_m --imatrix "$T/own.imatrix" -o "$T/own.gguf" --no-eval >/dev/null 2>&1
check "quantize reads qforge's own imatrix" test -s "$T/own.gguf"
expect 2 "already exists" -- "$Q" imatrix "$M7" --text "$TEXT" -o "$T/own.imatrix"
expect 2 "longer than the model.s context" -- "$Q" imatrix "$M7" --text "$TEXT" -c 100000 -o "$T/bad13.imatrix"

echo "quantize.sh: $passes passed, $fails failed"
[ "$fails" -eq 0 ]

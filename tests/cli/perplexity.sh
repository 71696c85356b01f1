#!/usr/bin/env bash
# qforge perplexity follows llama-perplexity's protocol: on stories260K, ctx 256, 40 chunks of
# TinyStories-valid-1M, llama.cpp (build 3f545be, F32 KV cache, no flash attention) reports
# PPL = 6.4854 +/- 0.29609 and tokenizes the text to 502287 tokens (see bench/RESULTS.md). The
# same figures here prove the protocol (BOS, chunking, second-half scoring, error formula) matches.
# The KL-divergence flow: a base file from stories260K-hf, then stories260K-gguf (the same weights)
# against it, must give KL ~ 0 (well under 1e-6), top-1 agreement 100% and the same PPL; mismatched
# or broken base files must fail with exit code 2 and a message naming the file and the mismatch.
#   usage: perplexity.sh QFORGE_BINARY SHARED_DIR
set -eu
Q=$1
SHARED=$2
TEXT=$SHARED/text/tinystories/TinyStories-valid-1M.txt
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
passes=0
for model in "$SHARED/models/stories260K-hf" "$SHARED/models/stories260K-gguf/stories260K.gguf" \
             "$SHARED/models/stories260K-llama2c/stories260K.bin"; do
  json=$("$Q" perplexity "$model" --text "$TEXT" --ctx 256 --chunks 40 -t 2 --json 2>/dev/null | tail -1)
  if ! /usr/bin/python3 - "$json" "$model" <<'PY'; then fails=$((fails + 1)); fi
import json, sys
j = json.loads(sys.argv[1])
want = {"ppl": (6.4854, 0.0006), "ppl_stderr": (0.29609, 0.00006)}
ok = j["tokens_in_text"] == 502287 and j["tokens_scored"] == 40 * 127 and j["chunks"] == 40
for k, (v, tol) in want.items():
    ok = ok and abs(j[k] - v) <= tol
print(("ok  " if ok else "FAIL") + f" {sys.argv[2]}: ppl {j['ppl']:.4f} +/- {j['ppl_stderr']:.5f}, "
      f"{j['tokens_in_text']} tokens, {j['tokens_scored']} scored (want 6.4854 +/- 0.29609, 502287, 5080)")
sys.exit(0 if ok else 1)
PY
  passes=$((passes + 1))
done
passes=$((passes - fails))

# ---- KL divergence ----
HF=$SHARED/models/stories260K-hf
GGUF=$SHARED/models/stories260K-gguf/stories260K.gguf
BASE=$T/base.kld
check() {  # check NAME PYTHON-EXPR-ON-j JSON
  if /usr/bin/python3 - "$3" "$2" <<'PY'; then passes=$((passes + 1)); else echo "FAIL: $1"; fails=$((fails + 1)); fi
import json, sys
j = json.loads(sys.argv[1])
ok = eval(sys.argv[2])
if not ok:
    print(json.dumps(j, indent=1))
sys.exit(0 if ok else 1)
PY
}
json=$("$Q" perplexity "$HF" --text "$TEXT" -c 128 --chunks 4 -t 2 --kl-divergence-base "$BASE" --json 2>/dev/null |
  tail -1)
# 4 chunks x 63 rows x (512 + 4) uint16 + 20-byte header + 512 int32 tokens
check "base run" \
  'j["tokens_scored"] == 252 and j["kl_divergence_base_bytes"] == 262132 and abs(j["ppl"] - 3.7915) < 1e-3' "$json"
size=$(stat -c %s "$BASE" 2>/dev/null || echo 0)
if [ "$size" -eq 262132 ]; then
  passes=$((passes + 1))
else
  echo "FAIL: base file size $size, want 262132"
  fails=$((fails + 1))
fi

fields="ppl ppl_stderr ppl_base ppl_base_stderr ln_ppl_correlation ln_ppl_ratio ln_ppl_ratio_stderr ppl_ratio
  ppl_ratio_stderr ppl_diff ppl_diff_stderr kl_mean kl_stderr kl_min kl_p01 kl_p05 kl_p10 kl_median kl_p90 kl_p95
  kl_p99 kl_p999 kl_max top1_agreement top1_agreement_stderr dp_mean dp_stderr dp_rms dp_rms_stderr dp_min dp_p01
  dp_p05 dp_p10 dp_median dp_p90 dp_p95 dp_p99 dp_max tokens_scored chunks ctx kl_divergence_base"
want_fields=$(printf '"%s",' $fields)
for args in "" "--text $TEXT" "--text $TEXT -c 128 --chunks 4"; do
  # shellcheck disable=SC2086
  json=$("$Q" perplexity "$GGUF" --kl-divergence-base "$BASE" --kl-divergence -t 2 $args --json 2>/dev/null | tail -1)
  check "gguf against the hf base ($args)" "all(k in j for k in [$want_fields]) and j['tokens_scored'] == 252 and \
    j['chunks'] == 4 and j['ctx'] == 128 and 0 <= j['kl_mean'] < 1e-6 and j['kl_max'] < 1e-5 and \
    j['top1_agreement'] == 1.0 and abs(j['ppl'] - j['ppl_base']) < 1e-4 and abs(j['ln_ppl_ratio']) < 1e-5 and \
    j['dp_rms'] < 1e-4" "$json"
done

expect() {  # expect PATTERN -- command...: exit code 2 and PATTERN in stderr
  local pattern=$1
  shift 2
  local out rc
  out=$("$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> rc=$rc (want 2), stderr: $out (want /$pattern/)"
    fails=$((fails + 1))
  else
    passes=$((passes + 1))
  fi
}
set +e
expect "base.kld: already exists; add --kl-divergence to compare with it, or -f to replace it" -- \
  "$Q" perplexity "$GGUF" --text "$TEXT" -c 128 --chunks 4 --kl-divergence-base "$BASE"
expect "needs --kl-divergence-base" -- "$Q" perplexity "$GGUF" --kl-divergence
expect "--text FILE is required" -- "$Q" perplexity "$GGUF"
expect "nope.kld: cannot open" -- "$Q" perplexity "$GGUF" --kl-divergence-base "$T/nope.kld" --kl-divergence
expect "base.kld: the base file was written with --ctx 128, this run asks for --ctx 64" -- \
  "$Q" perplexity "$GGUF" --kl-divergence-base "$BASE" --kl-divergence -c 64
expect "base.kld: the base file holds 4 chunks, this run asks for --chunks 3" -- \
  "$Q" perplexity "$GGUF" --kl-divergence-base "$BASE" --kl-divergence --chunks 3
expect "base.kld: token [0-9]+ .* in the base file but .*wiki.test.raw: not the same text" -- \
  "$Q" perplexity "$GGUF" --kl-divergence-base "$BASE" --kl-divergence \
  --text "$SHARED/text/wikitext-2-raw/wiki.test.raw"
head -c 200000 "$BASE" >"$T/cut.kld"
expect "cut.kld: truncated: the header announces 4 chunks of 128 tokens" -- \
  "$Q" perplexity "$GGUF" --kl-divergence-base "$T/cut.kld" --kl-divergence
printf 'not a base file at all' >"$T/junk.kld"
expect "junk.kld: not a KL-divergence base file" -- \
  "$Q" perplexity "$GGUF" --kl-divergence-base "$T/junk.kld" --kl-divergence
# A well-formed file over a 600-token vocabulary: rows are 2 * (600 + 4) bytes.
/usr/bin/python3 - "$T/v600.kld" <<'PY'
import struct, sys
ctx, vocab, chunks = 16, 600, 1
rows = ctx - 1 - ctx // 2
row = struct.pack("<ff", 16 / 65535, -20.0) + b"\0\0" * (vocab)
open(sys.argv[1], "wb").write(b"_logits_" + struct.pack("<Iii", ctx, vocab, chunks) + b"\1\0\0\0" * ctx + row * rows)
PY
expect "v600.kld: the base model's vocabulary has 600 tokens, .*stories260K.gguf has 512" -- \
  "$Q" perplexity "$GGUF" --kl-divergence-base "$T/v600.kld" --kl-divergence
# A base file made at a context longer than stories260K-hf's (512).
/usr/bin/python3 - "$T/c1024.kld" <<'PY'
import struct, sys
ctx, vocab, chunks = 1024, 512, 1
row = struct.pack("<ff", 16 / 65535, -20.0) + b"\0\0" * vocab
open(sys.argv[1], "wb").write(b"_logits_" + struct.pack("<Iii", ctx, vocab, chunks) + b"\1\0\0\0" * ctx +
                              row * (ctx - 1 - ctx // 2))
PY
expect "c1024.kld: the base file was written with --ctx 1024, longer than .*context \\(512 positions\\)" -- \
  "$Q" perplexity "$HF" --kl-divergence-base "$T/c1024.kld" --kl-divergence
# A failed base run (context longer than the model's) leaves neither the file nor a temporary one.
expect "longer than the model's context" -- \
  "$Q" perplexity "$HF" --text "$TEXT" -c 1024 --chunks 1 --kl-divergence-base "$T/failed.kld"
left=$(find "$T" -name 'failed.kld*' | wc -l)
if [ "$left" -eq 0 ]; then
  passes=$((passes + 1))
else
  echo "FAIL: a failed base run left $left files"
  fails=$((fails + 1))
fi
set -e

echo "perplexity: $passes passed, $fails failed"
[ "$fails" -eq 0 ]

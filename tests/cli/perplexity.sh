#!/usr/bin/env bash
# qforge perplexity follows llama-perplexity's protocol: on stories260K, ctx 256, 40 chunks of
# TinyStories-valid-1M, llama.cpp (build 3f545be, F32 KV cache, no flash attention) reports
# PPL = 6.4854 +/- 0.29609 and tokenizes the text to 502287 tokens (see bench/RESULTS.md). The
# same figures here prove the protocol (BOS, chunking, second-half scoring, error formula) matches.
#   usage: perplexity.sh QFORGE_BINARY SHARED_DIR
set -eu
Q=$1
SHARED=$2
TEXT=$SHARED/text/tinystories/TinyStories-valid-1M.txt
fails=0
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
done
echo "perplexity: $((3 - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]

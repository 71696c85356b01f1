#!/usr/bin/env bash
# The main job: install, build, then show what qforge does on a model (default: stories260K).
#   scripts/demo.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-../shared/models/stories260K-hf}
SHARED=${QFORGE_SHARED_DIR:-../shared}
scripts/install-deps.sh
scripts/build.sh
echo; echo "== qforge inspect $MODEL"; build/qforge inspect "$MODEL" --summary
echo; echo "== qforge generate (greedy from BOS, 200 tokens)"; build/qforge generate "$MODEL" -n 200 --temp 0
echo; echo "== qforge generate (sampled, seed 42)"; build/qforge generate "$MODEL" -p "Once upon a time" -n 120 --seed 42
echo; echo "== qforge perplexity on TinyStories validation"
build/qforge perplexity "$MODEL" --text "$SHARED/text/tinystories/TinyStories-valid-1M.txt" --ctx 256 --chunks 40
OUT=${QFORGE_DEMO_OUT:-/tmp/qforge-demo}
mkdir -p "$OUT"
echo; echo "== qforge quantize to q8_0 GGUF (loads in llama.cpp), with the speed and quality report"
build/qforge quantize "$MODEL" --type q8_0 -o "$OUT/model-q8_0.gguf" --force \
  --eval-text "$SHARED/text/tinystories/TinyStories-valid-1M.txt" --eval-ctx 256 --eval-chunks 40
echo; echo "== qforge quantize to q4_k_m (llama.cpp's favourite mix; rows that fit no block fall back, as there)"
build/qforge quantize "$MODEL" --type q4_k_m -o "$OUT/model-q4_k_m.gguf" --force \
  --eval-text "$SHARED/text/tinystories/TinyStories-valid-1M.txt" --eval-ctx 256 --eval-chunks 40
echo; echo "== qforge imatrix on calibration text (TinyStories train), then q4_k_m guided by it"
build/qforge imatrix "$MODEL" --text "$SHARED/text/tinystories/TinyStories-train-2M.txt" --ctx 256 --chunks 50 \
  -o "$OUT/imatrix.gguf" --force
build/qforge quantize "$MODEL" --type q4_k_m --imatrix "$OUT/imatrix.gguf" -o "$OUT/model-q4_k_m-imatrix.gguf" --force \
  --eval-text "$SHARED/text/tinystories/TinyStories-valid-1M.txt" --eval-ctx 256 --eval-chunks 40

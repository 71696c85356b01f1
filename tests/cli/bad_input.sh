#!/usr/bin/env bash
# Bad input at the command line: each case must exit 2 with one message naming the file and the
# thing at fault, and never crash.   usage: bad_input.sh QFORGE_BINARY SHARED_DIR
set -u
Q=$1
SHARED=$2
M=$SHARED/models/stories260K-hf
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
passes=0

# expect CODE PATTERN -- command...
expect() {
  local code=$1 pattern=$2
  shift 3
  local out
  out=$("$@" 2>&1 >/dev/null)
  local rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> rc=$rc (want $code), stderr: $out (want /$pattern/)"
    fails=$((fails + 1))
  else
    passes=$((passes + 1))
  fi
}

mkmodel() {  # a copy of stories260K whose files can be broken
  local d=$T/$1
  mkdir -p "$d"
  cp "$M"/config.json "$M"/model.safetensors "$M"/tokenizer.model "$M"/tokenizer_config.json "$d"/
  chmod u+w "$d"/*
  echo "$d"
}

expect 2 "no such file" -- "$Q" inspect "$T/nope"
mkdir -p "$T/empty"
expect 2 "empty.*config.json" -- "$Q" inspect "$T/empty"

d=$(mkmodel badjson); echo '{"architectures": [' >"$d/config.json"
expect 2 "badjson/config.json: invalid JSON" -- "$Q" inspect "$d"

d=$(mkmodel unknownarch); sed -i 's/LlamaForCausalLM/FalconForCausalLM/' "$d/config.json"
expect 2 "unknown architecture 'FalconForCausalLM'" -- "$Q" inspect "$d"

d=$(mkmodel badheads); sed -i 's/"num_key_value_heads": 4/"num_key_value_heads": 3/' "$d/config.json"
expect 2 "num_key_value_heads" -- "$Q" inspect "$d"

d=$(mkmodel shape); sed -i 's/"intermediate_size": 172/"intermediate_size": 171/' "$d/config.json"
expect 2 "shape/model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape \[172, 64\], expected \[171, 64\]" -- "$Q" inspect "$d"

d=$(mkmodel trunc); truncate -s 500000 "$d/model.safetensors"
expect 2 "trunc/model.safetensors" -- "$Q" inspect "$d"

d=$(mkmodel tiny); head -c 5 "$M/model.safetensors" >"$d/model.safetensors"
expect 2 "tiny/model.safetensors" -- "$Q" inspect "$d"

d=$(mkmodel missing); sed -i 's/"num_hidden_layers": 5/"num_hidden_layers": 6/' "$d/config.json"
expect 2 "missing tensor 'model.layers.5" -- "$Q" inspect "$d"

expect 2 "token id 9999 is out of range" -- "$Q" generate "$M" --ids 1,9999 -n 2
expect 2 "longer than the model" -- "$Q" generate "$M" -p "Once" -n 5 --ctx 100000
expect 2 "longer than the model" -- "$Q" perplexity "$M" --text "$SHARED/text/tinystories/tinystories_sample.txt" --ctx 4096
echo "Once upon a time there was a cat." >"$T/short.txt"
expect 2 "at least 2 x ctx" -- "$Q" perplexity "$M" --text "$T/short.txt" --ctx 64
expect 2 "nope.txt" -- "$Q" perplexity "$M" --text "$T/nope.txt"
expect 2 "no-such-flag" -- "$Q" generate "$M" --no-such-flag
expect 2 "" -- "$Q" generate "$M" -n -5
expect 2 "" -- "$Q" frobnicate

printf 'x' >"$T/bad.bin"
expect 2 "bad.bin" -- "$Q" generate "$T/bad.bin" -n 2

# Help works and shows defaults.
for c in inspect generate perplexity synth; do
  if ! "$Q" $c --help | grep -q -- "--json"; then echo "FAIL: $c --help lacks --json"; fails=$((fails + 1)); else passes=$((passes + 1)); fi
done

echo "bad_input: $passes passed, $fails failed"
[ "$fails" -eq 0 ]

#!/usr/bin/python3
"""Writes tiny random Hugging Face checkpoints (config.json + model.safetensors) for qforge's tests.

Usage: make_tiny_models.py OUT_DIR [--only NAME ...]

Creates OUT_DIR/llama-gqa, OUT_DIR/qwen2 and OUT_DIR/gpt2, each laid out and named as the
transformers library saves LlamaForCausalLM, Qwen2ForCausalLM and GPT2LMHeadModel. The weights are
random (fixed seed) but scaled so that activations stay O(1) and logits land around O(1-10), and every
bias is non-zero, so a loader that drops a bias or transposes a matrix changes the logits visibly.

Only torch and numpy are needed: the safetensors file is written by hand (8-byte little-endian
header length, JSON header, raw little-endian data).
"""
import argparse
import json
import os
import struct

import numpy as np


def write_safetensors(path, tensors):
    """tensors: dict name -> float32 numpy array. Tensors are stored in sorted-name order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4")
        data = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)  # data starts 8-byte aligned, as the Rust writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


class Rand:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def linear(self, out_features, in_features, gain=1.0):
        """[out, in] matrix whose product with an O(1) input is O(gain)."""
        return (self.rng.standard_normal((out_features, in_features)) * gain / np.sqrt(in_features)).astype(np.float32)

    def normal(self, shape, std):
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def norm_weight(self, n):
        return (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32)

    def bias(self, n, std=0.1):
        return (std * self.rng.standard_normal(n)).astype(np.float32)


def write_model(out_dir, name, config, tensors):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)


def llama_family_tensors(r, cfg, q_bias, k_bias, v_bias, o_bias, tied):
    """HF Llama/Qwen2 tensor names and [out, in] layout; a tied head reuses embed_tokens."""
    hidden = cfg["hidden_size"]
    n_head = cfg["num_attention_heads"]
    n_kv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", hidden // n_head)
    inter = cfg["intermediate_size"]
    vocab = cfg["vocab_size"]
    # A tied head multiplies by the embedding, so its rows are kept short enough for O(3) logits.
    t = {"model.embed_tokens.weight": r.normal((vocab, hidden), 0.45 if tied else 1.0)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = r.norm_weight(hidden)
        t[p + "post_attention_layernorm.weight"] = r.norm_weight(hidden)
        # q/k gain > 1 gives attention scores of O(1), so the softmax is neither flat nor one-hot.
        t[p + "self_attn.q_proj.weight"] = r.linear(n_head * hd, hidden, 2.0)
        t[p + "self_attn.k_proj.weight"] = r.linear(n_kv * hd, hidden, 2.0)
        t[p + "self_attn.v_proj.weight"] = r.linear(n_kv * hd, hidden)
        t[p + "self_attn.o_proj.weight"] = r.linear(hidden, n_head * hd, 0.7)
        if q_bias:
            t[p + "self_attn.q_proj.bias"] = r.bias(n_head * hd, 0.3)
        if k_bias:
            t[p + "self_attn.k_proj.bias"] = r.bias(n_kv * hd, 0.3)
        if v_bias:
            t[p + "self_attn.v_proj.bias"] = r.bias(n_kv * hd)
        if o_bias:
            t[p + "self_attn.o_proj.bias"] = r.bias(hidden)
        t[p + "mlp.gate_proj.weight"] = r.linear(inter, hidden)
        t[p + "mlp.up_proj.weight"] = r.linear(inter, hidden)
        t[p + "mlp.down_proj.weight"] = r.linear(hidden, inter, 1.5)
    t["model.norm.weight"] = r.norm_weight(hidden)
    if not tied:
        t["lm_head.weight"] = r.linear(vocab, hidden, 3.0)
    return t


def make_llama_gqa(out_dir):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 97,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        # With head_dim 16 and theta 5e5 the 8 frequencies fall in all three llama3 bands
        # (wavelength < 16: kept; 16..64: smoothed; > 64: divided by 8).
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "hidden_act": "silu",
        "attention_bias": True,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    t = llama_family_tensors(Rand(1001), cfg, True, True, True, True, tied=False)
    write_model(out_dir, "llama-gqa", cfg, t)


def make_qwen2(out_dir):
    cfg = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 48,
        "intermediate_size": 80,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "vocab_size": 89,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "linear", "factor": 2.0},
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "sliding_window": 128,
        "max_window_layers": 2,
        "torch_dtype": "float32",
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    # Qwen2: q/k/v always have biases, o_proj never has one.
    t = llama_family_tensors(Rand(1002), cfg, True, True, True, False, tied=True)
    write_model(out_dir, "qwen2", cfg, t)


def make_gpt2(out_dir):
    n_embd, n_head, n_layer, vocab, n_pos = 48, 4, 2, 101, 128
    n_inner = 4 * n_embd
    cfg = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": n_embd,
        "n_head": n_head,
        "n_layer": n_layer,
        "n_positions": n_pos,
        "n_ctx": n_pos,
        "n_inner": None,
        "vocab_size": vocab,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        "scale_attn_weights": True,
        "torch_dtype": "float32",
        "bos_token_id": 100,
        "eos_token_id": 100,
    }
    r = Rand(1003)

    def conv1d(n_in, n_out, gain=1.0):
        # transformers' Conv1D stores its weight as [in, out] (the transpose of nn.Linear).
        return np.ascontiguousarray(r.linear(n_out, n_in, gain).T)

    # Short embedding rows keep the tied head's logits O(3) after ln_f.
    t = {"transformer.wte.weight": r.normal((vocab, n_embd), 0.35), "transformer.wpe.weight": r.normal((n_pos, n_embd), 0.3)}
    for l in range(n_layer):
        p = "transformer.h.%d." % l
        t[p + "ln_1.weight"] = r.norm_weight(n_embd)
        t[p + "ln_1.bias"] = r.bias(n_embd)
        t[p + "attn.c_attn.weight"] = conv1d(n_embd, 3 * n_embd, 2.0)
        t[p + "attn.c_attn.bias"] = r.bias(3 * n_embd, 0.3)
        t[p + "attn.c_proj.weight"] = conv1d(n_embd, n_embd, 0.7)
        t[p + "attn.c_proj.bias"] = r.bias(n_embd)
        t[p + "ln_2.weight"] = r.norm_weight(n_embd)
        t[p + "ln_2.bias"] = r.bias(n_embd)
        t[p + "mlp.c_fc.weight"] = conv1d(n_embd, n_inner, 1.5)
        t[p + "mlp.c_fc.bias"] = r.bias(n_inner)
        t[p + "mlp.c_proj.weight"] = conv1d(n_inner, n_embd, 1.0)
        t[p + "mlp.c_proj.bias"] = r.bias(n_embd)
    t["transformer.ln_f.weight"] = (1.3 * r.norm_weight(n_embd)).astype(np.float32)
    t["transformer.ln_f.bias"] = r.bias(n_embd)
    write_model(out_dir, "gpt2", cfg, t)


MAKERS = {"llama-gqa": make_llama_gqa, "qwen2": make_qwen2, "gpt2": make_gpt2}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--only", nargs="*", choices=sorted(MAKERS), help="models to write (default: all)")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    for name in a.only or sorted(MAKERS):
        MAKERS[name](a.out_dir)


if __name__ == "__main__":
    main()

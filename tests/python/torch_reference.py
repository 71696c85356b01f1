#!/usr/bin/python3
"""An independent float64 PyTorch forward pass of Llama-family (llama, mistral, qwen2) and GPT-2
checkpoints in Hugging Face form, written from the math, used to check qforge's engine.

Usage:
  torch_reference.py MODEL_DIR --tokens 1,5,17 --out logits.f32   # raw little-endian float32 [n_tokens, vocab]
  torch_reference.py MODEL_DIR --greedy 256 [--tokens 1]           # prints greedy continuation ids

It reads config.json and model.safetensors (or the shards of model.safetensors.index.json) with its
own reader; no transformers or safetensors packages are needed.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

DT = torch.float64


# ---- safetensors ------------------------------------------------------------------------------

def _to_f64(dtype, raw, shape):
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2")
    elif dtype == "BF16":
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype == "F64":
        a = np.frombuffer(raw, dtype="<f8")
    else:
        raise SystemExit("torch_reference: unsupported dtype %s" % dtype)
    return torch.from_numpy(a.astype(np.float64).reshape(shape))


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = _to_f64(info["dtype"], blob[base + b:base + e], info["shape"])
    return out


def read_model_tensors(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
        index = json.load(f)
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(read_safetensors(os.path.join(model_dir, shard)))
    return tensors


# ---- building blocks --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def silu(x):
    return x / (1.0 + torch.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def causal_attention(q, k, v):
    """q: [H, n, d], k/v: [H, n, d] (kv heads already repeated). Returns [n, H*d]."""
    n, d = q.shape[1], q.shape[2]
    scores = q @ k.transpose(1, 2) / math.sqrt(d)
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    scores = scores - scores.max(-1, keepdim=True).values
    p = torch.exp(scores)
    p = p / p.sum(-1, keepdim=True)
    out = p @ v  # [H, n, d]
    return out.transpose(0, 1).reshape(n, -1)


def rope_inverse_frequencies(cfg, head_dim):
    """Per-pair rotation frequencies, with the rope_scaling variants as transformers defines them."""
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=DT) / head_dim)
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind in ("default", None):
        return inv
    if kind == "linear":
        return inv / float(rs["factor"])
    if kind == "llama3":
        factor = float(rs["factor"])
        low = float(rs.get("low_freq_factor", 1.0))
        high = float(rs.get("high_freq_factor", 4.0))
        old_ctx = float(rs.get("original_max_position_embeddings", 8192))
        low_freq_wavelen = old_ctx / low
        high_freq_wavelen = old_ctx / high
        out = inv.clone()
        for i in range(inv.shape[0]):
            wavelen = 2.0 * math.pi / inv[i].item()
            if wavelen < high_freq_wavelen:  # high frequency: unchanged
                continue
            if wavelen > low_freq_wavelen:  # low frequency: slowed down by the full factor
                out[i] = inv[i] / factor
            else:  # in between: interpolate between the two
                smooth = (old_ctx / wavelen - low) / (high - low)
                out[i] = (1.0 - smooth) * inv[i] / factor + smooth * inv[i]
        return out
    raise SystemExit("torch_reference: rope_scaling type %r not implemented" % kind)


def apply_rope(x, cos, sin):
    """x: [H, n, d]; rotate_half convention: feature i pairs with i + d/2."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


# ---- models -----------------------------------------------------------------------------------

class LlamaFamily:
    def __init__(self, cfg, t):
        self.cfg, self.t = cfg, t
        self.n_embd = cfg["hidden_size"]
        self.n_head = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads") or self.n_head
        self.hd = cfg.get("head_dim") or self.n_embd // self.n_head
        self.n_layer = cfg["num_hidden_layers"]
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.inv_freq = rope_inverse_frequencies(cfg, self.hd)
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise SystemExit("torch_reference: hidden_act %r not implemented" % act)
        tied = cfg.get("tie_word_embeddings", False)
        self.head = t["model.embed_tokens.weight"] if tied or "lm_head.weight" not in t else t["lm_head.weight"]

    def linear(self, x, name):
        y = x @ self.t[name + ".weight"].T
        b = self.t.get(name + ".bias")
        return y if b is None else y + b

    def forward(self, tokens):
        n = len(tokens)
        t = self.t
        x = t["model.embed_tokens.weight"][torch.tensor(tokens)]
        angles = torch.arange(n, dtype=DT)[:, None] * self.inv_freq[None, :]
        cos = torch.cat([torch.cos(angles)] * 2, dim=-1)
        sin = torch.cat([torch.sin(angles)] * 2, dim=-1)
        rep = self.n_head // self.n_kv
        for l in range(self.n_layer):
            p = "model.layers.%d." % l
            h = rms_norm(x, t[p + "input_layernorm.weight"], self.eps)
            q = self.linear(h, p + "self_attn.q_proj").view(n, self.n_head, self.hd).transpose(0, 1)
            k = self.linear(h, p + "self_attn.k_proj").view(n, self.n_kv, self.hd).transpose(0, 1)
            v = self.linear(h, p + "self_attn.v_proj").view(n, self.n_kv, self.hd).transpose(0, 1)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            # Grouped-query attention: kv head j serves query heads j*rep .. j*rep+rep-1.
            k = k.repeat_interleave(rep, dim=0)
            v = v.repeat_interleave(rep, dim=0)
            x = x + self.linear(causal_attention(q, k, v), p + "self_attn.o_proj")
            h = rms_norm(x, t[p + "post_attention_layernorm.weight"], self.eps)
            gate = silu(self.linear(h, p + "mlp.gate_proj"))
            x = x + self.linear(gate * self.linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        x = rms_norm(x, t["model.norm.weight"], self.eps)
        return x @ self.head.T


class GPT2:
    def __init__(self, cfg, t):
        # Checkpoints are saved with or without the "transformer." prefix; accept both.
        self.t = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in t.items()}
        self.n_embd = cfg["n_embd"]
        self.n_head = cfg["n_head"]
        self.n_layer = cfg["n_layer"]
        self.eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        act = cfg.get("activation_function", "gelu_new")
        if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            self.act = gelu_tanh
        elif act == "gelu":
            self.act = gelu_erf
        else:
            raise SystemExit("torch_reference: activation_function %r not implemented" % act)
        tied = cfg.get("tie_word_embeddings", True)
        self.head = self.t["wte.weight"] if tied or "lm_head.weight" not in self.t else self.t["lm_head.weight"]

    def conv1d(self, x, name):
        # Conv1D keeps its weight as [in, out]: y = x W + b.
        return x @ self.t[name + ".weight"] + self.t[name + ".bias"]

    def forward(self, tokens):
        n = len(tokens)
        t = self.t
        hd = self.n_embd // self.n_head
        x = t["wte.weight"][torch.tensor(tokens)] + t["wpe.weight"][:n]
        for l in range(self.n_layer):
            p = "h.%d." % l
            h = layer_norm(x, t[p + "ln_1.weight"], t[p + "ln_1.bias"], self.eps)
            qkv = self.conv1d(h, p + "attn.c_attn")
            q, k, v = (z.reshape(n, self.n_head, hd).transpose(0, 1) for z in qkv.split(self.n_embd, dim=-1))
            x = x + self.conv1d(causal_attention(q, k, v), p + "attn.c_proj")
            h = layer_norm(x, t[p + "ln_2.weight"], t[p + "ln_2.bias"], self.eps)
            x = x + self.conv1d(self.act(self.conv1d(h, p + "mlp.c_fc")), p + "mlp.c_proj")
        x = layer_norm(x, t["ln_f.weight"], t["ln_f.bias"], self.eps)
        return x @ self.head.T


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors = read_model_tensors(model_dir)
    if cfg.get("model_type") == "gpt2":
        return GPT2(cfg, tensors)
    if cfg.get("model_type") in ("llama", "mistral", "qwen2"):
        return LlamaFamily(cfg, tensors)
    raise SystemExit("torch_reference: model_type %r not implemented" % cfg.get("model_type"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", default="", help="comma-separated token ids")
    ap.add_argument("--out", help="file for the logits, raw little-endian float32 [n_tokens, vocab]")
    ap.add_argument("--greedy", type=int, default=0, help="print this many greedy continuation ids")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    model = load(a.model_dir)
    tokens = [int(s) for s in a.tokens.split(",") if s.strip()]
    if a.out:
        if not tokens:
            raise SystemExit("torch_reference: --out needs --tokens")
        logits = model.forward(tokens)
        with open(a.out, "wb") as f:
            f.write(logits.numpy().astype("<f4").tobytes())
    if a.greedy:
        seq = tokens or [1]
        generated = []
        # No KV cache here: every step recomputes the whole prefix (fine for tiny models).
        for _ in range(a.greedy):
            nxt = int(torch.argmax(model.forward(seq)[-1]).item())
            generated.append(nxt)
            seq.append(nxt)
        print(" ".join(str(i) for i in generated))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GGUF <-> Hugging Face Llama: the bridge between the runtime's INT4 file and PyTorch.

Training runs on the base model's *dequantized* GGUF weights (exactly what the runtime
multiplies), in a Hugging Face ``LlamaForCausalLM`` so that PEFT and TRL work on it
unchanged; adapters come out as ordinary PEFT directories.

One layout detail matters: Hugging Face Llama orders each attention head's query/key
rows as two halves (RoPE by ``rotate_half``), while GGUF ``llama`` files hold them as
interleaved pairs; llama.cpp's converter permutes those rows (``permute`` below, as in
its convert_hf_to_gguf.py). The runtime undoes it for an adapter's q/k ``lora_B`` rows
(src/lora), so a PEFT adapter trained here, or anywhere on the HF model, applies as is.
"""

from __future__ import annotations

import numpy as np


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> GGUF row order of a q or k projection (out rows = n_head * head_dim)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF -> HF row order; the inverse of ``permute``."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    v = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(v).decode("utf-8")
    return v.tolist()[0] if hasattr(v, "tolist") else v


def read_gguf_llama(path: str):
    """The hyperparameters and dequantized f32 tensors (HF names, HF layout) of a GGUF
    `llama` model: (hp dict, {name: np.ndarray})."""
    import gguf

    r = gguf.GGUFReader(path)
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"{path}: architecture {arch!r}; this pipeline trains `llama` models")
    a = "llama"
    hp = {
        "n_layer": _field(r, f"{a}.block_count"),
        "d": _field(r, f"{a}.embedding_length"),
        "ff": _field(r, f"{a}.feed_forward_length"),
        "n_head": _field(r, f"{a}.attention.head_count"),
        "n_head_kv": _field(r, f"{a}.attention.head_count_kv"),
        "rope_base": float(_field(r, f"{a}.rope.freq_base") or 10000.0),
        "eps": float(_field(r, f"{a}.attention.layer_norm_rms_epsilon")),
        "ctx": _field(r, f"{a}.context_length"),
    }
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    per_layer = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    out = {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])  # ggml (in, out) -> (out, in)
        name = t.name
        if name in names:
            out[names[name]] = w
            continue
        parts = name.split(".")  # blk.{i}.{kind}.weight
        if parts[0] != "blk" or parts[2] not in per_layer:
            raise SystemExit(f"{path}: unexpected tensor {name}")
        i, kind = int(parts[1]), parts[2]
        if kind == "attn_q":
            w = unpermute(w, hp["n_head"])
        elif kind == "attn_k":
            w = unpermute(w, hp["n_head_kv"])
        out[f"model.layers.{i}.{per_layer[kind]}.weight"] = w
    hp["vocab"] = out["model.embed_tokens.weight"].shape[0]
    hp["tied"] = "lm_head.weight" not in out
    return hp, out


def hf_llama(hp: dict, tensors: dict, dtype=None):
    """A ``LlamaForCausalLM`` holding `tensors` (from ``read_gguf_llama``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=hp["vocab"],
        hidden_size=hp["d"],
        intermediate_size=hp["ff"],
        num_hidden_layers=hp["n_layer"],
        num_attention_heads=hp["n_head"],
        num_key_value_heads=hp["n_head_kv"],
        max_position_embeddings=hp["ctx"],
        rms_norm_eps=hp["eps"],
        rope_theta=hp["rope_base"],
        tie_word_embeddings=hp["tied"],
        attention_bias=False,
        mlp_bias=False,
    )
    # Some transformers versions read RoPE settings from `rope_parameters` only.
    if hasattr(cfg, "rope_parameters") and isinstance(cfg.rope_parameters, dict):
        cfg.rope_parameters["rope_theta"] = hp["rope_base"]
    model = LlamaForCausalLM(cfg)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (hp["tied"] and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
    if hp["tied"]:
        model.tie_weights()
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()

#!/usr/bin/env python3
"""A random-weight model with the shapes of one people run in browsers, for the benchmarks.

Speed does not depend on weight values, so the benchmarks measure a model of a realistic
size made here rather than downloaded: Qwen2.5-0.5B's shapes (qwen2, 24 layers, width
896, 14 query / 2 KV heads of 64, feed-forward 4864, vocabulary 151936, q/k/v biases,
tied embeddings), random weights written in F16 by gguf-py, then quantized to Q4_K_M by
llama.cpp's own quantizer. The vocabulary is a stand-in of the right size (the GPT-2 byte
tokens, filler tokens, ChatML's specials): the benchmarks feed token ids, not text.

Usage: python3 bench/make_model.py --out models/bench/qwen2.5-0.5b-shapes.Q4_K_M.gguf
(llama-cpp-python, gguf and numpy as in bench/run.sh). Not committed; about 400 MB.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

import gguf
import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
from make_fixtures import CHATML_TEMPLATE, bytes_to_unicode  # noqa: E402

SHAPES = dict(n_layer=24, d=896, n_head=14, n_kv=2, ff=4864, vocab=151936, rope_base=1e6, eps=1e-6)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def vocab(n):
    """n tokens: the 256 GPT-2 byte tokens, filler tokens, then the specials."""
    _, byte_chars = bytes_to_unicode()
    filler = ["to"] + [f"tok{i}" for i in range(n - 257 - len(SPECIALS))]
    tokens = list(byte_chars) + filler + list(SPECIALS)
    types = [int(gguf.TokenType.NORMAL)] * (n - len(SPECIALS)) + [int(gguf.TokenType.CONTROL)] * len(SPECIALS)
    # llama.cpp needs merges: one, whose result is in the vocabulary as BPE requires
    # (the benchmarks never tokenize text).
    merges = ["t o"]
    return tokens, types, merges


def write_f16(path, s, seed=0):
    rng = np.random.default_rng(seed)
    hd = s["d"] // s["n_head"]
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_name("qwen2.5-0.5b-shapes-random")
    w.add_context_length(32768)
    w.add_embedding_length(s["d"])
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(s["ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_kv"])
    w.add_rope_freq_base(s["rope_base"])
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    tokens, types, merges = vocab(s["vocab"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float16)

    def vec(n, mean, std):
        return (mean + std * rng.standard_normal(n)).astype(np.float32)

    d, ff, kv = s["d"], s["ff"], s["n_kv"] * hd
    w.add_tensor("token_embd.weight", mat(s["vocab"], d, 0.02))
    for l in range(s["n_layer"]):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", vec(d, 1.0, 0.1))
        w.add_tensor(p + "attn_q.weight", mat(d, d, 0.03))
        w.add_tensor(p + "attn_q.bias", vec(d, 0.0, 0.02))
        w.add_tensor(p + "attn_k.weight", mat(kv, d, 0.03))
        w.add_tensor(p + "attn_k.bias", vec(kv, 0.0, 0.02))
        w.add_tensor(p + "attn_v.weight", mat(kv, d, 0.03))
        w.add_tensor(p + "attn_v.bias", vec(kv, 0.0, 0.02))
        w.add_tensor(p + "attn_output.weight", mat(d, d, 0.03))
        w.add_tensor(p + "ffn_norm.weight", vec(d, 1.0, 0.1))
        w.add_tensor(p + "ffn_gate.weight", mat(ff, d, 0.03))
        w.add_tensor(p + "ffn_up.weight", mat(ff, d, 0.03))
        w.add_tensor(p + "ffn_down.weight", mat(d, ff, 0.02))
    w.add_tensor("output_norm.weight", vec(d, 1.0, 0.1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ftype", default="Q4_K_M", help="llama.cpp file type (Q4_K_M, Q8_0, ...)")
    a = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.out))) as tmp:
        f16 = os.path.join(tmp, "model.f16.gguf")
        write_f16(f16, SHAPES)
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{a.ftype}")
        p.nthread = os.cpu_count() or 2
        rc = llama_cpp.llama_model_quantize(f16.encode(), a.out.encode(), p)
        if rc != 0:
            sys.exit(f"llama_model_quantize failed: {rc}")
    r = gguf.GGUFReader(a.out)
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 2**20:.0f} MiB): {types}")


if __name__ == "__main__":
    main()

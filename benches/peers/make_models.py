"""Random-weight Qwen2 checkpoints in Hugging Face layout for the generate comparisons.
  python make_models.py TOKENIZER_DIR OUT_DIR small|qwen2.5-0.5b
small: hidden 384, intermediate 1024, 6 layers, 6/2 heads, vocab 8192, tied (12.6M parameters).
qwen2.5-0.5b: Qwen2.5-0.5B's architecture (vocab 151,936, hidden 896, intermediate 4,864, 24 layers,
14/2 heads, tied, rope_theta 1e6, q/k/v bias), ~2 GB in f32.
The tokenizer files of TOKENIZER_DIR are copied beside the weights (token ids past its vocabulary
are generated but decode to nothing)."""
import os, shutil, sys
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

tok_dir, out, shape = sys.argv[1], sys.argv[2], sys.argv[3]
common = dict(hidden_act="silu", tie_word_embeddings=True, rms_norm_eps=1e-6, use_sliding_window=False,
              bos_token_id=None, eos_token_id=2, pad_token_id=0, torch_dtype="float32")
shapes = {
    "small": dict(vocab_size=8192, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                  num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0),
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1000000.0),
}
if os.path.exists(os.path.join(out, "model.safetensors")):
    print(f"{out} exists"); sys.exit(0)
torch.manual_seed(0)
cfg = Qwen2Config(**shapes[shape], **common)
with torch.no_grad():
    m = Qwen2ForCausalLM(cfg).to(torch.float32).eval()
m.save_pretrained(out, safe_serialization=True)
for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if os.path.exists(os.path.join(tok_dir, f)):
        shutil.copy(os.path.join(tok_dir, f), out)
print(f"wrote {out}: {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M parameters")

#!/usr/bin/env bash
# Reproduces the shipped reasoning adapter and switcher (www/reasoning/) from nothing
# but the default model: data, masked-prompt SFT, INT8 export, switcher features and
# head. About 2 h on 2 CPU cores (SFT 75 min of it, 315 steps); a CUDA GPU is used when
# PyTorch sees one. Then `train/eval.py` measures them.
#
#   train/reproduce.sh            (MODEL=path/to.gguf to train for another file)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
PY=.venv-train/bin/python

[ -f "$MODEL" ] || ./build.sh model
if [ ! -x "$PY" ]; then
    python3 -m venv .venv-train
    "$PY" -m pip install -r train/requirements.txt
fi
cargo build --release --bin edge-reason

python3 train/data.py --out train/data
"$PY" train/check_bridge.py --model "$MODEL"
"$PY" train/sft.py --model "$MODEL" --out train/out/sft --epochs 1
target/release/edge-reason export-adapter --peft train/out/sft --out www/reasoning/adapter
"$PY" train/switcher.py --model "$MODEL" --out www/reasoning/switcher
echo "reproduce: www/reasoning/adapter and www/reasoning/switcher written"

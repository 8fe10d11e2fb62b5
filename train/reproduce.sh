#!/usr/bin/env bash
# Reproduces the shipped reasoning adapter and switcher (www/reasoning/) from nothing
# but the default model: data, masked-prompt SFT, INT8 export, switcher features and
# head; then the budget-stated SFT adapter the results table measures but the runtime
# does not ship (train/artifacts/budget-sft/). About 3 h on 2 CPU cores (SFT 75 min of
# it, 315 steps; the budget stage 40 min); a CUDA GPU is used when PyTorch sees one.
# Then `train/eval.py` measures them. GRPO (train/grpo.py) is not a stage: on top of
# either adapter it lost accuracy without saving tokens (train/README.md).
#
#   train/reproduce.sh            (MODEL=path/to.gguf to train for another file;
#                                  BUDGET=0 to skip the budget stage)
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
[ "${BUDGET:-1}" = 0 ] && exit 0

"$PY" train/sft.py --model "$MODEL" --out train/out/budget-sft --init www/reasoning/adapter \
    --budget-buckets 32,64,128 --full-if-fits --epochs 0.5 --lr 2e-4
target/release/edge-reason export-adapter --peft train/out/budget-sft --out train/artifacts/budget-sft
echo "reproduce: train/artifacts/budget-sft written"

#!/usr/bin/env bash
# Exports trained models with `rnnsweep export-model` and checks, with onnx and onnxruntime
# from PyPI (in a venv), that each file passes ONNX's checker and that scripts/onnx_predict.py
# on it gives what `rnnsweep predict` gives (probabilities within 1e-5, the same decisions),
# for every pooling, one and two layers, with and without BatchNorm, pre and post padding and
# truncation, LSTM and GRU, an OOV token, every dense activation, a K-class and a multi-label
# model, models that read several views of the text (words, characters, their n-grams), and an
# ensemble that mixes them.
#   scripts/check-onnx.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ONNX_VENV:-.venv-onnx}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import onnx, onnxruntime, numpy, sys; sys.exit(onnxruntime.__version__ != "1.32.0" or onnx.__version__ != "1.23.2")' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "onnxruntime==1.32.0" "onnx==1.23.2" "numpy==2.4.6"
fi
py=$venv/bin/python
cargo build --release -q -p rnnsweep
bin=$PWD/target/release/rnnsweep
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RAYON_NUM_THREADS=1
# The sample, plus rows that tokenise to nothing (empty, punctuation only, unknown words) and
# one longer than every sequence length.
sample=$work/sample.csv
cp experiments/data/sample.csv "$sample"
long=$(printf 'user love %.0s' $(seq 120))
printf '%s\n' '90001,0,' '90002,0,"!!! ... ???"' '90003,0,qqqzx vvvkw' "90004,0,$long" >>"$sample"
checked=0

# check NAME DATA [train flags…]: train one epoch, predict, export, score with onnxruntime, compare.
check() {
  local name=$1 data=$2
  shift 2
  "$bin" train --data "$data" --out "$work/$name" --set epochs=1 --set embedding_dim=8 \
    --set max_words=1500 "$@" >"$work/$name.train.log" 2>&1 || { cat "$work/$name.train.log"; exit 1; }
  verify "$name" "$data"
}

# verify NAME DATA: the model folder $work/NAME against its ONNX export on DATA.
verify() {
  local name=$1 data=$2
  "$bin" predict --model "$work/$name" --input "$data" --out "$work/$name.rnnsweep.csv" >/dev/null 2>&1
  "$bin" export-model --model "$work/$name" --out "$work/$name.onnx" >/dev/null
  "$py" -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' "$work/$name.onnx"
  "$py" scripts/onnx_predict.py "$work/$name.onnx" "$data" "$work/$name.onnx.csv" >/dev/null
  printf '%-28s ' "$name"
  "$py" scripts/compare_predictions.py "$work/$name.rnnsweep.csv" "$work/$name.onnx.csv" --tolerance 1e-5
  checked=$((checked + 1))
}

dense() { echo "dense=[{units: 8, activation: $1}, {units: 6, activation: $2}]"; }
check last-1-post           $sample --set 'lstm_units=[8]' --set padding=post --set "$(dense relu tanh)"
check last-2-bn-pre         $sample --set 'lstm_units=[8,6]' --set batch_norm=true --set padding=pre --set sequence_length=12 --set truncating=post --set "$(dense elu selu)"
check max-1-bn-pre          $sample --set 'lstm_units=[8]' --set batch_norm=true --set pooling=max --set padding=pre --set sequence_length=10 --set "$(dense gelu swish)"
check mean-2-post           $sample --set 'lstm_units=[8,8]' --set pooling=mean --set padding=post --set sequence_length=10 --set truncating=post --set "$(dense softplus softsign)"
check max_mean-1-bn-oov     $sample --set 'lstm_units=[8]' --set batch_norm=true --set pooling=max_mean --set tokenizer.oov_token='<OOV>' --set "$(dense hard_sigmoid sigmoid)"
check attention-2-bn-pre    $sample --set 'lstm_units=[8,8]' --set batch_norm=true --set pooling=attention --set padding=pre --set "$(dense linear relu)"
check attention-1-post      $sample --set 'lstm_units=[6]' --set pooling=attention --set padding=post --set sequence_length=8
check gru-last-2-bn-pre     $sample --set cell=gru --set 'lstm_units=[8,6]' --set batch_norm=true --set padding=pre
check gru-max_mean-1-post   $sample --set cell=gru --set 'lstm_units=[8]' --set pooling=max_mean --set sequence_length=9 --set truncating=post
check words-chars-max-bn-pre $sample --set inputs=word+char --set 'lstm_units=[8]' --set batch_norm=true --set pooling=max --set padding=pre --set char_sequence_length=40 --set "$(dense relu tanh)"
check words-chars-gru-attn   $sample --set inputs=word+char --set cell=gru --set 'lstm_units=[6,6]' --set pooling=attention --set sequence_length=10 --set truncating=post
check words-ngrams-pre      $sample --set inputs=word+ngram --set 'lstm_units=[8]' --set padding=pre --set ngram_sequence_length=60 --set truncating=post
check all-views-oov-sparse  $sample --set inputs=word+char+ngram --set 'lstm_units=[8]' --set pooling=max_mean --set tokenizer.oov_token='<OOV>' --set embedding_update=sparse --set view_dropout=0.5
check classes-mean-bn       experiments/data/topics.csv --label-column class --text-column text --labels auto \
  --set 'lstm_units=[8]' --set batch_norm=true --set pooling=mean
check labels-attention-2    experiments/data/topics-multilabel.csv --text-column text --label-columns sport,politics,tech \
  --set 'lstm_units=[8,8]' --set pooling=attention --set padding=pre

# An ensemble from a small sweep, combined in log-odds; its seed draws members of every kind of
# view (words; words and characters; words and n-grams), so one graph feeds all three inputs.
cp -r experiments/data "$work/data"
cat >"$work/ensemble.yaml" <<'YAML'
name: onnx-ensemble
storage: onnx-ensemble.db
data: {train: data/sample.csv, max_words: 1500}
method: random
seed: 5
metric: {name: val_f1, goal: maximize}
run_cap: 4
training: {epochs: 1, batch_size: 64, embedding_dim: 8, dense: [{units: 8}]}
parameters:
  lstm_units: {values: [[8], [6, 6]]}
  pooling: {values: [last, attention, max]}
  batch_norm: {values: [true, false]}
  padding: {values: [pre, post]}
  sequence_length: {values: [10, 20]}
  inputs: {values: [word, word+char, word+ngram]}
YAML
(cd "$work" && "$bin" run ensemble.yaml >run.log 2>&1 && "$bin" best onnx-ensemble.db --retrain --epochs 1 \
  --ensemble 4 --selection top --combine logit --out ensemble >best.log 2>&1) || { cat "$work"/*.log; exit 1; }
verify ensemble "$sample"
"$py" - "$work/ensemble.onnx" <<'PY'
import onnx, sys
inputs = [i.name for i in onnx.load(sys.argv[1]).graph.input]
assert inputs == ["ids", "char_ids", "ngram_ids"], f"the ensemble's inputs: {inputs}"
PY
echo "ONNX check passed: $checked models"

#!/usr/bin/env bash
# Regenerates the tokenizer fixture from Keras's own Tokenizer (its legacy code in the `keras`
# package, keras/src/legacy/preprocessing/text.py), run on the bundled sample data.
# Only the fixture is committed; the Keras code is fetched into a temporary venv.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q numpy
"$work/venv/bin/pip" download -q --no-deps "keras==3.15.1" -d "$work/wheel"
(cd "$work" && python3 -m zipfile -e wheel/keras-*.whl unpacked >/dev/null)
# The module only needs numpy and a no-op `keras_export` decorator.
sed 's/^from keras.src.api_export import keras_export$/keras_export = lambda *a, **k: (lambda f: f)/' \
  "$work/unpacked/keras/src/legacy/preprocessing/text.py" >"$work/keras_text.py"
"$work/venv/bin/python" scripts/keras_tokenizer_fixture.py "$work/keras_text.py" \
  experiments/data/sample.csv crates/rnnsweep-model/tests/fixtures/sample-keras-tokenizer.json

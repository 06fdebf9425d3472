"""Runs Keras's Tokenizer on a CSV and writes what the Rust tokenizer must reproduce."""
import csv
import importlib.util
import json
import sys

module_path, csv_path, out_path = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("keras_text", module_path)
keras_text = importlib.util.module_from_spec(spec)
spec.loader.exec_module(keras_text)

# Invalid UTF-8 is decoded to U+FFFD, as rnnsweep's loader does.
with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
    texts = [row["tweet"] for row in csv.DictReader(f)]

out = {"rows": len(texts), "cases": []}
# (Tokenizer options, rows used): the defaults at two vocabulary sizes, then the options
# rnnsweep exposes (`tokenizer:` in a model configuration). Character-level sequences are
# long, so that case uses the first 500 rows only.
cases = [
    ({"num_words": 5000}, len(texts)),
    ({"num_words": 60}, len(texts)),
    ({"num_words": 60, "oov_token": "<OOV>"}, len(texts)),
    ({"num_words": None, "char_level": True}, 500),
    ({"num_words": 40, "char_level": True, "lower": False, "oov_token": "~"}, 500),
    ({"num_words": 300, "lower": False, "filters": "!\"$%&()*+,-./:;<=>?[\\]^_`{|}~\t\n"}, len(texts)),
]
for options, rows in cases:
    tok = keras_text.Tokenizer(**options)
    tok.fit_on_texts(texts[:rows])
    vocabulary = sorted(tok.word_index, key=tok.word_index.get)
    out["cases"].append({
        "options": options,
        "rows": rows,
        "vocabulary": vocabulary,
        "counts": [tok.word_counts.get(w, 0) for w in vocabulary],
        "sequences": tok.texts_to_sequences(texts[:rows]),
    })
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
print(f"wrote {out_path}: {len(texts)} rows, {len(out['cases'][0]['vocabulary'])} words")

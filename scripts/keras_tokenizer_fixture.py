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
for num_words in (5000, 60):
    tok = keras_text.Tokenizer(num_words=num_words)
    tok.fit_on_texts(texts)
    vocabulary = sorted(tok.word_index, key=tok.word_index.get)
    out["cases"].append({
        "num_words": num_words,
        "vocabulary": vocabulary,
        "counts": [tok.word_counts[w] for w in vocabulary],
        "sequences": tok.texts_to_sequences(texts),
    })
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
print(f"wrote {out_path}: {len(texts)} rows, {len(out['cases'][0]['vocabulary'])} words")

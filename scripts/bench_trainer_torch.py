"""PyTorch side of scripts/bench-trainer.sh: the same model, data shape and optimizer as
crates/rnnsweep-model/examples/bench_trainer.rs, timed the same way. Prints one JSON line.

Embedding(5000, 88) -> BiLSTM(U) -> BiLSTM(U) -> Dense(128, relu) -> Dense(1), Adam (Keras's
defaults: lr 1e-3, eps 1e-7), class-weighted binary cross-entropy, synthetic ids with no padding;
or, with --lengths FILE --packed, rows of those real lengths run through pack_padded_sequence
(PyTorch's way to skip padding).
"""

import argparse
import json
import time

import torch
from torch import nn

VOCAB = 5000


class Model(nn.Module):
    def __init__(self, units):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 88, padding_idx=0)
        self.lstm1 = nn.LSTM(88, units, batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(2 * units, units, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * units, 128)
        self.output = nn.Linear(128, 1)

    def forward(self, ids, lengths=None):
        x = self.embedding(ids)
        if lengths is None:
            x, _ = self.lstm1(x)
            _, (h, _) = self.lstm2(x)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
            out, _ = self.lstm1(packed)
            # h comes back in the batch's own row order.
            _, (h, _) = self.lstm2(out)
        last = torch.cat([h[0], h[1]], dim=1)
        return self.output(torch.relu(self.dense(last))).squeeze(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=31962)
    p.add_argument("--time", type=int, default=37)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lengths", help="one token count per line; sets the rows")
    p.add_argument("--packed", action="store_true", help="pack_padded_sequence by real length")
    p.add_argument("--inference", action="store_true", help="time prediction (inference_mode)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (cuDNN's LSTM)")
    a = p.parse_args()
    lengths = None
    if a.lengths:
        with open(a.lengths) as f:
            lengths = torch.tensor([min(max(int(x), 1), a.time) for x in f if x.strip()])
        a.rows = len(lengths)
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    ids = torch.randint(1, VOCAB, (a.rows, a.time))
    if lengths is not None:
        ids[torch.arange(a.time)[None, :] >= lengths[:, None]] = 0
    labels = (torch.rand(a.rows) < 0.07).float()
    # rnnsweep's class weights: max(count) / count per class.
    positives = max(float(labels.sum()), 1.0)
    negatives = max(a.rows - positives, 1.0)
    most = max(positives, negatives)
    weights = torch.where(labels > 0.5, most / positives, most / negatives).float()
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    ids, labels, weights = ids.to(device), labels.to(device), weights.to(device)
    model = Model(a.units).to(device)

    def sync():
        # CUDA kernels run asynchronously: the clock stops only when the GPU is done.
        if cuda:
            torch.cuda.synchronize(device)
    if a.inference:
        model.eval()
        batch = 1024

        def predict():
            with torch.inference_mode():
                for s in range(0, a.rows, batch):
                    model(ids[s : s + batch])

        predict()
        sync()
        started = time.perf_counter()
        for _ in range(a.epochs):
            predict()
        sync()
        seconds = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "trainer": "pytorch-infer",
                    "units": a.units,
                    "batch": batch,
                    "device": a.device,
                    "threads": torch.get_num_threads(),
                    "batches": -(-a.rows // batch) * a.epochs,
                    "seconds": round(seconds, 3),
                    "samples_per_s": round(a.rows * a.epochs / seconds, 1),
                }
            )
        )
        return
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    batches = [(s, min(a.batch, a.rows - s)) for s in range(0, a.rows, a.batch)]

    def step(start, n):
        optimizer.zero_grad(set_to_none=True)
        rows = slice(start, start + n)
        logits = model(ids[rows], lengths[rows] if a.packed else None)
        loss = (loss_fn(logits, labels[start : start + n]) * weights[start : start + n]).mean()
        loss.backward()
        optimizer.step()
        return loss.detach().item()

    for k in range(a.warmup):
        step(*batches[k % len(batches)])
    per_batch = []
    loss = 0.0
    started = time.perf_counter()
    for _ in range(a.epochs):
        for b in batches:
            t = time.perf_counter()
            loss = step(*b)
            per_batch.append((time.perf_counter() - t) * 1e3)
    sync()
    seconds = time.perf_counter() - started
    per_batch.sort()
    print(
        json.dumps(
            {
                "trainer": "pytorch-packed" if a.packed else "pytorch",
                "units": a.units,
                "batch": a.batch,
                "device": a.device,
                "threads": torch.get_num_threads(),
                "batches": len(per_batch),
                "seconds": round(seconds, 3),
                "samples_per_s": round(a.rows * a.epochs / seconds, 1),
                "ms_per_batch_median": round(per_batch[len(per_batch) // 2], 2),
                "ms_per_batch_min": round(per_batch[0], 2),
                "last_loss": round(loss, 5),
            }
        )
    )


if __name__ == "__main__":
    main()

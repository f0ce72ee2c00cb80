#!/usr/bin/env python3
"""The yardstick for `minas bench train-ref --device cuda:N`: the network and
recipe of shared/bench/torch_ref.py (three conv-BN-ReLU blocks of widths w,
2w, 4w, max pooling, global pooling, linear; SGD Nesterov, weight decay 5e-4,
one-cycle to 0.2, label smoothing 0.1) trained by PyTorch on a GPU with the
whole data set resident there, as minas trains. Prints one line:
  torch VERSION device=... width=W batch=B epochs=E train_s=S img_per_s=X test_acc=A"""
import argparse, gzip, struct, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

D = "/usr/share/datasets/fashion-mnist/"


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 2051:
        r, c = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, r, c)
    return np.frombuffer(data, np.uint8, offset=8)


def net(w):
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))


p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--width", type=int, default=16)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--device", default="cuda:0")
p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
               help="bf16 / fp16: autocast (fp16 with a GradScaler), as minas' mixed precision")
p.add_argument("--target", type=float, default=0.0,
               help="test accuracy to time: evaluated after every epoch (not timed)")
a = p.parse_args()
dev = torch.device(a.device)
torch.manual_seed(0)
# fp32 means fp32, as in minas' fp32 runs: no TF32 in convolutions or matmuls.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.benchmark = True


def load(images, labels):
    x = torch.tensor(idx(D + images), dtype=torch.float32, device=dev).div_(255).sub_(0.2860).div_(0.3530)
    return x, torch.tensor(idx(D + labels), dtype=torch.long, device=dev)


xtr, ytr = load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
xte, yte = load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
m = net(a.width).to(dev)
per_epoch = len(xtr) // a.batch
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=a.epochs * per_epoch)
def test_acc():
    m.eval()
    with torch.no_grad():
        right = sum((m(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
                    for i in range(0, len(xte), 1000))
    m.train()
    return right / len(xte)


half = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
scaler = torch.cuda.amp.GradScaler(enabled=a.precision == "fp16")
torch.cuda.synchronize(dev)
t0 = time.time()
seen = 0
train_s = 0.0
reached = None
for ep in range(a.epochs):
    m.train()
    perm = torch.randperm(len(xtr), device=dev)
    for i in range(per_epoch):
        sel = perm[i * a.batch:(i + 1) * a.batch]
        with torch.autocast("cuda", dtype=half, enabled=half is not None):
            loss = F.cross_entropy(m(xtr[sel]), ytr[sel], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        seen += len(sel)
    torch.cuda.synchronize(dev)
    train_s += time.time() - t0
    if a.target > 0 and reached is None:
        acc = test_acc()
        print(f"epoch {ep + 1} test_acc={acc:.4f} train_s={train_s:.2f}")
        if acc >= a.target:
            reached = train_s
    t0 = time.time()
if a.target > 0:
    print(f"target={a.target:.4f} train_s_to_target={reached:.2f}" if reached is not None
          else f"target={a.target:.4f} not reached in {a.epochs} epochs")
m.eval()
with torch.no_grad():
    correct = sum((m(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
                  for i in range(0, len(xte), 1000))
print(f"torch {torch.__version__} device={a.device} precision={a.precision} width={a.width} "
      f"batch={a.batch} epochs={a.epochs} "
      f"train_s={train_s:.2f} img_per_s={seen / train_s:.0f} test_acc={correct / len(xte):.4f}")

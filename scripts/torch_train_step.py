"""PyTorch anchor for one training step of Lighter U-net@1 (batch 8, 256x256, Adam lr 1e-4 with
L2 weight decay 1e-2, dice loss), median of 20 after 5 warm-up steps. A measuring tool to run
beside `lightunet train` on the same card (needs ../shared/anchors/refnet.py next to it).
  python3 torch_train_step.py [device] [steps] [warmup]      (defaults: cuda if available, 20, 5)"""
import statistics, sys, time, json, os
import torch
from refnet import Net

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
torch.manual_seed(0)
m = Net("lighter@1").to(dev).train()
opt = torch.optim.Adam(m.parameters(), lr=1e-4, weight_decay=1e-2)
x = torch.rand(8, 3, 256, 256, device=dev)
g = (torch.rand(8, 1, 256, 256, device=dev) > 0.7).float()

def step():
    opt.zero_grad(set_to_none=True)
    p = m(x)
    inter = (p * g).flatten(1).sum(1)
    loss = 1 - (2 * inter / (p.flatten(1).sum(1) + g.flatten(1).sum(1))).mean()
    loss.backward()
    opt.step()
    if dev.type == "cuda": torch.cuda.synchronize()

steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 5
for _ in range(warmup): step()
ts = []
for _ in range(steps):
    t = time.perf_counter(); step(); ts.append((time.perf_counter() - t) * 1e3)
ms = statistics.median(ts)
print(f"pytorch {torch.__version__} train step lighter@1 batch 8 256x256 on {dev}: {ms:.2f} ms (median of {steps}, {torch.get_num_threads()} threads)")
if os.environ.get("OUT"):
    json.dump({"device": str(dev), "ms": ms, "torch": torch.__version__}, open(os.path.join(os.environ["OUT"], "torch_train_step.json"), "w"))

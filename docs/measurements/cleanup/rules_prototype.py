# Prototype that chose the clean-up rule (2026-11-30): which connected component of the
# thresholded map to keep, per image at the original size, mean Dice over a split. Not product
# code: PyTorch and the network of ../shared/anchors/refnet.py (not shipped), no hole filling.
#   python rules_prototype.py WEIGHTS.safetensors [SPLIT_DIR]   (default: the prepared BUSI val)
import sys, json, struct, os
import numpy as np, torch
from PIL import Image
sys.path.insert(0, '/work/shared/anchors')
from refnet import Net
torch.set_num_threads(1)

def load_st(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); d = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']; dt = {'F32': np.float32, 'F16': np.float16, 'I64': np.int64}[v['dtype']]
        d[k] = torch.from_numpy(np.frombuffer(b[8+n+s:8+n+e], dtype=dt).reshape(v['shape']).astype(np.float32).copy())
    return d

def resize_bilinear(img, W, H):  # cv2 INTER_LINEAR-like, half-pixel centres, no antialias
    h, w = img.shape[:2]
    xs = (np.arange(W) + 0.5) * w / W - 0.5; ys = (np.arange(H) + 0.5) * h / H - 0.5
    xs = np.clip(xs, 0, w - 1); ys = np.clip(ys, 0, h - 1)
    x0 = np.floor(xs).astype(int); y0 = np.floor(ys).astype(int)
    x1 = np.minimum(x0 + 1, w - 1); y1 = np.minimum(y0 + 1, h - 1)
    fx = (xs - x0)[None, :, None] if img.ndim == 3 else (xs - x0)[None, :]
    fy = (ys - y0)[:, None, None] if img.ndim == 3 else (ys - y0)[:, None]
    a = img[y0][:, x0]; b = img[y0][:, x1]; c = img[y1][:, x0]; d = img[y1][:, x1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy

def labels8(m):
    H, W = m.shape; lab = np.where(m, np.arange(H * W).reshape(H, W) + 1, 0).astype(np.int64)
    big = H * W + 10
    while True:
        l = np.where(m, lab, big); p = np.pad(l, 1, constant_values=big)
        n = l.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                n = np.minimum(n, p[1+dy:1+dy+H, 1+dx:1+dx+W])
        n = np.where(m, n, 0)
        if (n == lab).all(): return lab
        lab = n

def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2 * (a & b).sum() / s

w = sys.argv[1]; root = sys.argv[2] if len(sys.argv) > 2 else '/work/data/busi/val'
net = Net('lighter@1'); net.load_state_dict(load_st(w), strict=False); net.eval()
res = {k: [] for k in ['all', 'largest', 'mass', 'maxp', 'meanp']}
for f in sorted(os.listdir(root + '/images')):
    im = np.asarray(Image.open(f'{root}/images/{f}').convert('RGB'))[:, :, ::-1].astype(np.float32)
    x = np.clip(np.round(resize_bilinear(im, 256, 256)), 0, 255) / 255.0
    with torch.no_grad():
        p = (net(torch.from_numpy(x.transpose(2, 0, 1).copy())[None].float()))[0, 0].numpy()
    gt = np.asarray(Image.open(f'{root}/mask/{f}').convert('L'))
    H, W = gt.shape; gt = gt > 127
    P = resize_bilinear(p, W, H); m = P > 0.5
    lab = labels8(m); ids = [i for i in np.unique(lab) if i]
    res['all'].append(dice(m, gt))
    if not ids:
        for k in ['largest', 'mass', 'maxp', 'meanp']: res[k].append(dice(m, gt))
        continue
    stats = [((lab == i).sum(), P[lab == i].sum(), P[lab == i].max(), P[lab == i].mean(), i) for i in ids]
    for k, j in [('largest', 0), ('mass', 1), ('maxp', 2), ('meanp', 3)]:
        best = max(stats, key=lambda s: s[j])[4]
        res[k].append(dice(lab == best, gt))
print(w, {k: round(float(np.mean(v)), 4) for k, v in res.items()}, len(res['all']))

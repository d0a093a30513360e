"""Weight averages of the fresh-tree cycles' end points (SWA across the restarts), scored on a split (model only,
mean MSE per forecast age on 0-255).  From the repository root, with the runs of parts 13-17 in runs/:
    T=1 python benchmarks/results/2026-12-08-cpu-8/soup.py data/pines80k-s7 val ft6 ft5,ft6 ft4,ft5,ft6
"""
import sys, os, json, time, glob
import numpy as np, torch, pyarrow.parquet as pq
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)
from crnn.inference import forecast_window, load_model
from crnn.metrics import per_age_metrics

RUNS = {"e3": "runs/muon-40k-h4-sw-e3", **{f"ft{i}": f"runs/muon-{'40k' if i < 5 else '80k'}-h4-sw-ft{i}" for i in range(1, 7)}}

def val_frames(data, split="val", limit=None):
    rows = []
    for f in sorted(glob.glob(f"{data}/shard-*.parquet")):
        t = pq.read_table(f, columns=["split", "frames"])
        sp = t.column("split").to_pylist()
        fr = t.column("frames")
        for i, s in enumerate(sp):
            if s == split:
                rows.append(np.asarray(fr[i].values.to_numpy(zero_copy_only=False)))
    arr = np.stack(rows)
    return arr.reshape(len(rows), 5, 32, 16, 3)

def soup(names, out):
    pays = [torch.load(f"{ROOT}/{RUNS[n]}/model/model.pt", map_location="cpu", weights_only=True) for n in names]
    p = dict(pays[-1])
    sd = {k: sum(q["state_dict"][k].double() for q in pays) / len(pays) for k in p["state_dict"]}
    p["state_dict"] = {k: v.to(pays[-1]["state_dict"][k].dtype) for k, v in sd.items()}
    os.makedirs(out, exist_ok=True)
    torch.save(p, f"{out}/model.pt")
    os.system(f"cp {ROOT}/{RUNS[names[-1]]}/model/config.yaml {out}/")
    return out

def score(path, frames, tta="none"):
    m = load_model(path, tta=tta)
    m = m[0] if isinstance(m, tuple) else m
    pred = forecast_window(m, frames, 4)
    truth = frames[:, 1:].astype(np.float32).transpose(0, 1, 4, 2, 3) / 255.0
    mse = ((pred * 255 - truth * 255) ** 2).mean(axis=(0, 2, 3, 4))
    return [round(float(v), 3) for v in mse]

if __name__ == "__main__":
    data = sys.argv[1]; split = sys.argv[2]; combos = sys.argv[3:]
    torch.set_num_threads(int(os.environ.get("T", "1")))
    fr = val_frames(data, split)
    print(data, split, fr.shape, flush=True)
    for c in combos:
        tta = "none"
        if c.endswith("+tta"): c, tta = c[:-4], "hflip"
        names = c.split(",")
        path = f"runs/soup-{'-'.join(names)}"
        if not os.path.exists(f"{path}/model.pt"): soup(names, path)
        t0 = time.time()
        print(c, tta, score(path, fr, tta), f"{time.time()-t0:.0f}s", flush=True)

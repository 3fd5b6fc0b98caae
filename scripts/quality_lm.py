"""How well each method finds what the shipped language model based its answer on.

    python scripts/quality_lm.py                 # writes the section of benchmarks/QUALITY.md
    python scripts/quality_lm.py -n 100 --print  # fewer samples, print only

The model: ``saved_models/lm_retrieval.keras`` (``scripts/train_lm.py``). The samples: ``-n``
held-out samples of :mod:`tf_lrp.retrieval` (seed 7, half retrieval, half copy; the model
answers all of them right). The explained token: the retrieved value (its evidence: the
queried key and its value in the context), and for copy the second copied letter (its
evidence: the second letter of the source), each explained from its logit at the position
before it, the sequence so far as input (right-padded to 16, padding mask 0).

Methods: AttnLRP and CP-LRP (tf_lrp composites), Gradient×Input and Integrated Gradients (32
steps from the padding token's embedding; both in embedding space, summed over it) and
attention rollout (Abnar & Zuidema 2020, :func:`tf_lrp.rollout.attention_rollout`, the row of
the explained position).

Metrics, per sample, then the mean (and the 95 % interval of the mean, 1.96 standard errors):

* **evidence mass**: the share of the positive relevance on the evidence tokens
  (relevance mass accuracy, Arras et al. 2022): ``sum_E max(R, 0) / sum max(R, 0)``;
* **top-1**: whether the most relevant token is evidence;
* **flipping AOPC**: remove the ``k`` most relevant earlier tokens (``k = 1..8``; removing =
  padding mask 0, so no position attends to them; never the explained position itself) and
  average the drop of the answer's log-probability over ``k``; larger is more faithful. A
  random order gives the floor (mean over 5 random orders per sample);
* **cost**: milliseconds per sample (batches of 64, median of 3 timed runs after a warm-up)
  and that over a plain gradient's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "saved_models" / "lm_retrieval.keras"
OUT = ROOT / "benchmarks" / "QUALITY.md"
JSON = ROOT / "benchmarks" / "quality_lm.json"
SEED, LENGTH, FLIPS = 7, 16, 8
BEGIN, END = "<!-- quality_lm: begin -->", "<!-- quality_lm: end -->"


def cases(n: int):
    """``(token_ids, padding_mask, position, token, evidence, task)`` of ``n`` samples."""
    from tf_lrp import retrieval

    out = []
    for s in retrieval.make_samples(n, SEED):
        t = 0 if s.task == "retrieval" else 1
        ids = s.ids[:s.prompt_length + t]
        out.append((ids, len(ids) - 1, int(s.ids[s.prompt_length + t]), s.evidence[t], s.task))
    ids = np.zeros((n, LENGTH), np.int32)
    for i, (seq, *_rest) in enumerate(out):
        ids[i, :len(seq)] = seq
    return ids, (ids != 0).astype(np.int32), out


def methods(model):
    import tf_lrp
    from tf_lrp import retrieval
    from tf_lrp.rollout import attention_rollout

    vocab = len(retrieval.VOCABULARY)
    attn, cp = tf_lrp.Analyzer(model, "attn_lrp"), tf_lrp.Analyzer(model, "cp_lrp")
    gxi = tf_lrp.analyzers.GradientXInput(model)
    ig = tf_lrp.analyzers.IntegratedGradients(model, steps=32, baseline_token=0)
    grad = tf_lrp.analyzers.Gradient(model)

    def tokens(analyzer):
        def run(x, flat, positions):
            r = analyzer(x, target=flat)
            return np.asarray(r[analyzer.input_names.index("token_ids")], np.float64)
        return run

    def rollout(x, flat, positions):
        m = attention_rollout(attn, x)
        return m[np.arange(len(positions)), positions].astype(np.float64)

    return {"AttnLRP": tokens(attn), "CP-LRP": tokens(cp), "Gradient×Input": tokens(gxi),
            "Integrated Gradients": tokens(ig), "attention rollout": rollout,
            "_gradient": tokens(grad)}, vocab


def log_prob(model, ids, mask, positions, tokens) -> np.ndarray:
    y = model.predict({"token_ids": ids, "padding_mask": mask}, batch_size=256, verbose=0)
    y = y[np.arange(len(ids)), positions].astype(np.float64)
    top = y.max(1, keepdims=True)
    return y[np.arange(len(ids)), tokens] - (np.log(np.exp(y - top).sum(1)) + top[:, 0])


def flipping(model, ids, mask, positions, tokens, orders) -> np.ndarray:
    """Per sample, the mean drop of the log-probability over k = 1..FLIPS removed tokens."""
    base = log_prob(model, ids, mask, positions, tokens)
    drops = []
    for k in range(1, FLIPS + 1):
        m = mask.copy()
        for i, order in enumerate(orders):
            m[i, order[:k]] = 0
        drops.append(base - log_prob(model, ids, m, positions, tokens))
    return np.mean(drops, axis=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=400)
    p.add_argument("--print", action="store_true", help="print only; write nothing")
    args = p.parse_args()
    import tf_lrp

    model = tf_lrp.load_model(MODEL)
    ids, mask, info = cases(args.n)
    positions = np.array([c[1] for c in info])
    tokens = np.array([c[2] for c in info])
    fns, vocab = methods(model)
    flat = positions * vocab + tokens
    x = {"token_ids": ids, "padding_mask": mask}
    results, times = {}, {}
    rng = np.random.default_rng(SEED)
    for name, fn in fns.items():
        fn({k: v[:64] for k, v in x.items()}, flat[:64], positions[:64])  # warm-up
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = np.concatenate([fn({k: v[i:i + 64] for k, v in x.items()}, flat[i:i + 64],
                                   positions[i:i + 64]) for i in range(0, args.n, 64)])
            runs.append(time.perf_counter() - t0)
        times[name] = statistics.median(runs) / args.n * 1000
        if name.startswith("_"):
            continue
        mass, top, orders = [], [], []
        for i, (_seq, pos, _tok, evidence, _task) in enumerate(info):
            ri = r[i, :pos + 1]
            pos_r = np.maximum(ri, 0)
            mass.append(pos_r[evidence].sum() / pos_r.sum() if pos_r.sum() > 0 else 0.0)
            top.append(float(int(np.argmax(ri)) in evidence))
            orders.append(np.argsort(-ri[:pos], kind="stable"))
        aopc = flipping(model, ids, mask, positions, tokens, orders)
        results[name] = {"mass": np.array(mass), "top1": np.array(top), "aopc": aopc}
        print(f"{name}: mass {np.mean(mass):.3f} top-1 {np.mean(top):.3f} aopc "
              f"{aopc.mean():.3f} ({times[name]:.2f} ms/sample)", flush=True)
    random_aopc = np.mean([flipping(model, ids, mask, positions, tokens,
                                    [rng.permutation(pos) for pos in positions])
                           for _ in range(5)], axis=0)
    tasks = np.array([c[4] for c in info])
    text = report(results, times, random_aopc, tasks, args.n)
    print(text)
    if args.print:
        return
    JSON.write_text(json.dumps({name: {k: float(v.mean()) for k, v in res.items()}
                                | {"ms": times[name], "per_gradient": times[name] /
                                   times["_gradient"]} for name, res in results.items()},
                               indent=1) + "\n")
    doc = OUT.read_text()
    section = f"{BEGIN}\n{text}{END}\n"
    if BEGIN in doc:
        doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END) + 1:]
    else:
        anchor = "## Closing note: who wins, by how much"
        doc = doc.replace(anchor, section + "\n" + anchor, 1)
    OUT.write_text(doc)
    print(f"wrote {OUT} and {JSON}")


def _ci(v: np.ndarray) -> str:
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {half:.3f}"


def report(results, times, random_aopc, tasks, n) -> str:
    lines = [
        '<a id="language-model"></a>',
        "## Language model: `lm_retrieval.keras` (retrieval and copy, known evidence)", "",
        f"`python scripts/quality_lm.py -n {n}`: {n} held-out samples (half key-value "
        "retrieval, half copy; see the script's docstring for the protocol). Evidence mass: "
        "share of the positive relevance on the evidence tokens; top-1: the most relevant "
        "token is evidence; flipping AOPC: mean drop of the answer's log-probability as the 1..8 "
        "most relevant earlier tokens are removed (larger is better; random order: "
        f"{random_aopc.mean():.3f}). Means ± 95 % intervals.", "",
        "| method | evidence mass | top-1 | flipping AOPC | retrieval: mass | copy: mass | "
        "ms / sample | / gradient |",
        "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {_ci(r['mass'])} | {r['top1'].mean():.3f} | {_ci(r['aopc'])} | "
            f"{r['mass'][tasks == 'retrieval'].mean():.3f} | "
            f"{r['mass'][tasks == 'copy'].mean():.3f} | {times[name]:.2f} | "
            f"{times[name] / times['_gradient']:.1f} |")
    lines.append(f"| random order | - | - | {_ci(random_aopc)} | - | - | - | - |")
    return "\n".join(lines) + "\n\n"


if __name__ == "__main__":
    main()

"""SpRAy at scale: 100,000 samples of one class, pooled 8x8 features (two planted groups).

    python scripts/spray_scale.py

Prints the time, the peak resident memory and the adjusted Rand index of the 2 clusters.
"""
import resource
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from tf_lrp import spray

rng = np.random.default_rng(0)
n = 100_000
f = rng.normal(0, 0.02, (n, 64)).astype(np.float32)
truth = rng.uniform(size=n) < 0.2
f[truth, 0] += 0.5
f[~truth, 27:29] += 0.25
f = f / np.abs(f).sum(1, keepdims=True)
t = time.time()
r = spray.spray(f, n_neighbors=10, n_clusters=2)
print(f"n={n}: {time.time()-t:.0f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB, ARI {adjusted_rand_score(truth, r.labels):.3f}, suggested {r.suggested}, map {r.embedding_method}")

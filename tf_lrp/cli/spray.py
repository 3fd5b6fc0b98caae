"""``tf-lrp spray``: the strategies of one class across an explain run (SpRAy), as a report.

::

    tf-lrp spray RUN_DIR --class N --out REPORT [--grid 8] [--neighbors 10] [--clusters K]
                 [--column explained_class|predicted_class] [--limit N]

RUN_DIR is the output of ``tf-lrp explain ... --format shards`` (``index.csv`` and
``shards/``). The maps of the samples whose ``--column`` is ``N`` are pooled and clustered
(:mod:`tf_lrp.spray`); REPORT gets ``index.html`` (spectrum, map, clusters with their mean
and member heatmaps), ``clusters.csv`` and ``spectrum.csv``
(:mod:`tf_lrp.visualize.spray`). Exit codes: 0 written, 2 usage error.
"""

from __future__ import annotations

import argparse

from tf_lrp.cli.common import EXIT_OK, UsageError, guarded, note, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``spray`` command to ``subparsers``; return it."""
    p = subparsers.add_parser(
        "spray", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="cluster one class's heatmaps of an explain run (SpRAy) into an HTML report",
        description="Spectral Relevance Analysis: find the strategies a model uses for one "
                    "class across the heatmaps of an explain run (--format shards).",
        epilog="example:\n  tf-lrp explain model.keras data/ --format shards --out run\n"
               "  tf-lrp spray run --class 0 --out spray_report")
    p.add_argument("run", metavar="RUN_DIR", help="an explain run's --out (--format shards)")
    p.add_argument("--class", dest="class_index", type=int, required=True, metavar="N")
    p.add_argument("--out", required=True, metavar="REPORT", help="the report directory")
    p.add_argument("--grid", type=positive_int, default=8, help="pooling grid (default 8)")
    p.add_argument("--neighbors", type=positive_int, default=10,
                   help="neighbours in the affinity graph (default 10)")
    p.add_argument("--clusters", type=positive_int, default=None,
                   help="clusters to form (default: the eigengap's suggestion)")
    p.add_argument("--column", choices=["explained_class", "predicted_class"],
                   default="explained_class", help="which class column selects the samples")
    p.add_argument("--limit", type=positive_int, default=None, help="at most N samples")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(handler=run, command="spray")
    return p


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from tf_lrp import spray
    from tf_lrp.visualize.spray import report

    names, features, where = spray.read_run(args.run, args.class_index, args.grid,
                                            args.column, args.limit)
    if len(names) < 3:
        raise UsageError(f"class {args.class_index} has {len(names)} samples in {args.run}; "
                         "SpRAy needs at least 3")
    result = spray.spray(features, n_neighbors=args.neighbors, n_clusters=args.clusters)

    def maps(i):
        path, row = where[i]
        return np.asarray(np.load(path, mmap_mode="r")[row])

    report(result, names, args.out, maps=maps,
           title=f"SpRAy: class {args.class_index} of {args.run}")
    note(f"{len(names)} samples of class {args.class_index}: {result.n_clusters} clusters "
         f"(eigengap suggests {result.suggested}); wrote {args.out}/index.html", args.quiet)
    return EXIT_OK


#: Run ``tf-lrp spray``; return the exit code (errors are printed, exit 2).
run = guarded(_run)

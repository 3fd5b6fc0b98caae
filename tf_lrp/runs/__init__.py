"""Batch runs below the command line and the Ray API: input enumeration and decoding
(:mod:`~tf_lrp.runs.inputs`), results and their sinks (:mod:`~tf_lrp.runs.outputs`), shards and
the index (:mod:`~tf_lrp.runs.shards`), and what they share (:mod:`~tf_lrp.runs.common`).
``tf_lrp.cli`` and ``tf_lrp.ray`` both call into it; it imports neither.
"""

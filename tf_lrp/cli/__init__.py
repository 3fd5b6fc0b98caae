"""The ``tf-lrp`` command: explain inputs from the shell, list composites, inspect a model.

::

    tf-lrp explain MODEL INPUT... --out DIR [--composite NAME | --composite-file FILE] [options]
    tf-lrp composites
    tf-lrp info MODEL [--composite NAME] [--rule KEY=RULE ...]
    tf-lrp concepts MODEL INPUT... --layer NAME --top 5 --out DIR [--atlas DIR]
    tf-lrp evaluate MODEL --data digits|shapes|scenes|tokens [--composite-file FILE]
    tf-lrp tune MODEL --data DATA|FILE.npz --metric aopc|road|mass --budget N --out FILE.json

``explain`` writes, for every input sample, ``DIR/<name>.npy`` (the relevance, float32, the
sample's shape) and ``DIR/<name>.png`` (the heatmap, enlarged ``--zoom`` times, default about
128 pixels), plus one ``DIR/summary.csv``. When the sample is an image (an image file, or an
array of shape ``(h, w)``, ``(h, w, 1)`` or ``(h, w, 3)``) an overlay of the heatmap on it is
drawn beside the heatmap; image files are drawn in their input range, arrays
contrast-stretched. Other shapes: a 1-D sample is drawn as a strip, ``(h, w, c)`` with the
channels summed, higher ranks as the channel-summed slices stacked vertically.

Inputs
------
- Image files (PNG, JPEG, BMP, GIF, TIFF, WebP): converted to the model's channel count
  (1: grayscale, 3: RGB, 4: RGBA), resized (bilinear) to the model's input height and width,
  then mapped linearly from 0..255 to the model's input range.
- ``.npy`` arrays, taken as they are (no scaling): one sample of the model's input shape
  (output name ``<stem>``) or a batch ``(n, *input_shape)`` (output names ``<stem>_<i>``).
- Directories: their image and ``.npy`` files, walked recursively (depth-first, sorted by
  name; hidden entries and other extensions ignored); a file in a subdirectory is named by its
  relative path (``sub/name``), and its outputs go to the same subdirectory of ``DIR``.
- Globs (``'photos/**/*.jpg'``, quoted), sorted; ``@LIST`` files: one path per line.

Inputs are enumerated lazily and decoded by a ``tf.data`` pipeline (parallel decode,
prefetched while the previous batch is explained): memory does not grow with their number.

The input range
---------------
The preprocessing belongs with the model. With ``--scale auto`` (the default), a model that
starts with a ``Rescaling`` or ``Normalization`` layer (before its first layer with weights;
the shipped models do) takes raw pixel values: image files are fed as 0..255. A model without
one gets [-1, 1], with a warning that the range is assumed (``--scale minus1_1|0_1|0_255``
names it). The input bounds ``low``/``high`` of composites and rules with bounds (z^B:
``epsilon_gamma_box``, ``deep_taylor``, ``z_box``) default to the same range, in the model's
input space (the engine maps them through the preprocessing layers). The range used is
printed (``input range [0, 255] (the model starts with Rescaling)``).

Rules for single layers
-----------------------
``--rule KEY=RULE[:param=value[,param=value]]`` (repeatable) gives the layers that ``KEY``
names the rule ``RULE`` (see ``tf-lrp composites``), before the composite decides:
``KEY`` is a layer class (``Dense``, ``Multiply``, ``MyLayer``; also Keras op classes such as
``Add`` for ``x + y``) or a layer name (``conv1``). Examples: ``--rule Multiply=uniform_product``,
``--rule conv1=flat``, ``--rule Dense=epsilon:epsilon=0.1``, ``--rule MyLayer=pass``. The same
as ``composites.Overrides(composite, [(KEY, rule), ...])`` in Python. A layer name wins over a
class name; of several ``--rule`` for the same key, the last wins. A key that names no layer and
no layer class of the model is an error.

An input that cannot be read, has the wrong shape, holds NaN/Inf or whose output name is taken
by an earlier input is reported on stderr, listed in ``skipped.csv`` and skipped; the others
still run.

Outputs and ``--resume``
------------------------
Every file is written atomically (a temporary file in ``DIR``, then :func:`os.replace`) and
durably in batches (one file-system sync per batch): an interrupted or killed run leaves
complete files only, and the next run removes its temporary files. ``--format shards`` writes
the relevance in ``.npy`` shards with an ``index.csv`` instead (see
:mod:`tf_lrp.runs.shards`; ``--resume`` then works per shard). Skipped inputs are listed with
the reason in ``skipped.csv``. The ``.npy`` and ``.png`` files are the record of
what is done; ``summary.csv`` is derived from them and is rewritten whole (merged, atomically)
at the end of the run, on interruption, and every 30 s during long runs. With ``--resume`` a
sample whose ``.png`` and ``.npy`` both exist is not explained again and its files are not
touched; its row is kept from the existing ``summary.csv`` (rows of files not in this run are
kept too), and if the row is missing (a run killed before it wrote the CSV) it is rebuilt
from a forward pass and the existing ``.npy``. ``--resume`` trusts existing files: use it
with the same model and options. Without ``--resume`` everything given is explained again
and ``summary.csv`` lists this run only.

``--devices all|N`` splits each batch over the devices of this machine
(:mod:`tf_lrp.distribute`); ``--ray [ADDRESS]`` runs decoding and explaining on a Ray cluster
(:mod:`tf_lrp.ray`), the outputs being written here as in a local run.

Exit codes: 0 all inputs explained; 1 some inputs skipped; 2 usage error, or a model that
cannot be loaded or explained (the message says why; ``tf-lrp info MODEL`` then lists every
layer and flags the ones no rule fits); 130 interrupted.

The package: :mod:`~tf_lrp.cli.parser` (arguments, :func:`main`), :mod:`~tf_lrp.cli.modelsetup`
(model, input range, composite), :mod:`~tf_lrp.runs.inputs` (enumeration, decoding),
:mod:`~tf_lrp.runs.outputs`, :mod:`~tf_lrp.cli.files`, :mod:`~tf_lrp.runs.shards` (writers,
summary, resume) and one module per command (``explain``, ``info``, ``composites``).
"""

from tf_lrp.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SKIPPED,
    INDEX_COLUMNS,
    SCALES,
    SKIPPED_COLUMNS,
    SUMMARY_COLUMNS,
)
from tf_lrp.cli.parser import build_parser, main
from tf_lrp.runs.outputs import atomic_write

_atomic_write = atomic_write  # the name before the split into a package

__all__ = ["main", "build_parser", "SCALES", "SUMMARY_COLUMNS", "INDEX_COLUMNS",
           "SKIPPED_COLUMNS", "EXIT_OK", "EXIT_SKIPPED", "EXIT_ERROR", "EXIT_INTERRUPTED"]

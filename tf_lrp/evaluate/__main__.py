"""``python -m tf_lrp.evaluate``: the same as ``tf-lrp evaluate``."""

import sys

from tf_lrp.evaluate.cli import main

sys.exit(main())

"""``python -m tf_lrp``: the ``tf-lrp`` command line (see :mod:`tf_lrp.cli`)."""

import sys

from tf_lrp.cli import main

if __name__ == "__main__":
    sys.exit(main())

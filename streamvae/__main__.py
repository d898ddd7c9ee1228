"""`python -m streamvae` is the same as the `streamvae` console script."""

import sys

from streamvae.cli import main

sys.exit(main())

import sys

from hybrid_jax.sweep.cli import main

sys.exit(main())

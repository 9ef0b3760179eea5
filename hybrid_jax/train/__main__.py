import sys

from hybrid_jax.train.cli import main

sys.exit(main(sys.argv[1:]))

"""Sweeps: ladders of model sizes x token budgets per family, trained resumably, one result row
per scaling point.

    ladder.py   ladder YAML -> RunSpecs (RunConfig + recipe numbers), ids from config hashes
    state.py    on-disk state: lock files (claims), markers, the results file (atomic appends)
    worker.py   one attempt at one run, in its own process (`python -m experiments.sweep.worker`)
    runner.py   the loop: claim, start workers per device slot, retry, mark failed, go on
    status.py   `sweep status` (progress, ETA) and `sweep merge`
    plan.py     `sweep plan`: N, D, FLOPs, steps, batch, lr, epochs, time estimate
    cli.py      `hybrid-jax sweep ...` / `python -m experiments.sweep.cli ...`

The recipe (batch, lr, beta2, warmup, decay points from N) is experiments/recipe.py; the
shipped ladders are experiments/ladders/*.yaml. Results feed `hybrid-jax fit`.
"""

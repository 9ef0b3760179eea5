"""Sweeps: ladders of model sizes x token budgets per family, trained resumably, one result row
per scaling point.

    recipe.py   the recipe: batch, lr, beta2, warmup and decay points from N
    ladder.py   ladder YAML -> RunSpecs (RunConfig + recipe numbers), ids from config hashes
    state.py    the root's layout (local or gs://): markers, attempts, rows in results.d
                (claims and rows themselves: hybrid_jax/storage)
    worker.py   one attempt at one run, in its own process (`python -m hybrid_jax.sweep.worker`)
    root.py     Sweep: a ladder expanded under its root, each run's state
    runner.py   the loop: claim, start workers per device slot, retry, mark failed, go on
    local.py    the local executor; ray_executor.py the Ray one (GPU nodes, TPU slices)
    evals.py    a ladder's evaluations at every scaling point, into the rows
    status.py   `sweep status` (progress, ETA), the driver's overview line, `sweep merge`
    plan.py     `sweep plan`: N, D, FLOPs, steps, batch, lr, epochs, time estimate
    cli.py      `hybrid-jax sweep ...` / `python -m hybrid_jax.sweep.cli ...`

The shipped ladders are experiments/ladders/*.yaml (package data of `experiments`, which holds
the lab's ladders, configs, scripts and LOG; no code). Results feed `hybrid-jax fit`.
"""

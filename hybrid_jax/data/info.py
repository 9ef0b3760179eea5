"""What `hybrid-jax data info` prints for OLMo token files and for a ladder's data.

A ladder's runs read one data config (data.store, or a data.mix of stores); for each component
this gives its train tokens and documents, and for each run its tokens and the epochs of every
component it reads, marked where a run passes data.max_epochs (the runner refuses those).
Counting an OLMo component's documents scans its files (every byte, once), so it is done only
with --count-documents.
"""

from __future__ import annotations

import dataclasses
import json


def olmo_lines(store, count_documents: bool) -> list[str]:
    m = store.manifest
    tok = m["tokenizer"]
    lines = [f"store        {store.path}",
             f"source       olmo token files, {store.dtype.name}, EOS {store.eos_id}",
             f"tokenizer    {tok['kind']} vocab {store.vocab_size}, pad {store.pad_id}, "
             f"{store.tokenizer_hash}",
             f"train        {store.n_train_tokens:,} tokens in {len(store.train.files)} files"
             + (f", {store.n_train_documents:,} documents" if count_documents else "")]
    for name in store.validation_set_names:
        v = store.validation(name)
        lines.append(f"validation   {name}: {len(v) - 1:,} tokens, {v.n_documents:,} documents, "
                     f"{v.n_bytes:,} bytes, {len(v.files)} files")
    if not store.validation_set_names:
        lines.append("validation   none (val=none)")
    return lines


def _documents(store, count_documents: bool) -> str:
    if hasattr(store, "spec") and not count_documents:  # an OLMo store: counting scans
        return "-"
    return f"{store.n_train_documents:,}"


def ladder_lines(name: str, *, count_documents: bool = False) -> tuple[list[str], bool]:
    """(lines, whether every run fits data.max_epochs) for ladder `name` (a name or a path)."""
    from hybrid_jax.sweep.ladder import load_ladder
    from hybrid_jax.train.source import make_source

    ladder = load_ladder(name)
    runs, invalid = ladder.expand("sweeps/info")
    lines, fits = [f"ladder       {ladder.name}: {len(runs)} runs, seq_len {ladder.seq_len}"], True
    groups: dict[str, list] = {}
    for spec in runs:
        groups.setdefault(json.dumps(spec.config.to_dict()["data"], sort_keys=True), []).append(spec)
    for specs in groups.values():
        cfg = specs[0].config
        source = make_source(dataclasses.replace(cfg.data, verify=False),
                             global_batch=cfg.train.global_batch, seq_len=cfg.train.seq_len)
        components = getattr(source, "components", None) or {"train": source.store}
        weights = getattr(getattr(source, "mixture", None), "weights", {"train": 1.0})
        lines.append(f"data         max_epochs {cfg.data.max_epochs} per component")
        lines.append(f"  {'component':<12}{'weight':>7}{'train tokens':>16}{'documents':>12}  store")
        for comp, store in components.items():
            lines.append(f"  {comp:<12}{weights[comp]:>7.3g}{store.n_train_tokens:>16,}"
                         f"{_documents(store, count_documents):>12}  {store.path}")
        header = "".join(f"{c:>12}" for c in components)
        lines.append(f"  {'run':<22}{'tokens':>16}  epochs:{header}")
        for spec in specs:
            epochs = source.epochs(spec.config.total_tokens)
            over = [c for c, e in epochs.items() if e > cfg.data.max_epochs]
            fits = fits and not over
            cells = "".join(f"{epochs[c]:>11.2f}{'!' if c in over else ' '}" for c in components)
            lines.append(f"  {spec.family + '/' + spec.size:<22}{spec.config.total_tokens:>16,}"
                         f"         {cells}")
    if not fits:
        lines.append("  ! past data.max_epochs: `sweep run` refuses these runs")
    for bad in invalid:
        lines.append(f"  invalid {bad.family}/{bad.size}: {bad.error}")
    return lines, fits

"""Validation loss and bits-per-byte per validation set, with its own jitted function.

bits-per-byte = sum(nll in nats over the scored tokens) / ln 2 / UTF-8 bytes of those tokens,
which compares models across tokenizers. Sums are taken on the device per batch and added in
float64 on the host.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hybrid_jax import sharding
from hybrid_jax.train.source import BatchSource


class Evaluator:
    def __init__(self, eval_step: Callable, source: BatchSource, sets: tuple[str, ...], *,
                 mesh: Mesh, param_shardings, batch_size: int, seq_len: int,
                 max_tokens: int | None):
        self.source, self.sets, self.max_tokens = source, sets, max_tokens
        self.batch_sh = sharding.batch_sharding(mesh)
        self.shape = (batch_size, seq_len)
        self.fn = jax.jit(eval_step, in_shardings=(param_shardings, self.batch_sh),
                          out_shardings=NamedSharding(mesh, P()))
        # This process's rows of every (global) validation batch.
        spans = [i[0] for i in self.batch_sh.addressable_devices_indices_map(self.shape).values()]
        self.lo = min(s.start or 0 for s in spans)
        self.hi = max(batch_size if s.stop is None else s.stop for s in spans)
        self._bytes: dict[str, int] = {}

    def __call__(self, params) -> dict[str, dict[str, float]]:
        results = {}
        for name in self.sets:
            outs = []
            for batch in self.source.validation_batches(name, batch_size=self.shape[0],
                                                        max_tokens=self.max_tokens):
                local = {k: v[self.lo:self.hi] for k, v in batch.items()}
                glob = {k: jax.make_array_from_process_local_data(self.batch_sh, v, self.shape)
                        for k, v in local.items()}
                outs.append(self.fn(params, glob))
            outs = jax.device_get(outs)
            nll = float(np.sum([o["nll"] for o in outs], dtype=np.float64))
            count = float(np.sum([o["count"] for o in outs], dtype=np.float64))
            if name not in self._bytes:
                self._bytes[name] = self.source.validation_bytes(name, self.max_tokens)
            n_bytes = self._bytes[name]
            results[name] = {"loss": nll / max(count, 1.0), "bpb": nll / math.log(2) / max(n_bytes, 1),
                             "tokens": int(count), "bytes": n_bytes}
        return results

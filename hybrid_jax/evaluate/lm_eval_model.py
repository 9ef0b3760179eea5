"""The lm-eval-harness model `hybrid-jax` (needs the [eval] extra: pip install -e '.[eval]').

    hybrid-jax eval harness --model hybrid-jax --model_args checkpoint=RUN_DIR \\
        --tasks hellaswag --batch_size 8

lm-eval finds models only in its own registry, which importing this module fills; its own
`lm-eval` command does not import it, so run the harness through `hybrid-jax eval harness`
(which passes every argument on to lm-eval's `run`), or import this module before calling
`lm_eval.simple_evaluate(model="hybrid-jax", ...)`.

model_args: checkpoint (required: run dir, RUN/checkpoints/STEP or model dir), tokenizer
(byte | hf:PATH | MODEL_FILE; default the checkpoint's own), batch_size (8), max_length (4096
tokens of context, cut from the left), max_gen_toks (256, when a task does not say).

Text is encoded as the training stream holds documents, after an EOS: a context is
[eos] + tokens(context), a rolling document [eos] + tokens(document) in windows of max_length.
A continuation's tokens are those of context + continuation past the context's own (the
context's trailing spaces move to the continuation), as lm-eval's causal models do; where the
tokenizer merges across the boundary (the context's tokens are no prefix of the whole's), the
continuation is tokenized alone.
generate_until decodes with caches (`generate.api.Decoder`): greedy unless do_sample with a
temperature > 0; the text is cut at the first `until` string.
"""

from __future__ import annotations

import json

try:
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:  # the core package must not need lm-eval
    raise ImportError("the lm-eval model needs lm-eval: pip install -e '.[eval]'") from e

from hybrid_jax.evaluate.scoring import Scorer
from hybrid_jax.generate.api import Decoder
from hybrid_jax.generate.loading import load_checkpoint
from hybrid_jax.generate.sampling import Sampling

_GEN_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p"}


@register_model("hybrid-jax")
class HybridJaxLM(LM):
    def __init__(self, checkpoint: str, tokenizer: str | None = None, batch_size: int = 8,
                 max_length: int = 4096, max_gen_toks: int = 256, **unknown):
        super().__init__()
        # lm-eval passes its --batch_size / --device along; device placement is JAX's.
        unknown.pop("device", None)
        if unknown:
            raise ValueError(f"hybrid-jax model_args: unknown {sorted(unknown)}; known: "
                             f"checkpoint, tokenizer, batch_size, max_length, max_gen_toks")
        self.model, self.tok, self.source = load_checkpoint(checkpoint, tokenizer)
        if str(batch_size).startswith("auto"):
            raise ValueError("hybrid-jax model: batch_size 'auto' is not supported; give a "
                             "number (--batch_size 8)")
        self.batch_size = int(batch_size)
        self.max_length, self.max_gen_toks = int(max_length), int(max_gen_toks)
        self.scorer = Scorer(self.model, batch_size=self.batch_size, max_length=self.max_length)
        self._decoder: Decoder | None = None

    # ---- encoding -------------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """([eos] + context tokens, continuation tokens): see the module docstring."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        ctx = list(self.tok.encode(context))
        whole = list(self.tok.encode(context + continuation))
        if whole[:len(ctx)] != ctx:  # the tokenizer merged across the boundary
            return [self.tok.eos_id] + ctx, list(self.tok.encode(continuation))
        return [self.tok.eos_id] + ctx, whole[len(ctx):]

    # ---- lm-eval's three request types --------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.scorer.score([self.encode_pair(*req.args) for req in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs, owner = [], []
        for i, req in enumerate(requests):
            (text,) = req.args
            for window in lm_utils.get_rolling_token_windows(
                    token_list=list(self.tok.encode(text)), prefix_token=self.tok.eos_id,
                    max_seq_len=self.max_length, context_len=1):
                pairs.append(lm_utils.make_disjoint_window(window))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logp, _) in zip(owner, self.scorer.score(pairs)):
            totals[i] += logp
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if self._decoder is None:
            self._decoder = Decoder(self.model)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out = [""] * len(requests)
        for key, idx in groups.items():
            kw = json.loads(key)
            unknown = set(kw) - _GEN_KEYS
            if unknown:
                raise ValueError(f"generate_until: unsupported generation arguments "
                                 f"{sorted(unknown)}; supported: {sorted(_GEN_KEYS)}")
            until = kw.get("until", [])
            until = [until] if isinstance(until, str) else list(until)
            n_new = int(kw.get("max_gen_toks", self.max_gen_toks))
            sampling = Sampling()
            if kw.get("do_sample") and float(kw.get("temperature", 1.0)) > 0:
                sampling = Sampling(temperature=float(kw.get("temperature", 1.0)),
                                    top_k=int(kw.get("top_k") or 0),
                                    top_p=float(kw.get("top_p") or 1.0))
            keep = max(1, self.max_length - n_new)
            for b0 in range(0, len(idx), self.batch_size):
                chunk = idx[b0:b0 + self.batch_size]
                prompts = [([self.tok.eos_id] + list(self.tok.encode(requests[i].args[0])))
                           [-keep:] for i in chunk]
                done = self._decoder.decode(prompts, max_new_tokens=n_new,
                                            eos_id=self.tok.eos_id, sampling=sampling)
                for i, (tokens, _) in zip(chunk, done):
                    out[i] = cut_at(self.tok.decode(tokens), until)
        return out


def cut_at(text: str, until: list[str]) -> str:
    """`text` up to the earliest occurrence of any stop string."""
    ends = [text.find(s) for s in until if s and s in text]
    return text[:min(ends)] if ends else text

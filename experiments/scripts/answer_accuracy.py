"""Teacher-forced answer accuracy of a checkpoint on the long-context tasks: the training
forward (no cache) over "PROMPT ANSWERS." and the argmax at every answer token, against greedy
cached decoding of the same prompts. Tells a model that cannot retrieve from a decoding path
that loses what the model knows.

    python experiments/scripts/answer_accuracy.py RUN_DIR --tasks niah_single --lengths 1k,2k
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax.evaluate import ruler
from hybrid_jax.evaluate.long_context import parse_lengths
from hybrid_jax.generate.api import Decoder, encode_prompt
from hybrid_jax.generate.loading import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--tasks", default="niah_single,niah_multikey")
    p.add_argument("--lengths", default="1k,2k")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--out")
    args = p.parse_args()
    model, tok, _ = load_checkpoint(args.checkpoint)
    forward = jax.jit(lambda t: jnp.argmax(model(t), axis=-1))
    decoder, hay, rows = Decoder(model), ruler.Haystack("noise"), []
    count = lambda text: len(encode_prompt(tok, text))  # noqa: E731
    for length in parse_lengths(args.lengths):
        for task in args.tasks.split(","):
            exs = [ruler.make_example(task, length, i, seed=0, count_tokens=count, haystack=hay)
                   for i in range(args.samples)]
            prompts = [encode_prompt(tok, e.prompt) for e in exs]
            answers = [list(tok.encode(ruler.answer_text(e.answers))) for e in exs]
            width = max(len(a) + len(q) for a, q in zip(answers, prompts))
            batch = np.full((len(exs), width), tok.eos_id, np.int32)
            for i, (q, a) in enumerate(zip(prompts, answers)):
                batch[i, :len(q) + len(a)] = q + a
            pred = np.asarray(forward(jnp.asarray(batch)))
            tokens_ok, exact = [], []
            for i, (q, a) in enumerate(zip(prompts, answers)):
                got = pred[i, len(q) - 1:len(q) - 1 + len(a)]  # position t predicts token t+1
                tokens_ok.append(float(np.mean(got == np.asarray(a))))
                exact.append(float(np.all(got == np.asarray(a))))
            done = decoder.decode(prompts, max_new_tokens=ruler.MAX_NEW_TOKENS[task],
                                  eos_id=tok.eos_id)
            greedy = [ruler.score(tok.decode(t), e.answers) for (t, _), e in zip(done, exs)]
            row = {"task": task, "length": length, "teacher_forced_token_acc": np.mean(tokens_ok),
                   "teacher_forced_exact": np.mean(exact), "cached_greedy_score": np.mean(greedy)}
            rows.append({k: (float(v) if isinstance(v, np.floating) else v)
                         for k, v in row.items()})
            print(json.dumps(rows[-1]), flush=True)
            if args.out:  # after every cell, so a run stopped part-way keeps what it measured
                with open(args.out, "w") as f:
                    json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

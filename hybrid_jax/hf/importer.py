"""Read a Hugging Face `olmo3` or `olmo_hybrid` checkpoint into our model.

Each HF tensor is read from its memory-mapped safetensors file, converted to our layout in
fp32 and placed on its device at once, so the host holds one converted tensor beyond the
mapped files. Every name is accounted for: a tensor we have no place for, one that is missing,
or a shape that disagrees with the config is an error naming it.

olmo_hybrid files come in two namings (weights_map.py): the released checkpoint's, which
transformers also writes, and its module names. Both are read. The GDN convs are read as the
concatenation [q | k | v] and split by the config's sizes, because transformers 5.23's
save_pretrained splits that concatenation into three equal parts whatever the sizes (its
revert of the load-time Concatenate), so the three files' own shapes cannot be trusted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hybrid_jax.config import ModelConfig
from hybrid_jax.hf import config_map, weights_map
from hybrid_jax.hf.safetensors_io import SafetensorsFile
from hybrid_jax.train.weights import abstract_params


class HFImportError(ValueError):
    """An HF directory cannot be imported; the message names the file or tensor."""


def read_hf_config(hf_dir: Path, compute_dtype: str | None = None) -> tuple[ModelConfig, dict]:
    path = Path(hf_dir) / "config.json"
    try:
        hf = json.loads(path.read_text())
    except FileNotFoundError:
        raise HFImportError(f"{hf_dir}: no config.json; not a Hugging Face model directory") \
            from None
    except ValueError as e:
        raise HFImportError(f"{path}: not JSON ({e})") from None
    try:
        return config_map.from_hf_config(hf, compute_dtype=compute_dtype), hf
    except (ValueError, KeyError, TypeError) as e:
        raise HFImportError(f"{path}: {e}") from None


def _open(hf_dir: Path) -> dict[str, SafetensorsFile]:
    """HF tensor name -> the mapped file holding it."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        opened = {f: SafetensorsFile(hf_dir / f) for f in sorted(set(weight_map.values()))}
        files = {name: opened[f] for name, f in weight_map.items()}
        for f in opened.values():
            stray = set(f.names) - set(weight_map)
            if stray:
                raise HFImportError(f"{f.path}: holds {sorted(stray)[:3]}, which the index "
                                    f"does not list")
        return files
    single = hf_dir / "model.safetensors"
    if single.is_file():
        f = SafetensorsFile(single)
        return {name: f for name in f.names}
    raise HFImportError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json "
                        f"(PyTorch .bin checkpoints are not read; save with safetensors)")


def _set(tree: dict, path: tuple, value: Any) -> None:
    weights_map.leaf(tree, path[:-1])[path[-1]] = value


def _arrays(cfg: ModelConfig, files: dict[str, SafetensorsFile], target: dict, hf_dir: Path):
    """(Tensor, HF array) for every tensor of `cfg`, whatever the files' naming; marks what it
    reads in `used`."""
    used: set[str] = set()
    aliases = {v: k for k, v in weights_map.FILE_NAMES.items()}
    wanted = weights_map.tensors(cfg)
    convs: dict[str, list[weights_map.Tensor]] = {}
    for t in wanted:
        if t.layout == "conv":
            convs.setdefault(t.name.rsplit(".", 2)[0], []).append(t)
            continue
        name = t.name
        if name not in files:
            stem, leaf = name.rsplit(".", 2)[0], name.rsplit(".", 2)[1]
            name = f"{stem}.{aliases.get(leaf, leaf)}.weight"
        if name not in files:
            raise HFImportError(f"{hf_dir}: tensor {t.name} is missing")
        used.add(name)
        yield t, files[name].get(name)
    for gdn, ts in convs.items():  # q, k, v of one GDN layer
        three = [f"{gdn}.{n}_conv1d.weight" for n in "qkv"]
        if all(n in files for n in three):
            whole = np.concatenate([files[n].get(n) for n in three], axis=0)
            used.update(three)
        elif f"{gdn}.conv1d.weight" in files:
            whole = files[f"{gdn}.conv1d.weight"].get(f"{gdn}.conv1d.weight")
            used.add(f"{gdn}.conv1d.weight")
        else:
            raise HFImportError(f"{hf_dir}: {gdn}'s convs are missing (neither q/k/v_conv1d "
                                f"nor conv1d)")
        sizes = [weights_map.leaf(target, t.part).shape[1] for t in ts]
        if whole.shape[0] != sum(sizes) or whole.ndim != 3:
            raise HFImportError(f"{hf_dir}: {gdn}'s convs hold {whole.shape[0]} channels, the "
                                f"config says {sum(sizes)} (q, k, v: {sizes})")
        bounds = np.cumsum([0] + sizes)
        for t, a, b in zip(ts, bounds[:-1], bounds[1:]):
            yield t, whole[a:b]
    unknown = sorted(set(files) - used)
    if unknown:
        raise HFImportError(f"{hf_dir}: {len(unknown)} tensor(s) this config has no place for, "
                            f"e.g. {unknown[:3]}")


def import_params(hf_dir: Path, *, compute_dtype: str | None = None, sharding: Any = None
                  ) -> tuple[ModelConfig, dict, dict]:
    """(config, our parameters as a pure dict of fp32 jax arrays, HF config dict) of the HF
    checkpoint in `hf_dir`; `sharding` as in train.weights.abstract_params."""
    hf_dir = Path(hf_dir)
    cfg, hf = read_hf_config(hf_dir, compute_dtype)
    target = abstract_params(cfg, sharding)
    files = _open(hf_dir)
    params = jax.tree.map(lambda x: None, target)
    for t, array in _arrays(cfg, files, target, hf_dir):
        abstract = weights_map.leaf(target, t.part)
        want = weights_map.hf_shape(t, tuple(abstract.shape))
        if tuple(array.shape) != want:
            raise HFImportError(f"{hf_dir}: {t.name} has shape {list(array.shape)}, the config "
                                f"says {list(want)}")
        value = np.asarray(weights_map.from_hf(t, array), np.float32)
        _set(params, t.part, jax.device_put(value, abstract.sharding))
    return cfg, params, hf

"""Training checkpoints: weights and Adam moments in safetensors, counters in JSON, no pickle.

A checkpoint is two files in one folder, each replaced atomically: ``checkpoint.safetensors``
(``net.<name>.<parameter>`` and ``adam.<name>.<param id>.<moment>``) and ``checkpoint.json``
(the caller's state plus each optimiser's ``param_groups``). Several names may share one
network and optimiser (one network serving several views): it is stored once, under the
first name.

A *compact* checkpoint stores the weights as float16 and the Adam moments as bfloat16 (the
second moment underflows float16): about a third of the float32 size, small enough to commit
so a long run can stop and go on elsewhere. Loading casts back to each tensor's own dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bids_infantseg.io.derivatives import atomic_write_json
from bids_infantseg.utils.files import atomic_write

CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"


def has_checkpoint(folder: Path) -> bool:
    return (Path(folder) / CHECKPOINT_STATE).is_file() and \
        (Path(folder) / CHECKPOINT_WEIGHTS).is_file()


def first_name_of_each(nets: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Names with their own network (a network under several names is kept once)."""
    unique: dict[int, tuple[str, torch.nn.Module]] = {}
    for name, net in nets.items():
        unique.setdefault(id(net), (name, net))
    return dict(unique.values())


def _stored(value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    value = value.detach().cpu()
    if dtype is not None and value.is_floating_point():
        value = value.to(dtype)
    return value.clone().contiguous()


def save_checkpoint(folder: Path, nets: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], state: dict, *,
                    compact: bool = False) -> None:
    """Write ``nets``, their optimisers' moments and ``state`` (JSON-able) to ``folder``;
    ``compact``: float16 weights and bfloat16 moments."""
    weights, moments_dtype = (torch.float16, torch.bfloat16) if compact else (None, None)
    tensors = {}
    for name, net in first_name_of_each(nets).items():
        for key, value in net.state_dict().items():
            tensors[f"net.{name}.{key}"] = _stored(value, weights)
        for pid, moments in optimizers[name].state_dict()["state"].items():
            for moment, value in moments.items():
                tensors[f"adam.{name}.{pid}.{moment}"] = \
                    _stored(value, None if moment == "step" else moments_dtype)
    state = {**state, "param_groups": {name: optimizers[name].state_dict()["param_groups"]
                                       for name in first_name_of_each(nets)}}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / CHECKPOINT_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(folder / CHECKPOINT_STATE, state)


def read_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The raw tensors and the state of ``folder``'s checkpoint."""
    return (load_file(str(Path(folder) / CHECKPOINT_WEIGHTS)),
            json.loads((Path(folder) / CHECKPOINT_STATE).read_text()))


def net_weights(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"net.{name}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_checkpoint(folder: Path, nets: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Load weights and Adam moments into ``nets``/``optimizers``; returns the state."""
    tensors, state = read_checkpoint(folder)
    for name, net in first_name_of_each(nets).items():
        param = next(net.parameters())
        own = net.state_dict()
        net.load_state_dict({k: v.to(own[k].dtype) for k, v in net_weights(tensors, name).items()})
        opt_state = optimizers[name].state_dict()
        moments: dict[int, dict] = {}
        prefix = f"adam.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, moment = key[len(prefix):].split(".", 1)
                moments.setdefault(int(pid), {})[moment] = \
                    value if moment == "step" else value.to(param.device, param.dtype)
        opt_state["state"] = moments
        opt_state["param_groups"] = state["param_groups"][name]
        optimizers[name].load_state_dict(opt_state)
    return state

"""Weights as safetensors plus a JSON card beside them; ``load`` by zoo name or by path.

Never unpickles anything: weights are read with safetensors, cards with json. Every file is
written atomically (teamattack.atomic). A card records the sha256 of its weights file
(``weights_sha256``) and :func:`load` checks it, so a weights file that was truncated, corrupted
or replaced without its card is refused (:class:`IntegrityError`); a card without the hash (a
user's file) loads without the check.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_write, atomic_write_text
from .architectures import ARCHITECTURES, build

HASH_KEY = "weights_sha256"


class IntegrityError(ValueError):
    """A weights file or card that cannot be trusted: unreadable, corrupted, or not matching its card's hash."""

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def card_path(weights: str | os.PathLike) -> Path:
    """The card that belongs to ``weights``: same name, ``.json`` instead of ``.safetensors``."""
    p = Path(weights)
    return p.with_suffix(".json") if p.suffix == ".safetensors" else Path(str(p) + ".json")


def finished_card(weights: str | os.PathLike, expect: dict) -> dict | None:
    """The card of a finished training at ``weights`` whose settings match ``expect``, else None
    (how the experiments reuse a model trained earlier with the same recipe)."""
    path, cpath = Path(weights), card_path(weights)
    if not (path.is_file() and cpath.is_file()):
        return None
    card = json.loads(cpath.read_text())
    return card if all(card.get(k) == v for k, v in expect.items()) else None


def names() -> list[str]:
    """Zoo names that have committed weights."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if "." not in p.stem and card_path(p).is_file())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_state(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Atomic safetensors write of a dict of tensors (copied to contiguous CPU memory)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def write_card(path: str | os.PathLike, card: dict) -> None:
    """Atomic write of a JSON card."""
    atomic_write_text(path, json.dumps(card, indent=2) + "\n")


def _read_json(path: Path) -> dict:
    try:
        card = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(f"{path}: not a readable JSON card ({err})") from None
    if not isinstance(card, dict):
        raise IntegrityError(f"{path}: a card must be a JSON object, not {type(card).__name__}")
    return card


def save(model: nn.Module, path: str | os.PathLike, card: dict) -> Path:
    """Write ``model``'s state_dict to ``path`` (.safetensors) and ``card`` to the .json beside it.

    ``card["arch"]`` must name a zoo architecture (``teamattack.zoo.ARCHITECTURES``) so that
    :func:`load` can rebuild the model.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    arch = card.get("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"card['arch'] must be one of {', '.join(ARCHITECTURES)}; got {arch!r}")
    save_state(model.state_dict(), path, metadata={"arch": arch})
    write_card(card_path(path), {**card, HASH_KEY: sha256_file(path)})
    return path


def read_card(name_or_path: str | os.PathLike) -> dict:
    """The card of a zoo name or of a weights path."""
    return _read_json(card_path(resolve(name_or_path)))


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Zoo name -> its committed weights file; an existing path -> itself."""
    s = str(name_or_path)
    zoo_file = WEIGHTS_DIR / f"{s}.safetensors"
    if "/" not in s and os.sep not in s and zoo_file.is_file():
        return zoo_file
    p = Path(s).expanduser()
    if p.is_file():
        return p
    if p.with_name(p.name + ".safetensors").is_file():
        return p.with_name(p.name + ".safetensors")
    if s in ARCHITECTURES:
        raise FileNotFoundError(
            f"the zoo has no trained weights for {s!r} ({zoo_file} is missing); train them with "
            f"`teamattack train --arch {s} --out {zoo_file}` or use teamattack.zoo.build({s!r}) for an "
            f"untrained model. Names with weights: {', '.join(names()) or 'none'}"
        )
    raise FileNotFoundError(
        f"{s!r} is neither a zoo name ({', '.join(names()) or 'none'}) nor an existing weights file"
    )


def load(name_or_path: str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """A zoo model in eval mode with its weights: a zoo name or a path to a .safetensors file.

    The architecture comes from the card beside the weights (``<file>.json``), or, without a
    card, from the ``arch`` entry of the safetensors metadata. The card is attached as
    ``model.card``. When the card holds ``weights_sha256`` the file's hash must match it;
    an unreadable, corrupted or mismatched file raises :class:`IntegrityError`.
    """
    path = resolve(name_or_path)
    cpath = card_path(path)
    card: dict = _read_json(cpath) if cpath.is_file() else {}
    want = card.get(HASH_KEY)
    if want is not None and sha256_file(path) != want:
        raise IntegrityError(f"{path}: its sha256 does not match the card {cpath.name} (the weights are "
                             "corrupted, truncated or were replaced without their card)")
    try:
        arch = card.get("arch")
        if arch is None:
            with safe_open(str(path), framework="pt") as f:
                arch = (f.metadata() or {}).get("arch")
        if arch is None:
            raise IntegrityError(f"{path}: no card ({cpath}) and no 'arch' in the safetensors metadata")
        if arch not in ARCHITECTURES:
            raise IntegrityError(f"{path}: unknown architecture {arch!r} in its card or metadata")
        state = load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise IntegrityError(f"{path}: not a readable safetensors file ({err})") from None
    model = build(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise IntegrityError(f"{path}: the weights do not fit architecture {arch} "
                             f"({' '.join(x.strip() for x in first[:2])})") from None
    model.card = card  # type: ignore[attr-defined]
    if device is not None:
        model.to(torch.device(device))
    return model.eval()

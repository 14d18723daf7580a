"""Importing the peer libraries (torchattacks, foolbox, adv-lib) without their heavy extras.

The peers are installed with ``pip --no-deps`` (``./run.sh peers``) because their declared
requirements would replace the CPU torch wheel. What each one really needs at import time:

* torchattacks 3.5.1: torch, numpy, scipy, tqdm. It declares torchvision and requests but imports
  neither.
* foolbox 3.3.4: eagerpy, typing_extensions, and -- only because ``foolbox/__init__`` imports its
  model zoo -- GitPython (``from git import Repo``) and requests. GitPython checks for a ``git``
  executable at import; ``GIT_PYTHON_REFRESH=quiet`` (set here unless the user set it) keeps a
  machine without git from failing, since the zoo is never used.
* adv-lib 0.2.8: torch and tqdm. Its package ``adv_lib.attacks/__init__`` imports every attack,
  which drags in ``torchvision`` (only for the LPIPS distance) and ``visdom`` (only for the
  optional progress callback), and ``distutils.version.LooseVersion`` (removed from the standard
  library in Python 3.12; setuptools' shim provides it where setuptools is installed).
  None of these is used by the attacks taken here (fmn, alma, ddn, sdf). Where such a module is
  missing, a stub module is put into ``sys.modules`` *only while* ``adv_lib.attacks`` is being
  imported and removed right after, so the rest of the process still sees them as absent; using
  the stubs (LPIPS, VisdomLogger) raises an ImportError that says why. An installed torchvision /
  visdom is never shadowed.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

INSTALL_HINT = "install the peers with `./run.sh peers` (see docs/peers.md)"


class PeerUnavailable(ImportError):
    """A peer library needed by a baseline is not installed."""


def _require(module: str, library: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise PeerUnavailable(f"baseline needs {library} ({err}); {INSTALL_HINT}") from err


def torchattacks():
    return _require("torchattacks", "torchattacks==3.5.1")


def foolbox():
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    return _require("foolbox", "foolbox==3.3.4 (+ eagerpy, GitPython, requests)")


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _stub(name: str, why: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__teamattack_stub__ = True  # type: ignore[attr-defined]

    def __getattr__(attr: str):
        if attr.startswith("__"):  # import-machinery probes (__path__, __spec__, ...)
            raise AttributeError(attr)
        raise ImportError(f"{name}.{attr} is unavailable: {name} is not installed ({why})")

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return mod


@functools.total_ordering
class _LooseVersion:
    """Minimal stand-in for distutils.version.LooseVersion (numeric prefix comparison only)."""

    def __init__(self, v: str) -> None:
        self.v = tuple(int(p) for p in re.findall(r"\d+", str(v).split("+")[0])[:3])

    @staticmethod
    def _of(other) -> tuple:
        return (other if isinstance(other, _LooseVersion) else _LooseVersion(other)).v

    def __eq__(self, other) -> bool:
        return self.v == self._of(other)

    def __lt__(self, other) -> bool:
        return self.v < self._of(other)

    __hash__ = None  # type: ignore[assignment]


@contextmanager
def _adv_lib_stubs() -> Iterator[list[str]]:
    added: list[str] = []
    why = "teamattack stubbed it only to import adv_lib; the adv_lib feature using it is unavailable"
    try:
        if _missing("torchvision"):
            tv, models = _stub("torchvision", why), _stub("torchvision.models", why)
            tv.models = models  # type: ignore[attr-defined]
            sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, models
            added += ["torchvision", "torchvision.models"]
        if _missing("visdom"):
            sys.modules["visdom"] = _stub("visdom", why)
            added.append("visdom")
        try:
            importlib.import_module("distutils.version")
        except ImportError:
            du, ver = types.ModuleType("distutils"), types.ModuleType("distutils.version")
            ver.LooseVersion = _LooseVersion  # type: ignore[attr-defined]
            du.version = ver  # type: ignore[attr-defined]
            sys.modules["distutils"], sys.modules["distutils.version"] = du, ver
            added += ["distutils", "distutils.version"]
        yield added
    finally:
        for name in added:
            sys.modules.pop(name, None)


def adv_lib_attacks():
    """Return the ``adv_lib.attacks`` package (fmn, alma, ddn, sdf, ...)."""
    if "adv_lib.attacks" in sys.modules:
        return sys.modules["adv_lib.attacks"]
    if _missing("adv_lib"):
        raise PeerUnavailable(f"baseline needs adv-lib==0.2.8; {INSTALL_HINT}")
    with _adv_lib_stubs(), warnings.catch_warnings():
        # adv_lib compares torch versions with distutils' LooseVersion, deprecated since 3.10
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("adv_lib.attacks")
        except ImportError as err:
            # leave no half-imported adv_lib modules that hold references to the stubs
            for name in [m for m in sys.modules if m == "adv_lib" or m.startswith("adv_lib.")]:
                sys.modules.pop(name, None)
            raise PeerUnavailable(f"adv-lib failed to import ({err}); {INSTALL_HINT}") from err


def adv_lib_penalty(name: str):
    adv_lib_attacks()
    from adv_lib.utils.lagrangian_penalties import all_penalties

    try:
        return all_penalties[name]
    except KeyError:
        raise ValueError(f"unknown ALMA penalty {name!r}; adv_lib offers {sorted(all_penalties)}") from None


def available() -> dict[str, bool]:
    """Which peer libraries can be imported here (imports them)."""
    out = {}
    for lib, fn in (("torchattacks", torchattacks), ("foolbox", foolbox), ("adv_lib", adv_lib_attacks)):
        try:
            fn()
            out[lib] = True
        except PeerUnavailable:
            out[lib] = False
    return out

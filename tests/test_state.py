"""State survives faults and no code runs from data (issue 13 items 4-5).

- training killed (SIGKILL) between or inside the checkpoint writes: --resume ends with the same
  weights as an uninterrupted run; an older two-file checkpoint whose parts disagree is refused;
- a bench killed mid-unit (and mid-line of its sidecar) resumes to the same JSON; the sidecar
  tolerates an empty file, a cut line and garbage lines, refuses a header-less file or another
  teamattack version, naming --fresh;
- atomic writes: a fresh temporary name in the target folder, a symlink at the target replaced,
  not followed;
- zoo cards hold the weights' sha256 and zoo.load checks it;
- a crafted CIFAR-10 batch whose pickle runs code is refused and the payload never runs.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from teamattack import data, zoo
from teamattack.atomic import atomic_write_text, check_writable
from teamattack.bench.records import ResumeMismatch, Sidecar
from teamattack.cli import main
from teamattack.cli.common import write_json
from teamattack.zoo import train as ztrain
from teamattack.zoo.registry import HASH_KEY, IntegrityError

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
ENV = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
TRAIN_KW = dict(epochs=3, seed=0, batch_size=128, progress=False, threads=1)


# ------------------------------------------------------------------------------------------
# training checkpoints
# ------------------------------------------------------------------------------------------
# killed by SIGKILL at the N-th call of WHAT during training: "card" (after the checkpoint's
# tensors+metadata file, before its readable .ckpt.json copy) or "replace" (inside the atomic write
# of the checkpoint: the temporary file written, not yet renamed)
KILLER = """
import os, signal, sys
from teamattack.zoo import train as T
import teamattack.atomic as A
out, what, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = [0]
def hit():
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
if what == "card":
    real = T.write_card
    def write_card(path, card):
        hit()
        real(path, card)
    T.write_card = write_card
else:
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith(".ckpt.safetensors"):
            hit()
        real(src, dst)
    A.os.replace = replace
T.train("digits-linear", out, epochs=3, seed=0, batch_size=128, progress=False, threads=1, log=lambda m: None)
"""


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.safetensors"
    ztrain.train("digits-linear", out, log=lambda m: None, **TRAIN_KW)
    return load_file(str(out))


@pytest.mark.slow
@pytest.mark.parametrize("what", ["card", "replace"])
def test_training_killed_in_the_checkpoint_resumes_to_the_same_weights(what, tmp_path, reference_weights):
    out = tmp_path / "w.safetensors"
    p = subprocess.run([sys.executable, "-c", KILLER, str(out), what, "2"], env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    ckpt, _ = ztrain._ckpt_paths(out)
    meta, _ = ztrain._read_checkpoint(*ztrain._ckpt_paths(out))
    # "card": epoch 2's checkpoint is complete; "replace": epoch 1's is intact, epoch 2's never landed
    assert meta["epoch"] == (2 if what == "card" else 1) and not out.exists()
    lines = []
    ztrain.train("digits-linear", out, resume=True, log=lines.append, **TRAIN_KW)
    assert any(f"after epoch {meta['epoch']}" in m for m in lines), lines
    got = load_file(str(out))
    assert got.keys() == reference_weights.keys()
    assert all(torch.equal(got[k], reference_weights[k]) for k in got)
    assert not ckpt.exists() and not any(tmp_path.glob("*.ckpt.json"))
    card = json.loads(out.with_suffix(".json").read_text())
    assert [h["epoch"] for h in card["history"]] == [1, 2, 3]


def test_an_old_checkpoint_pair_that_disagrees_is_refused(tmp_path):
    """The older format (tensors + .ckpt.json): resumed when both name the same epoch, refused otherwise."""
    out = tmp_path / "w.safetensors"
    model = zoo.build("digits-linear")
    opt = torch.optim.Adam(model.parameters())
    ztrain._save_checkpoint(out, model, opt, {"epoch": 2, "settings": {}, "history": [], "runs": [],
                                              "training_time_s": 0.0})
    tpath, jpath = ztrain._ckpt_paths(out)
    meta = json.loads(jpath.read_text())
    zoo.registry.save_state(load_file(str(tpath)), tpath, metadata={"epoch": "3"})  # old format: no JSON inside
    with pytest.raises(ztrain.CheckpointError, match="disagree"):
        ztrain._load_checkpoint(out, model, opt)
    zoo.registry.save_state(load_file(str(tpath)), tpath, metadata={"epoch": "2"})
    assert ztrain._load_checkpoint(out, model, opt)["epoch"] == 2 == meta["epoch"]
    tpath.write_bytes(b"\0" * 10)
    with pytest.raises(ztrain.CheckpointError, match="unreadable"):
        ztrain._load_checkpoint(out, model, opt)


# ------------------------------------------------------------------------------------------
# bench resume
# ------------------------------------------------------------------------------------------
BENCH = ["bench", "--model", "digits-mlp", "--suite", "untargeted-l2", "--attacks", "team-l2", "-n", "12",
         "--batch-size", "4", "--no-progress", "-q"]
# the bench CLI, killed by SIGKILL inside its 2nd unit ("unit") or half-way through writing the
# 2nd unit's sidecar line ("line")
BENCH_KILLER = """
import os, signal, sys
from teamattack.bench import records, stages
from teamattack.cli import main
what = sys.argv[1]
calls = [0]
if what == "unit":
    real = stages.run_unit
    def run_unit(*a, **k):
        calls[0] += 1
        if calls[0] == 2:
            real(*a, **k)  # the work done, its result not saved
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    stages.run_unit = run_unit
else:
    def put(self, key, value):
        calls[0] += 1
        line = records.json.dumps({"key": key, "value": value}) + "\\n"
        with open(self.path, "a") as f:
            f.write(line if calls[0] < 2 else line[: len(line) // 2])
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        self.units[key] = value
    records.Sidecar.put = put
main(sys.argv[2:])
"""


def _strip(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    doc.pop("command", None)
    for r in doc["runs"]:
        for k in ("seconds_per_image", "peak_memory_mb"):
            r.pop(k, None)
    return doc


@pytest.fixture(scope="module")
def bench_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ref.json"
    assert main(BENCH + ["--json", str(out)]) == 0
    return _strip(json.loads(out.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("what", ["unit", "line"])
def test_bench_killed_mid_unit_resumes_to_the_same_json(what, tmp_path, bench_reference, capsys):
    out = tmp_path / "b.json"
    p = subprocess.run([sys.executable, "-c", BENCH_KILLER, what, *BENCH, "--json", str(out)], env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    side = Path(str(out) + ".partial.jsonl")
    n_lines = len(side.read_text().splitlines())
    assert n_lines == 2 + (what == "line") and not out.exists()  # header + 1 unit (+ the cut line)
    assert main(BENCH[:-1] + ["--json", str(out)]) == 0
    assert "resuming: 1 finished units" in capsys.readouterr().err
    assert _strip(json.loads(out.read_text())) == bench_reference


def test_sidecar_tolerates_damage_and_refuses_strangers(tmp_path):
    p = tmp_path / "s.jsonl"
    notes = []
    p.write_text("")  # empty: a fresh start (with a note), the header written
    s = Sidecar(p, {"n": 3}, log=notes.append)
    assert s.units == {} and "empty" in notes[-1] and json.loads(p.read_text().splitlines()[0])["header"]["n"] == 3
    s.put("a", {"v": 1})
    s.put("b", {"v": 2})
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0], lines[1], "garbage {", '{"no": "key"}', lines[2], '{"key": "c", "va']))
    s = Sidecar(p, {"n": 3}, log=notes.append)
    assert s.units == {"a": {"v": 1}, "b": {"v": 2}}  # the garbage dropped, the cut last line too
    assert "2 unreadable" in notes[-1] and "--fresh" in notes[-1]
    assert p.read_text().endswith("\n") and len(p.read_text().splitlines()) == 3  # rewritten clean
    assert Sidecar(p, {"n": 3}).units == s.units
    # a file without the header line is not silently rewritten: refused, naming --fresh
    p.write_text('{"key": "a", "value": {"v": 1}}\n')
    with pytest.raises(ResumeMismatch, match="no header.*--fresh"):
        Sidecar(p, {"n": 3})
    assert p.read_text() == '{"key": "a", "value": {"v": 1}}\n'
    # another teamattack version never mixes in
    head = {"header": {**Sidecar(tmp_path / "t.jsonl", {"n": 3}).header, "teamattack": "0.0.1"}}
    p.write_text(json.dumps(head) + '\n{"key": "a", "value": {"v": 1}}\n')
    with pytest.raises(ResumeMismatch, match=r"written by teamattack 0\.0\.1.*--fresh"):
        Sidecar(p, {"n": 3})
    assert Sidecar(p, {"n": 3}, fresh=True).units == {}


# ------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------
def test_atomic_writes_replace_a_symlink_and_leave_no_temporary(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    write_json(link, {"a": 1})
    assert victim.read_text() == "keep me"  # not written through the link
    assert not link.is_symlink() and json.loads(link.read_text()) == {"a": 1}
    # a planted file at the old fixed temporary name is neither used nor removed
    planted = tmp_path / "out.json.tmp"
    planted.symlink_to(victim)
    atomic_write_text(link, "new\n")
    assert victim.read_text() == "keep me" and planted.is_symlink() and link.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.json.tmp", "victim.txt"]

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    from teamattack.atomic import atomic_write
    with pytest.raises(RuntimeError):
        atomic_write(link, crash)
    assert link.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.json.tmp", "victim.txt"]
    with pytest.raises(OSError):
        check_writable(victim / "x.json")  # a file where a folder should be
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)


# ------------------------------------------------------------------------------------------
# zoo weights and cards
# ------------------------------------------------------------------------------------------
def test_shipped_cards_hold_the_hash_of_their_weights():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "hash_zoo_cards.py"), "--check"], env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout
    for name in zoo.names():
        assert len(zoo.read_card(name)[HASH_KEY]) == 64


def test_corrupted_weights_and_cards_are_refused(tmp_path):
    src = zoo.resolve("digits-mlp")
    w = tmp_path / "m.safetensors"
    shutil.copy(src, w)
    shutil.copy(zoo.card_path(src), tmp_path / "m.json")
    ok = zoo.load(w)
    raw = bytearray(w.read_bytes())
    raw[-3] ^= 0x01  # one bit of one weight
    w.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256"):
        zoo.load(w)
    # a card without a hash (a user's file): loads, unchecked
    card = json.loads((tmp_path / "m.json").read_text())
    del card[HASH_KEY]
    (tmp_path / "m.json").write_text(json.dumps(card))
    changed = zoo.load(w)
    assert not all(torch.equal(a, b) for a, b in zip(ok.state_dict().values(), changed.state_dict().values()))
    w.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(IntegrityError, match="safetensors"):
        zoo.load(w)
    (tmp_path / "m.json").write_text("[1, 2")
    with pytest.raises(IntegrityError, match="card"):
        zoo.load(w)
    # zoo.save writes the hash, and a resave keeps the pair in agreement
    path = zoo.save(ok, tmp_path / "s.safetensors", {"arch": "digits-mlp", "dataset": "digits"})
    assert zoo.read_card(path)[HASH_KEY] == zoo.registry.sha256_file(path)
    assert zoo.load(path).card["dataset"] == "digits"


# ------------------------------------------------------------------------------------------
# no code from data
# ------------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_never_runs_its_payload(tmp_path, capsys):
    root = tmp_path / "root"
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": _Payload(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(data.UnsafeDataError, match="os.system|posix.system"):
        data.load("cifar10", "test", root=root)
    assert not marker.exists()
    # through the CLI: one line, exit 2, still nothing ran
    assert main(["evaluate", "--model", "cifar10-table1", "--data-root", str(root), "-n", "1"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("teamattack evaluate: error:") and "posix.system" in lines[0], err
    assert not marker.exists()
    # eval / exec through builtins are refused too
    with open(d / "test_batch", "wb") as f:
        f.write(b"cbuiltins\neval\n(Vopen('" + str(marker).encode() + b"','w')\ntR.")
    with pytest.raises(data.UnsafeDataError, match="builtins.eval"):
        data.readers.read_pickled_arrays(d / "test_batch")
    assert not marker.exists()


def test_default_data_root_is_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("TEAMATTACK_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data.resolve_root() == tmp_path / "xdg" / "teamattack" == data.default_root()
    monkeypatch.delenv("XDG_DATA_HOME")
    root = data.resolve_root()
    assert root.is_absolute() and root != Path.cwd() and root.name == "teamattack"
    with pytest.raises(data.DatasetNotFoundError, match=str(root)):
        data.load("mnist", "test")

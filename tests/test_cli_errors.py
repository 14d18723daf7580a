"""The CLI answers bad input in one line (issue 13 item 3) and is consistent across subcommands
(issue 17 item 4): a table of bad command lines, each with its exit code and a word of the one-line
message, run in-process (a few through a subprocess); the argparse validators under hypothesis;
and what the common frame promises (--version, python -m teamattack, --threads, defaults in the
help, --dataset from the card, one attack vocabulary, attack --save-adv, module:factory models)."""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from teamattack import zoo
from teamattack.cli import build_parser, main
from teamattack.cli import common as C

SRC = str(Path(__file__).resolve().parents[1] / "src")

# a user's module for --model module:factory (written into tmp_path, put on sys.path)
USER_MODULE = '''
import torch
from torch import nn
from teamattack import zoo

def digits_cnn():
    return zoo.build("digits-cnn")

def wrong_input():
    return nn.Sequential(nn.Flatten(), nn.Linear(5, 10))

def tuple_output():
    class M(nn.Module):
        def forward(self, x):
            return (x.flatten(1)[:, :10], None)
    return M()

def broken():
    raise RuntimeError("no GPU in this factory")
'''


@pytest.fixture
def place(tmp_path, monkeypatch):
    """Files the cases refer to: {tmp}, {file} (a plain file: nothing can be created under it),
    {empty} (an empty folder), {bad_hash} / {truncated} / {bad_card} (broken zoo copies),
    {cnn_w} (digits-cnn weights without a card), {mlp_w}, {side} (a sidecar with no header)."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    src = zoo.resolve("digits-cnn")
    for name in ("bad_hash", "truncated", "bad_card"):
        shutil.copy(src, tmp_path / f"{name}.safetensors")
        shutil.copy(zoo.card_path(src), tmp_path / f"{name}.json")
    raw = bytearray((tmp_path / "bad_hash.safetensors").read_bytes())
    raw[-5] ^= 0xFF  # one weight changed: still a valid file, but not the one the card hashed
    (tmp_path / "bad_hash.safetensors").write_bytes(bytes(raw))
    (tmp_path / "truncated.safetensors").write_bytes(bytes(raw[:100]))
    (tmp_path / "truncated.json").unlink()
    (tmp_path / "bad_card.json").write_text("{\"arch\": ")
    shutil.copy(src, tmp_path / "cnn_w.safetensors")
    shutil.copy(zoo.resolve("digits-mlp"), tmp_path / "mlp_w.safetensors")
    (tmp_path / "side.json.partial.jsonl").write_text('{"key": "a", "value": {}}\n')
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return {k: str(tmp_path / k) for k in ("file", "empty", "side")} | {
        "tmp": str(tmp_path), **{k: str(tmp_path / f"{k}.safetensors")
                                 for k in ("bad_hash", "truncated", "bad_card", "cnn_w", "mlp_w")}}


NO_CUDA = not torch.cuda.is_available()
B = ["bench", "--model", "digits-cnn", "--suite", "untargeted-l2"]

# (argv, exit code, a word of the message)
CASES = [
    # bad numbers: argparse validators, before any work
    ("attack -n -5", 2, "positive integer"),
    ("attack -n 0", 2, "positive integer"),
    ("attack -n abc", 2, "not an integer"),
    ("attack --batch-size -1", 2, "positive integer"),
    ("attack --eps nan", 2, "finite"),
    ("attack --eps -0.1", 2, "> 0"),
    ("attack --steps 0", 2, "positive integer"),
    ("attack --seed -1", 2, ">= 0"),
    ("attack --threads 0", 2, "positive integer"),
    ("train --arch digits-linear --epochs -3 --out {tmp}/w.safetensors", 2, "positive integer"),
    ("train --arch digits-linear --lr 0 --out {tmp}/w.safetensors", 2, "> 0"),
    ("train --arch digits-linear --weight-decay -1 --out {tmp}/w.safetensors", 2, ">= 0"),
    ("evaluate --model digits-cnn -n 0", 2, "positive integer"),
    ("evaluate --model digits-cnn --batch-size 0", 2, "positive integer"),
    (" ".join(B) + " --eps 0.1,-1", 2, "> 0"),
    (" ".join(B) + " --exact-time-limit 0", 2, "> 0"),
    ("exact --model digits-mlp --time-limit -1", 2, "> 0"),
    ("reproduce e1-objectives -n 0", 2, "positive integer"),
    ("distill --arch digits-linear -G 0 --out {tmp}/d.safetensors", 2, "> 0"),
    ("distill --arch digits-linear -G 5 --epochs 0 --out {tmp}/d.safetensors", 2, "positive integer"),
    ("demo -n 0", 2, "positive integer"),
    # unknown names
    ("attack --model no-such-model", 2, "neither a zoo name"),
    ("attack --dataset imagenet", 2, "unknown dataset"),
    ("attack --attack no-such-attack", 2, "unknown attack"),
    ("attack --attack team-l2 --norm linf", 2, "complete TEAM variant"),
    ("attack --attack team-l2:nonsense=1", 2, "nonsense"),
    ("bench --model digits-cnn --suite no-such-suite", 2, "invalid choice"),
    (" ".join(B) + " --attacks no-such-attack", 2, "neither in suite"),
    ("attack --device tpu", 2, "device"),
    ("", 2, "required"),
    # a model and a dataset that do not fit
    ("attack --model mnist-table1 --dataset digits", 2, "mnist inputs"),
    ("evaluate --model digits-cnn --dataset cifar10", 2, "digits inputs"),
    ("exact --model digits-mlp --dataset mnist", 2, "digits inputs"),
    ("attack --model usermodels:wrong_input --dataset digits", 2, "does not take digits inputs"),
    ("attack --model usermodels:tuple_output --dataset digits", 2, "logits"),
    ("attack --model usermodels:digits_cnn", 2, "--dataset is needed"),
    ("evaluate --model usermodels:digits_cnn", 2, "--dataset is needed"),
    ("attack --model usermodels:broken --dataset digits", 2, "no GPU in this factory"),
    ("attack --model no_such_module_xyz:f", 2, "cannot import"),
    ("attack --model os:getcwd", 2, "not a torch.nn.Module"),
    ("attack --model usermodels:digits_cnn --weights {mlp_w} --dataset digits", 2, "does not fit"),
    ("attack --model usermodels:digits_cnn --weights {tmp}/missing.safetensors --dataset digits", 2, "no such file"),
    ("attack --model {cnn_w} --weights {cnn_w}", 2, "--weights goes with"),
    # data root
    ("attack --data-root {tmp}/nope", 2, "no such folder"),
    ("attack --model mnist-table1 --data-root {empty}", 2, "not found"),
    # unwritable outputs, checked before the work
    ("attack --json {file}/out.json", 2, "cannot write --json"),
    ("attack --save-adv {file}/adv.safetensors", 2, "cannot write --save-adv"),
    ("attack --json {empty}", 2, "cannot write --json"),
    (" ".join(B) + " --markdown {file}/t.md", 2, "cannot write --markdown"),
    ("demo --out {file}/demo.png", 2, "cannot write --out"),
    ("train --arch digits-linear --epochs 1 --out {file}/w.safetensors", 2, "cannot write --out"),
    ("reproduce e5-synthetic --out {file}/runs", 2, "cannot write --out"),
    ("report {file} --html {file}/r.html", 2, "cannot write --html"),
    ("report {tmp}/missing.json --html {tmp}/r.html", 2, "no such file"),
    # corrupted weights and cards
    ("attack --model {bad_hash}", 2, "sha256"),
    ("attack --model {truncated}", 2, "safetensors"),
    ("attack --model {bad_card}", 2, "card"),
    # resume state
    (" ".join(B) + " -n 5 --json {tmp}/side.json", 2, "--fresh"),
    # combinations
    ("attack --targeted --case best --save-adv {tmp}/a.safetensors", 2, "--save-adv"),
    ("distill -G 5 --out {tmp}/d.safetensors", 2, "exactly one of --arch"),
    ("reproduce math-theorems --dataset digits --out {tmp}/r", 2, "takes no --dataset"),
]
if NO_CUDA:
    CASES.append(("attack --device cuda", 2, "CUDA is not available"))


@pytest.mark.parametrize("argv, code, word", CASES, ids=[c[0][:60] or "(none)" for c in CASES])
def test_bad_command_lines_answer_in_one_line(argv, code, word, place, capsys):
    args = [a.format(**place) for a in argv.split()] + (["--no-progress"] if argv else [])
    try:
        rc = main(args)
    except SystemExit as e:  # argparse's own exit (its error() is the one-line Parser.error)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    prog = " ".join(["teamattack"] + argv.split()[:1])
    assert lines[0].startswith(f"{prog}: error:"), err
    assert word in lines[0], err


@pytest.mark.slow
def test_exit_codes_and_tracebacks_through_a_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    run = lambda *a: subprocess.run([sys.executable, *a], env=env, capture_output=True, text=True,  # noqa: E731
                                    timeout=120, cwd=tmp_path)
    p = run("-m", "teamattack", "attack", "-n", "-5")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "positive integer" in p.stderr
    p = run("-m", "teamattack.cli", "attack", "--model", "no-such-model")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "neither a zoo name" in p.stderr
    p = run("-m", "teamattack", "attack", "--model", "no-such-model", "-v")  # -v: the traceback
    assert p.returncode == 1 and "Traceback" in p.stderr and "FileNotFoundError" in p.stderr
    p = run("-m", "teamattack", "--version")
    from teamattack import __version__
    assert p.returncode == 0 and p.stdout.strip() == f"teamattack {__version__}"


# ------------------------------------------------------------------------------------------
# the validators (hypothesis)
# ------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-10**6, max_value=10**6))
def test_int_validators(v):
    for fn, ok in ((C.positive_int, v >= 1), (C.nonneg_int, v >= 0)):
        if ok:
            assert fn(str(v)) == v
        else:
            with pytest.raises(argparse.ArgumentTypeError):
                fn(str(v))


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_validators(v):
    finite = math.isfinite(v)
    for fn, ok in ((C.positive_float, finite and v > 0), (C.nonneg_float, finite and v >= 0),
                   (C.prob, finite and 0 <= v <= 1)):
        if ok:
            assert fn(repr(v)) == v
        else:
            with pytest.raises(argparse.ArgumentTypeError):
                fn(repr(v))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5))
def test_eps_list(values):
    text = ",".join(repr(v) for v in values)
    if all(math.isfinite(v) and v > 0 for v in values):
        assert C.eps_list(text) == values
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            C.eps_list(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12))
def test_validators_never_raise_anything_but_argument_type_error(text):
    for fn in (C.positive_int, C.nonneg_int, C.positive_float, C.nonneg_float, C.prob, C.eps_list,
               C.dataset_name, C.device_name):
        try:
            fn(text)
        except argparse.ArgumentTypeError:
            pass


# ------------------------------------------------------------------------------------------
# the common frame
# ------------------------------------------------------------------------------------------
def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_subcommand_has_the_common_options_and_shows_defaults():
    for name, p in _subparsers().items():
        opts = set(p._option_string_actions)
        assert {"-v", "-q", "--no-progress", "--threads"} <= opts, name
        if "--model" in opts:
            assert "--weights" in opts, name
        help_text = p.format_help()
        assert "default" in help_text, name
    assert "(default: 100)" in _subparsers()["attack"].format_help().replace("\n", " ").replace("  ", " ")


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_help_text_prints(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0 and "common options" in capsys.readouterr().out


def test_threads_default_and_option(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert C.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert C.default_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    main(["attack", "--model", "no-such-model", "--threads", "2"])
    assert calls[0] == 2  # set before the work (and restored after: main may run inside a test)
    calls.clear()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert main(["demo", "--out", "/proc/no-such/demo.png"]) == 2  # refused before any work
    assert calls[0] == 1  # demo: one thread by default (the digits model gains nothing from more)


def test_dataset_comes_from_the_card_and_team_l2_is_the_bench_attack(tmp_path, monkeypatch, capsys):
    """`attack --model digits-cnn` needs no --dataset; `attack --attack team-l2` and `bench --attacks
    team-l2` give the same record; --save-adv holds x, x_adv, y, success that agree with it."""
    from safetensors.torch import load_file

    monkeypatch.setattr(sys, "argv", ["teamattack"])
    a, b, adv = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "adv.safetensors"
    assert main(["attack", "--model", "digits-mlp", "--attack", "team-l2", "-n", "12", "--batch-size", "6",
                 "--json", str(a), "--save-adv", str(adv), "--no-progress", "-q"]) == 0
    assert main(["bench", "--model", "digits-mlp", "--suite", "untargeted-l2", "--attacks", "team-l2", "-n", "12",
                 "--batch-size", "6", "--json", str(b), "--no-progress", "-q"]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["dataset"] == rb["dataset"] == "digits" and ra["images"] == rb["images"]
    run_a = ra["runs"][0]
    run_b = next(r for r in rb["runs"] if r["attack"] == "team-l2")
    for k in ("asr", "l0", "l2", "linf", "grad_evals_per_image"):
        assert run_a[k] == run_b[k], k
    t = load_file(str(adv))
    model = zoo.load("digits-mlp")
    with torch.no_grad():
        pred = model(t["x_adv"]).argmax(1)
    assert torch.equal(t["success"], pred != t["y"])
    d = (t["x_adv"] - t["x"]).flatten(1).norm(dim=1)[t["success"]].double()
    assert float(d.mean()) == pytest.approx(run_a["l2"]["mean"], rel=1e-5)
    assert t["index"].tolist() == ra["images"]


def test_user_model_from_module_factory_and_weights(tmp_path, monkeypatch, capsys):
    """--model module:factory --weights file gives the same answer as the zoo model with those weights."""
    (tmp_path / "usermodels2.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["teamattack"])
    w = zoo.resolve("digits-cnn")
    out_zoo, out_user = tmp_path / "z.json", tmp_path / "u.json"
    assert main(["evaluate", "--model", "digits-cnn", "-n", "50", "--json", str(out_zoo)]) == 0
    assert main(["evaluate", "--model", "usermodels2:digits_cnn", "--weights", str(w), "--dataset", "digits",
                 "-n", "50", "--json", str(out_user)]) == 0
    z, u = json.loads(out_zoo.read_text()), json.loads(out_user.read_text())
    assert z["correct"] == u["correct"] and z["n"] == u["n"] == 50

"""AttackResult comforts: repr, summary, to_dict, cat; attack.run_loader over a DataLoader."""
import json

import torch

import teamattack as ta


def test_summary_repr_to_dict_and_run_loader():
    model = ta.zoo.load("digits-mlp")
    x, y = ta.data.load("digits", "test", n=10, seed=0)
    atk = ta.paper.FGSM(model, eps=0.2)
    whole = atk(x, y)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    r = atk.run_loader(loader)
    assert len(r) == 10 and torch.equal(r.success, whole.success)
    assert torch.allclose(r.l2, whole.l2) and r.info["batches"] == 3
    assert r.counters.gradients == whole.counters.gradients == 10
    s = r.summary()
    assert s.n == 10 and s.successes == int(whole.success.sum())
    assert s.successes > 0 and abs(s.linf[0] - 0.2) < 1e-5      # FGSM: every success at eps
    text = repr(r)
    assert text.startswith("AttackResult(n=10, asr=") and "\n" not in text and len(text) < 200
    d = json.loads(json.dumps(r.to_dict()))
    assert d["per_example"]["success"] == [bool(v) for v in whole.success]
    assert len(d["per_example"]["l2"]) == 10 and abs(d["per_example"]["radius"][0] - 0.2) < 1e-6
    assert "successful" in str(s)
    slim = atk.run_loader(loader, keep_images=False)
    assert slim.x_adv.shape[0] == 0 and len(slim) == 10

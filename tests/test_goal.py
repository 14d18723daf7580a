"""Goal: the one success criterion (reached, margin, indexing, repeat)."""
import torch

from teamattack.goal import Goal
from teamattack.metrics import is_adversarial
from teamattack.objectives import decision_margin


def test_reached_and_margin_agree_and_match_the_definitions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (50,), generator=gen)
    t = (y + 1 + torch.randint(0, 4, (50,), generator=gen)) % 5
    for goal in (Goal(y), Goal(y, t)):
        pred = logits.argmax(1)
        expected = pred == t if goal.targeted else pred != y
        assert torch.equal(goal.reached(logits), expected)
        assert torch.equal(goal.margin(logits) < 0, expected)      # no ties in random logits
        a = t if goal.targeted else y
        own = logits[torch.arange(50), a]
        rest = logits.clone()
        rest[torch.arange(50), a] = float("-inf")
        ref = rest.amax(1) - own if goal.targeted else own - rest.amax(1)
        torch.testing.assert_close(goal.margin(logits), ref)
        torch.testing.assert_close(decision_margin(logits, y, goal.target), ref)


def test_indexing_and_repeat_keep_labels_and_targets_together():
    y, t = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0])
    g = Goal(y, t)
    sub = g[torch.tensor([3, 1])]
    assert sub.y.tolist() == [3, 1] and sub.target.tolist() == [0, 2]
    assert g[1:3].y.tolist() == [1, 2] and len(g[1:3]) == 2
    assert g[torch.tensor([True, False, True, False])].target.tolist() == [1, 3]
    rep = g.repeat_interleave(2)
    assert rep.y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and rep.target.tolist() == [1, 1, 2, 2, 3, 3, 0, 0]
    u = Goal(y).repeat_interleave(3)[2:5]
    assert u.target is None and u.y.tolist() == [0, 1, 1]


def test_is_adversarial_is_the_goal_on_a_fresh_pass():
    model = torch.nn.Linear(3, 4).double().eval()
    x = torch.rand(7, 3, dtype=torch.float64)
    y = torch.zeros(7, dtype=torch.long)
    t = torch.full((7,), 2)
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(is_adversarial(model, x, y, batch_size=3), Goal(y).reached(logits))
    assert torch.equal(is_adversarial(model, x, y, t, batch_size=2), Goal(y, t).reached(logits))

"""Objectives against hand-worked values, independent (TRL-formula) implementations and the
properties stated in docs/OBJECTIVES.md."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainers.objectives import PairLogps, adaptive_segment_ids, get_objective

LOG2 = math.log(2)
NAN = float("nan")


def softplus(x: float) -> float:
    """−log σ(x) = log(1 + e^{−x}), written out so the expected values below can be followed."""
    return math.log1p(math.exp(-x))


# ---------------------------------------------------------------- a pair worked by hand
def hand_pair() -> PairLogps:
    """One pair: chosen 2 tokens, rejected 2 tokens plus one padded slot (holding NaN).

    chosen:   policy [−1, −2], ref [−2, −2] → h_w = [1, 0],  r_w = 1,  s_w = −3
    rejected: policy [−3, −1], ref [−1, −1] → h_l = [−2, 0], r_l = −2, s_l = −4
    Δ = r_w − r_l = 3.
    """
    return PairLogps(policy_chosen=torch.tensor([[-1.0, -2.0]]), policy_rejected=torch.tensor([[-3.0, -1.0, NAN]]),
                     ref_chosen=torch.tensor([[-2.0, -2.0]]), ref_rejected=torch.tensor([[-1.0, -1.0, NAN]]),
                     chosen_mask=torch.tensor([[1, 1]]), rejected_mask=torch.tensor([[1, 1, 0]]))


@pytest.mark.parametrize("name, hp, expected", [
    ("dpo", {"beta": 0.1}, 0.5543552),                            # −log σ(0.1·3) = log(1+e^−0.3)
    ("dpo", {"beta": 0.1, "label_smoothing": 0.2}, 0.6143552),    # 0.8·0.554355 + 0.2·(−log σ(−0.3) = 0.854355)
    ("ipo", {"beta": 0.1}, 12.25),                                # (1/2 − (−2)/2 − 1/(2·0.1))² = (1.5 − 5)²
    ("ipo", {"beta": 0.1, "length_normalize": False}, 4.0),       # (3 − 5)²
    ("hinge", {"beta": 0.1}, 0.7),                                # max(0, 1 − 0.3)
    ("hinge", {"beta": 0.5}, 0.0),                                # max(0, 1 − 1.5)
    ("robust", {"beta": 0.1, "epsilon": 0.1}, 0.5168552),         # (0.9·0.554355 − 0.1·0.854355) / 0.8
    ("simpo", {"beta": 2.0, "gamma_beta_ratio": 0.25}, 0.4740770),  # −log σ(2·(−3/2 − (−4/2)) − 0.5) = −log σ(0.5)
    ("nll", {}, 1.5),                                             # −(−3)/2
    ("adpo", {"beta": 0.1, "granularity": "static", "k": 1}, 1.2475024),  # −log σ(0.1·(1+2)) − log σ(0) = .554355 + log 2
    ("adpo", {"beta": 0.1, "granularity": "adaptive", "m": 1}, 0.5543552),  # one segment = DPO
    # AdaDPO, ratio space, per token: log ρ = 1/2 − (−2)/2 = 1.5 > log 2 → β_w = 0.1·2 = 0.2;
    # −log σ(0.2·1 − 0.1·(−2)) = −log σ(0.4)
    ("adadpo", {"beta": 0.1}, 0.5130153),
    # with C = 5 the clip is inactive: β_w = 0.1·e^1.5 = 0.448169; −log σ(0.448169 + 0.2)
    ("adadpo", {"beta": 0.1, "clip": 5.0}, 0.4206838),
    # policy space: log ρ = −3/2 − (−4/2) = 0.5 ≤ log 2 → β_w = 0.1·e^0.5 = 0.164872; −log σ(0.164872 + 0.2)
    ("adadpo", {"beta": 0.1, "balance_space": "policy"}, softplus(0.1 * math.exp(0.5) + 0.2)),
    # summed: log ρ = r_w − r_l = 3 → clipped to log 2, same as the first AdaDPO case
    ("adadpo", {"beta": 0.1, "length_normalize": False}, 0.5130153),
])
def test_hand_worked_values(name, hp, expected):
    out = get_objective(name)(hand_pair(), **hp)
    assert out.losses.dtype == torch.float32 and out.losses.shape == (1,)
    assert out.losses.item() == pytest.approx(expected, abs=1e-6)


def adpo_pair() -> PairLogps:
    """Chosen 2 tokens h_w = [1, 0]; rejected 3 tokens h_l = [−2, 1, 0] (reference all zero)."""
    return PairLogps(policy_chosen=torch.tensor([[1.0, 0.0, 1e30]]), policy_rejected=torch.tensor([[-2.0, 1.0, 0.0]]),
                     ref_chosen=torch.zeros(1, 3), ref_rejected=torch.zeros(1, 3),
                     chosen_mask=torch.tensor([[1, 1, 0]]), rejected_mask=torch.tensor([[1, 1, 1]]))


@pytest.mark.parametrize("hp, expected, feedback", [
    # k=1, chosen padded with h=0 to 3 tokens: βΔ per token = 0.3, −0.1, 0
    ({"granularity": "static", "k": 1}, softplus(0.3) + softplus(-0.1) + LOG2, 3),          # 1.991899
    # k=2: windows [0,2), [2,3): S_w = [1, 0], S_l = [−1, 0] → βΔ = 0.2, 0
    ({"granularity": "static", "k": 2}, softplus(0.2) + LOG2, 2),                           # 1.291286
    # m=2: chosen 2 → sizes 1,1: S_w = [1, 0]; rejected 3 → sizes 1,2: S_l = [−2, 1] → βΔ = 0.3, −0.1
    ({"granularity": "adaptive", "m": 2}, softplus(0.3) + softplus(-0.1), 2),              # 1.298752
    # m=4: chosen b = 0,0,1,1,2 → S_w = [0, 1, 0, 0]; rejected b = 0,0,1,2,3 → S_l = [0, −2, 1, 0]
    ({"granularity": "adaptive", "m": 4}, 2 * LOG2 + softplus(0.3) + softplus(-0.1), 4),    # 2.685046
])
def test_adpo_segment_values(hp, expected, feedback):
    out = get_objective("adpo")(adpo_pair(), beta=0.1, **hp)
    assert out.losses.item() == pytest.approx(expected, abs=1e-6)
    assert out.metrics["feedback_length"].tolist() == [feedback]


@pytest.mark.parametrize("length, m, sizes", [(5, 4, [1, 1, 1, 2]), (9, 4, [2, 2, 2, 3]), (5, 2, [2, 3]),
                                              (9, 2, [4, 5]), (2, 4, [0, 1, 0, 1]), (7, 1, [7])])
def test_adaptive_segment_sizes_match_the_paper_figure(length, m, sizes):
    ids = adaptive_segment_ids(torch.tensor([length, 3]), m, T=10)[0]
    assert (ids[length:] == -1).all()
    assert torch.bincount(ids[:length], minlength=m).tolist() == sizes


# ---------------------------------------------------------------- random batches
def random_pair(seed: int, b: int = 6, tw: int = 9, tl: int = 7, dtype=torch.float32, poison=None) -> PairLogps:
    """Random log-probs with right padding of random lengths (≥ 1); padding filled with `poison`."""
    g = torch.Generator().manual_seed(seed)
    def side(t):
        lens = torch.randint(1, t + 1, (b,), generator=g)
        mask = (torch.arange(t)[None, :] < lens[:, None]).float()
        pol, ref = -3 * torch.rand(b, t, generator=g), -3 * torch.rand(b, t, generator=g)
        if poison is not None:
            pol, ref = pol.masked_fill(mask == 0, poison), ref.masked_fill(mask == 0, poison)
        return pol.to(dtype), ref.to(dtype), mask
    pw, rw, mw = side(tw)
    pl, rl, ml = side(tl)
    return PairLogps(pw, pl, rw, rl, mw, ml)


def sums(pair: PairLogps):
    """Independent masked sums (inputs here are clean, so multiplying by the mask is fine)."""
    m_w, m_l = pair.chosen_mask, pair.rejected_mask
    return ((pair.policy_chosen * m_w).sum(1), (pair.policy_rejected * m_l).sum(1),
            (pair.ref_chosen * m_w).sum(1), (pair.ref_rejected * m_l).sum(1), m_w.sum(1), m_l.sum(1))


def trl_losses(pair: PairLogps, loss_type: str, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """TRL's DPOTrainer formulas (trl/trainer/dpo_trainer.py, reverse-KL scores) on sequence sums."""
    s_w, s_l, ref_w, ref_l, n_w, n_l = sums(pair)
    chosen_scores, rejected_scores = s_w - ref_w, s_l - ref_l
    delta_score = chosen_scores - rejected_scores
    if loss_type == "sigmoid":   # TRL's older sigmoid carried the same label smoothing as conservative DPO
        return (-F.logsigmoid(beta * delta_score) * (1 - label_smoothing)
                - F.logsigmoid(-beta * delta_score) * label_smoothing)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta_score)
    if loss_type == "ipo":
        ipo_delta = chosen_scores / n_w.clamp(min=1.0) - rejected_scores / n_l.clamp(min=1.0)
        return (ipo_delta - 1 / (2 * beta)) ** 2
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta_score)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta_score)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    raise AssertionError(loss_type)


def trl_cpo_simpo(pair: PairLogps, beta: float, simpo_gamma: float) -> torch.Tensor:
    """TRL's CPOTrainer 'simpo' (average log-probs; logits − γ/β, then β·logits)."""
    s_w, s_l, _, _, n_w, n_l = sums(pair)
    logits = s_w / n_w - s_l / n_l - simpo_gamma / beta
    return -F.logsigmoid(beta * logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name, hp, reference", [
    ("dpo", {"beta": 0.1}, lambda p: trl_losses(p, "sigmoid", 0.1)),
    ("dpo", {"beta": 0.3, "label_smoothing": 0.15}, lambda p: trl_losses(p, "sigmoid", 0.3, 0.15)),
    ("ipo", {"beta": 0.2}, lambda p: trl_losses(p, "ipo", 0.2)),
    ("hinge", {"beta": 0.25}, lambda p: trl_losses(p, "hinge", 0.25)),
    ("robust", {"beta": 0.1, "epsilon": 0.2}, lambda p: trl_losses(p, "robust", 0.1, 0.2)),
    ("simpo", {"beta": 2.5, "gamma_beta_ratio": 0.4}, lambda p: trl_cpo_simpo(p, 2.5, 2.5 * 0.4)),
])
def test_agrees_with_trl_formulas(seed, name, hp, reference):
    pair = random_pair(seed)
    torch.testing.assert_close(get_objective(name)(pair, **hp).losses, reference(pair), rtol=1e-5, atol=1e-5)


def naive_adpo(pair: PairLogps, beta: float, granularity: str, k: int = 1, m: int = 1) -> torch.Tensor:
    """ADPO pair by pair with explicit boundaries (b_j = ⌊j·|y|/m⌋, or windows of k), Python loops."""
    losses = []
    for b in range(pair.policy_chosen.shape[0]):
        h = []
        for pol, ref, mask in ((pair.policy_chosen, pair.ref_chosen, pair.chosen_mask),
                               (pair.policy_rejected, pair.ref_rejected, pair.rejected_mask)):
            n = int(mask[b].sum())
            h.append([float(pol[b, t] - ref[b, t]) for t in range(n)])
        if granularity == "adaptive":
            bounds = [[j * len(x) // m for j in range(m + 1)] for x in h]
            seg = [[sum(x[bd[i]:bd[i + 1]]) for i in range(m)] for x, bd in zip(h, bounds)]
        else:
            t_max = max(map(len, h))
            padded = [x + [0.0] * (t_max - len(x)) for x in h]
            seg = [[sum(x[i:i + k]) for i in range(0, t_max, k)] for x in padded]
        losses.append(sum(softplus(beta * (sw - sl)) for sw, sl in zip(*seg)))
    return torch.tensor(losses)


@pytest.mark.parametrize("granularity, size", [("static", 1), ("static", 2), ("static", 4), ("static", 20),
                                               ("adaptive", 1), ("adaptive", 2), ("adaptive", 3), ("adaptive", 16)])
def test_adpo_vectorised_equals_naive_loop(granularity, size):
    pair = random_pair(7)
    hp = {"k": size} if granularity == "static" else {"m": size}
    out = get_objective("adpo")(pair, beta=0.2, granularity=granularity, **hp)
    torch.testing.assert_close(out.losses, naive_adpo(pair, 0.2, granularity, **hp), rtol=1e-5, atol=1e-5)


def test_adpo_adaptive_m1_equals_dpo():
    for seed in range(3):
        pair = random_pair(seed)
        torch.testing.assert_close(get_objective("adpo")(pair, beta=0.1, granularity="adaptive", m=1).losses,
                                   get_objective("dpo")(pair, beta=0.1).losses, rtol=1e-6, atol=1e-6)


def test_adpo_static_k1_equals_token_level_sum():
    pair = random_pair(3)
    tw, tl = pair.policy_chosen.shape[1], pair.policy_rejected.shape[1]
    t = max(tw, tl)
    # h = 0 at padding, then both sides padded to the same width: −Σ_i log σ(β h_w[i] − β h_l[i]) over i < T_max
    h_w = F.pad((pair.policy_chosen - pair.ref_chosen) * pair.chosen_mask, (0, t - tw))
    h_l = F.pad((pair.policy_rejected - pair.ref_rejected) * pair.rejected_mask, (0, t - tl))
    t_max = torch.maximum(pair.chosen_mask.sum(1), pair.rejected_mask.sum(1))
    inside = torch.arange(t)[None, :] < t_max[:, None]
    expected = (-F.logsigmoid(0.1 * h_w - 0.1 * h_l) * inside).sum(1)
    torch.testing.assert_close(get_objective("adpo")(pair, beta=0.1, granularity="static", k=1).losses, expected)


def test_adpo_ignores_where_the_response_starts_in_the_row():
    """Left-padded rows give the same loss as right-padded ones (positions count response tokens)."""
    pair = random_pair(4)
    def to_left(x, mask):
        out = torch.zeros_like(x)
        for row in range(x.shape[0]):
            n = int(mask[row].sum())
            out[row, x.shape[1] - n:] = x[row, :n]
        return out
    moved = PairLogps(to_left(pair.policy_chosen, pair.chosen_mask), to_left(pair.policy_rejected, pair.rejected_mask),
                      to_left(pair.ref_chosen, pair.chosen_mask), to_left(pair.ref_rejected, pair.rejected_mask),
                      to_left(pair.chosen_mask, pair.chosen_mask), to_left(pair.rejected_mask, pair.rejected_mask))
    for hp in ({"granularity": "static", "k": 2}, {"granularity": "adaptive", "m": 3}):
        torch.testing.assert_close(get_objective("adpo")(moved, beta=0.1, **hp).losses,
                                   get_objective("adpo")(pair, beta=0.1, **hp).losses)


# ---------------------------------------------------------------- ADPO at initialisation
def init_pair(seed: int):
    """Policy = reference; the policy log-probs are leaves so that autograd gives ∂ℓ/∂logp."""
    pair = random_pair(seed)
    pw = pair.ref_chosen.clone().requires_grad_(True)
    pl = pair.ref_rejected.clone().requires_grad_(True)
    return PairLogps(pw, pl, pair.ref_chosen, pair.ref_rejected, pair.chosen_mask, pair.rejected_mask), pw, pl


@pytest.mark.parametrize("hp", [{"granularity": "static", "k": 1}, {"granularity": "static", "k": 3},
                                {"granularity": "adaptive", "m": 2}, {"granularity": "adaptive", "m": 16}])
def test_adpo_at_initialisation_loss_is_feedback_length_log2_and_gradient_is_dpos(hp):
    pair, pw, pl = init_pair(5)
    out = get_objective("adpo")(pair, beta=0.1, **hp)
    torch.testing.assert_close(out.losses, out.metrics["feedback_length"] * LOG2)
    grads = torch.autograd.grad(out.losses.sum(), (pw, pl))
    pair2, pw2, pl2 = init_pair(5)
    dpo_grads = torch.autograd.grad(get_objective("dpo")(pair2, beta=0.1).losses.sum(), (pw2, pl2))
    for g, d in zip(grads, dpo_grads):
        torch.testing.assert_close(g, d)
    # DPO's gradient at Δ = 0 is −β·σ(0) = −0.05 on every chosen token, +0.05 on every rejected one.
    assert torch.allclose(grads[0], -0.05 * pair.chosen_mask) and torch.allclose(grads[1], 0.05 * pair.rejected_mask)


# ---------------------------------------------------------------- AdaDPO balanced gradients
def geo_mean_abs(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # where, not a product: log|0| = −inf at padding and −inf·0 is NaN
    logs = torch.where(mask.bool(), grad.abs().log(), torch.zeros(()))
    return torch.exp(logs.sum(1) / mask.sum(1))


def adadpo_prob_grads(space: str, seed: int, clip: float = 2.0, spread: float = 0.1, offset: float = 0.4):
    """|∂ℓ/∂p| with p = exp(logp_θ) (policy space) or p = exp(logp_θ − logp_ref) (ratio space) as leaves.

    `spread` (noise) and `offset` (rejected shifted down) set how far apart the two sit, hence ρ.
    """
    base = random_pair(seed)
    g = torch.Generator().manual_seed(seed + 100)
    lw = -1.0 + spread * torch.randn(base.policy_chosen.shape, generator=g)
    ll = -1.0 + spread * torch.randn(base.policy_rejected.shape, generator=g) - offset
    p_w, p_l = lw.exp().requires_grad_(True), ll.exp().requires_grad_(True)
    if space == "policy":
        pol_w, pol_l = p_w.log(), p_l.log()
    else:   # the leaves are the per-token ratios p/p_ref
        pol_w, pol_l = p_w.log() + base.ref_chosen, p_l.log() + base.ref_rejected
    pair = PairLogps(pol_w, pol_l, base.ref_chosen, base.ref_rejected, base.chosen_mask, base.rejected_mask)
    out = get_objective("adadpo")(pair, beta=0.1, balance_space=space, length_normalize=True, clip=clip)
    gw, gl = torch.autograd.grad(out.losses.sum(), (p_w, p_l))
    return out, geo_mean_abs(gw, base.chosen_mask), geo_mean_abs(gl, base.rejected_mask)


@pytest.mark.parametrize("space", ["policy", "ratio"])
def test_adadpo_balances_per_token_gradients(space):
    out, gm_w, gm_l = adadpo_prob_grads(space, seed=11, clip=2.0, spread=0.1)
    assert (out.metrics["log_rho"] <= math.log(2.0)).all()       # the clip is inactive in this batch
    torch.testing.assert_close(gm_w, gm_l, rtol=1e-4, atol=0)
    # DPO is not balanced on the same inputs: its ratio is exactly ρ, which differs from 1 here.
    assert (out.metrics["log_rho"].abs() > 0.05).any()


@pytest.mark.parametrize("space", ["policy", "ratio"])
def test_adadpo_clip_caps_beta_w_when_rho_exceeds_c(space):
    out, gm_w, gm_l = adadpo_prob_grads(space, seed=12, clip=1.5, spread=1.0, offset=0.0)
    rho = out.metrics["log_rho"].exp()
    clipped = rho > 1.5
    assert clipped.any() and (~clipped).any()
    torch.testing.assert_close(out.metrics["beta_w"][clipped], torch.full((int(clipped.sum()),), 0.1 * 1.5))
    torch.testing.assert_close(out.metrics["beta_w"][~clipped], 0.1 * rho[~clipped])
    # Where clipped, the chosen gradient is C/ρ of the rejected one instead of equal to it.
    torch.testing.assert_close((gm_w / gm_l)[clipped], 1.5 / rho[clipped], rtol=1e-4, atol=0)
    torch.testing.assert_close((gm_w / gm_l)[~clipped], torch.ones(int((~clipped).sum())), rtol=1e-4, atol=0)


def test_adadpo_coefficient_is_stop_gradient():
    """Gradient w.r.t. r_w is exactly −β_w·σ(−z): no term from differentiating ρ."""
    pair = random_pair(13)
    pw = pair.policy_chosen.clone().requires_grad_(True)
    pair = PairLogps(pw, pair.policy_rejected, pair.ref_chosen, pair.ref_rejected, pair.chosen_mask, pair.rejected_mask)
    out = get_objective("adadpo")(pair, beta=0.1)
    (grad,) = torch.autograd.grad(out.losses.sum(), pw)
    z = out.metrics["beta_w_r_w"] - 0.1 * (sums(pair)[1] - sums(pair)[3])
    expected = -(out.metrics["beta_w"] * torch.sigmoid(-z))[:, None] * pair.chosen_mask
    torch.testing.assert_close(grad, expected)

"""Metrics of the results table (definitions: docs/DESIGN.md section 4), in numpy.

Every interval is a 95% interval. Bootstrap intervals resample *prompts* (the unit the
eval set was drawn in) with `numpy.random.default_rng(seed)`, so the same inputs and seed
always give the same interval; the percentile method is used.

Several samples per prompt are accepted as 2-D arrays `[prompts, samples]`; a prompt's
samples are reduced to one per-prompt value before resampling, so prompts, not samples,
carry the uncertainty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
_BOOT_CHUNK = 250          # bootstrap replicates processed at once (bounds memory on big eval sets)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and the number of units it rests on."""

    value: float
    ci_low: float
    ci_high: float
    n: int


# --------------------------------------------------------------------------- helpers
def _per_prompt(x) -> np.ndarray:
    """A `[prompts, samples]` float matrix from a 1-D (one sample) or 2-D input."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D array of per-prompt values, got shape {arr.shape}")
    return arr


def _boot_counts(n: int, n_boot: int, rng: np.random.Generator):
    """Yield chunks of bootstrap resamples as multinomial counts `[chunk, n]` per prompt."""
    done = 0
    while done < n_boot:
        size = min(_BOOT_CHUNK, n_boot - done)
        idx = rng.integers(0, n, size=(size, n))
        counts = np.zeros((size, n))
        np.add.at(counts, (np.arange(size)[:, None], idx), 1.0)
        yield counts
        done += size


def _percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def mean_ci(values, *, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Mean of per-prompt values with a 95% percentile-bootstrap interval over prompts.

    A 2-D input `[prompts, samples]` is first averaged over the samples of each prompt.
    """
    per_prompt = _per_prompt(values).mean(axis=1)
    n = per_prompt.size
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    reps = np.concatenate([counts @ per_prompt / n for counts in _boot_counts(n, n_boot, rng)])
    low, high = _percentile_interval(reps)
    return Estimate(float(per_prompt.mean()), low, high, n)


# --------------------------------------------------------------------------- win rates
def prompt_wins(scores_policy, scores_other) -> np.ndarray:
    """Per-prompt win share: win 1, tie ½, loss 0, averaged over every pair of samples.

    With `[prompts, samples]` inputs each policy sample meets each sample of the other
    side on the same prompt (so a single chosen response can face n policy samples).
    """
    a, b = _per_prompt(scores_policy), _per_prompt(scores_other)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"win rate needs the same prompts on both sides: {a.shape[0]} vs {b.shape[0]} prompts")
    diff = a[:, :, None] - b[:, None, :]
    outcome = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    return outcome.mean(axis=(1, 2))


def win_rate(scores_policy, scores_other, *, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Win rate of the policy over the other side (reference or chosen), judged by scores.

    The interval is a paired bootstrap over prompts: a resampled prompt brings both its
    responses, since the per-prompt outcome is computed before resampling.
    """
    return mean_ci(prompt_wins(scores_policy, scores_other), n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------- length-controlled
def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))   # overflow-free logistic


def _pair_observations(reward_policy, reward_other, len_policy, len_other):
    """Flatten every (policy sample, other sample) pair of every prompt into observations.

    Returns soft labels p, length differences d, the prompt of each observation and a
    per-observation weight 1/(pairs on its prompt), so each prompt weighs the same.
    """
    ra, rb = _per_prompt(reward_policy), _per_prompt(reward_other)
    la, lb = _per_prompt(len_policy), _per_prompt(len_other)
    if ra.shape != la.shape or rb.shape != lb.shape or ra.shape[0] != rb.shape[0]:
        raise ValueError(f"rewards and lengths must align per prompt: {ra.shape}/{la.shape} vs {rb.shape}/{lb.shape}")
    n, sa, sb = ra.shape[0], ra.shape[1], rb.shape[1]
    p = _sigmoid(ra[:, :, None] - rb[:, None, :]).reshape(n, -1)
    d = (la[:, :, None] - lb[:, None, :]).reshape(n, -1)
    prompt = np.repeat(np.arange(n), sa * sb)
    weight = np.full(n * sa * sb, 1.0 / (sa * sb))
    return p.ravel(), d.ravel(), prompt, weight


def _standardised(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`d / std(d)` row-wise with weights (not centred: the sign of a length gap matters).

    When every length difference is equal (std 0, e.g. all lengths equal) z is 0: the
    length term vanishes and LC reduces to the weighted mean soft label.
    """
    total = w.sum(axis=-1, keepdims=True)
    mean = (w * d).sum(axis=-1, keepdims=True) / total
    std = np.sqrt((w * (d - mean) ** 2).sum(axis=-1, keepdims=True) / total)
    safe = np.where(std > 1e-12, std, 1.0)
    return np.where(std > 1e-12, d / safe, 0.0)


def _fit_lc(p: np.ndarray, d: np.ndarray, w: np.ndarray, iters: int = 50) -> np.ndarray:
    """θ_m of :func:`_fit_lc_params` per row."""
    return _fit_lc_params(p, d, w, iters)[:, 1]


def _fit_lc_params(p: np.ndarray, d: np.ndarray, w: np.ndarray, iters: int = 50) -> np.ndarray:
    """Fit `logit q = θ_len·tanh(z) + θ_m` to soft labels p by weighted Newton steps.

    Rows of `w` are independent fits (the bootstrap replicates); returns (θ_len, θ_m) per row. The
    soft-label cross-entropy is convex; a tiny ridge keeps the Hessian invertible when z
    is all zero, and the step is capped so early iterations cannot overshoot.
    """
    w = np.atleast_2d(w)
    x_len = np.tanh(_standardised(np.broadcast_to(d, w.shape), w))
    theta = np.zeros((w.shape[0], 2))
    for _ in range(iters):
        q = _sigmoid(theta[:, :1] * x_len + theta[:, 1:])
        r, h = w * (q - p), w * q * (1 - q)
        grad = np.stack([(r * x_len).sum(-1), r.sum(-1)], axis=-1)
        hxx, hxm, hmm = (h * x_len**2).sum(-1) + 1e-9, (h * x_len).sum(-1), h.sum(-1) + 1e-9
        det = hxx * hmm - hxm**2
        step = np.stack([(hmm * grad[:, 0] - hxm * grad[:, 1]) / det,
                         (hxx * grad[:, 1] - hxm * grad[:, 0]) / det], axis=-1)
        step *= np.minimum(1.0, 4.0 / np.maximum(np.abs(step).max(-1, keepdims=True), 1e-12))
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta


def length_controlled_win_rate(reward_policy, reward_other, len_policy, len_other, *,
                               n_boot: int = 1000, seed: int = 0) -> Estimate:
    """AlpacaEval's length-controlled win rate without its fixed prompt set.

    Dubois et al. 2024, "Length-Controlled AlpacaEval" (arXiv:2404.04475): fit
    `logit p_i = θ_len·tanh(z_i) + θ_m` with soft label `p_i = σ(R_policy − R_other)` and
    `z_i` the token-length difference divided by the std of the differences; LC = σ(θ_m),
    the predicted win rate at equal length. The interval refits on each bootstrap
    resample of prompts (weights = how often a prompt was drawn). Degenerate case: when all
    length differences are equal (std 0), z = 0 and LC is the mean soft label.
    """
    return _lc_estimate(*_pair_observations(reward_policy, reward_other, len_policy, len_other),
                        n_boot=n_boot, seed=seed)


def _label_observations(labels, len_policy, len_other):
    """Observations of :func:`_pair_observations` from given soft labels `[prompts, samples]`
    (a judge's outcome of policy sample j against the other side's sample j), with their lengths."""
    p = _per_prompt(labels)
    la, lb = _per_prompt(len_policy), _per_prompt(len_other)
    if p.shape != la.shape or p.shape != lb.shape:
        raise ValueError(f"labels and lengths must align: {p.shape}, {la.shape}, {lb.shape}")
    n, s = p.shape
    return p.ravel(), (la - lb).ravel(), np.repeat(np.arange(n), s), np.full(n * s, 1.0 / s)


def length_controlled_from_labels(labels, len_policy, len_other, *, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """The length-controlled win rate of :func:`length_controlled_win_rate` with the soft labels
    given (an LLM judge's outcomes: 1 win, ½ tie, 0 loss) instead of σ of a reward difference."""
    return _lc_estimate(*_label_observations(labels, len_policy, len_other), n_boot=n_boot, seed=seed)


def _lc_estimate(p, d, prompt, weight, *, n_boot: int, seed: int) -> Estimate:
    n = int(prompt.max()) + 1 if prompt.size else 0
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(_sigmoid(_fit_lc(p, d, weight)[0]))
    rng = np.random.default_rng(seed)
    reps = np.concatenate([_sigmoid(_fit_lc(p, d, counts[:, prompt] * weight))
                           for counts in _boot_counts(n, n_boot, rng)])
    low, high = _percentile_interval(reps)
    return Estimate(value, low, high, n)


LC_TERMS = ("score_len", "score_m", "hess_ll", "hess_lm", "hess_mm")


def lc_influence(reward_policy, reward_other, len_policy, len_other) -> tuple[float, np.ndarray]:
    """θ_m of the length-controlled fit and each prompt's terms of its score and Hessian at
    the fit, `[prompts, 5]` in the order of :data:`LC_TERMS`.

    They make the fit resamplable across seeds and prompts without refitting
    (:func:`lc_one_step`): one Newton step from the full-data fit with a resample's prompt
    counts (the one-step bootstrap; its error is O(1/n), below the O(1/√n) it resamples).
    The length standardisation is held at the full data's.
    """
    return _lc_terms(*_pair_observations(reward_policy, reward_other, len_policy, len_other))


def lc_influence_from_labels(labels, len_policy, len_other) -> tuple[float, np.ndarray]:
    """:func:`lc_influence` with given soft labels (:func:`length_controlled_from_labels`)."""
    return _lc_terms(*_label_observations(labels, len_policy, len_other))


def _lc_terms(p, d, prompt, weight) -> tuple[float, np.ndarray]:
    n = int(prompt.max()) + 1 if prompt.size else 0
    if n == 0:
        return math.nan, np.zeros((0, len(LC_TERMS)))
    x_len = np.tanh(_standardised(d[None, :], weight[None, :]))[0]
    theta = _fit_lc_params(p, d, weight)
    q = _sigmoid(theta[0, 0] * x_len + theta[0, 1])
    r, hw = weight * (q - p), weight * q * (1 - q)
    terms = np.stack([r * x_len, r, hw * x_len**2, hw * x_len, hw], axis=1)
    per_prompt = np.zeros((n, len(LC_TERMS)))
    np.add.at(per_prompt, prompt, terms)
    return float(theta[0, 1]), per_prompt


def lc_one_step(theta_m: float, terms: np.ndarray, unit_counts: np.ndarray) -> np.ndarray:
    """LC win rates `[B]` of resampled prompts: σ of θ_m after one Newton step with the
    resample's counts `[B, prompts]` weighting each prompt's terms `[prompts, 5]`."""
    tot = unit_counts @ terms                         # [B, 5]: score and Hessian of the resample
    g_len, g_m, h_ll, h_lm, h_mm = (tot[:, i] for i in range(5))
    h_ll, h_mm = h_ll + 1e-9, h_mm + 1e-9              # the fit's own ridge
    det = h_ll * h_mm - h_lm**2
    step_m = (h_ll * g_m - h_lm * g_len) / np.where(np.abs(det) > 1e-300, det, 1e-300)
    return _sigmoid(theta_m - step_m)


# --------------------------------------------------------------------------- length, KL, seeds
def length_stats(token_counts, char_counts, ref_token_counts=None) -> dict[str, float]:
    """Mean and median response tokens, mean characters, and mean tokens over the
    reference's mean tokens (`length_ratio_to_reference`, only when reference counts are given)."""
    tokens = np.asarray(token_counts, dtype=float).ravel()
    chars = np.asarray(char_counts, dtype=float).ravel()
    out = {"mean_tokens": float(tokens.mean()), "median_tokens": float(np.median(tokens)),
           "mean_chars": float(chars.mean())}
    if ref_token_counts is not None:
        ref_mean = float(np.asarray(ref_token_counts, dtype=float).mean())
        out["length_ratio_to_reference"] = out["mean_tokens"] / ref_mean if ref_mean > 0 else math.nan
    return out


def kl_estimate(policy_logps_sum, ref_logps_sum) -> Estimate:
    """Monte-Carlo KL(π‖π_ref) ≈ mean over the policy's own samples y ~ π(·|x) of
    log π(y|x) − log π_ref(y|x) (sequence log-probs), with a 95% normal interval
    (mean ± 1.96·s/√n; NaN bounds for a single sample). Unbiased, though a single
    sample's term can be negative."""
    diff = np.asarray(policy_logps_sum, dtype=float).ravel() - np.asarray(ref_logps_sum, dtype=float).ravel()
    n = diff.size
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(diff.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n)
    half = 1.959963984540054 * float(diff.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def seed_aggregate(values) -> Estimate:
    """Mean across seeds with a Student-t 95% interval `mean ± t_{0.975,n−1}·s/√n`.

    With one seed there is no spread to estimate: the bounds are NaN (shown as "no
    interval", never as a falsely exact one).
    """
    arr = np.asarray(list(values), dtype=float)
    n = int(arr.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(arr.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n)
    # imported only here: ~1 s, which a one-seed suite (CI's) never needs
    from scipy import stats   # scipy ships with lm-eval (through scikit-learn)

    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(arr.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)

"""Core types of the objective library: inputs, outputs, hyperparameter specs, the registry.

Every objective is a pure function of per-token log-probs (see docs/OBJECTIVES.md).
An `Objective` wraps that function with metadata (hyperparameters, reference need, paper) and
validates hyperparameters before the function sees them, so a misspelt suite fails at once
with one line naming the objective, the parameter, the value and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainers.errors import UserError, nearest


class ObjectiveError(UserError, ValueError):
    """A bad objective name, hyperparameter or input; `param`/`value` name the culprit."""

    def __init__(self, message: str, *, objective: str | None = None, param: str | None = None,
                 value: Any = None):
        self.objective, self.param, self.value = objective, param, value
        super().__init__(message)


def closest(name: str, options: list[str]) -> str:
    """' (did you mean 'x'?)' for the nearest option, or '' when nothing is close."""
    match = nearest(name, options, cutoff=0.5)
    return f" (did you mean {match!r}?)" if match else ""


# ---------------------------------------------------------------- inputs and outputs
@dataclass
class PairLogps:
    """Per-token log-probs of a batch of preference pairs, response axis only.

    Each tensor is [B, T]; chosen and rejected may have different T. `ref_*` are None for
    reference-free objectives; `policy_rejected`/`rejected_mask` are None for SFT batches
    (chosen demonstrations only). Masks are 1 on response tokens and 0 on padding; padded
    log-prob entries may hold anything (NaN, inf), objectives never read them.
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor | None
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    chosen_mask: torch.Tensor | None = None
    rejected_mask: torch.Tensor | None = None

    def __post_init__(self):
        if self.chosen_mask is None:
            raise ObjectiveError("PairLogps: chosen_mask is required")
        if self.policy_rejected is not None and self.rejected_mask is None:
            raise ObjectiveError("PairLogps: rejected_mask is required when policy_rejected is given")
        self._check("chosen", self.policy_chosen, self.ref_chosen, self.chosen_mask)
        if self.policy_rejected is not None:
            self._check("rejected", self.policy_rejected, self.ref_rejected, self.rejected_mask)

    @staticmethod
    def _check(side: str, policy: torch.Tensor, ref: torch.Tensor | None, mask: torch.Tensor) -> None:
        if policy.dim() != 2:
            raise ObjectiveError(f"PairLogps: policy_{side} must be [B, T], got shape {tuple(policy.shape)}")
        for what, tensor in ((f"{side}_mask", mask), (f"ref_{side}", ref)):
            if tensor is not None and tensor.shape != policy.shape:
                raise ObjectiveError(f"PairLogps: {what} has shape {tuple(tensor.shape)}, "
                                     f"policy_{side} has {tuple(policy.shape)}")

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen is not None and (self.policy_rejected is None or self.ref_rejected is not None)

    @property
    def has_rejected(self) -> bool:
        return self.policy_rejected is not None


@dataclass
class ObjectiveOutput:
    """`losses`: [B] float32 per-pair losses; `metrics`: the objective's own [B] or scalar tensors."""

    losses: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


# ---------------------------------------------------------------- masked float32 reductions
def masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float32 copy of `values` with padded positions set to exactly 0.

    `torch.where`, not `values * mask`: 0 · NaN is NaN and 0 · inf is NaN, so a product would
    let garbage in padded positions leak into sums (and into gradients).
    """
    return torch.where(mask.bool(), values.float(), torch.zeros((), dtype=torch.float32, device=values.device))


def lengths(mask: torch.Tensor) -> torch.Tensor:
    """Token lengths |y| = Σ mask as float32 [B]."""
    return mask.bool().sum(-1).float()


def seq_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t mask·values in float32, [B]."""
    return masked(values, mask).sum(-1)


def seq_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token mean Σ_t mask·values / |y|; an empty response counts as length 1 (its sum is 0)."""
    return seq_sum(values, mask) / lengths(mask).clamp(min=1.0)


def token_logratios(pair: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked float32 per-token log-ratios h = logp_θ − logp_ref for chosen and rejected."""
    h_w = masked(pair.policy_chosen, pair.chosen_mask) - masked(pair.ref_chosen, pair.chosen_mask)
    h_l = masked(pair.policy_rejected, pair.rejected_mask) - masked(pair.ref_rejected, pair.rejected_mask)
    return h_w, h_l


def seq_logratios(pair: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-ratios (r_w, r_l), float32 [B] each."""
    h_w, h_l = token_logratios(pair)
    return h_w.sum(-1), h_l.sum(-1)


# ---------------------------------------------------------------- hyperparameters
@dataclass(frozen=True)
class HyperParameter:
    """One hyperparameter: type ('float' | 'int' | 'bool' | 'choice'), default, allowed range."""

    name: str
    default: Any
    type: str
    description: str
    low: float | None = None           # bounds of a numeric range
    high: float | None = None
    low_open: bool = False             # True: the bound itself is not allowed
    high_open: bool = False
    choices: tuple = ()

    @property
    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.type == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type == "bool":
            return "true or false"
        kind = "a positive integer" if self.type == "int" and self.low == 1 else f"a {self.type}"
        if self.type == "int" and self.low == 1 and self.high is None:
            return kind
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open or self.high is None else "]"
        return f"{kind} in {lo}{_num(self.low, '-inf')}, {_num(self.high, 'inf')}{hi}"

    def check(self, objective: str, value: Any) -> Any:
        """The value, coerced to its type (int → float for floats); ObjectiveError otherwise."""
        coerced = self._coerce(value)
        if coerced is None or not self._in_range(coerced):
            raise ObjectiveError(f"objective {objective!r}: parameter {self.name!r} = {value!r} is not allowed; "
                                 f"expected {self.allowed}", objective=objective, param=self.name, value=value)
        return coerced

    def _coerce(self, value: Any) -> Any:
        # bool is a subclass of int in Python; a flag is never a count or a temperature.
        if self.type == "bool":
            return value if isinstance(value, bool) else None
        if isinstance(value, bool):
            return None
        if self.type == "int":
            return value if isinstance(value, int) else None
        if self.type == "float":
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            return float(value) if ok else None
        return value if value in self.choices else None

    def _in_range(self, value: Any) -> bool:
        if self.type not in ("int", "float"):
            return True
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> dict:
        out = {"default": self.default, "type": self.type, "allowed": self.allowed, "description": self.description}
        if self.choices:
            out["choices"] = list(self.choices)
        return out


def _num(x: float | None, missing: str) -> str:
    return missing if x is None else f"{x:g}"


def beta_param(default: float, description: str = "temperature β (> 0)") -> HyperParameter:
    """The temperature shared by every pairwise objective: β > 0."""
    return HyperParameter("beta", default, "float", description, low=0.0, low_open=True)


# ---------------------------------------------------------------- objectives and the registry
LossFn = Callable[..., ObjectiveOutput]


@dataclass(frozen=True)
class Objective:
    """A registered objective: a pure loss function plus what a suite or CLI needs to know."""

    name: str
    fn: LossFn
    hyperparameters: tuple[HyperParameter, ...]
    needs_reference: bool
    paper: str
    pairwise: bool = True              # False: reads the chosen response only (nll)

    def validate(self, **hp: Any) -> dict:
        """Hyperparameters resolved with defaults; ObjectiveError on any unknown or bad value."""
        specs = {p.name: p for p in self.hyperparameters}
        for key in hp:
            if key not in specs:
                valid = ", ".join(specs) or "none"
                raise ObjectiveError(f"objective {self.name!r}: unknown parameter {key!r} = {hp[key]!r}"
                                     f"{closest(key, list(specs))}; valid parameters: {valid}",
                                     objective=self.name, param=key, value=hp[key])
        return {name: spec.check(self.name, hp.get(name, spec.default)) for name, spec in specs.items()}

    def __call__(self, pair: PairLogps, **hp: Any) -> ObjectiveOutput:
        """The loss with `hp` validated first (defaults filled): for a direct call."""
        return self.compute(pair, self.validate(**hp))

    def compute(self, pair: PairLogps, resolved: dict) -> ObjectiveOutput:
        """The loss with hyperparameters that `validate` already returned (not checked again:
        a composite validates its terms once, when it is built, not at every step)."""
        self.check_inputs(pair)
        out = self.fn(pair, **resolved)
        return ObjectiveOutput(out.losses.float(), out.metrics)

    def check_inputs(self, pair: PairLogps) -> None:
        """A clear error when the batch lacks what this objective reads."""
        if self.pairwise and not pair.has_rejected:
            raise ObjectiveError(f"objective {self.name!r} compares pairs but the batch has no rejected "
                                 f"responses (policy_rejected is None)", objective=self.name)
        if self.needs_reference and not pair.has_reference:
            raise ObjectiveError(f"objective {self.name!r} needs reference log-probs but ref_chosen/ref_rejected "
                                 f"are None", objective=self.name)

    def describe(self) -> dict:
        return {"name": self.name, "needs_reference": self.needs_reference, "paper": self.paper,
                "summary": (self.fn.__doc__ or "").strip().splitlines()[0],
                "hyperparameters": {p.name: p.describe() for p in self.hyperparameters}}


_REGISTRY: dict[str, Objective] = {}


def register(name: str, *, hyperparameters: tuple[HyperParameter, ...] = (), needs_reference: bool,
             paper: str, pairwise: bool = True) -> Callable[[LossFn], LossFn]:
    """Decorator registering a loss function as objective `name`; returns the function unchanged."""
    def wrap(fn: LossFn) -> LossFn:
        if name in _REGISTRY:
            raise RuntimeError(f"objective {name!r} is registered twice")
        _REGISTRY[name] = Objective(name, fn, tuple(hyperparameters), needs_reference, paper, pairwise)
        return fn
    return wrap


def get_objective(name: str) -> Objective:
    """The registered objective called `name`; ObjectiveError naming the closest valid one."""
    if name not in _REGISTRY:
        raise ObjectiveError(f"unknown objective {name!r}{closest(name, list(_REGISTRY))}; "
                             f"valid objectives: {', '.join(sorted(_REGISTRY))}", objective=name,
                             param="name", value=name)
    return _REGISTRY[name]


def list_objectives() -> list[str]:
    """Names of every registered objective, in registration order."""
    return list(_REGISTRY)


def describe_objectives() -> list[dict]:
    """JSON-able description of every objective (for `bench.py objectives [--json]`)."""
    return [obj.describe() for obj in _REGISTRY.values()]

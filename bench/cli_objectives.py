"""``prefbench objectives`` as text: every objective, its hyperparameters with YAML defaults,
and how a suite names and combines them, in lines of at most 100 characters."""
from __future__ import annotations

import textwrap

WIDTH = 100

USAGE = """\
In a suite (values as YAML):
  objectives:
    - name: adpo                         # its label: adpo[beta=0.1,granularity=adaptive,m=4]
      params: {beta: 0.1, granularity: adaptive, m: 4}
    - name: dpo
      label: control-lr0                 # a label of your own; a training: block may follow
    - label: rpo                         # a weighted sum of objectives
      terms:
        - {name: dpo, weight: 1.0}
        - {name: nll, weight: 0.2}
Labels are name[param=value,...] with the params sorted; run --only LABEL runs one."""


def yaml_value(value) -> str:
    """A default as a suite writes it: true/false, null, a bare word or a number."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def objectives_text(described: list[dict]) -> str:
    lines = []
    for obj in described:
        ref = "needs the reference" if obj["needs_reference"] else "reference-free"
        lines.append(f"{obj['name']} ({ref})")
        lines += textwrap.wrap(obj.get("paper", ""), WIDTH, initial_indent="  ", subsequent_indent="  ")
        params = obj.get("hyperparameters") or {}
        if not params:
            lines.append("  no hyperparameters")
        for name, hp in params.items():
            head = f"  {name}: {yaml_value(hp['default'])}"
            allowed = hp.get("allowed", "").replace("'", "")   # one of static, adaptive: YAML words
            words = "; ".join(w for w in (allowed, hp.get("description", "")) if w)
            lines += textwrap.wrap(words, WIDTH, initial_indent=f"{head:<26}", subsequent_indent=" " * 26)
        lines.append("")
    return "\n".join(lines + [USAGE])

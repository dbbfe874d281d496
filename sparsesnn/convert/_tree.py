"""Walk a model, replace modules by rule, and report every module that cannot be mapped at once.

Conversion never guesses (DESIGN.md): a rule either returns a replacement, says "recurse into
my children" (containers whose own forward stays the user's code), says "keep as is" (a module
that already computes the same on sparsesnn tensors), or names why it cannot be converted.
All refusals are collected so the user sees the whole list in one error, not one per attempt.
"""
from __future__ import annotations

import copy
from typing import Callable, Union

from torch import nn

__all__ = ["UnconvertibleError", "KEEP", "RECURSE", "Refuse", "Wrap", "convert_tree"]


class UnconvertibleError(ValueError):
    """Raised with every module that could not be converted, as ``(path, type, reason)``."""

    def __init__(self, source: str, items: list[tuple[str, str, str]],
                 target: str = "sparsesnn", what: str = "module") -> None:
        self.items = items
        lines = "\n".join(f"  {p or '<root>'} ({t}): {r}" for p, t, r in items)
        arg = "graph" if what == "node" else "model"
        super().__init__(f"{arg}: {len(items)} {what}(s) of the {source} {arg} cannot be "
                         f"converted to {target}:\n{lines}")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


KEEP = _Marker("KEEP")
RECURSE = _Marker("RECURSE")


class Refuse:
    """A rule's answer for a module it cannot map; ``reason`` says what is unsupported."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Wrap:
    """A rule's answer: install ``module`` in place of the original, then convert its children
    (a container replaced by a sparsesnn container holding the same children)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


Rule = Callable[[nn.Module, str], Union[nn.Module, _Marker, Refuse, Wrap]]


def convert_tree(model: nn.Module, rule: Rule, source: str, inplace: bool) -> nn.Module:
    """Apply ``rule`` to ``model`` and, recursively, to the children it answers RECURSE for.

    Nothing is modified unless every module converts: the replacements are computed first and
    only then installed, so a failed conversion leaves an ``inplace`` model untouched.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    out = model if inplace else copy.deepcopy(model)
    refused: list[tuple[str, str, str]] = []
    pending: list[tuple[nn.Module, str, nn.Module]] = []  # (parent, child name, replacement)
    root_replacement: list[nn.Module] = []

    def visit(mod: nn.Module, path: str, parent: nn.Module | None, name: str) -> None:
        answer = rule(mod, path)
        if isinstance(answer, Refuse):
            refused.append((path, f"{type(mod).__module__}.{type(mod).__qualname__}", answer.reason))
        elif answer is RECURSE:
            for child_name, child in mod.named_children():
                visit(child, f"{path}.{child_name}" if path else child_name, mod, child_name)
        elif answer is not KEEP:
            new = answer.module if isinstance(answer, Wrap) else answer
            if parent is None:
                root_replacement.append(new)
            else:
                pending.append((parent, name, new))
            if isinstance(answer, Wrap):
                for child_name, child in new.named_children():
                    visit(child, f"{path}.{child_name}" if path else child_name, new, child_name)

    visit(out, "", None, "")
    if refused:
        raise UnconvertibleError(source, refused)
    for parent, name, new in pending:
        setattr(parent, name, new)
    return root_replacement[0] if root_replacement else out

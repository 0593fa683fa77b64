"""``einsum`` as numpy and torch spell it, composed from differentiable ops: repeated labels in one
operand take a diagonal, labels nobody else needs are summed at once, and each pair of operands is one
batched matmul (shared labels still needed later are the batch, shared labels not needed are
contracted). Gradients (of any order) and capture come with the ops it is made of.

>>> from axonml_autograd import Tensor, Variable, einsum
>>> a = Variable(Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [2, 2]))
>>> einsum("ij,jk->ik", a, a).to_vec(), einsum("ii", a).item()
([7.0, 10.0, 15.0, 22.0], 5.0)
"""

from __future__ import annotations

import math
import string

from .. import amp


def _parse(equation: str, operands):
    eq = equation.replace(" ", "")
    if "->" in eq:
        lhs, out = eq.split("->")
        explicit = True
    else:
        lhs, out, explicit = eq, None, False
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: {equation!r} names {len(terms)} operands, got {len(operands)}")
    # An ellipsis stands for the leading dims each operand has beyond its labels (upper-case labels).
    spare = [c for c in string.ascii_uppercase if c not in eq]
    ell_n = 0
    for t, x in zip(terms, operands):
        if "..." in t:
            ell_n = max(ell_n, x.ndim() - (len(t) - 3))
    ell = "".join(spare[:ell_n])
    labels = []
    for k, (t, x) in enumerate(zip(terms, operands)):
        if "..." in t:
            n = x.ndim() - (len(t) - 3)
            t = t.replace("...", ell[ell_n - n:] if n else "")
        if not all(c.isalpha() for c in t) or len(t) != x.ndim():
            raise ValueError(f"einsum: operand {k} has shape {x.shape()} but its term is {terms[k]!r}")
        labels.append(t)
    if explicit:
        out = out.replace("...", ell)
        if not all(c.isalpha() for c in out) or len(set(out)) != len(out):
            raise ValueError(f"einsum: output {out!r} must name each label once")
        for c in out:
            if not any(c in t for t in labels):
                raise ValueError(f"einsum: output label {c!r} is in no operand")
    else:   # numpy's implicit output: the ellipsis, then labels seen once, in alphabetical order
        counts = {}
        for t in labels:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return labels, out


def _sizes(labels, operands):
    size = {}
    for t, x in zip(labels, operands):
        for c, n in zip(t, x.shape()):
            if size.get(c, 1) not in (1, n) and n != 1:
                raise ValueError(f"einsum: label {c!r} has sizes {size[c]} and {n}")
            size[c] = max(size.get(c, 1), n)
    return size


def _reduce_alone(x, t, keep):
    """Diagonals for repeated labels in ``t``, then sums over labels not in ``keep``."""
    while len(set(t)) != len(t):
        c = next(c for c in t if t.count(c) > 1)
        i = t.index(c)
        j = t.index(c, i + 1)
        x = x.diagonal(0, i, j)               # the diagonal axis goes last
        t = t[:i] + t[i + 1:j] + t[j + 1:] + c
    drop = [k for k, c in enumerate(t) if c not in keep]
    if drop:
        x = x.sum(tuple(drop))
        t = "".join(c for c in t if c in keep)
    return x, t


def _expand_to(x, t, size):
    want = [size[c] for c in t]
    return x if x.shape() == want else x.expand(want)


def _pair(a, ta, b, tb, needed, size):
    """a (labels ta) times b (labels tb), keeping the labels in ``needed``: one batched matmul."""
    batch = [c for c in ta if c in tb and c in needed]
    contract = [c for c in ta if c in tb and c not in needed]
    a_only = [c for c in ta if c not in tb]
    b_only = [c for c in tb if c not in ta]
    a = _expand_to(a, ta, size).permute(*[ta.index(c) for c in batch + a_only + contract])
    b = _expand_to(b, tb, size).permute(*[tb.index(c) for c in batch + contract + b_only])
    nb, m, k, n = (math.prod(size[c] for c in group) for group in (batch, a_only, contract, b_only))
    out = a.reshape(nb, m, k) @ b.reshape(nb, k, n)
    labels = "".join(batch + a_only + b_only)
    return out.reshape(*[size[c] for c in labels]) if labels else out.reshape([]), labels


@amp.op("einsum")
def einsum(equation, *operands):
    """``einsum(equation, *operands)`` (torch's order; a list of operands works too)."""
    from ..variable import Variable
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str) or not operands:
        raise TypeError("einsum: expected an equation string and at least one operand")
    xs = [x if isinstance(x, Variable) else Variable(x) for x in operands]
    labels, out = _parse(equation, xs)
    size = _sizes(labels, xs)
    # Sum away what only one operand has and the output does not want, then contract left to right.
    items = []
    for k, (x, t) in enumerate(zip(xs, labels)):
        others = "".join(labels[:k] + labels[k + 1:]) + out
        items.append(_reduce_alone(x, t, others))
    x, t = items[0]
    for k in range(1, len(items)):
        b, tb = items[k]
        needed = "".join(l for _, l in items[k + 1:]) + out
        x, t = _pair(x, t, b, tb, needed, size)
    x, t = _reduce_alone(x, t, out)
    x = _expand_to(x, t, size) if t else x
    return x.permute(*[t.index(c) for c in out]) if len(out) > 1 else x

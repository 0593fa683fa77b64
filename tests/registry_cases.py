"""How the generated tests call a registry row and choose its inputs (shared by test_registry.py and
test_properties.py)."""

import numpy as np

from axonml_autograd.functions import pointwise as F

SCALARS = {"clamp": {"min": -0.5, "max": 0.7}, "leaky_relu": {"negative_slope": 0.2}, "softplus": {"beta": 2.0},
           "elu": {"alpha": 0.7}, "smooth_l1": {"beta": 0.8}}
def scalars_of(spec) -> dict:
    """argument name -> value (for calls) of the row's scalars."""
    given = SCALARS.get(spec.name, {})
    return {n: given.get(n, d) for n, d, _k in spec.scalars}


def kernel_scalars(spec) -> dict:
    values = scalars_of(spec)
    return {k: values[n] for n, _d, k in spec.scalars}


def sample(spec, shape, seed, dtype="float64"):
    """Values in the row's domain, 0.2 away from its kinks and poles."""
    lo, hi = spec.domain
    x = np.random.default_rng(seed).uniform(lo, hi, size=shape)
    for p in spec.away_from + ((0.0,) if spec.name in ("div", "fmod", "remainder", "floordiv") else ()):
        near = np.abs(x - p) < 0.2
        x[near] = p + np.where(x[near] >= p, 0.2, -0.2) + 0.05
    return x.astype(dtype)


def operands_for(spec, shapes, seed, dtype="float64"):
    """Inputs for one call; fmod and remainder jump where a / b is whole, so there a / b stays near k + 1/2."""
    arrays = [sample(spec, s, seed=seed + j, dtype=dtype) for j, s in enumerate(shapes)]
    if spec.name in ("fmod", "remainder"):
        a, b = arrays
        b[...] = np.where(np.arange(b.size).reshape(b.shape) % 2, 1.7, -1.3) if b.size else b
        whole = np.random.default_rng(seed).integers(-3, 3, size=a.shape)
        a[...] = np.broadcast_to(b.flat[0], a.shape) * (whole + 0.5) + np.random.default_rng(seed).uniform(-0.1, 0.1, a.shape)
        b[...] = b.flat[0] if b.size else b
    return arrays


def call(spec, *operands):
    """The row on Variables (or Tensors) through its public entry."""
    if spec.kind == "loss":
        if spec.arity == 1:
            return F.unary(spec.name, *operands, **kernel_scalars(spec))
        return F.binary(spec.name, *operands)
    if spec.name == "clamp":
        return operands[0].clamp(**scalars_of(spec))
    if spec.name == "gelu_tanh":
        return operands[0].gelu("tanh")
    if spec.name in ("add", "sub", "mul", "div", "pow", "floordiv", "neg"):
        a = operands[0]
        return {"add": lambda: a + operands[1], "sub": lambda: a - operands[1], "mul": lambda: a * operands[1],
                "div": lambda: a / operands[1], "pow": lambda: a ** operands[1], "neg": lambda: -a,
                "floordiv": lambda: a // operands[1]}[spec.name]()
    return getattr(operands[0], spec.name)(*operands[1:], **scalars_of(spec))


def reference(spec, *arrays):
    values = list(scalars_of(spec).values())
    return spec.reference(*arrays, *values)

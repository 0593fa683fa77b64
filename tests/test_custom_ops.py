"""Custom ops: the public elementwise kernel, Function (forward/backward pairs) and Kernel (whole OpenCL C
kernels). Values against numpy in float64, gradients against finite differences."""

import numpy as np
import pytest

from axonml_autograd import (Function, Kernel, KernelBuildError, Tensor, Variable, capture, elementwise)
from axonml_autograd.backward import check_gradients

RNG = np.random.default_rng(11)
SHAPES = [(1,), (3,), (17,), (65, 3), (129, 17)]


def var(shape, grad=True):
    return Variable(Tensor.from_numpy(RNG.standard_normal(shape)), requires_grad=grad)


# -- elementwise -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_broadcasts_named_inputs_and_scalars_like_numpy(shape):
    x, b = RNG.standard_normal(shape), RNG.standard_normal(shape[-1:])
    got = elementwise("x * sin(bias) + s * a", Tensor.from_numpy(x), x=Tensor.from_numpy(x),
                      bias=Tensor.from_numpy(b), s=0.25)
    np.testing.assert_allclose(got.numpy(), x * np.sin(b) + 0.25 * x, rtol=1e-13)


def test_elementwise_returns_a_variable_without_gradient_for_variable_inputs_and_honours_dtype():
    v = var((3,))
    out = elementwise("a > L(0.0)", v, dtype="bool")
    assert isinstance(out, Variable) and not out.requires_grad()
    assert out.numpy().tolist() == (v.numpy() > 0).tolist()


@pytest.mark.parametrize("call,exc,match", [
    (lambda: elementwise("a +", Tensor.zeros([2])), KernelBuildError, r"the expression 'a \+' does not compile"),
    (lambda: elementwise("n * 2", n=Tensor.zeros([2])), ValueError, r"'n' cannot name an input"),
    (lambda: elementwise("a", 3.0), TypeError, r"positional input 0 must be a Tensor"),
    (lambda: elementwise("s", s=1.0), ValueError, r"at least one Tensor"),
    (lambda: elementwise("a + b", Tensor.zeros([2]), Tensor.zeros([3])), ValueError, r"\[3\] cannot be broadcast"),
])
def test_elementwise_bad_input_is_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- Function ----------------------------------------------------------------------------------------------

class BiasGelu(Function):
    """gelu(x + bias) (erf form) with bias broadcast over rows: one kernel each way for x."""

    @staticmethod
    def forward(ctx, x, bias):
        ctx.save_for_backward(x, bias)
        return elementwise("L(0.5) * (x + b) * erfc(-(x + b) * L(0.7071067811865476))", x=x, b=bias)

    @staticmethod
    def backward(ctx, g):
        x, bias = ctx.saved_tensors
        gx = elementwise("g * (L(0.5) * erfc(-(x + b) * L(0.7071067811865476)) + "
                         "(x + b) * L(0.3989422804014327) * exp(L(-0.5) * (x + b) * (x + b)))", g=g, x=x, b=bias)
        gb = gx.sum(0) if ctx.needs_input_grad[1] else None
        return gx, gb


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (65, 3), (17, 129)])
def test_a_function_matches_its_composed_twin_and_finite_differences(shape):
    x, b = var(shape), var(shape[-1:])
    y = BiasGelu.apply(x, b)
    np.testing.assert_allclose(y.numpy(), (x + b).gelu().numpy(), rtol=1e-13, atol=1e-15)
    check_gradients(lambda x, b: BiasGelu.apply(x, b).pow(2.0).sum(), [x, b])


def test_needs_input_grad_and_constant_arguments():
    seen = {}

    class Scale(Function):
        @staticmethod
        def forward(ctx, x, factor, table):
            seen["needs"] = ctx.needs_input_grad
            ctx.factor = factor
            return x * factor + table

        @staticmethod
        def backward(ctx, g):
            return g * ctx.factor, None, None

    x = var((4,))
    table = Tensor.from_numpy(RNG.standard_normal(4))
    y = Scale.apply(x, 3.0, table)
    assert seen["needs"] == (True, False, False)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad().numpy(), np.full(4, 3.0))


def test_several_outputs_each_get_their_gradient_and_non_differentiable_ones_none():
    class SinCosArg(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            idx = x.data().argmax(0)
            ctx.mark_non_differentiable(idx)
            return elementwise("sin(a)", x), elementwise("cos(a)", x), idx

        @staticmethod
        def backward(ctx, gs, gc, gi):
            assert gi is None
            (x,) = ctx.saved_tensors
            return elementwise("gs * cos(x) - gc * sin(x)", gs=gs, gc=gc, x=x)

    x = var((17,))
    check_gradients(lambda x: (SinCosArg.apply(x)[0] * 2.0 + SinCosArg.apply(x)[1].pow(2.0)).sum(), [x])
    s, c, i = SinCosArg.apply(x)
    assert not i.requires_grad() and i.item() == int(np.argmax(x.numpy()))
    s.sum().backward()                                   # the cosine output got no gradient: zeros
    np.testing.assert_allclose(x.grad().numpy(), np.cos(x.numpy()), rtol=1e-13)


def test_a_wrong_backward_is_reported_with_the_functions_name():
    class TooFew(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g

    class BadShape(Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(TypeError, match="TooFew.backward returned 1 gradients; forward took 2"):
        TooFew.apply(var((2,)), var((2,))).sum().backward()
    with pytest.raises(ValueError, match=r"BadShape.backward: gradient 0 has shape \[\], but input 0 has shape \[3\]"):
        BadShape.apply(var((3,))).backward()


def test_saved_tensors_are_version_checked_and_freed_after_backward():
    from axonml_autograd.elementwise_kernels import fill

    class Square(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2.0 * x

    x = var((3,))
    y = Square.apply(x).sum()
    fill(x.data(), 1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()
    x = var((3,))
    y = Square.apply(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_a_function_replays_under_capture():
    x, b = var((5, 3)), var((3,))

    @capture
    def step(data):
        out = (BiasGelu.apply(x, b) * data).sum()
        out.backward()
        return out

    for _ in range(3):
        x.zero_grad()
        b.zero_grad()
        step(Tensor.ones([5, 3], "float64"))
        ref_x = Variable(x.data(), requires_grad=True)
        ref_b = Variable(b.data(), requires_grad=True)
        (ref_x + ref_b).gelu().sum().backward()
        np.testing.assert_allclose(x.grad().numpy(), ref_x.grad().numpy(), rtol=1e-13)
        np.testing.assert_allclose(b.grad().numpy(), ref_b.grad().numpy(), rtol=1e-13)
    assert step.replays >= 1


# -- Kernel ------------------------------------------------------------------------------------------------

ROW_SUMS = """
__kernel void row_sums(__global const double *x, __global double *out, __local double *part,
                       const int cols) {
    const int row = get_group_id(0), lid = get_local_id(0), L = get_local_size(0);
    double s = 0.0;
    for (int c = lid; c < cols; c += L) s += x[row * cols + c];
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int w = L / 2; w > 0; w /= 2) {
        if (lid < w) part[lid] += part[lid + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) out[row] = part[0];
}
"""


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 17), (65, 129)])
def test_a_kernel_with_local_memory_sums_rows_like_numpy(rows, cols):
    x = RNG.standard_normal((rows, cols))
    out = Tensor.empty([rows], "float64")
    k = Kernel(ROW_SUMS, "row_sums")
    local = 16
    k(rows * local, Tensor.from_numpy(x), out, local * 8, cols, local_size=local)
    np.testing.assert_allclose(out.numpy(), x.sum(1), rtol=1e-12)


def test_a_kernel_checks_its_arguments_against_the_signature():
    k = Kernel(ROW_SUMS, "row_sums")
    x, out = Tensor.zeros([2, 3], "float64"), Tensor.empty([2], "float64")
    with pytest.raises(TypeError, match="expected 4 arguments"):
        k(2, x, out)
    with pytest.raises(TypeError, match="x points to double, got a float32 tensor"):
        k(2, Tensor.zeros([2, 3]), out, 64, 3)
    with pytest.raises(ValueError, match="cols is a int; 2.5 does not fit"):
        k(2, x, out, 64, 2.5)
    with pytest.raises(ValueError, match="local_size 3 must divide"):
        k(8, x, out, 64, 3, local_size=3)
    with pytest.raises(ValueError, match="no `__kernel void missing"):
        Kernel(ROW_SUMS, "missing")


def test_a_kernel_that_does_not_compile_raises_with_the_build_log():
    k = Kernel("__kernel void broken(__global float *y) { y[0] = undeclared; }", "broken")
    with pytest.raises(KernelBuildError, match="undeclared"):
        k(1, Tensor.zeros([1]))


def test_a_kernel_write_bumps_the_version_and_replays_under_capture():
    k = Kernel("""__kernel void twice(__global float *y, const int n) {
        int i = get_global_id(0); if (i < n) y[i] *= 2.0f; }""", "twice")
    y = Tensor.from_vec([1.0, 2.0, 3.0], [3])
    v0 = y.version
    k(3, y, 3)
    assert y.version == v0 + 1 and y.to_vec() == [2.0, 4.0, 6.0]

    @capture
    def double(t):
        k(t.numel(), t, t.numel())
        return t

    for _ in range(3):
        t = Tensor.from_vec([1.0, -1.0], [2])
        assert double(t).to_vec() == [2.0, -2.0]
    assert double.replays >= 1


def test_a_function_written_with_variable_ops_differentiates_twice():
    from axonml_autograd import gradgradcheck

    class Cube(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3.0 * x * x

    x = var((17,))
    assert gradgradcheck(lambda x: Cube.apply(x), [x])


def test_a_gradient_made_with_elementwise_refuses_create_graph_instead_of_giving_zero():
    from axonml_autograd import grad

    class SinK(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return elementwise("sin(a)", x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return elementwise("g * cos(x)", g=g, x=x)

    x = var((3,))
    (gx,) = grad(SinK.apply(x).sum(), [x])              # first order is fine
    np.testing.assert_allclose(gx.numpy(), np.cos(x.numpy()), rtol=1e-13)
    with pytest.raises(NotImplementedError, match="SinK.backward: gradient 0 is not differentiable"):
        grad(SinK.apply(x).sum(), [x], create_graph=True)

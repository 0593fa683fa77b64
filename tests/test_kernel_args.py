"""Kernels declare their arguments: signatures parsed from the OpenCL source, arguments bound by name
(kernels.bind), and the shared template preamble (cl_kernels/common.mako) every template imports."""

import re

import numpy as np
import pytest

from axonml_autograd import Tensor, kernels, launch
from axonml_autograd.device import default_device
from axonml_autograd.kernels import parse_signature

DEV = default_device()


def packed(*args):
    """What the launch path made of a hand-ordered argument list before arguments had names."""
    return [launch._pack(a) for a in args]


def same(bound, expected):
    assert len(bound) == len(expected)
    for k, (b, e) in enumerate(zip(bound, expected)):
        assert type(b) is type(e) and b == e, f"argument {k}: {b!r} != {e!r}"


# -- binding gives the list the callers used to build by hand -----------------------------------------

def test_matmul_blocked_binds_in_the_order_it_was_passed():
    knl = kernels.get_kernel(DEV, "matmul.cl.mako", "matmul_blocked", ctype="float", strategy="blocked",
                             trans_a=False, trans_b=False, ts=0, tsk=0, wpt=0, mr=6, nr=8, vw=4, kc_max=512)
    a, b, c = Tensor.ones([4, 3]), Tensor.ones([3, 5]), Tensor.zeros([4, 5])
    i32, i64 = np.int32, np.int64
    expected = packed(a.buffer, b.buffer, c.buffer, c.buffer, i32(0), i32(4), i32(5), i32(3), i32(3), i32(1), i32(5), i32(1),
                      i32(1), i32(1), i32(3), i32(1), i64(0), i64(0), i64(0), i64(0), i64(7), i64(0), i64(2 ** 40))
    values = dict(M=4, N=5, K=3, a_row=3, a_k=1, b_k=5, b_n=1, mcp=1, ncp=1, kc=3, nb_lo=1, sa_hi=0, sa_lo=0,
                  sb_hi=0, sb_lo=0, off_a=7, off_b=0, off_c=2 ** 40, has_bias=0)
    same(kernels.bind(knl, dict(values, a_base=a, b_base=b, c_base=c, bias=c)), expected)
    # Scalars bound once, the operands per launch (matmul's plans), give the same list.
    fill = kernels.signature(knl).partial(values, ("a_base", "b_base", "c_base", "bias"))
    same(fill(a, b, c, c), expected)


def test_layer_norm_binds_with_and_without_its_optional_arguments():
    x, w, y, m, r = (Tensor.ones([2, 8]), Tensor.ones([8]), Tensor.zeros([2, 8]), Tensor.zeros([2]),
                     Tensor.zeros([2]))
    for has_weight in (False, True):
        knl = kernels.get_kernel(DEV, "norm.cl.mako", "forward", ctype="float", vw=4, strategy="serial", local_size=1,
                                 kind="layer_norm", has_weight=has_weight, has_bias=False, affine=has_weight,
                                 has_running=False, training=False, cumulative=False)
        weight = [w.buffer] if has_weight else []
        expected = packed(x.buffer, *weight, y.buffer, m.buffer, r.buffer, np.float32(1e-5), np.int32(2),
                          np.int32(8), np.int32(1))
        # An argument the rendering left out is given as None, as the caller holds it.
        bound = kernels.bind(knl, dict(x=x, w=w if has_weight else None, b=None, y=y, mean_out=m, rstd_out=r,
                                       eps=1e-5, rows=2, cols=8, per_block=1))
        same(bound, expected)


def test_adam_and_philox_bind_in_the_order_they_were_passed(fp64):
    p, g, m, v = (Tensor.ones([8], "float64") for _ in range(4))
    steps, rates = Tensor.zeros([4], "int32"), Tensor.ones([2], "float64")
    knl = kernels.get_kernel(DEV, "optim.cl.mako", "adam_step", ctype="double", momentum=False, amsgrad=False,
                             centered=False, vector=0)
    f64 = np.float64
    expected = packed(p.buffer, g.buffer, m.buffer, v.buffer, steps.buffer, np.int32(1), rates.buffer, f64(0.9),
                      f64(0.999), f64(1e-8), f64(0.0), f64(np.log(0.9)), f64(np.log(0.999)), np.int32(8), np.int32(8))
    same(kernels.bind(knl, dict(p=p, grad=g, exp_avg=m, exp_avg_sq=v, steps=steps, slot=1, rates=rates, beta1=0.9,
                                beta2=0.999, eps=1e-8, l2=0.0, log_beta1=np.log(0.9), log_beta2=np.log(0.999),
                                n=8, chunk=8)), expected)
    out = Tensor.zeros([16])
    knl = kernels.get_kernel(DEV, "philox.cl.mako", "philox_fill", ctype="float", dist="uniform", from_state=False)
    expected = packed(out.buffer, np.int32(16), np.uint32(5), np.uint32(1), np.uint32(0xFFFFFFFF), np.uint32(0),
                      np.float32(-1.0), np.float32(2.5))
    same(kernels.bind(knl, dict(out=out, n=16, seed_lo=5, seed_hi=1, offset_lo=0xFFFFFFFF, offset_hi=0, a=-1.0,
                                b=2.5)), expected)


def test_a_scalar_is_packed_to_its_declared_type():
    sig = parse_signature("typedef double T; __kernel void f(const long a, const int b, const float c, const T d, "
                          "const uint e, const unsigned short g) {}", "f")
    bound = sig.bind(dict(a=2 ** 40 + 3, b=-5, c=0.1, d=0.1, e=2 ** 32 - 1, g=65535))
    assert bound == [np.int64(2 ** 40 + 3).tobytes(), np.int32(-5).tobytes(), np.float32(0.1).tobytes(),
                     np.float64(0.1).tobytes(), np.uint32(2 ** 32 - 1).tobytes(), np.uint16(65535).tobytes()]
    # numpy scalars and integral floats for integers; a float beyond float32 becomes inf, as numpy makes it.
    assert sig.bind(dict(a=np.int64(-1), b=np.int32(7), c=1e39, d=np.float32(0.5), e=3.0, g=True)) == [
        np.int64(-1).tobytes(), np.int32(7).tobytes(), np.float32(np.inf).tobytes(), np.float64(0.5).tobytes(),
        np.uint32(3).tobytes(), np.uint16(1).tobytes()]


# -- errors name the kernel and the argument ----------------------------------------------------------

SCAN = dict(ctype="float", op="sum", reverse=False, exclusive=False)


def scan_values(**changes):
    return dict(dict(x=Tensor.ones([4]), out=Tensor.zeros([4]), R=4, inner=1, n=1), **changes)


@pytest.mark.parametrize("changes, error, words", [
    (dict(n=None), TypeError, ["scan", "missing argument 'n'"]),
    (dict(rows=3), TypeError, ["scan", "no parameter 'rows'"]),
    (dict(R=Tensor.ones([1])), TypeError, ["scan", "'R'", "give a number"]),
    (dict(x=3), TypeError, ["scan", "'x'", "pointer"]),
    (dict(x=Tensor.ones([4], "int32")), TypeError, ["scan", "'x'", "points to float", "int32"]),
    (dict(inner=2 ** 31), ValueError, ["scan", "'inner'", "does not fit"]),
    (dict(inner=1.5), TypeError, ["scan", "'inner'", "1.5"]),
])
def test_a_wrong_argument_is_named(changes, error, words):
    knl = kernels.get_kernel(DEV, "scan.cl.mako", "scan", **SCAN)
    with pytest.raises(error) as info:
        kernels.bind(knl, scan_values(**changes))
    for w in words:
        assert w in str(info.value)
    with pytest.raises(error):   # launching by name checks the same way, before anything is enqueued
        kernels.launch(DEV, knl, (1,), None, **scan_values(**changes))


def test_a_partial_binding_names_a_wrong_late_argument():
    sig = kernels.signature(kernels.get_kernel(DEV, "scan.cl.mako", "scan", **SCAN))
    fill = sig.partial(dict(R=4, inner=1, n=1), ("x", "out"))
    assert len(fill(Tensor.ones([4]), Tensor.zeros([4]))) == 5
    with pytest.raises(TypeError, match=r"scan: argument 'out' .* points to float"):
        fill(Tensor.ones([4]), Tensor.zeros([4], "int32"))
    with pytest.raises(TypeError, match="no parameter 'y' to bind later"):
        sig.partial(dict(R=4, inner=1, n=1), ("x", "y"))


def test_names_and_order_are_not_mixed():
    knl = kernels.get_kernel(DEV, "scan.cl.mako", "scan", **SCAN)
    with pytest.raises(TypeError, match="by name or in order"):
        kernels.launch(DEV, knl, (1,), None, Tensor.ones([4]).buffer, n=1)


def test_launching_by_name_computes():
    x = Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [4])
    out = Tensor.zeros([4])
    knl = kernels.get_kernel(DEV, "scan.cl.mako", "scan", **SCAN)
    kernels.launch(DEV, knl, (1,), None, x=x, out=out, R=4, inner=1, n=1)
    assert out.to_vec() == [1.0, 3.0, 6.0, 10.0]


# -- the parser -----------------------------------------------------------------------------------------

def test_the_parser_reads_what_templates_write():
    source = """
        typedef float T;
        typedef T TV;   // a typedef chain
        /* a comment with __kernel void f(int nope) in it */
        __kernel __attribute__((reqd_work_group_size(64, 1, 1)))
        void f(__global const TV *restrict x,   // trailing comment
               __global unsigned int *counts, __local float *scratch,
               const T scale, const unsigned long big, __constant double *table)
        { }"""
    sig = parse_signature(source, "f")
    assert [(p.name, p.kind, p.ctype, p.const) for p in sig.params] == [
        ("x", "buffer", "float", True), ("counts", "buffer", "uint", False), ("scratch", "local", "float", False),
        ("scale", "scalar", "float", True), ("big", "scalar", "ulong", True), ("table", "buffer", "double", True)]
    assert sig.index == {"x": 0, "counts": 1, "scratch": 2, "scale": 3, "big": 4, "table": 5}
    assert len(sig.bind(dict(x=Tensor.ones([1]), counts=Tensor.zeros([1], "int32"), scratch=256, scale=1.0,
                             big=2 ** 63, table=Tensor.ones([1]).buffer))) == 6
    with pytest.raises(ValueError, match="no `__kernel void g"):
        parse_signature(source, "g")
    with pytest.raises(ValueError, match=r"kernel 'h': parameter 0 .* cannot be passed"):
        parse_signature("__kernel void h(image2d_t img) {}", "h")


def test_a_signature_is_parsed_once_per_source_and_kernel():
    knl = kernels.get_kernel(DEV, "scan.cl.mako", "scan", **SCAN)
    assert kernels.signature(knl) is kernels.signature(knl)
    again = kernels.get_kernel(DEV, "scan.cl.mako", "cumprod_grad", **SCAN)
    assert kernels.signature(again) is not kernels.signature(knl)
    assert [p.name for p in kernels.signature(again).params] == ["g", "x", "out", "R", "inner", "n"]


# -- common.mako ----------------------------------------------------------------------------------------

# One rendering of each template that has an element type, with the kernels it must hold; the GPU
# forms (local-memory folds) next to the CPU ones.
RENDERINGS = [
    ("conv.cl.mako", dict(ctype="float", rows=True), ["im2col", "col2im"]),
    ("pool.cl.mako", dict(ctype="float"), ["max_forward", "max_backward", "max_gather", "avg_forward",
                                           "avg_backward", "adaptive_avg_forward", "adaptive_avg_backward"]),
    ("index.cl.mako", dict(ctype="float", mode="gather", rows=False), ["forward", "backward"]),
    ("scan.cl.mako", dict(ctype="float", op="prod", reverse=True, exclusive=True), ["scan", "cumprod_grad"]),
    ("sort.cl.mako", dict(ctype="int", descending=True), ["argsort"]),
    ("philox.cl.mako", dict(ctype="float", dist="normal", from_state=True), ["philox_fill"]),
    ("optim.cl.mako", dict(ctype="float", momentum=True, amsgrad=True, centered=True, vector=4),
     ["sgd_step", "adam_step", "rmsprop_step", "adagrad_step"]),
    ("matmul.cl.mako", dict(ctype="float", strategy="blocked", trans_a=False, trans_b=False, ts=0, tsk=0, wpt=0,
                            mr=6, nr=8, vw=4, kc_max=512), ["matmul_blocked"]),
    ("matmul.cl.mako", dict(ctype="float", strategy="tiled", trans_a=True, trans_b=False, ts=16, tsk=16, wpt=2,
                            mr=0, nr=0, vw=1, kc_max=0), ["matmul_tiled"]),
    ("reduce.cl.mako", dict(ctype="float", strategy="local", op="max", with_index=True, has_in_idx=True,
                            inner_block=16, local_size=32), ["reduce"]),
    ("reduce.cl.mako", dict(ctype="long", strategy="serial", op="sum", with_index=False, has_in_idx=False,
                            inner_block=16, local_size=1, in_ctype="int", itype="long"), ["reduce"]),
    ("softmax.cl.mako", dict(ctype="float", op="cross_entropy", strategy="local", vw=4, local_size=16, weighted=True,
                             smoothing=True, nll=False, count=True, g_rows=True, has_den=True), ["forward", "backward"]),
    ("softmax.cl.mako", dict(ctype="float", op="softmax", strategy="serial", vw=8, local_size=1, weighted=False,
                             smoothing=False, nll=False, count=False, g_rows=False, has_den=False),
     ["forward", "backward"]),
    ("norm.cl.mako", dict(ctype="float", vw=4, strategy="local", local_size=64, kind="layer_norm", has_weight=True,
                          has_bias=True, affine=True, has_running=False, training=False, cumulative=False),
     ["forward", "backward"]),
    ("norm.cl.mako", dict(ctype="float", vw=8, strategy="serial", local_size=1, kind="batch_norm", has_weight=True,
                          has_bias=False, affine=True, has_running=True, training=True, cumulative=True),
     ["forward", "backward"]),
    ("elementwise.cl.mako", dict(ctype="float", rank=1, kinds=("flat", "flat"), names=("a",), scalars=("s",),
                                 expr="a * s + L(1.0)", types=(), vector=4), ["ew"]),
    ("fused.cl.mako", dict(ctype="float", vector=4, nbuf=2, nscal=0,
                           steps=((0, (("a", ("b", 1)),), (), "a * L(2.0)"),)), ["fused"]),
    ("probe.cl.mako", dict(ctype="float", vw=4, which="vector"), ["probe_vector"]),
]


@pytest.mark.parametrize("template, params, names", RENDERINGS,
                         ids=[f"{t.split('.')[0]}-{p.get('strategy', '')}" for t, p, _ in RENDERINGS])
def test_every_template_renders_with_the_common_preamble_and_builds(template, params, names):
    source = kernels.render(template, **params)
    # The preamble, once, from common.mako (no template spells out its own).
    assert source.count(f"typedef {params['ctype']} T;") == 1
    assert "#define L(x)" in source
    assert "cl_khr_fp64" not in source            # float renderings: no extension asked for
    assert "GEOMETRY" not in source               # the window geometry is real parameters
    prog = kernels.build(DEV, source, names=names, what=template)
    for name in names:
        sig = parse_signature(source, name)       # every kernel declares arguments a launch can bind
        assert sig.params and len(sig.index) == len(sig.params)
        assert cl_kernel_arg_count(prog, name) == len(sig.params)


def cl_kernel_arg_count(prog, name):
    import pyopencl as cl
    return cl.Kernel(prog, name).get_info(cl.kernel_info.NUM_ARGS)


def test_the_preamble_asks_for_fp64_only_where_a_double_is_used():
    assert "cl_khr_fp64" in kernels.render("scan.cl.mako", ctype="double", op="sum", reverse=False, exclusive=False)
    mixed = kernels.render("elementwise.cl.mako", ctype="float", rank=1, kinds=("flat", "flat", "flat"),
                           names=("a", "b"), scalars=(), expr="a + b", types=("float", "float", "double"))
    assert "cl_khr_fp64" in mixed


def test_the_tree_fold_is_the_fixed_halving_tree():
    source = kernels.render("norm.cl.mako", ctype="float", vw=4, strategy="local", local_size=8, kind="layer_norm",
                            has_weight=False, has_bias=False, affine=False, has_running=False, training=False,
                            cumulative=False)
    folds = re.findall(r"if \(lid < (\d+)\) \{ part\[lid\] \+= part\[lid \+ (\d+)\]; \}", source)
    assert folds[:3] == [("4", "4"), ("2", "2"), ("1", "1")]


def test_template_source_covers_the_common_preamble():
    text = kernels.template_source("matmul.cl.mako")
    assert "tree_fold" in text and "matmul_blocked" in text

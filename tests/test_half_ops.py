"""16-bit (float16, bfloat16) forms of the structural ops: matmul and F.linear, and the ops listed below.

Each op reads its 16-bit operands into float32 copies, runs the float32 kernel and rounds the result
once to the 16-bit type (torch's CPU semantics: its 16-bit matmul accumulates in float32). Values and
gradients are compared with torch's float32 result on the same (upcast) 16-bit inputs, rounded once
to the 16-bit type: at most 1 ulp apart (another float32 summation order can move a result across a
16-bit rounding boundary), and with torch's own 16-bit op where it has one (2 ulps).
"""

import os
import sys

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Variable
from axonml_autograd.matmul import matmul as matmul_tensors
from axonml_autograd.nn import functional as F

sys.path.insert(0, os.path.dirname(__file__))
from test_half import DTYPES, as_torch, tdt, ulps  # noqa: E402


def leaf(shape, seed, dt, grad=True):
    return Variable(ag.randn(*shape, seed=seed, dtype=dt), requires_grad=grad)


def rounded(torch, t, dt):
    """A torch float32 result rounded once to ``dt``, as float32 values."""
    return t.detach().to(tdt(torch, dt)).float().numpy()


def close(ours, want, dt, ulp=1):
    ours = ours.data() if isinstance(ours, Variable) else ours
    assert str(ours.dtype) == dt
    d = ulps(ours.numpy(), want, dt)
    assert d.max() <= ulp, f"{d.max()} ulps apart"


# -- matmul, bmm, linear ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 17, 5), (17, 65, 3), (65, 3, 17)])
def test_matmul_and_its_gradients_accumulate_in_float32(dt, M, K, N):
    torch = pytest.importorskip("torch")
    a, b = leaf((M, K), 1, dt), leaf((K, N), 2, dt)
    y = a @ b
    g = ag.randn(M, N, seed=3, dtype=dt)
    y.backward(g)
    ta, tb = (as_torch(torch, v).float().requires_grad_() for v in (a, b))
    ty = ta @ tb
    ty.backward(as_torch(torch, g).float())
    close(y, rounded(torch, ty, dt), dt)
    close(a.grad(), rounded(torch, ta.grad, dt), dt)
    close(b.grad(), rounded(torch, tb.grad, dt), dt)
    # torch's own 16-bit matmul on the same inputs
    close(y, (as_torch(torch, a) @ as_torch(torch, b)).float().numpy(), dt, ulp=2)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("ta,tb,K", [(False, False, 65), (True, False, 65), (False, True, 65), (False, False, 700)])
def test_matmul_of_16_bit_operands_into_a_float32_out_keeps_the_float32_sum(dt, ta, tb, K):
    # K = 700 is past one k slice of the CPU kernel (256): the 16-bit result then comes from a float32 C
    # rounded afterwards; within one slice the kernel rounds as it writes. Both are the float32 sum rounded.
    a = ag.randn(17, K, seed=1, dtype=dt)
    b = ag.randn(K, 33, seed=2, dtype=dt)
    a_op = a.astype("float32").numpy().T.copy() if ta else a.astype("float32").numpy()
    b_op = b.astype("float32").numpy().T.copy() if tb else b.astype("float32").numpy()
    a_in = ag.Tensor.from_numpy(a_op).astype(dt)
    b_in = ag.Tensor.from_numpy(b_op).astype(dt)
    out = ag.Tensor.zeros([17, 33], "float32")
    got = matmul_tensors(a_in, b_in, trans_a=ta, trans_b=tb, out=out)
    assert got is out and got.dtype == np.float32
    want = a.astype("float32").numpy().astype(np.float64) @ b.astype("float32").numpy().astype(np.float64)
    # Not rounded to 16 bits: float32 summation error only.
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    rounded16 = matmul_tensors(a_in, b_in, trans_a=ta, trans_b=tb)
    assert rounded16.dtype == a.dtype
    np.testing.assert_array_equal(rounded16.astype("float32").numpy(), got.astype(dt).astype("float32").numpy())


@pytest.mark.parametrize("dt", DTYPES)
def test_batched_transposed_and_vector_matmul_and_the_tensor_form(dt):
    torch = pytest.importorskip("torch")
    x, w = leaf((2, 3, 17), 1, dt), leaf((17, 5), 2, dt)
    tx, tw = (as_torch(torch, v).float().requires_grad_() for v in (x, w))
    y = x @ x.transpose(1, 2)
    ty = tx @ tx.transpose(1, 2)
    close(y, rounded(torch, ty, dt), dt)
    y.sum().backward()
    ty.sum().backward()
    close(x.grad(), rounded(torch, tx.grad, dt), dt)
    xd = Variable(x.data())
    (xd @ w).sum().backward()
    (tx.detach() @ tw).sum().backward()
    close(w.grad(), rounded(torch, tw.grad, dt), dt, ulp=2)   # per-batch products rounded, then summed
    v = leaf((17,), 4, dt, grad=False)
    close(w.data().T @ v.data(), rounded(torch, tw.detach().T @ as_torch(torch, v).float(), dt), dt)
    close(v.data() @ v.data(), rounded(torch, as_torch(torch, v).float() @ as_torch(torch, v).float(), dt), dt)
    out = ag.zeros(2, 3, 3, dtype=dt)
    matmul_tensors(x.data(), x.data(), trans_b=True, out=out)
    np.testing.assert_array_equal(out.numpy(), y.data().numpy())


@pytest.mark.parametrize("dt", DTYPES)
def test_linear_values_and_16_bit_gradients(dt):
    torch = pytest.importorskip("torch")
    x, w, b = leaf((3, 65), 1, dt), leaf((17, 65), 2, dt), leaf((17,), 3, dt)
    y = F.linear(x, w, b)
    y.backward(ag.ones(3, 17, dtype=dt))
    tx, tw, tb = (as_torch(torch, v).float().requires_grad_() for v in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.sum().backward()
    # the product and the bias add in float32, rounded once (as torch's 16-bit addmm), also with leading dims
    close(y, rounded(torch, ty, dt), dt)
    close(y, torch.nn.functional.linear(*(as_torch(torch, v) for v in (x, w, b))).float().numpy(), dt)
    x3 = leaf((2, 3, 65), 4, dt)
    close(F.linear(x3, w, b), rounded(torch, torch.nn.functional.linear(as_torch(torch, x3).float(), tw, tb), dt), dt)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        assert ours.grad().dtype == ours.data().dtype
        close(ours.grad(), rounded(torch, theirs.grad, dt), dt)


def test_mixed_16_bit_matmul_operands_are_refused():
    with pytest.raises(TypeError, match="dtypes differ"):
        matmul_tensors(ag.ones(2, 2, dtype="float16"), ag.ones(2, 2, dtype="bfloat16"))


# -- convolution, pooling, resampling ---------------------------------------------------------------------------
def _check_op(torch, dt, ours_fn, torch_fn, shapes, ulp=1, seed=1):
    """ours_fn and torch_fn on the same 16-bit inputs (torch's in float32): values and the gradients of
    every input for one upstream gradient, against torch's float32 results rounded once."""
    xs = [leaf(s, seed + k, dt) for k, s in enumerate(shapes)]
    txs = [as_torch(torch, x).float().requires_grad_() for x in xs]
    y, ty = ours_fn(*xs), torch_fn(*txs)
    close(y, rounded(torch, ty, dt), dt, ulp)
    g = ag.randn(*ty.shape, seed=99, dtype=dt)
    y.backward(g)
    ty.backward(as_torch(torch, g).float())
    for x, tx in zip(xs, txs):
        assert x.grad().dtype == x.data().dtype
        close(x.grad(), rounded(torch, tx.grad, dt), dt, ulp)


@pytest.mark.parametrize("dt", DTYPES)
def test_conv1d_conv2d_and_conv_transpose(dt):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    _check_op(torch, dt, lambda x, w: F.conv2d(x, w, stride=2, padding=1),
              lambda x, w: tf.conv2d(x, w, stride=2, padding=1), [(2, 3, 17, 5), (4, 3, 3, 3)])
    _check_op(torch, dt, lambda x, w: F.conv2d(x, w, groups=2), lambda x, w: tf.conv2d(x, w, groups=2),
              [(1, 4, 3, 3), (2, 2, 1, 1)])
    _check_op(torch, dt, lambda x, w: F.conv1d(x, w, padding=2, dilation=2),
              lambda x, w: tf.conv1d(x, w, padding=2, dilation=2), [(3, 2, 17), (5, 2, 3)])
    _check_op(torch, dt, lambda x, w: F.conv_transpose2d(x, w, stride=2),
              lambda x, w: tf.conv_transpose2d(x, w, stride=2), [(1, 3, 5, 4), (3, 2, 3, 3)])
    _check_op(torch, dt, lambda x, w: F.conv_transpose1d(x, w, stride=3, padding=1),
              lambda x, w: tf.conv_transpose1d(x, w, stride=3, padding=1), [(2, 3, 17), (3, 1, 4)])
    # with a bias: the convolution and the bias add in float32, rounded once
    _check_op(torch, dt, lambda x, w, b: F.conv2d(x, w, b, padding=1),
              lambda x, w, b: tf.conv2d(x, w, b, padding=1), [(1, 1, 4, 4), (2, 1, 3, 3), (2,)])
    _check_op(torch, dt, lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2),
              lambda x, w, b: tf.conv_transpose2d(x, w, b, stride=2), [(1, 3, 5, 4), (3, 2, 3, 3), (2,)])


@pytest.mark.parametrize("dt", DTYPES)
def test_pools_interpolate_and_pad_modes(dt):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    s4 = [(2, 3, 17, 5)]
    # max pools and constant pads are exact (their gradients too); averages, bilinear and the gradients
    # of nearest and reflect/replicate/circular pads are float32 sums rounded once
    cases = [(lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: tf.max_pool2d(x, 3, 2, 1), s4, 0),
             (lambda x: F.avg_pool2d(x, 2), lambda x: tf.avg_pool2d(x, 2), s4, 1),
             (lambda x: F.adaptive_avg_pool2d(x, (3, 2)), lambda x: tf.adaptive_avg_pool2d(x, (3, 2)), s4, 1),
             (lambda x: F.adaptive_max_pool2d(x, 3), lambda x: tf.adaptive_max_pool2d(x, 3), s4, 0),
             (lambda x: F.max_pool1d(x, 3), lambda x: tf.max_pool1d(x, 3), [(2, 3, 65)], 0),
             (lambda x: F.avg_pool1d(x, 3), lambda x: tf.avg_pool1d(x, 3), [(2, 3, 65)], 1),
             (lambda x: F.interpolate(x, scale_factor=2), lambda x: tf.interpolate(x, scale_factor=2), s4, 1),
             (lambda x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False),
              lambda x: tf.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False), s4, 1)]
    for mode in ("constant", "reflect", "replicate", "circular"):
        cases.append((lambda x, m=mode: F.pad(x, (1, 2, 2, 1), mode=m),
                      lambda x, m=mode: tf.pad(x, (1, 2, 2, 1), mode=m), s4, int(mode != "constant")))
    for k, (ours, theirs, shapes, ulp) in enumerate(cases):
        _check_op(torch, dt, ours, theirs, shapes, ulp, seed=k)


# -- normalisation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", DTYPES)
def test_layer_norm_group_norm_and_batch_norm_compute_in_float32(dt):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    # statistics in float32, y rounded once; the affine forms add a second rounding (w * xhat + b is
    # computed in float32 inside the kernel, so they round once too); gradients are float32 sums rounded once
    _check_op(torch, dt, lambda x: F.layer_norm(x, [17]), lambda x: tf.layer_norm(x, [17]), [(3, 17)])
    _check_op(torch, dt, lambda x, w, b: F.layer_norm(x, [3, 5], w, b), lambda x, w, b: tf.layer_norm(x, [3, 5], w, b),
              [(2, 3, 5), (3, 5), (3, 5)], ulp=2)
    _check_op(torch, dt, lambda x: F.group_norm(x, 2), lambda x: tf.group_norm(x, 2), [(3, 4, 5)])
    _check_op(torch, dt, lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
              lambda x, w, b: tf.batch_norm(x, None, None, w, b, training=True), [(17, 3, 2), (3,), (3,)], ulp=2)


@pytest.mark.parametrize("dt", DTYPES)
def test_batch_norm_running_statistics_stay_in_the_buffers_dtype(dt):
    torch = pytest.importorskip("torch")
    x = leaf((65, 3), 1, dt)
    tx = as_torch(torch, x)
    for bdt in (dt, "float32"):   # a module converted with .half(), and float32 buffers as torch allows
        rm, rv = ag.zeros(3, dtype=bdt), ag.ones(3, dtype=bdt)
        trm, trv = torch.zeros(3, dtype=tdt(torch, bdt)), torch.ones(3, dtype=tdt(torch, bdt))
        y = F.batch_norm(x, rm, rv, training=True, momentum=0.1)
        ty = torch.nn.functional.batch_norm(tx, trm, trv, training=True, momentum=0.1)
        assert rm.dtype == rv.dtype == np.dtype(bdt) if bdt == "float32" else str(rm.dtype) == dt
        # y against torch's float32 batch norm on the same values, rounded once (torch's own 16-bit batch
        # norm rounds inside and is up to 3 ulps off that); the buffers against torch's own
        y32 = torch.nn.functional.batch_norm(tx.float(), torch.zeros(3), torch.ones(3), training=True)
        close(y, rounded(torch, y32, dt), dt)
        assert ulps(y.data().numpy(), ty.float().numpy(), dt).max() <= 3
        if bdt == dt:
            close(rm, trm.float().numpy(), dt)
            close(rv, trv.float().numpy(), dt)
        else:
            np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)
        ye = F.batch_norm(x, rm, rv, training=False)
        te = torch.nn.functional.batch_norm(tx.float(), trm.float(), trv.float(), training=False)
        close(ye, rounded(torch, te, dt), dt)


# -- losses, indexing, sorting, scans --------------------------------------------------------------------------
@pytest.mark.parametrize("dt", DTYPES)
def test_cross_entropy_and_nll_compute_in_float32_and_answer_in_the_logits_dtype(dt):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    t = np.array([0, 16, 3, 3, 7, 1, 0, 2, 9, 11, 12, 5, 4, 15, 16, 8, 6], np.int32)
    tt = torch.from_numpy(t.astype(np.int64))
    for kw in (dict(), dict(reduction="sum"), dict(reduction="none"), dict(label_smoothing=0.1),
               dict(ignore_index=3)):
        _check_op(torch, dt, lambda x: F.cross_entropy(x, ag.from_numpy(t), **kw),
                  lambda x: tf.cross_entropy(x, tt, **kw), [(17, 17)])
    _check_op(torch, dt, lambda x: F.nll_loss(x, ag.from_numpy(t[:3])), lambda x: tf.nll_loss(x, tt[:3]), [(3, 17)])
    x = leaf((17, 17), 5, dt)
    y, ty = F.cross_entropy(x, ag.from_numpy(t)), tf.cross_entropy(as_torch(torch, x), tt)
    assert str(y.data().dtype) == dt and ty.dtype == tdt(torch, dt)   # torch's output dtype too
    close(y, ty.float().numpy(), dt, ulp=2)   # torch's own 16-bit cross_entropy rounds its log_softmax inside


@pytest.mark.parametrize("dt", DTYPES)
def test_cross_entropy_reads_16_bit_logits_as_their_float32_copies_would_give(dt):
    """The row kernels read 16-bit logits and write their gradient in 16 bits, computing in float32:
    bit for bit the float32 kernel on float32 copies, loss and gradient rounded once. Under autocast the
    loss is float32 (torch's float32 list) and the logits keep their type: no float32 copy is held."""
    rng = np.random.default_rng(4)
    w = (rng.integers(1, 8, 129) * 0.25).astype(np.float32)   # exact in 16 bits
    cases = [dict(), dict(reduction="none"), dict(label_smoothing=0.1), dict(ignore_index=2),
             dict(weight=w, reduction="sum")]
    for cols in (1, 3, 17, 65, 129):
        t = ag.from_numpy((np.arange(7) * 5 % cols).astype(np.int32))
        for kw in cases if cols in (1, 17, 129) else cases[:1]:
            kw = dict(kw, weight=ag.from_numpy(kw["weight"][:cols])) if "weight" in kw else kw
            for loss_fn in (F.cross_entropy, F.nll_loss):
                x = leaf((7, cols), cols, dt)
                x32 = Variable(x.data().astype("float32"), requires_grad=True)
                want = loss_fn(x32, t, **{k: v for k, v in kw.items() if k != "label_smoothing" or
                                          loss_fn is F.cross_entropy})
                want.backward(ag.ones(*want.shape, dtype="float32") * 3.0)
                for region in (False, True):
                    x.zero_grad()
                    with ag.autocast(dtype=dt, enabled=region):
                        got = loss_fn(x, t, **{k: v for k, v in kw.items() if k != "label_smoothing" or
                                               loss_fn is F.cross_entropy})
                    assert got.dtype == (np.float32 if region else x.dtype)
                    assert got.grad_fn.saved_tensors[0].dtype == x.dtype   # the logits themselves, no copy
                    got.backward(ag.ones(*got.shape, dtype=got.dtype) * 3.0)
                    expect = want.data() if region else want.data().astype(dt)
                    np.testing.assert_array_equal(got.data().numpy(), expect.numpy())
                    assert x.grad().dtype == x.dtype
                    np.testing.assert_array_equal(x.grad().numpy(), x32.grad().astype(dt).numpy())


@pytest.mark.parametrize("dt", DTYPES)
def test_indexing_gather_scatter_embedding_sort_topk_cumsum(dt):
    torch = pytest.importorskip("torch")
    rows = np.array([0, 2, 2, 16, 5], np.int64)
    ti = torch.from_numpy(rows)
    cols = np.array([[0, 2], [2, 2], [1, 0]] * 6)[:17].astype(np.int64)
    tc = torch.from_numpy(cols)
    src = leaf((17, 2), 9, dt, grad=False)
    cases = [  # copies are exact; gradients that add repeated picks, cumsum and scatter_add are rounded once
        (lambda x: x[rows.tolist()], lambda x: x[ti], [(17, 3)]),
        (lambda x: x[ag.from_numpy(rows.astype(np.int32))], lambda x: x[ti], [(17, 3)]),
        (lambda x: x.index_select(1, [2, 0, 2]), lambda x: x.index_select(1, torch.tensor([2, 0, 2])), [(4, 3)]),
        (lambda x: x.gather(1, ag.from_numpy(cols.astype(np.int32))), lambda x: x.gather(1, tc), [(17, 3)]),
        (lambda x: x.scatter_add(1, ag.from_numpy(cols.astype(np.int32)), src),
         lambda x: x.scatter_add(1, tc, as_torch(torch, src).float()), [(17, 3)]),
        (lambda x: F.embedding(ag.from_numpy(rows.astype(np.int32)), x),
         lambda x: torch.nn.functional.embedding(ti, x), [(17, 65)]),
        # (ties in 16 bits are common: torch's stable sort, so that each tie's gradient goes where ours does)
        (lambda x: x.sort(-1)[0], lambda x: torch.sort(x, dim=-1, stable=True)[0], [(3, 65)]),
        (lambda x: x.sort(0, descending=True)[0], lambda x: torch.sort(x, dim=0, descending=True, stable=True)[0],
         [(17, 3)]),
        (lambda x: x.topk(3)[0], lambda x: x.topk(3)[0], [(5, 17)]),
        (lambda x: x.cumsum(1), lambda x: x.cumsum(1), [(3, 65)]),
    ]
    for k, (ours, theirs, shapes) in enumerate(cases):
        _check_op(torch, dt, ours, theirs, shapes, seed=k)
    x = Variable(ag.from_numpy(np.array([[2.0, 1.0, 2.0, -1.0, 1.0, 2.0, 0.5] * 3], np.float32), dtype=dt))
    v, i = x.sort(-1)   # ties keep their order (stable), as torch's stable sort
    tv, tix = torch.sort(as_torch(torch, x), dim=-1, stable=True)
    np.testing.assert_array_equal(i.numpy(), tix.numpy())
    np.testing.assert_array_equal(v.data().numpy(), tv.float().numpy())


# -- optimisers and 16-bit modules -----------------------------------------------------------------------------
OPTIMS = [("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
          ("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01, amsgrad=True)),
          ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)), ("Adagrad", dict(lr=0.1))]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name,kw", OPTIMS, ids=[f"{n}{k}" for k, (n, _) in enumerate(OPTIMS)])
def test_optimisers_update_16_bit_parameters_and_state_in_their_dtype(dt, name, kw):
    """The reference: torch's float32 optimiser on the same values, its parameter and state rounded to
    the 16-bit type after every step (our kernel's float32 math, each stored value rounded once); at most
    1 ulp apart (another float32 sqrt/division), over three steps."""
    torch = pytest.importorskip("torch")
    from axonml_autograd import optim
    ps = [leaf((17,), 1, dt), leaf((3, 5), 2, dt)]
    tps = [as_torch(torch, p).float().requires_grad_() for p in ps]
    opt, topt = getattr(optim, name)(ps, **kw), getattr(torch.optim, name)(tps, **kw)
    for step in range(3):
        for k, (p, tp) in enumerate(zip(ps, tps)):
            c = Variable(ag.randn(*p.shape(), seed=10 * step + k, dtype=dt))
            p.zero_grad()
            (p * c).sum().backward()
            tp.grad = as_torch(torch, c).float()
        opt.step()
        topt.step()
        with torch.no_grad():
            for tp in tps:
                tp.copy_(tp.to(tdt(torch, dt)).float())
                for key, s in topt.state[tp].items():
                    if key != "step" and torch.is_tensor(s) and s.shape == tp.shape:
                        s.copy_(s.to(tdt(torch, dt)).float())
        for p, tp in zip(ps, tps):
            close(p, tp.detach().numpy(), dt)
    for p, tp in zip(ps, tps):
        for key, s in opt.state[p].items():
            if key != "step":
                close(s, topt.state[tp][key].numpy(), dt)
    # the state dict round trips: a fresh optimiser loaded from it takes the same next step
    sd = opt.state_dict()
    ps2 = [Variable(p.data().astype("float32").astype(dt), requires_grad=True) for p in ps]   # copies
    opt2 = getattr(optim, name)(ps2, **kw)
    opt2.load_state_dict(sd)
    for k, (p, p2) in enumerate(zip(ps, ps2)):
        for q in (p, p2):
            q.zero_grad()
            (q * Variable(ag.randn(*q.shape(), seed=77 + k, dtype=dt))).sum().backward()
    opt.step()
    opt2.step()
    for p, p2 in zip(ps, ps2):
        np.testing.assert_array_equal(p2.data().numpy(), p.data().numpy())
        for key, s in opt.state[p].items():
            if key != "step":
                assert opt2.state[p2][key].dtype == p.data().dtype
                np.testing.assert_array_equal(opt2.state[p2][key].numpy(), s.numpy())


def test_module_half_and_bfloat16_convert_floats_only():
    from axonml_autograd import nn
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert m.half() is m
    sd = m.state_dict()
    assert all(v.dtype == np.float16 for k, v in sd.items() if k != "1.num_batches_tracked")
    assert sd["1.num_batches_tracked"].dtype == np.int64
    m.bfloat16()
    assert all(p.data().dtype is ag.bfloat16 for p in m.parameters())
    y = m(Variable(ag.randn(5, 3, seed=1, dtype="bfloat16")))
    assert y.data().dtype is ag.bfloat16
    assert m[1].running_mean.dtype is ag.bfloat16
    m.float()
    assert all(p.data().dtype == np.float32 for p in m.parameters())


@pytest.mark.parametrize("dt", DTYPES)
def test_a_captured_16_bit_mlp_training_step_replays_bit_for_bit_and_follows_torch(dt):
    """Linear-ReLU-Linear in 16 bits, cross_entropy, SGD: the captured step equals eager bit for bit, and
    one eager step stays within 2 ulps of torch's own 16-bit module and SGD on the same values (both round
    after each op; another float32 summation order moves a rounding now and then)."""
    torch = pytest.importorskip("torch")
    from axonml_autograd import capture, nn, optim

    def make():
        m = nn.Sequential(nn.Linear(17, 65), nn.ReLU(), nn.Linear(65, 3)).to(dtype=dt)
        for k, p in enumerate(m.parameters()):
            p.data().copy_(ag.randn(*p.shape(), seed=k, dtype=dt) * 0.2)
        return m

    x = Variable(ag.randn(5, 17, seed=50, dtype=dt))
    t = ag.from_numpy(np.array([0, 2, 1, 1, 0], np.int32))

    def stepper(m):
        opt = optim.SGD(m.parameters(), lr=0.1)

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(m(x), t)
            loss.backward()
            opt.step()
            return loss.data()
        return step

    eager_m, cap_m = make(), make()
    eager, fn = stepper(eager_m), capture(stepper(cap_m))
    for _ in range(3):
        want, got = eager(), fn()
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert fn.replays == 2
    # create_graph through the 16-bit linear with its bias (the Variable rule)
    w0 = eager_m[0].weight
    (gw,) = ag.autograd.grad(F.cross_entropy(eager_m(x), t), [w0], create_graph=True)
    assert gw.data().dtype == w0.data().dtype
    (gw * gw).sum().backward()
    assert w0.grad().dtype == w0.data().dtype
    for p, q in zip(eager_m.parameters(), cap_m.parameters()):
        assert p.data().dtype == q.data().dtype and str(p.data().dtype) == dt
        np.testing.assert_array_equal(q.data().numpy(), p.data().numpy())

    # one step against torch's 16-bit module (its CPU 16-bit linear and SGD) on the same values
    m = make()
    tm = torch.nn.Sequential(torch.nn.Linear(17, 65), torch.nn.ReLU(), torch.nn.Linear(65, 3)).to(tdt(torch, dt))
    with torch.no_grad():
        for p, tp in zip(m.parameters(), tm.parameters()):
            tp.copy_(as_torch(torch, p))
    loss = stepper(m)()
    topt = torch.optim.SGD(tm.parameters(), lr=0.1)
    tl = torch.nn.functional.cross_entropy(tm(as_torch(torch, x)), torch.tensor([0, 2, 1, 1, 0]))
    tl.backward()
    topt.step()
    close(loss, tl.float().detach().numpy(), dt, ulp=2)
    # (an updated weight near 0 is a cancellation, p - lr * g: compared at the scale of the weights,
    # 2 ulps of the largest)
    eps = 2.0 ** (-10 if dt == "float16" else -7)
    for p, tp in zip(m.parameters(), tm.parameters()):
        want = tp.detach().float().numpy()
        assert np.abs(p.data().numpy() - want).max() <= 2 * eps * np.abs(want).max()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_16_bit_recurrent_layers_run_the_recurrence_in_float32(dt, kind):
    torch = pytest.importorskip("torch")
    from axonml_autograd import nn
    ours = getattr(nn, kind)(5, 7, num_layers=2).to(getattr(ag, dt))
    theirs = getattr(torch.nn, kind)(5, 7, num_layers=2)
    theirs.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in
                            ((k, t.astype("float32").numpy()) for k, t in ours.state_dict().items())})
    x = leaf([4, 3, 5], 3, dt)
    y, _ = ours(x)
    assert str(y.dtype) == dt
    tx = torch.from_numpy(x.data().astype("float32").numpy()).requires_grad_()
    ty, _ = theirs(tx)
    # The input projections are 16-bit products (rounded), the recurrence float32, the outputs rounded
    # once: a few 16-bit steps from torch's float32 run on the same values.
    step = 2.0 ** (-8 if dt == "bfloat16" else -11)
    np.testing.assert_allclose(y.data().astype("float32").numpy(), ty.detach().numpy(), atol=6 * step)
    y.float().sum().backward()
    ty.sum().backward()
    assert str(x.grad.dtype) == dt and str(ours.weight_hh_l0.grad.dtype) == dt
    g, tg = x.grad.astype("float32").numpy(), tx.grad.numpy()
    assert np.abs(g - tg).max() <= 0.05 * np.abs(tg).max()


@pytest.mark.parametrize("dt", DTYPES)
def test_a_device_that_cannot_build_16_bit_reads_falls_back_to_float32_copies(dt, monkeypatch):
    """Sums and cross-entropy read 16-bit tensors in their kernels; where such a kernel does not build,
    the float32 kernels run on float32 copies (one warning), with the same values."""
    from axonml_autograd import kernels
    x = leaf((7, 129), 21, dt)
    t = ag.from_numpy((np.arange(7) * 11 % 129).astype(np.int32))
    want_sum, want_mean = x.data().sum().numpy(), x.data().mean(1).numpy()
    want_loss = F.cross_entropy(x, t)
    want_loss.backward()
    want_grad = x.grad().numpy()
    x.zero_grad()

    dev = x.data().device
    monkeypatch.setattr(dev, "failed_builds", {})
    real = kernels.get_kernel

    def refusing(device, template, name, **params):
        if params.get("xtype") in ("bf16", "half") or params.get("in_ctype") in ("bf16", "half"):
            raise kernels.KernelBuildError(f"{template}: refused for the test")
        return real(device, template, name, **params)

    monkeypatch.setattr(kernels, "get_kernel", refusing)
    with pytest.warns(kernels.KernelFallbackWarning):
        got_sum = x.data().sum().numpy()
    np.testing.assert_array_equal(got_sum, want_sum)
    np.testing.assert_array_equal(x.data().mean(1).numpy(), want_mean)
    with pytest.warns(kernels.KernelFallbackWarning):
        loss = F.cross_entropy(x, t)
    loss.backward()
    np.testing.assert_array_equal(loss.data().numpy(), want_loss.data().numpy())
    np.testing.assert_array_equal(x.grad().numpy(), want_grad)

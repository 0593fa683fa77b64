"""Convolution and pooling over NCHW (and NCL) tensors, forward and backward side by side.

Convolution is im2col + the batched matmul of ``matmul.py``: the input is unfolded into a column
matrix ``cols [images, groups, K, OH*OW]`` (``K = in/groups * kh * kw``; ``cl_kernels/conv.cl.mako``),
and the weight ``[out, in/groups, kh, kw]``, seen as ``[groups, out/groups, K]``, multiplies it in
one launch per chunk of the batch (the weight broadcast over the chunk's images). Chunks hold about
``CHUNK_BYTES`` of columns, so the product reads them from the cache, not from memory. Backward
keeps the input, not the columns, and for each chunk:

- weight: unfolds the chunk again and multiplies ``cols @ g^T`` per image; the images' products are
  summed over the batch at the end (one reduction, a fixed order);
- input:  ``W^T @ g`` per image (the transpose read in place), folded back onto the input by col2im,
  a gather with a fixed order of summation (no atomics: the same bits at every run);
- bias:   ``g`` summed over the batch and the output positions.

A 1x1 convolution with stride 1 and no padding needs no unfolding: its columns are the input.

That is the path of GPU targets. On CPU targets the three products are implicit GEMMs instead
(``cl_kernels/conv_gemm.cl.mako``, "Implicit GEMM" below): no column matrix, the input padded once and
read through index tables, the bias added in the forward's kernel, the stride-1 input gradient a
convolution of the padded upstream gradient with the flipped weight (a strided one takes the path
above), and the weight gradient summed over runs of images. ``AXONML_CONV`` (or ``path``) forces one.

The transposed convolution (``conv_transpose1d/2d``) is the input gradient above run as an op, for the
convolution from its output's size to its input's: the same chunks, products and col2im, no new kernel.

Pooling (``cl_kernels/pool.cl.mako``) is one kernel each way; max pooling keeps the position of each
window's maximum for backward, and every backward is a gather as well. Semantics, argument names and
error cases follow ``torch.nn.functional``.

Gradients of gradients (``create_graph=True``): the convolution, its input gradient and its weight
gradient are recorded ops whose differentiable rules are made of each other (see ``_CONV_FAMILY``);
each pool and its gradient (the adjoint map) likewise (``_POOL_NODES``). Both run the kernels above.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([float(k) for k in range(16)], [1, 1, 4, 4]), requires_grad=True)
>>> w = Variable(Tensor.from_vec([1.0, 0.0, 0.0, 1.0], [1, 1, 2, 2]), requires_grad=True)
>>> y = conv2d(x, w, stride=2)          # y[i, j] = x[2i, 2j] + x[2i+1, 2j+1]
>>> y.to_vec()
[5.0, 9.0, 21.0, 25.0]
>>> max_pool2d(x, 2).to_vec()
[5.0, 7.0, 13.0, 15.0]
>>> y.sum().backward()
>>> w.grad().to_vec()
[20.0, 24.0, 36.0, 40.0]
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from .. import amp
from .. import kernels, launch
from ..grad_fn import record
from ..no_grad import is_grad_enabled
from ..matmul import matmul, split_blocks
from ..tensor import Tensor, check_index32
from ..elementwise_kernels import elementwise
from ..rows import reduce

_CONV = "conv.cl.mako"
_POOL = "pool.cl.mako"


# ------------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------------

def _variable(x, op, what="input"):
    from ..variable import as_variable
    return as_variable(x, op, what)


def _ints(value, n, op, what, minimum):
    """``value`` as a tuple of ``n`` ints >= ``minimum`` (an int is repeated, as torch does)."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        vals = (int(value),) * n
    elif isinstance(value, (tuple, list)) and len(value) == n and all(
            isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value):
        vals = tuple(int(v) for v in value)
    elif isinstance(value, (tuple, list)) and len(value) == 1 and n > 1:
        return _ints(value[0], n, op, what, minimum)
    else:
        raise TypeError(f"{op}: {what} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in vals):
        raise ValueError(f"{op}: {what} must be >= {minimum}, got {value!r}")
    return vals


def _check_input(x, op, spatial):
    """The input as a batched tensor: (Variable, batched?) for an [N, C, *spatial] or [C, *spatial] input."""
    nd = x.ndim()
    if nd not in (spatial + 1, spatial + 2):
        layout = "NCL" if spatial == 1 else "NCHW"
        raise ValueError(f"{op}: expected a {spatial + 1}-D or {spatial + 2}-D input ({layout}, the batch "
                         f"optional), got shape {x.shape()}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: input must be float32 or float64, got {x.dtype}")
    if nd == spatial + 1:
        return x.reshape([1] + x.shape()), False
    return x, True


# The window geometry's parameter names, in the order of _geometry's tuple (cl_kernels/common.mako).
GEOMETRY = ("H", "W", "OH", "OW", "KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW")


def _launch(template, name, dtype, n, args: dict, rows=None, **params):
    """Enqueue ``name`` over ``n`` items (rows on CPUs for the conv kernels, elements otherwise), its
    arguments ``args`` by name."""
    tensors = [a for a in args.values() if isinstance(a, Tensor)]
    dev = tensors[0].device
    check_index32("convolution" if template == _CONV else "pooling", n, *tensors)
    if rows is not None:
        params["rows"] = rows
    dtype, args, originals = kernels.float32_working_copies(dtype, args)   # 16-bit: in float32, rounded once
    knl = kernels.get_kernel(dev, template, name, ctype=kernels.ctype(dtype), **params)
    local = 1 if rows else kernels.fit_local(dev, knl, dev.target.local_size(256 if dev.target.is_gpu else 64))
    kernels.launch(dev, knl, (kernels.round_up(n, local),), (local,), **{"n": n, **args})   # (args may count otherwise)
    kernels.write_back(knl, args, originals)


# ------------------------------------------------------------------------------------------------------
# Convolution
# ------------------------------------------------------------------------------------------------------

def _conv_padding(padding, n, op, stride, dilation, kernel):
    """(before, after) per spatial axis, from an int, a tuple, or torch's "valid" / "same"."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return [(0, 0)] * n
        if mode == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                                 f"(stride={stride})")
            # torch puts the odd one of an even total at the end.
            return [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for d, k in zip(dilation, kernel)]
        raise ValueError(f"{op}: padding must be an int, a tuple of {n} ints, 'valid' or 'same', got {padding!r}")
    return [(p, p) for p in _ints(padding, n, op, "padding", 0)]


def _operands(op, x, weight, groups, spatial, layout):
    """The input (batched) and weight Variables of a convolution or transposed convolution, checked:
    ranks, dtypes and ``groups``; ``layout`` names the weight's leading axes for the error."""
    x = _variable(x, op, "input")
    w = _variable(weight, op, "weight")
    x, batched = _check_input(x, op, spatial)
    if w.ndim() != spatial + 2:
        want = f"{layout}, k]" if spatial == 1 else f"{layout}, kh, kw]"
        raise ValueError(f"{op}: weight must be {spatial + 2}-D {want}, got shape {w.shape()}")
    if w.dtype != x.dtype:
        raise TypeError(f"{op}: input and weight dtypes differ: {x.dtype} and {w.dtype}")
    if not isinstance(groups, (numbers.Integral, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    return x, w, batched, int(groups)


def _convolution(op, x, weight, bias, stride, padding, dilation, groups, spatial):
    """conv1d and conv2d: check and normalise the arguments, then run the 2-D form."""
    x, w, batched, groups = _operands(op, x, weight, groups, spatial, "[out, in/groups")
    N, C = x.shape()[:2]
    O, Cg = w.shape()[:2]
    kernel = tuple(w.shape()[2:])
    if O % groups:
        raise ValueError(f"{op}: out_channels ({O}, weight {w.shape()}) must be divisible by groups={groups}")
    if Cg * groups != C:
        raise ValueError(f"{op}: input {x.shape()} has {C} channels, but weight {w.shape()} with groups={groups} "
                         f"expects {Cg * groups}")
    if bias is not None:
        bias = _variable(bias, op, "bias")
        if bias.shape() != [O]:
            raise ValueError(f"{op}: bias must have shape [{O}] (out_channels of weight {w.shape()}), "
                             f"got {bias.shape()}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{op}: input and bias dtypes differ: {x.dtype} and {bias.dtype}")
    stride = _ints(stride, spatial, op, "stride", 1)
    dilation = _ints(dilation, spatial, op, "dilation", 1)
    pads = _conv_padding(padding, spatial, op, stride, dilation, kernel)
    sizes = x.shape()[2:]
    out = [(s + p0 + p1 - d * (k - 1) - 1) // st + 1
           for s, (p0, p1), d, k, st in zip(sizes, pads, dilation, kernel, stride)]
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: the kernel {list(kernel)} (dilation {list(dilation)}) is larger than the padded "
                         f"input {list(sizes)} (padding {[p for p in pads]})")
    if spatial == 1:   # as 2-D with a height of 1
        x4 = x.reshape([N, C, 1, sizes[0]])
        w4 = w.reshape([O, Cg, 1, kernel[0]])
        y = _conv2d(x4, w4, bias, (1, stride[0]), (0, pads[0][0]), (1, dilation[0]), groups, (1, out[0]))
        y = y.reshape([N, O, out[0]])
    else:
        y = _conv2d(x, w, bias, stride, (pads[0][0], pads[1][0]), dilation, groups, tuple(out))
    return y if batched else y.reshape(y.shape()[1:])


def _geometry(H, W, OH, OW, KH, KW, stride, pad, dilation):
    return (H, W, OH, OW, KH, KW, stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1])


def _row_block(planes, rows, device):
    """Rows per work-item on CPUs: whole planes, unless that leaves fewer than a few items per core."""
    want = 2 * device.target.items_per_unit * device.target.compute_units
    return max(1, rows // max(1, -(-want // max(planes, 1)))) if planes < want else rows


def _im2col(x: Tensor, geom, cols: Tensor, n0=0) -> Tensor:
    """Unfold images n0, n0 + 1, ... of ``x`` into ``cols`` ([images, G, K, L], written in place)."""
    OH = geom[2]
    if cols.numel():
        dev = x.device
        planes = cols.numel() // (OH * geom[3])
        rows = not dev.target.is_gpu
        rb = _row_block(planes, OH, dev) if rows else 1
        n = planes * -(-OH // rb) if rows else cols.numel()
        _launch(_CONV, "im2col", x.dtype, n, dict(x_base=x, cols=cols, **dict(zip(GEOMETRY, geom)), RB=rb,
                                                  x_off=n0 * math.prod(x._shape[1:])), rows=rows)
    return cols


def _col2im(dcols: Tensor, geom, dx: Tensor, n0, images) -> Tensor:
    """Fold ``dcols`` ([images, G, K, L]) onto images n0 .. n0 + images - 1 of ``dx`` (written in place)."""
    per_image = math.prod(dx._shape[1:])
    if images * per_image:
        dev = dx.device
        H = geom[0]
        planes = images * dx._shape[1]
        rows = not dev.target.is_gpu
        rb = _row_block(planes, H, dev) if rows else 1
        n = planes * -(-H // rb) if rows else images * per_image
        _launch(_CONV, "col2im", dx.dtype, n, dict(dcols=dcols, dx_base=dx, **dict(zip(GEOMETRY, geom)), RB=rb,
                                                   dx_off=n0 * per_image), rows=rows)
    return dx


# ------------------------------------------------------------------------------------------------------
# Implicit GEMM (CPUs): no column matrix (cl_kernels/conv_gemm.cl.mako)
# ------------------------------------------------------------------------------------------------------
# The three products run as one blocked kernel that gathers im2col's matrix from a zero-padded copy of
# the input (two index tables added, computed in the kernel): the forward, the weight gradient (each
# work-item sums a run of images into its own partial, then one reduction in a fixed order), and for
# stride 1 the input gradient, a stride-1 convolution of the padded upstream gradient with the flipped
# weight. Measured on a 2-core EPYC (PoCL) for [64, 16, 28, 28] * [32, 16, 3, 3]: see README.

_GEMM = "conv_gemm.cl.mako"
# Micro-tiles (MR rows, NV vectors) whose accumulators, NV vectors of B and one broadcast fit the vector
# registers: 16 of them where vectors are narrower than 512 bits, 32 with AVX-512. Each call takes the
# one that pads its M x N least, of equals the larger (see _pick_tile). On a 2-core EPYC (AVX2) 4x2 ran
# the forward of [64, 16, 28, 28] * [32, 16, 3, 3] (32 rows: 6x2 pads them to 36) in 2.8 ms against 3.0
# for 6x2 (matmul's), 3.1 for 8x1, and 5.3 for 4x3 (16 accumulators: spills); its input gradient in 3.9
# against 4.1.
GEMM_TILES_NARROW = ((4, 2), (6, 2))
GEMM_TILES_WIDE = ((8, 2), (4, 2))
GEMM_SLICE_BYTES = 16 * 1024    # one k slice of an NR-column panel: half of a 32 KB L1
GEMM_KT_MAX = 1024              # the k slice where no panel is copied (stride 1: B read in place)
GEMM_SLACK = 64                 # elements past a padded input that a last panel may read (and drop)
GEMM_A_BLOCK_BYTES = 64 * 1024  # the rows of A one work-item re-reads per column panel
GEMM_ITEMS_PER_CU = 4           # split the work until there are this many work-items per compute unit

# Which path convolutions take: "auto" (implicit GEMM on CPU targets, im2col + matmul on GPUs),
# "gemm" or "im2col" (tests force each; the environment variable AXONML_CONV sets it per process).
path = os.environ.get("AXONML_CONV", "auto").strip().lower() or "auto"


def _use_gemm(device, spec) -> bool:
    choice = path
    if choice not in ("auto", "gemm", "im2col"):
        raise ValueError(f"conv: path must be 'auto', 'gemm' or 'im2col', got {choice!r}")
    if choice == "auto":
        return not device.target.is_gpu and not spec.pointwise
    return choice == "gemm"


def _gemm_params(device, dtype):
    """The parameters of conv_gemm's program on ``device`` with the tile size left out (ctype, vw,
    and the 'tiles' candidates): the first vector width that builds."""
    key = ("conv_gemm", id(device), dtype)
    cached = _gemm_cache.get(key)
    if cached is not None:
        return cached
    item = np.dtype(dtype).itemsize

    def make(vw):
        tiles = GEMM_TILES_WIDE if vw * item >= 64 else GEMM_TILES_NARROW
        params = dict(ctype=kernels.ctype(dtype), vw=vw, tiles=tiles)
        kernels.get_kernel(device, _GEMM, "conv_gemm", **_tile_params(device, params, *tiles[0], "fwd"))
        return params

    params = kernels.first_that_builds(device, f"conv_gemm {kernels.ctype(dtype)}",
                                       device.target.vector_widths(dtype, least=1), make)
    _gemm_cache[key] = params
    return params


def _tile_params(device, params, mr, nv, mode):
    """conv_gemm's template parameters for an MR x NV-vector micro-tile in ``mode``."""
    vw = params["vw"]
    item = 8 if params["ctype"] == "double" else 4
    # Local memory: the panel (a quarter of it at most) and two int tables of kt_max (an eighth each).
    budget = min(GEMM_SLICE_BYTES, device.target.local_mem // 4)
    kc_max = max(8, budget // (nv * vw * item))
    kt_max = max(kc_max, min(GEMM_KT_MAX, device.target.local_mem // 32))
    return dict(ctype=params["ctype"], vw=vw, mr=mr, nr=nv * vw, kc_max=kc_max, kt_max=kt_max,
                mode=mode, direct=bool(use_direct and mode == "fwd"))


def _small_params(device, dtype):
    """The parameters the helper kernels (pad_planes, flip_weight) are built with: the first tile's."""
    params = _gemm_params(device, dtype)
    return _tile_params(device, params, *params["tiles"][0], "fwd")


_gemm_cache: dict = {}
forced_tile = None    # (mr, nv): tests force each micro-tile
use_direct = True     # fwd mode reads consecutive positions in place (no panel): measured faster
use_blend = True      # stride 1: the output's own positions, vectors past a row's end blended


def _pad_planes(t: Tensor, planes, H, W, HO, WO, top, left, sums=None) -> Tensor:
    """``t`` seen as ``planes`` planes [H, W], each placed at (top, left) in a zero [HO, WO] plane, and
    GEMM_SLACK + WO elements more (not written: read only for columns that are dropped).
    ``sums`` (a [planes * HO] tensor): also each output row's sum of ``t`` (its rows must all be kept)."""
    out = Tensor._wrap((planes * HO * WO + GEMM_SLACK + WO,), t.dtype, t.device)
    if planes * HO * WO:
        name = "pad_planes" if sums is None else "pad_planes_sum"
        knl = kernels.get_kernel(t.device, _GEMM, name, **_small_params(t.device, t.dtype))
        rb = _row_block(planes, HO, t.device)
        n = planes * -(-HO // rb)
        check_index32("convolution", out.numel(), t.numel())
        extra = {} if sums is None else {"sums": sums}
        kernels.launch(t.device, knl, (n,), (1,), x=t, y=out, **extra, H=H, W=W, HO=HO, WO=WO, top=top,
                       left=left, RB=rb, n=n)
    return out


def _pick_tile(base, M, N):
    """The micro-tile (mr, nv) that pads M x N least, of equals the one with the most accumulators (more
    independent sums in flight: the weight gradient of [64, 16, 28, 28] * [32, 16, 3, 3], 144 taps by 32,
    ran 6x2 in 2.79 ms against 3.01 for 4x2 on a 2-core EPYC), unless one is forced."""
    vw = base["vw"]
    return forced_tile or min(base["tiles"], key=lambda t: (-(-M // t[0]) * t[0] * -(-N // (t[1] * vw)) * t[1] * vw,
                                                            -t[0] * t[1]))


def _stride1_columns(dev, dtype, M, OH, OW, WP):
    """(CW, columns, gap) of a stride-1 product with M rows over an OH x OW output whose input rows
    are WP long. The output's own positions (CW = OW) when a row is a whole number of column panels
    (each panel a contiguous run), or when rows are at least a vector long (gap = WP - OW: a vector
    that runs past a row's end blends in the next row's start, read gap further on); else the padded
    grid's positions (CW = WP: every panel contiguous, the columns past OW in a row computed and
    dropped: 7% more work for 28-wide rows)."""
    base = _gemm_params(dev, dtype)
    nr = _pick_tile(base, M, OH * OW)[1] * base["vw"]
    if OW % nr == 0:
        return OW, OH * OW, 0
    if use_blend and use_direct and base["vw"] > 1 and OW >= base["vw"]:
        return OW, OH * OW, WP - OW
    return WP, (OH - 1) * WP + OW, 0


def _gemm(a: Tensor, xp: Tensor, c: Tensor, bias, dims, strides, geo, mode, flat=False, gap=0):
    """Enqueue conv_gemm in ``mode`` ("fwd" | "wgrad"): ``dims`` (M, N, K, ldc, G, images, NIMG),
    ``strides`` (w_img, w_grp, x_img, x_grp, c_img, c_grp), ``geo`` (KH, KW, HPWP, WP, DH, DW, CW, OW, SH, SW)."""
    dev = a.device
    # A training loop repeats its signatures: the kernel, the work split and every scalar argument are
    # made once per signature (~100 us of Python each time otherwise, on a host that shares the cores).
    key = (dev, a.dtype, dims, strides, geo, mode, bool(flat), gap, bias is None, forced_tile, use_blend, use_direct,
           GEMM_SLICE_BYTES, GEMM_KT_MAX, GEMM_A_BLOCK_BYTES, GEMM_ITEMS_PER_CU)
    plan = _gemm_plans.get(key)
    if plan is None:
        plan = _gemm_plans[key] = _gemm_plan(dev, a.dtype, dims, strides, geo, mode, flat, bias is not None, gap)
        if len(_gemm_plans) > 1024:
            _gemm_plans.clear()
    knl, gsize, fill = plan
    check_index32("convolution", a.numel(), xp.numel(), c.numel())
    launch.kernel(dev, knl, gsize, (1, 1, 1), fill(a, xp, c, bias if bias is not None else a), packed=True)
    # Hand the product (and what was queued before it) to the device now: it runs while Python records
    # and launches what comes next, instead of waiting for the pending list to fill.
    launch.flush(dev)


_gemm_plans: dict = {}


def _gemm_plan(dev, dtype, dims, strides, geo, mode, flat, has_bias, gap=0):
    """(kernel, global size, argument filler of (w_base, x_base, c_base, bias)) for one signature."""
    M, N, K, ldc, G, images, NIMG = dims
    base = _gemm_params(dev, dtype)
    mr, nv = _pick_tile(base, M, N)
    params = _tile_params(dev, base, mr, nv, mode)
    knl = kernels.get_kernel(dev, _GEMM, "conv_gemm", **params)
    mr, nr, kc_max, item = params["mr"], params["nr"], params["kc_max"], np.dtype(dtype).itemsize
    # flat (stride 1, fwd: every panel a contiguous run): every panel is read in place, so a k slice is
    # bounded by the offset table only.
    flat = bool(flat and params["direct"])
    cap = params["kt_max"] if flat else kc_max
    kc = -(-K // -(-K // cap))                 # equal slices, none past the cap
    pm, pn = -(-M // mr), -(-N // nr)
    batch = -(-NIMG // images) * G
    want = GEMM_ITEMS_PER_CU * dev.target.compute_units
    # wgrad: all rows (taps) in one work-item, so each panel of g is copied once, not once per row
    # block (2.58 against 2.86 ms for [64, 16, 28, 28] * [32, 16, 3, 3], measured on the 2-core EPYC).
    mcp = min(pm, params["kt_max"] // mr) if mode == "wgrad" else max(1, min(pm, GEMM_A_BLOCK_BYTES // (mr * kc * item)))
    mcp, ncp = split_blocks(pm, pn, mcp, batch, want)
    values = dict(**dict(zip(("M", "N", "K", "ldc", "G", "images", "NIMG"), dims)),
                  **dict(zip(("w_img", "w_grp", "x_img", "x_grp", "c_img", "c_grp"), strides)),
                  **dict(zip(("KH", "KW", "HPWP", "WP", "DH", "DW", "CW", "OW", "SH", "SW"), geo)),
                  mcp=mcp, ncp=ncp, kc=kc, has_bias=int(has_bias), flat=int(flat), gap=int(gap if flat else 0))
    fill = kernels.signature(knl).partial(values, ("w_base", "x_base", "c_base", "bias"))
    return knl, (-(-pm // mcp), -(-pn // ncp), batch), fill


def _padded_size(spec):
    """(HP, WP): the rows and columns of the padded input that the windows read."""
    _, _, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW = spec.geom
    return (OH - 1) * SH + (KH - 1) * DH + 1, (OW - 1) * SW + (KW - 1) * DW + 1


def _padded_input(xt: Tensor, spec, xp=None):
    """(xp, HP, WP): the input zero-padded to exactly the rows and columns the windows read (``xp``:
    one made before, e.g. by the forward)."""
    N, C, H, W = spec.x_shape
    HP, WP = _padded_size(spec)
    if xp is None:
        xp = _pad_planes(xt, N * C, H, W, HP, WP, spec.geom[8], spec.geom[9])
    return xp, HP, WP


def _gemm_forward(xt: Tensor, wt: Tensor, spec, bias=None, xp=None) -> Tensor:
    """conv2d(x, w) (+ bias [O], added in the kernel) by implicit GEMM (``xp``: the padded input, if
    made already)."""
    N, G, Og, K, L = spec.dims
    C = spec.x_shape[1]
    _, _, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW = spec.geom
    xp, HP, WP = _padded_input(xt, spec, xp)
    y = Tensor._wrap(spec.y_shape, xt.dtype, xt.device)
    # Stride 1: every column panel a contiguous run of xp (_stride1_columns); otherwise the output's
    # own positions, gathered into panels.
    stride1 = (SH, SW) == (1, 1)
    CW, cols, gap = _stride1_columns(xt.device, xt.dtype, Og, OH, OW, WP) if stride1 else (OW, L, 0)
    _gemm(wt, xp, y, bias, (Og, cols, K, L, G, 1, N),
          (0, Og * K, C * HP * WP, (C // G) * HP * WP, G * Og * L, Og * L),
          (KH, KW, HP * WP, WP, DH, DW, CW, OW, SH, SW), "fwd", flat=stride1, gap=gap)
    return y


def _gemm_weight_grad(g: Tensor, xt: Tensor, spec, xp=None) -> Tensor:
    """The weight gradient by implicit GEMM: per run of images, dW^T [G, K, Og]; the runs summed."""
    N, G, Og, K, L = spec.dims
    C = spec.x_shape[1]
    _, _, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW = spec.geom
    xp, HP, WP = _padded_input(xt, spec, xp)
    # Each work-item sums a run of images; enough runs for every compute unit to have several (twice the
    # products' count: a run is long, and a core slowed by other work should not leave the last one late).
    runs = max(1, min(N, 2 * GEMM_ITEMS_PER_CU * g.device.target.compute_units // G))
    images = -(-N // runs)
    runs = -(-N // images)
    part = Tensor._wrap((runs, G, K, Og), g.dtype, g.device)
    _gemm(g, xp, part, None, (K, Og, L, Og, G, images, N),
          (G * Og * L, Og * L, C * HP * WP, (C // G) * HP * WP, G * K * Og, K * Og),
          (KH, KW, HP * WP, WP, DH, DW, OW, OW, SH, SW), "wgrad")
    # The runs summed in order and transposed to the weight's layout, in one launch.
    gw = Tensor._wrap(spec.w_shape, g.dtype, g.device)
    dev = g.device
    knl = kernels.get_kernel(dev, _GEMM, "sum_runs", **_small_params(dev, g.dtype))
    n = gw.numel()
    local = kernels.fit_local(dev, knl, dev.target.local_size(64))
    kernels.launch(dev, knl, (kernels.round_up(n, local),), (local,), part=part, dw=gw, runs=runs, K=K, Og=Og, n=n)
    return gw


def _gemm_input_grad(g: Tensor, wt: Tensor, spec, bias=False):
    """The input gradient of a stride-1 convolution: the convolution of the upstream gradient, padded
    by (kernel extent - 1 - padding), with the flipped weight wf[g, c, o, i, j] = w[g*Og + o, c, -i, -j].
    With ``bias``: (that, the bias gradient), the latter summed from the padding kernel's row sums of g
    (None where the padding crops rows of g)."""
    N, G, Og, K, L = spec.dims
    C, H, W = spec.x_shape[1:]
    Cg = C // G
    _, _, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW = spec.geom
    HPg, WPg = H + (KH - 1) * DH, W + (KW - 1) * DW
    top = (KH - 1) * DH - PH
    sums = None
    if bias and 0 <= top and top + OH <= HPg:   # (every row of g kept: its sums are g's)
        blocks = -(-HPg // _row_block(N * G * Og, HPg, g.device))    # the padding's row blocks per plane
        sums = Tensor._wrap((N, G * Og, blocks), g.dtype, g.device)
    gp = _pad_planes(g, N * G * Og, OH, OW, HPg, WPg, top, (KW - 1) * DW - PW, sums)
    dev = g.device
    wf = Tensor._wrap((G, Cg, Og * KH * KW), wt.dtype, dev)
    knl = kernels.get_kernel(dev, _GEMM, "flip_weight", **_small_params(dev, wt.dtype))
    n = wf.numel()
    local = kernels.fit_local(dev, knl, dev.target.local_size(64))
    kernels.launch(dev, knl, (kernels.round_up(n, local),), (local,), w=wt, wf=wf, Og=Og, Cg=Cg, KK=KH * KW, n=n)
    dx = Tensor._wrap(spec.x_shape, g.dtype, dev)
    CW, cols, gap = _stride1_columns(dev, g.dtype, Cg, H, W, WPg)
    _gemm(wf, gp, dx, None, (Cg, cols, Og * KH * KW, H * W, G, 1, N),
          (0, Cg * Og * KH * KW, G * Og * HPg * WPg, Og * HPg * WPg, C * H * W, Cg * H * W),
          (KH, KW, HPg * WPg, WPg, DH, DW, CW, W, 1, 1), "fwd", flat=True, gap=gap)
    if not bias:
        return dx
    if sums is None:
        return dx, None
    if sums._shape[2] > 1:
        sums = reduce(sums, "sum", 2)
    return dx, reduce(sums.reshape(sums._shape[:2]), "sum", 0)

# The batch goes through im2col and the products in chunks whose columns take about this many bytes:
# a chunk's columns are then still in the cache when the product reads them (for [64, 16, 28, 28]
# with 3x3 filters, the whole batch's columns are 29 MB; its forward+backward took 38 ms in one go
# against 23 ms in 4 MB chunks on a busy 2-core machine, 16.5 against 14.5 ms on a quieter one; 1 MB
# chunks were slower again, launch costs). Backward does not keep the columns: it unfolds each chunk
# again, which also keeps the graph's memory at the input's size.
CHUNK_BYTES = 4 << 20


def _window(t: Tensor, shape) -> Tensor:
    """A tensor of ``shape`` on ``t``'s storage (the offset goes to the kernel separately)."""
    return Tensor(shape, t.dtype, t.device, _storage=t._storage)


def _chunks(N, per_image_bytes):
    size = max(1, min(N, CHUNK_BYTES // max(1, per_image_bytes)))
    return [(n0, min(size, N - n0)) for n0 in range(0, N, size)], size


class _ConvSpec(tuple):
    """The shapes and launch geometry that a convolution and its two gradients share."""
    __slots__ = ()
    x_shape = property(lambda s: s[0])     # (N, C, H, W)
    w_shape = property(lambda s: s[1])     # (O, C/groups, KH, KW)
    y_shape = property(lambda s: s[2])     # (N, O, OH, OW)
    dims = property(lambda s: s[3])        # (N, G, Og, K, L)
    geom = property(lambda s: s[4])
    pointwise = property(lambda s: s[5])   # a 1x1 filter with stride 1 and no padding: no unfolding
    chunks = property(lambda s: s[6])      # [(first image, images)] of the batch
    chunk = property(lambda s: s[7])       # the largest chunk


def _conv_spec(x_shape, w_shape, stride, pad, dilation, groups, out_hw, dtype):
    N, C, H, W = x_shape
    O, Cg, KH, KW = w_shape
    OH, OW = out_hw
    G, Og, K, L = groups, O // groups, Cg * KH * KW, OH * OW
    # (A transposed convolution's output_padding with dilation can make a 1x1 filter's input larger than
    # its output: then the columns are not the input.)
    pointwise = KH == KW == 1 and tuple(stride) == (1, 1) and tuple(pad) == (0, 0) and (OH, OW) == (H, W)
    chunks, size = ([(0, N)], N) if pointwise else _chunks(N, G * K * L * dtype.itemsize)
    return _ConvSpec((tuple(x_shape), tuple(w_shape), (N, O, OH, OW), (N, G, Og, K, L),
                      _geometry(H, W, OH, OW, KH, KW, stride, pad, dilation), pointwise, chunks, size))


def _conv_forward(xt: Tensor, wt: Tensor, spec) -> Tensor:
    """conv2d(x, w) without bias, [N, O, OH, OW]: per chunk of the batch, im2col and one batched product."""
    if xt.dtype.itemsize == 2:   # float16/bfloat16: float32 copies, the float32 path, one rounding
        return _conv_forward(xt.astype("float32"), wt.astype("float32"), spec).astype(xt.dtype)
    if _use_gemm(xt.device, spec):
        return _gemm_forward(xt, wt, spec)
    N, G, Og, K, L = spec.dims
    wm = wt.reshape((G, Og, K))
    y = Tensor._wrap((N, G, Og, L), xt.dtype, xt.device)
    if len(spec.chunks) == 1:
        cols = xt.reshape((N, G, K, L)) if spec.pointwise else \
            _im2col(xt, spec.geom, Tensor._wrap((N, G, K, L), xt.dtype, xt.device))
        matmul(wm, cols, out=y)
    else:
        scratch = Tensor._wrap((spec.chunk, G, K, L), xt.dtype, xt.device)
        for n0, m in spec.chunks:
            cols = _im2col(xt, spec.geom, _window(scratch, (m, G, K, L)), n0)
            matmul(wm, cols, out=_window(y, (m, G, Og, L)), offsets=(0, 0, n0 * G * Og * L))
            # Hand each chunk to the device now: it computes while Python prepares the next chunk,
            # instead of waiting for the pending list to fill (a chunk's two launches take ~100 us of Python).
            launch.flush(xt.device)
    return y.reshape(spec.y_shape)


def _conv_backward(g: Tensor, spec, xs=None, wt=None, xp=None, bias=False):
    """The gradients of conv2d(x, w) for the upstream ``g``: (input's, weight's), and the bias's with
    ``bias``. The input's needs the weight ``wt`` (None: not computed), the weight's needs the input
    ``xs`` (None: not computed; ``xp``: its padded copy, when the forward kept one)."""
    if g.dtype.itemsize == 2:    # float16/bfloat16: float32 copies, the float32 path, one rounding each
        up = lambda t: None if t is None else t.astype("float32")   # noqa: E731
        grads = _conv_backward(up(g), spec, up(xs), up(wt), bias=bias)
        return tuple(None if t is None else t.astype(g.dtype) for t in grads)
    gb = None
    if _use_gemm(g.device, spec):
        gw = _gemm_weight_grad(g, xs, spec, xp) if xs is not None else None
        gx = None
        if wt is not None and spec.geom[6:8] == (1, 1):
            # (The padding of g for the input's also sums it for the bias's.)
            gx, gb = _gemm_input_grad(g, wt, spec, bias=True) if bias else (_gemm_input_grad(g, wt, spec), None)
        elif wt is not None:
            gx = _conv_backward_im2col(g, spec, None, wt)[0]
    else:
        gx, gw = _conv_backward_im2col(g, spec, xs, wt)
    if not bias:
        return gx, gw
    return gx, gw, gb if gb is not None else _bias_grad(g)


def _conv_backward_im2col(g: Tensor, spec, xs, wt):
    N_, G_, Og_, K_, L_ = spec.dims
    need_x, need_w = wt is not None, xs is not None
    wm_s = wt.reshape((G_, Og_, K_)) if need_x else None
    gx = Tensor._wrap(spec.x_shape, g.dtype, g.device) if need_x else None
    # Per image, cols @ g^T ([K, Og]; the kernel copies panels of its right operand, and g's
    # [L, Og] is K/Og times smaller than cols' [L, K]), then summed over the batch.
    per_image = Tensor._wrap((N_, G_, K_, Og_), g.dtype, g.device) if need_w else None
    for n0, m in spec.chunks:
        g_m = _window(g, (m, G_, Og_, L_))
        g_off = n0 * G_ * Og_ * L_
        if need_w:
            if spec.pointwise:
                cols, c_off = _window(xs, (m, G_, K_, L_)), n0 * G_ * K_ * L_
            else:
                cols, c_off = _im2col(xs, spec.geom, Tensor._wrap((m, G_, K_, L_), g.dtype, g.device), n0), 0
            matmul(cols, g_m, trans_b=True, out=_window(per_image, (m, G_, K_, Og_)),
                   offsets=(c_off, g_off, n0 * G_ * K_ * Og_))
        if need_x:
            if spec.pointwise:    # the columns' gradient is the input's
                matmul(wm_s, g_m, trans_a=True, out=_window(gx, (m, G_, K_, L_)),
                       offsets=(0, g_off, n0 * G_ * K_ * L_))
            else:
                dcols = matmul(wm_s, g_m, trans_a=True, offsets=(0, g_off, 0))        # [m, G, K, L]
                _col2im(dcols, spec.geom, gx, n0, m)
        launch.flush(g.device)
    gw = None
    if need_w:
        gw_t = reduce(per_image.reshape((N_, G_ * K_ * Og_)), "sum", 0).reshape((G_, K_, Og_))
        gw = gw_t.permute((0, 2, 1)).reshape(spec.w_shape)
    return gx, gw


def _conv_rule(ctx, g):
    saved = ctx.saved_tensors
    xs, ws = saved[:2]
    spec = ctx.spec
    # The gradient of a permuted result arrives as a view, and the chunks below read its storage directly.
    g = g.contiguous()
    need = ctx.needs_input_grad
    # (A third saved tensor: the padded input that an implicit-GEMM forward made, for the weight's.)
    want_bias = len(need) > 2 and need[2]
    grads = _conv_backward(g, spec, xs if need[1] else None, ws if need[0] else None,
                           saved[2] if len(saved) > 2 else None, bias=want_bias)
    return grads if want_bias else grads + (None,)


def _bias_grad(g: Tensor) -> Tensor:
    """The bias gradient of a convolution with the (contiguous) upstream ``g`` [N, O, OH, OW]: g summed
    over the batch and the positions, [O]."""
    N_, O_ = g._shape[:2]
    per_channel = reduce(g.reshape((N_, O_, math.prod(g._shape[2:]))), "sum", 2)   # [N, O]
    return reduce(per_channel, "sum", 0)


# Gradients of gradients. conv2d(x, w), its input gradient GI(g, w) and its weight gradient GW(x, g)
# are bilinear, and their gradients are the same three maps again, by <u, conv(x, w)> = <GI(u, w), x>
# = <GW(x, u), w>:
#   conv(x, w) with upstream u:  x gets GI(u, w),    w gets GW(x, u)
#   GI(g, w)   with upstream v:  g gets conv(v, w),  w gets GW(v, g)
#   GW(x, g)   with upstream v:  x gets GI(g, v),    g gets conv(x, v)
# So each is a recorded op whose rule runs the Tensor code above and whose differentiable rule records
# the family again: exact to every order, with the same kernels as the first-order path.
_CONV_FAMILY = {"conv": "ConvolutionBackward", "input": "ConvolutionInputGradBackward",
                "weight": "ConvolutionWeightGradBackward"}


def _conv_family_op(kind, a, b, spec):
    """A member of the family over Variables: ``conv`` (x, w), ``input`` GI(g, w), ``weight`` GW(x, g)."""
    at, bt = a.data().contiguous(), b.data().contiguous()   # the chunks read their storage directly
    if kind == "conv":
        out = _conv_forward(at, bt, spec)
    elif kind == "input":
        out = _conv_backward(at, spec, wt=bt)[0]
    else:
        out = _conv_backward(bt, spec, xs=at)[1]
    return record(_CONV_FAMILY[kind], out, [a, b], _conv_family_rule, saved=(at, bt), spec=spec, kind=kind,
                  vrule=_conv_family_vrule)


def _conv_family_rule(ctx, v):
    at, bt = ctx.saved_tensors[:2]
    spec, kind = ctx.spec, ctx.kind
    if kind == "conv":
        return _conv_rule(ctx, v)[:2]
    v = v.contiguous()
    need_a, need_b = ctx.needs_input_grad[:2]
    if kind == "input":     # a = g, b = w; a transposed convolution's bias (a third input) gets v summed
        grads = (_conv_forward(v, bt, spec) if need_a else None,
                 _conv_backward(at, spec, xs=v)[1] if need_b else None)
        if len(ctx.needs_input_grad) > 2:
            grads += (_bias_grad(v) if ctx.needs_input_grad[2] else None,)
        return grads
    return (_conv_backward(bt, spec, wt=v)[0] if need_a else None,     # a = x, b = g
            _conv_forward(at, v, spec) if need_b else None)


def _conv_family_vrule(ctx, v):
    at, bt = ctx.saved_tensors[:2]
    spec, kind = ctx.spec, ctx.kind
    need = ctx.needs_input_grad
    a, b = ctx.input(0, at), ctx.input(1, bt)
    if kind == "conv":      # a = x, b = w, and the bias (when there is one) gets v summed
        ga = _conv_family_op("input", v, b, spec) if need[0] else None
        gb = _conv_family_op("weight", a, v, spec) if need[1] else None
        if len(need) > 2:
            return ga, gb, v.sum((0, 2, 3)) if need[2] else None
        return ga, gb
    if kind == "input":
        grads = (_conv_family_op("conv", v, b, spec) if need[0] else None,
                 _conv_family_op("weight", v, a, spec) if need[1] else None)
        if len(need) > 2:
            grads += (v.sum((0, 2, 3)) if need[2] else None,)
        return grads
    return (_conv_family_op("input", b, v, spec) if need[0] else None,
            _conv_family_op("conv", a, v, spec) if need[1] else None)


def _conv2d(x, w, bias, stride, pad, dilation, groups, out_hw):
    """The convolution of 4-D Variables with checked arguments (pad is the top/left amount)."""
    xt, wt = x.data().contiguous(), w.data().contiguous()   # the chunks read their storage directly
    spec = _conv_spec(xt._shape, wt._shape, stride, pad, dilation, groups, out_hw, xt.dtype)
    saved = (xt, wt)
    if _use_gemm(xt.device, spec) and xt.dtype.itemsize != 2:
        # Implicit GEMM: the bias is added by the product's kernel, and the padded input is kept for
        # the weight's gradient (when it will be wanted), instead of padding again.
        xp = _padded_input(xt, spec)[0]
        y = _gemm_forward(xt, wt, spec, bias.data().contiguous() if bias is not None else None, xp)
        if w._requires_grad and is_grad_enabled():
            saved = (xt, wt, xp)
    else:
        # 16-bit with a bias: the convolution and the bias add in float32, rounded once (as torch's)
        fused = bias is not None and xt.dtype.itemsize == 2
        y = _conv_forward(xt.astype("float32"), wt.astype("float32"), spec) if fused else _conv_forward(xt, wt, spec)
        if bias is not None:
            O = wt._shape[0]
            y = elementwise("a + b", [y, bias.data().reshape((1, O, 1, 1))], op="conv2d bias")
            y = y.astype(xt.dtype) if fused else y
    inputs = [x, w] + ([bias] if bias is not None else [])
    # The input, not its columns, is kept: backward unfolds each chunk again while it is in the cache.
    return record("ConvolutionBackward", y, inputs, _conv_rule, saved=saved, spec=spec, kind="conv",
                  vrule=_conv_family_vrule)


@amp.op("conv2d")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as torch) of ``input`` [N, C, H, W] (or [C, H, W]) with
    ``weight`` [out, C/groups, kh, kw] and an optional ``bias`` [out].

    ``stride``, ``dilation`` and ``padding`` are ints or (h, w) pairs; ``padding`` may also be
    ``"valid"`` (none) or ``"same"`` (output as large as the input; stride 1 only).

    >>> from axonml_autograd import Tensor, Variable
    >>> x = Variable(Tensor.ones([2, 4, 5, 5]))
    >>> w = Variable(Tensor.ones([6, 2, 3, 3]))
    >>> conv2d(x, w, padding=1, groups=2).shape()
    [2, 6, 5, 5]
    """
    return _convolution("conv2d", input, weight, bias, stride, padding, dilation, groups, 2)


@amp.op("conv1d")
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution of ``input`` [N, C, L] (or [C, L]) with ``weight`` [out, C/groups, k], as torch.

    >>> from axonml_autograd import Tensor, Variable
    >>> x = Variable(Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [1, 1, 4]))
    >>> conv1d(x, Variable(Tensor.from_vec([1.0, -1.0], [1, 1, 2])), padding="same").to_vec()
    [-1.0, -1.0, -1.0, 4.0]
    """
    return _convolution("conv1d", input, weight, bias, stride, padding, dilation, groups, 1)


# ------------------------------------------------------------------------------------------------------
# Transposed convolution
# ------------------------------------------------------------------------------------------------------
# conv_transpose(x, w) is the input gradient GI(x, w) of the convolution that maps an image of the
# transposed convolution's output size to one of x's size, with the same weight, stride, padding,
# dilation and groups: the family member "input" above. Its gradients are the family again: the input
# gets conv(v, w), the weight GW(v, x), and double backward comes with the family's rules.

def _conv_transpose(op, x, weight, bias, stride, padding, output_padding, groups, dilation, spatial):
    x, w, batched, groups = _operands(op, x, weight, groups, spatial, "[in, out/groups")
    N, C = x.shape()[:2]
    Cw, Og = w.shape()[:2]
    kernel = tuple(w.shape()[2:])
    if Cw != C:
        raise ValueError(f"{op}: input {x.shape()} has {C} channels, but weight {w.shape()} (in_channels first) "
                         f"expects {Cw}")
    if C % groups:
        raise ValueError(f"{op}: in_channels ({C}, weight {w.shape()}) must be divisible by groups={groups}")
    O = Og * groups
    if bias is not None:
        bias = _variable(bias, op, "bias")
        if bias.shape() != [O]:
            raise ValueError(f"{op}: bias must have shape [{O}] (out_channels = weight {w.shape()}[1] * groups "
                             f"{groups}), got {bias.shape()}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{op}: input and bias dtypes differ: {x.dtype} and {bias.dtype}")
    stride = _ints(stride, spatial, op, "stride", 1)
    dilation = _ints(dilation, spatial, op, "dilation", 1)
    pads = _ints(padding, spatial, op, "padding", 0)
    extra = _ints(output_padding, spatial, op, "output_padding", 0)
    if any(e >= s and e >= d for e, s, d in zip(extra, stride, dilation)):
        raise ValueError(f"{op}: output padding must be smaller than either stride or dilation, got "
                         f"output_padding={list(extra)}, stride={list(stride)}, dilation={list(dilation)}")
    sizes = x.shape()[2:]
    out = [(i - 1) * s - 2 * p + d * (k - 1) + e + 1
           for i, s, p, d, k, e in zip(sizes, stride, pads, dilation, kernel, extra)]
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: the output size {out} of input {x.shape()} and weight {w.shape()} (stride "
                         f"{list(stride)}, padding {list(pads)}, dilation {list(dilation)}) is not positive")
    if spatial == 1:   # as 2-D with a height of 1
        y = _conv_transpose2d(x.reshape([N, C, 1, sizes[0]]), w.reshape([C, Og, 1, kernel[0]]), bias,
                              (1, stride[0]), (0, pads[0]), (1, dilation[0]), groups, (1, out[0]))
        y = y.reshape([N, O, out[0]])
    else:
        y = _conv_transpose2d(x, w, bias, stride, pads, dilation, groups, tuple(out))
    return y if batched else y.reshape(y.shape()[1:])


def _conv_transpose2d(x, w, bias, stride, pad, dilation, groups, out_hw):
    xt, wt = x.data().contiguous(), w.data().contiguous()   # the chunks read their storage directly
    N, C, H, W = xt._shape
    O = wt._shape[1] * groups
    # The convolution whose input gradient this is: [N, O, *out_hw] -> [N, C, H, W] with the weight as it is.
    spec = _conv_spec((N, O) + tuple(out_hw), wt._shape, stride, pad, dilation, groups, (H, W), xt.dtype)
    fused = bias is not None and xt.dtype.itemsize == 2   # 16-bit with a bias: in float32, rounded once
    y = _conv_backward(xt.astype("float32"), spec, wt=wt.astype("float32"))[0] if fused else \
        _conv_backward(xt, spec, wt=wt)[0]
    if bias is not None:
        y = elementwise("a + b", [y, bias.data().reshape((1, O, 1, 1))], op="conv_transpose2d bias")
        y = y.astype(xt.dtype) if fused else y
    inputs = [x, w] + ([bias] if bias is not None else [])
    return record("ConvolutionBackward", y, inputs, _conv_family_rule, saved=(xt, wt), spec=spec, kind="input",
                  vrule=_conv_family_vrule)


@amp.op("conv_transpose2d")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution (the gradient of conv2d with respect to its input, as torch) of ``input``
    [N, in, H, W] (or [in, H, W]) with ``weight`` [in, out/groups, kh, kw] and an optional ``bias`` [out].
    The output is ``(H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1`` high (and
    likewise wide); ``output_padding`` must be smaller than the stride or the dilation.

    >>> from axonml_autograd import Tensor, Variable
    >>> x = Variable(Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2]))
    >>> conv_transpose2d(x, Variable(Tensor.ones([1, 1, 2, 2])), stride=2).shape()
    [1, 1, 4, 4]
    >>> conv_transpose2d(x, Variable(Tensor.ones([1, 1, 2, 2]))).to_vec()
    [1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0]
    """
    return _conv_transpose("conv_transpose2d", input, weight, bias, stride, padding, output_padding, groups,
                           dilation, 2)


@amp.op("conv_transpose1d")
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """1-D transposed convolution of ``input`` [N, in, L] (or [in, L]) with ``weight`` [in, out/groups, k],
    as torch.

    >>> from axonml_autograd import Tensor, Variable
    >>> x = Variable(Tensor.from_vec([1.0, 2.0], [1, 1, 2]))
    >>> conv_transpose1d(x, Variable(Tensor.from_vec([1.0, 10.0], [1, 1, 2])), stride=2).to_vec()
    [1.0, 10.0, 2.0, 20.0]
    """
    return _conv_transpose("conv_transpose1d", input, weight, bias, stride, padding, output_padding, groups,
                           dilation, 1)


def conv_transpose_output_padding(op, input_size, output_size, stride, padding, kernel_size, dilation, spatial):
    """The output_padding that gives a transposed convolution the ``output_size`` asked for (torch's
    ``output_size=`` argument of ConvTranspose*d.forward): the spatial sizes, or the full shape."""
    output_size = list(output_size)
    if len(output_size) == spatial + 2 or (len(output_size) == spatial + 1 and len(input_size) == spatial + 1):
        output_size = output_size[-spatial:]
    if len(output_size) != spatial:
        raise ValueError(f"{op}: output_size must have {spatial} or {spatial + 2} elements, got {output_size}")
    extra = []
    for k in range(spatial):
        i, s, p, d, kk = input_size[-spatial + k], stride[k], padding[k], dilation[k], kernel_size[k]
        least = (i - 1) * s - 2 * p + d * (kk - 1) + 1
        if not least <= output_size[k] < least + s:
            raise ValueError(f"{op}: requested an output size of {output_size}, but valid sizes of dimension {k} "
                             f"range from {least} to {least + s - 1} (for an input of {list(input_size)})")
        extra.append(output_size[k] - least)
    return tuple(extra)


# ------------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------------

def _pool_size(size, k, s, p, d, ceil_mode):
    """torch's pooling output size, ceil_mode's last window starting inside the input or left padding."""
    eff = d * (k - 1) + 1
    out = (size + 2 * p - eff + ((s - 1) if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_args(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    k = _ints(kernel_size, 2, op, "kernel_size", 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else \
        _ints(stride, 2, op, "stride", 1)
    p = _ints(padding, 2, op, "padding", 0)
    d = _ints(dilation, 2, op, "dilation", 1)
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f"{op}: padding {list(p)} must be at most half of kernel_size {list(k)}")
    H, W = x.shape()[2:]
    out = (_pool_size(H, k[0], s[0], p[0], d[0], ceil_mode), _pool_size(W, k[1], s[1], p[1], d[1], ceil_mode))
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"{op}: input {x.shape()} is too small for kernel_size {list(k)} (padding {list(p)}, "
                         f"dilation {list(d)}): the output would be {list(out)}")
    return k, s, p, d, out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over ``kernel_size`` windows of [N, C, H, W] (or [C, H, W]); ``stride`` defaults to the
    kernel size. Ties go to the first maximum in row-major order and NaN propagates, as in torch.
    With ``return_indices`` also the int32 position ``h * W + w`` of each maximum in its plane.

    >>> from axonml_autograd import Tensor
    >>> x = Tensor.from_vec([1.0, 3.0, 3.0, 2.0], [1, 1, 1, 4])
    >>> y, i = max_pool2d(x, (1, 2), return_indices=True)
    >>> y.to_vec(), i.to_vec()
    ([3.0, 3.0], [1, 2])
    """
    op = "max_pool2d"
    x, batched = _check_input(_variable(input, op, "input"), op, 2)
    k, s, p, d, (OH, OW) = _pool_args(op, x, kernel_size, stride, padding, dilation, ceil_mode)
    xt = x.data()
    N, C, H, W = xt._shape
    geom = _geometry(H, W, OH, OW, k[0], k[1], s, p, d)
    y = Tensor._wrap((N, C, OH, OW), xt.dtype, xt.device)
    idx = Tensor._wrap((N, C, OH, OW), np.dtype(np.int32), xt.device)
    if y.numel():
        if xt.device.target.is_gpu:
            _launch(_POOL, "max_forward", xt.dtype, y.numel(), dict(x=xt, y=y, idx=idx, **dict(zip(GEOMETRY, geom))))
        else:   # runs of planes per work-item (pool.cl.mako): the same results without a division per element
            per = _planes_per_item(xt.device, N * C)
            # Output rows shorter than a float vector leave the row-at-a-time loop too short to vectorise.
            name = "max_forward_planes" if OW >= xt.device.target.vw_float else "max_forward_flat"
            _launch(_POOL, name, xt.dtype, -(-(N * C) // per),
                    dict(x=xt, y=y, idx=idx, n=N * C, per=per, **dict(zip(GEOMETRY, geom))), rows=1,
                    window=tuple(geom[4:]))

    out = record("MaxPool2DBackward", y, [x], _pool_rule, saved=(idx,), kind="max", direction=0, params=geom,
                 x_shape=xt._shape, y_shape=y._shape, vrule=_pool_vrule)
    if not batched:
        out, idx = out.reshape(out.shape()[1:]), idx.reshape(idx._shape[1:])
    return (out, idx) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over ``kernel_size`` windows of [N, C, H, W] (or [C, H, W]), with torch's divisor:
    padding counts when ``count_include_pad``; ``divisor_override`` replaces the divisor.

    >>> from axonml_autograd import Tensor
    >>> x = Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2])
    >>> avg_pool2d(x, 2).to_vec(), avg_pool2d(x, 2, padding=1, count_include_pad=False).to_vec()
    ([2.5], [1.0, 2.0, 3.0, 4.0])
    """
    op = "avg_pool2d"
    x, batched = _check_input(_variable(input, op, "input"), op, 2)
    k, s, p, d, (OH, OW) = _pool_args(op, x, kernel_size, stride, padding, 1, ceil_mode)
    divisor = 0
    if divisor_override is not None:
        divisor = _ints(divisor_override, 1, op, "divisor_override", 1)[0]
    xt = x.data()
    N, C, H, W = xt._shape
    geom = _geometry(H, W, OH, OW, k[0], k[1], s, p, d)
    extra = (int(bool(count_include_pad)), divisor)
    y = Tensor._wrap((N, C, OH, OW), xt.dtype, xt.device)
    if y.numel():
        _launch(_POOL, "avg_forward", xt.dtype, y.numel(),
                dict(x=xt, y=y, **dict(zip(_POOL_PARAMS["avg"], geom + extra))))

    out = record("AvgPool2DBackward", y, [x], _pool_rule, kind="avg", direction=0, params=geom + extra,
                 x_shape=xt._shape, y_shape=y._shape, vrule=_pool_vrule)
    return out if batched else out.reshape(out.shape()[1:])


def adaptive_avg_pool2d(input, output_size):
    """Mean over the windows that split [N, C, H, W] (or [C, H, W]) into ``output_size`` (an int, or an
    (h, w) pair where None keeps that input size) as evenly as torch does.

    >>> from axonml_autograd import Tensor
    >>> x = Tensor.from_vec([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 1, 2, 3])
    >>> adaptive_avg_pool2d(x, (1, 2)).to_vec()
    [3.0, 4.0]
    """
    op = "adaptive_avg_pool2d"
    x, batched = _check_input(_variable(input, op, "input"), op, 2)
    xt = x.data()
    N, C, H, W = xt._shape
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(s if s is not None else (H, W)[k] for k, s in enumerate(output_size))
    OH, OW = _ints(output_size, 2, op, "output_size", 1)
    if H < 1 or W < 1:
        raise ValueError(f"{op}: input {xt.shape()} has an empty spatial dimension")
    y = Tensor._wrap((N, C, OH, OW), xt.dtype, xt.device)
    if y.numel():
        _launch(_POOL, "adaptive_avg_forward", xt.dtype, y.numel(), dict(x=xt, y=y, H=H, W=W, OH=OH, OW=OW))

    out = record("AdaptiveAvgPool2DBackward", y, [x], _pool_rule, kind="adaptive_avg", direction=0,
                 params=(H, W, OH, OW), x_shape=xt._shape, y_shape=y._shape, vrule=_pool_vrule)
    return out if batched else out.reshape(out.shape()[1:])


# Pooling is linear in the input once max pooling's positions are fixed (they are constant almost
# everywhere): each pool is a map P from the input to the output, and its gradient is the adjoint P^T
# (avg/adaptive_avg_backward, or max_backward's scatter into the kept positions). The adjoint's own
# gradient is P again (for max pooling, the gather at those positions). So both directions are
# recorded ops, each the other's rule: direction 0 is P (the pool's node), 1 is P^T (its gradient's).
_POOL_NODES = {"max": ("MaxPool2DBackward", "MaxPool2DGradBackward"),
               "avg": ("AvgPool2DBackward", "AvgPool2DGradBackward"),
               "adaptive_avg": ("AdaptiveAvgPool2DBackward", "AdaptiveAvgPool2DGradBackward"),
               "adaptive_max": ("AdaptiveMaxPool2DBackward", "AdaptiveMaxPool2DGradBackward")}
# Per direction: (kernel, its input's parameter, its output's parameter). Max pooling's kernels also
# read the kept positions (idx); each kind's geometry parameters are named in _POOL_PARAMS.
_POOL_KERNELS = {"max": (("max_gather", "x", "y"), ("max_backward", "g", "dx")),
                 "avg": (("avg_forward", "x", "y"), ("avg_backward", "g", "dx")),
                 "adaptive_avg": (("adaptive_avg_forward", "x", "y"), ("adaptive_avg_backward", "g", "dx")),
                 "adaptive_max": (("max_gather", "x", "y"), ("adaptive_max_backward", "g", "dx"))}
_POOL_PARAMS = {"max": GEOMETRY, "avg": GEOMETRY + ("include_pad", "divisor"), "adaptive_avg": ("H", "W", "OH", "OW"),
                "adaptive_max": GEOMETRY}


def _planes_per_item(device, planes) -> int:
    """Planes per work-item of the CPU max-pool kernels: a few work-items per compute unit."""
    t = device.target
    return max(1, -(-planes // (t.items_per_unit * t.compute_units)))


def _pool_apply(kind, direction, t: Tensor, saved, params, x_shape, y_shape) -> Tensor:
    """P (direction 0: input -> output) or P^T (1: output -> input) applied to ``t``."""
    out = Tensor._wrap(x_shape if direction else y_shape, t.dtype, t.device)
    if out.numel():
        name, src, dst = _POOL_KERNELS[kind][direction]
        args = {src: t, dst: out, **dict(zip(_POOL_PARAMS[kind], params))}
        if kind in ("max", "adaptive_max"):
            args["idx"] = saved[0]
        if name == "max_backward" and not t.device.target.is_gpu:   # a plane per work-item, as the forward
            planes = math.prod(x_shape[:-2])
            per = _planes_per_item(t.device, planes)
            _launch(_POOL, "max_backward_planes", t.dtype, -(-planes // per), dict(args, n=planes, per=per), rows=1,
                    window=tuple(params[4:]))
        else:
            _launch(_POOL, name, t.dtype, out.numel(), args)
    return out


def _pool_rule(ctx, g):
    return _pool_apply(ctx.kind, 1 - ctx.direction, g, ctx.saved_tensors, ctx.params, ctx.x_shape,
                       ctx.y_shape)


def _pool_vrule(ctx, g):
    saved = ctx.saved_tensors
    direction = 1 - ctx.direction
    out = _pool_apply(ctx.kind, direction, g.data(), saved, ctx.params, ctx.x_shape, ctx.y_shape)
    return record(_POOL_NODES[ctx.kind][direction], out, [g], _pool_rule, saved=saved, kind=ctx.kind,
                  direction=direction, params=ctx.params, x_shape=ctx.x_shape, y_shape=ctx.y_shape,
                  vrule=_pool_vrule)

## Fused optimiser updates: each parameter element's value, gradient and state are read once and the
## new parameter and state written back in place, so a step costs one launch per parameter instead
## of a chain of elementwise kernels with temporaries.
##
## Every hyper-parameter is a kernel argument, so a schedule that changes lr every step never
## triggers a new OpenCL build. What changes from step to step is read from small device buffers
## rather than passed as scalars, so that a captured step replays with nothing rewritten: `rates`
## holds the group's learning rate (and AdamW's 1 - lr * wd), written by the host when it changes;
## `steps` is the optimiser's table of per-parameter step counts (two 32-bit words each, see
## counters.cl.mako), advanced on the device before the step's kernels run, from which Adam's bias
## corrections and Adagrad's decayed rate are computed here. The template is specialised only on the element type, on what
## changes the set of buffers the kernel touches (a momentum buffer or not, AMSGrad's extra moment,
## RMSprop's centred mean), and on the vector width.
##
## Launch shape: as the elementwise kernels, each work-item updates `chunk` consecutive elements: 1
## on GPUs, long runs on CPUs, where `vector` > 0 walks the run `vector` elements at a time
## (vload/vstore need only element alignment) and finishes the tail one element at a time. The same
## update is written once (the `update` def) and rendered for both widths.
##
## Template parameters:
##   ctype:    "float" or "double"
##   momentum: SGD only, whether a momentum buffer exists (momentum != 0)
##   amsgrad:  Adam/AdamW only, whether a running maximum of the second moment is kept
##   centered: RMSprop only, whether a running mean of the gradient is kept (centered variance)
##   vector:   the CPU vector width (0: scalar loop only)
##   skip:     the step is the gradient scaler's (amp.py): the kernel takes `found_inf` and does nothing
##             when it is set, and a first step is the one whose count is 1 (a skipped step does not
##             count), read from `steps`, instead of the host's `first_step`
##   multi:    SGD and Adam/AdamW: 0, or the number of parameters one launch updates (torch's foreach):
##             `sgd_step_multi` / `adam_step_multi` take each parameter's buffers, element count, chunk
##             and step slot (or first-step flag) with a suffix 0..multi-1, and `items{j}`, the work-items
##             of parameters 0..j together; work-item i updates the parameter whose range holds it, as
##             the single-parameter kernel's work-item (i - the items before) would: the same elements
##             in the same vector/scalar split, so the same bits, in one launch instead of `multi`
<%
    vw = vector
%>
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype, vector=vw)}

// This parameter's step count t, already advanced for the step being taken.
inline T step_count(__global const uint *steps, const int slot)
{
    return (T)steps[2 * slot + 1] * (T)4294967296.0 + (T)steps[2 * slot];
}

## The arguments that tell a first step: the host's flag, or under the scaler the step table.
<%def name="first_step_params(has_steps)">\
% if context.get("skip"):
    __global const float *found_inf,
  % if not has_steps:
    __global const uint *steps,
    const int slot,
  % endif
% else:
    const int first_step,
% endif
</%def>
<%def name="first_step_value()">\
% if context.get("skip"):
    const int first_step = steps[2 * slot] == 1u && steps[2 * slot + 1] == 0u;
% endif
</%def>
<%def name="skip_param()">\
% if context.get("skip"):
    __global const float *found_inf,
% endif
</%def>

<%def name="chunked(body, item='get_global_id(0)')">
% if context.get("skip"):
    if (found_inf[0] != 0.0f) return;
% endif
    const int start = ${item} * chunk;
    const int end = min(n, start + chunk);
    int i = start;
% if vw:
    for (; i + ${vw} <= end; i += ${vw}) {
${body("TV", lambda buf: f"VLOAD(0, {buf} + i)", lambda buf, v: f"VSTORE({v}, 0, {buf} + i)")}
    }
% endif
    for (; i < end; ++i) {
${body("T", lambda buf: f"{buf}[i]", lambda buf, v: f"{buf}[i] = {v}")}
    }
</%def>

// PyTorch's SGD: g += wd * p; with momentum b = mu * b + (1 - dampening) * g (b = g on the first
// step), then g = g + mu * b (Nesterov) or g = b; finally p -= lr * g.
<%def name="sgd(V, load, store)">
        const ${V} w = ${load("p")};
        ${V} g = ${load("grad")} + weight_decay * w;
% if momentum:
        const ${V} b = first_step ? g : mu * ${load("momentum_buffer")} + one_minus_dampening * g;
        ${store("momentum_buffer", "b")};
        g = nesterov ? g + mu * b : b;
% endif
        ${store("p", "w - lr * g")};
</%def>

__kernel void sgd_step(
    __global T *p,
    __global const T *grad,
% if momentum:
    __global T *momentum_buffer,
% endif
    __global const T *rates,
    const T weight_decay,
% if momentum:
    const T mu,
    const T one_minus_dampening,
${first_step_params(False)}\
    const int nesterov,
% else:
${skip_param()}\
% endif
    const int n,
    const int chunk)
{
    const T lr = rates[0];
% if momentum:
${first_step_value()}\
% endif
${chunked(sgd)}
}

// PyTorch's Adam and AdamW (single-tensor path). l2 is Adam's weight decay added to the gradient;
// decay is AdamW's decoupled factor 1 - lr * wd applied to the parameter first (l2 = 0 and a decay
// of 1 turn either off); lr and decay come from `rates`, t from `steps`.
<%def name="adam(V, load, store)">
        const ${V} w = ${load("p")} * decay;
        const ${V} g = ${load("grad")} + l2 * w;
        // m = lerp(m, g, 1 - beta1) in the form PyTorch's lerp uses for the usual beta1 > 0.5.
        const ${V} m0 = ${load("exp_avg")};
        const ${V} m = m0 + (((T)1) - beta1) * (g - m0);
        const ${V} v = beta2 * ${load("exp_avg_sq")} + (((T)1) - beta2) * g * g;
        ${store("exp_avg", "m")};
        ${store("exp_avg_sq", "v")};
% if amsgrad:
        const ${V} vmax = fmax(${load("max_exp_avg_sq")}, v);
        ${store("max_exp_avg_sq", "vmax")};
        const ${V} denom = sqrt(vmax) / bc2_sqrt + eps;
% else:
        const ${V} denom = sqrt(v) / bc2_sqrt + eps;
% endif
        ${store("p", "w - step_size * m / denom")};
</%def>

__kernel void adam_step(
    __global T *p,
    __global const T *grad,
    __global T *exp_avg,
    __global T *exp_avg_sq,
% if amsgrad:
    __global T *max_exp_avg_sq,
% endif
    __global const uint *steps,
    const int slot,
    __global const T *rates,
    const T beta1,
    const T beta2,
    const T eps,
    const T l2,
    const T log_beta1,
    const T log_beta2,
${skip_param()}\
    const int n,
    const int chunk)
{
    const T t = step_count(steps, slot);
    const T decay = rates[1];
    // 1 - beta^t as -expm1(t log beta), log beta taken by the host in double: no cancellation for
    // the usual beta near 1, which 1 - pow(beta, t) in float would lose most digits to.
    const T step_size = rates[0] / -expm1(t * log_beta1);
    const T bc2_sqrt = sqrt(-expm1(t * log_beta2));
${chunked(adam)}
}

// PyTorch's RMSprop: g += wd * p; v = alpha v + (1 - alpha) g^2; centred: m = lerp(m, g, 1 - alpha)
// and the denominator uses the variance v - m^2; avg = sqrt(.) + eps; with momentum
// b = mu b + g / avg and p -= lr b, else p -= lr g / avg. State starts at zero, as in PyTorch.
<%def name="rmsprop(V, load, store)">
        const ${V} w = ${load("p")};
        const ${V} g = ${load("grad")} + weight_decay * w;
        const ${V} v = alpha * ${load("square_avg")} + (((T)1) - alpha) * g * g;
        ${store("square_avg", "v")};
% if centered:
        const ${V} m0 = ${load("grad_avg")};
        const ${V} m = m0 + (((T)1) - alpha) * (g - m0);
        ${store("grad_avg", "m")};
        const ${V} avg = sqrt(v - m * m) + eps;
% else:
        const ${V} avg = sqrt(v) + eps;
% endif
% if momentum:
        const ${V} b = mu * ${load("momentum_buffer")} + g / avg;
        ${store("momentum_buffer", "b")};
        ${store("p", "w - lr * b")};
% else:
        ${store("p", "w - lr * (g / avg)")};
% endif
</%def>

__kernel void rmsprop_step(
    __global T *p,
    __global const T *grad,
    __global T *square_avg,
% if centered:
    __global T *grad_avg,
% endif
% if momentum:
    __global T *momentum_buffer,
% endif
    __global const T *rates,
    const T alpha,
    const T eps,
    const T weight_decay,
% if momentum:
    const T mu,
% endif
${skip_param()}\
    const int n,
    const int chunk)
{
    const T lr = rates[0];
${chunked(rmsprop)}
}

// PyTorch's Adagrad: g += wd * p; s += g^2; p -= clr * g / (sqrt(s) + eps) with
// clr = lr / (1 + (t - 1) lr_decay), lr from `rates` and t from `steps`. PyTorch fills s with initial_accumulator_value
// when the optimiser is made; here the first step reads `init` instead of the (uninitialised) sum,
// so creating the state costs no fill.
<%def name="adagrad(V, load, store)">
        const ${V} w = ${load("p")};
        const ${V} g = ${load("grad")} + weight_decay * w;
        const ${V} s = (first_step ? (${V})(init) : ${load("sum")}) + g * g;
        ${store("sum", "s")};
        ${store("p", "w - clr * (g / (sqrt(s) + eps))")};
</%def>

__kernel void adagrad_step(
    __global T *p,
    __global const T *grad,
    __global T *sum,
    __global const uint *steps,
    const int slot,
    __global const T *rates,
    const T lr_decay,
    const T eps,
    const T weight_decay,
    const T init,
${first_step_params(True)}\
    const int n,
    const int chunk)
{
${first_step_value()}\
    const T clr = rates[0] / (((T)1) + (step_count(steps, slot) - ((T)1)) * lr_decay);
${chunked(adagrad)}
}

% if context.get("multi"):
<%
    K = context.get("multi", 0)
    skip_, momentum_ = context.get("skip", False), context.get("momentum", False)
    sgd_buffers = ["p", "grad"] + (["momentum_buffer"] if momentum_ else [])
    adam_buffers = ["p", "grad", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if context.get("amsgrad") else [])
%>
## The parameter this work-item updates: `buffers` and `ints` of the one whose range of work-items holds
## it, and `local_item`, its place in that range.
<%def name="select(buffers, ints)">
    const int item = get_global_id(0);
    if (item >= items${K - 1}) return;
% for b in buffers:
    __global ${"const " if b == "grad" else ""}T *${b} = ${b}0;
% endfor
    int ${", ".join(f"{i} = {i}0" for i in ints)}, local_item = item;
% for j in range(1, K):
    if (item >= items${j - 1}) {
        ${" ".join(f"{b} = {b}{j};" for b in buffers)}
        ${" ".join(f"{i} = {i}{j};" for i in ints)}
        local_item = item - items${j - 1};
    }
% endfor
</%def>
<%def name="per_parameter(buffers, ints)">
% for j in range(K):
  % for b in buffers:
    __global ${"const " if b == "grad" else ""}T *${b}${j},
  % endfor
  % for i in ints:
    const int ${i}${j},
  % endfor
    const int items${j},
% endfor
</%def>
% if context.get("op") == "sgd":
<% ints = ["n", "chunk"] + (["slot" if skip_ else "first_step"] if momentum_ else []) %>
__kernel void sgd_step_multi(
${per_parameter(sgd_buffers, ints)}\
    __global const T *rates,
% if skip_:
    __global const float *found_inf,
  % if momentum_:
    __global const uint *steps,
  % endif
% endif
% if momentum_:
    const T mu,
    const T one_minus_dampening,
    const int nesterov,
% endif
    const T weight_decay)
{
${select(sgd_buffers, ints)}\
    const T lr = rates[0];
% if momentum_:
${first_step_value()}\
% endif
${chunked(sgd, "local_item")}
}
% else:
<% ints = ["n", "chunk", "slot"] %>
__kernel void adam_step_multi(
${per_parameter(adam_buffers, ints)}\
    __global const uint *steps,
    __global const T *rates,
    const T beta1,
    const T beta2,
    const T eps,
    const T l2,
    const T log_beta1,
${skip_param()}\
    const T log_beta2)
{
${select(adam_buffers, ints)}\
    const T t = step_count(steps, slot);
    const T decay = rates[1];
    const T step_size = rates[0] / -expm1(t * log_beta1);
    const T bc2_sqrt = sqrt(-expm1(t * log_beta2));
${chunked(adam, "local_item")}
}
% endif
% endif

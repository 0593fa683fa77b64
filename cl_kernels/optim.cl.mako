## Fused optimiser updates: one work-item per parameter element reads the parameter, its gradient and
## its state once, and writes the new parameter and state back in place, so a step costs one launch
## per parameter instead of a chain of elementwise kernels with temporaries.
##
## Every hyper-parameter and every step-dependent quantity (learning rate, Adam's bias corrections)
## is a kernel argument: a schedule that changes lr every step, or the step count itself, never
## triggers a new OpenCL build. The template is specialised only on the element type and on what
## changes the set of buffers the kernel touches (a momentum buffer or not, AMSGrad's extra moment).
##
## Template parameters:
##   ctype:    "float" or "double"
##   momentum: SGD only, whether a momentum buffer exists (momentum != 0)
##   amsgrad:  Adam/AdamW only, whether a running maximum of the second moment is kept
% if ctype == "double":
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
typedef ${ctype} T;

// PyTorch's SGD: g += wd * p; with momentum b = mu * b + (1 - dampening) * g (b = g on the first
// step), then g = g + mu * b (Nesterov) or g = b; finally p -= lr * g.
__kernel void sgd_step(
    __global T *p,
    __global const T *grad,
% if momentum:
    __global T *buf,
% endif
    const T lr,
    const T weight_decay,
% if momentum:
    const T mu,
    const T one_minus_dampening,
    const int first_step,
    const int nesterov,
% endif
    const int n)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const T w = p[i];
    T g = grad[i] + weight_decay * w;
% if momentum:
    T b;
    if (first_step) {
        b = g;
    } else {
        b = mu * buf[i] + one_minus_dampening * g;
    }
    buf[i] = b;
    g = nesterov ? g + mu * b : b;
% endif
    p[i] = w - lr * g;
}

// PyTorch's Adam and AdamW (single-tensor path). l2 is Adam's weight decay added to the gradient;
// decay is AdamW's decoupled factor 1 - lr * wd applied to the parameter first (pass 0 and 1 to turn
// either off). step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) come from the host,
// which owns the step counter.
__kernel void adam_step(
    __global T *p,
    __global const T *grad,
    __global T *exp_avg,
    __global T *exp_avg_sq,
% if amsgrad:
    __global T *max_exp_avg_sq,
% endif
    const T beta1,
    const T beta2,
    const T eps,
    const T l2,
    const T decay,
    const T step_size,
    const T bc2_sqrt,
    const int n)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const T w = p[i] * decay;
    const T g = grad[i] + l2 * w;
    // m = lerp(m, g, 1 - beta1) in the form PyTorch's lerp uses for the usual beta1 > 0.5.
    const T m = exp_avg[i] + (((T)1) - beta1) * (g - exp_avg[i]);
    const T v = beta2 * exp_avg_sq[i] + (((T)1) - beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
% if amsgrad:
    const T vmax = fmax(max_exp_avg_sq[i], v);
    max_exp_avg_sq[i] = vmax;
    const T denom = sqrt(vmax) / bc2_sqrt + eps;
% else:
    const T denom = sqrt(v) / bc2_sqrt + eps;
% endif
    p[i] = w - step_size * m / denom;
}

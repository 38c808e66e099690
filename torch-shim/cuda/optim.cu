// SGD over a whole parameter group in one launch (launched by cpp/optim.cpp, which says
// why and how it matches libtorch's `_foreach_*` arithmetic).

#define SGD_TENSORS 24

// Up to SGD_TENSORS tensors of one launch: `end[t]` is the running element count after
// tensor t, so thread i of the grid owns element i of the tensors laid end to end.
struct SgdList {
    float *param[SGD_TENSORS];
    const float *grad[SGD_TENSORS];
    float *buf[SGD_TENSORS];
    int end[SGD_TENSORS];
    int count;
};

// mode 0: no momentum (p += -lr * g); 1: momentum (buf = momentum * buf + g, p += -lr * buf).
// weight_decay is applied only where non-zero (0 * inf would be NaN).
extern "C" __global__ void sgd_f32(const SgdList l, float neg_lr, float momentum, float weight_decay, int mode) {
    const int total = l.end[l.count - 1];
    int t = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        while (i >= l.end[t]) ++t;
        const int j = i - (t ? l.end[t - 1] : 0);
        const float p = l.param[t][j];
        float g = l.grad[t][j];
        if (weight_decay != 0.f) g = __fmaf_rn(weight_decay, p, g);
        if (mode == 1) {
            const float b = __fadd_rn(__fmul_rn(l.buf[t][j], momentum), g);
            l.buf[t][j] = b;
            g = b;
        }
        l.param[t][j] = __fmaf_rn(neg_lr, g, p);
    }
}

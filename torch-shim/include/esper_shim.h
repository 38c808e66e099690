/* The shim's C interface: every `esper_*` function the C++ files of torch-shim/cpp define
 * and the Rust crate calls (src/sys.rs mirrors this file; a test there keeps the two
 * equal, and every cpp/*.cpp that defines one includes it, so the compiler holds the
 * definitions to it).
 *
 * Conventions: no C++ exception crosses. A function that can fail returns 0 on success
 * (or a handle), and 1 (or null) with the message, NUL-terminated, in `err` (at most
 * `len` bytes). Tensors are tch's handles (`at::Tensor *`); a tensor written to `*out` is
 * new and the caller owns it. */
#ifndef ESPER_SHIM_H
#define ESPER_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
namespace at {
class Tensor;
}
namespace c10 {
class Stream;
}
typedef at::Tensor EsperTensor;
typedef c10::Stream EsperStream;
extern "C" {
#else
typedef struct EsperTensor EsperTensor;
typedef struct EsperStream EsperStream;
#endif

typedef struct EsperSideStream EsperSideStream;
typedef struct EsperGraph EsperGraph;
typedef struct EsperStore EsperStore;
typedef struct EsperGroup EsperGroup;

/* The autocast state to restore on leaving: enabled, dtype, cache. */
typedef struct EsperAutocastState {
    int enabled;
    int dtype;
    int cache;
} EsperAutocastState;

/* ---- Every build ---- */

/* dlpack.cpp: `*out` is libtorch's `DLManagedTensor` of `t` (sharing its memory), freed by
   its consumer through its deleter, or by `esper_dlpack_free` when nobody consumed it. */
int esper_to_dlpack(const EsperTensor *t, void **out, char *err, size_t len);
void esper_dlpack_free(void *managed);

/* straight.cpp: `host + (seed - seed.detach())` in value and gradients, into `*out`. */
int esper_straight_through(const EsperTensor *host, const EsperTensor *seed, EsperTensor **out, char *err,
                           size_t len);

/* host_alloc.cpp: glibc's malloc thresholds for a training process. 0: set; 1: glibc
 * refused one; 2: not glibc (nothing done). */
int esper_keep_freed_host_memory(void);

/* context.cpp: cuDNN's deterministic algorithms, TF32 in cuDNN's float32 convolutions:
 * on (1) or off (0); each returns the previous setting. */
int esper_set_deterministic_cudnn(int on);
int esper_set_cudnn_tf32(int on);

/* foreach.cpp: a parameter group's steps over `n` tensors at once. */
int esper_foreach_zero(EsperTensor *const *ts, size_t n, char *err, size_t err_len);
int esper_clear_grads(EsperTensor *const *ts, size_t n, char *err, size_t err_len);
int esper_zero_missing_grads(EsperTensor *const *ts, const int *had, size_t n, char *err, size_t err_len);
int esper_foreach_sgd(EsperTensor *const *params, EsperTensor *const *grads, EsperTensor *const *bufs, size_t n,
                      double lr, double momentum, double weight_decay, int init_bufs, int *kernel, char *err,
                      size_t err_len);
int esper_foreach_adam(EsperTensor *const *params, EsperTensor *const *grads, EsperTensor *const *ms,
                       EsperTensor *const *vs, size_t n, double lr, double beta1, double beta2, double weight_decay,
                       double eps, EsperTensor *step, char *err, size_t err_len);

/* autocast.cpp: bfloat16 autocast on the CPU (`cuda` 0) or CUDA. */
int esper_autocast_enter(int cuda, EsperAutocastState *previous, char *err, size_t len);
int esper_autocast_exit(int cuda, const EsperAutocastState *previous, char *err, size_t len);
int esper_autocast_enabled(int cuda);

/* dist.cpp: c10d. A TCP store at `host`:`port` (port 0 on the master: a free one, see
 * esper_store_port) that `is_master` listens on and the others connect to; process
 * groups over it, their keys under `prefix`; collectives that return once done (on a
 * NCCL group, once the device has finished). `bucket_bytes` bounds the flat buffer the
 * tensors of one dtype and device share; `*collectives` gets the number run. */
EsperStore *esper_store_new(const char *host, int port, int world_size, int is_master, double timeout_s, char *err,
                            size_t len);
int esper_store_port(const EsperStore *store);
void esper_store_free(EsperStore *store);
EsperGroup *esper_group_gloo(EsperStore *store, const char *prefix, int rank, int size, double timeout_s, char *err,
                             size_t len);
void esper_group_free(EsperGroup *g);
/* From now on, a NCCL group freed is aborted (its kernels waiting for a peer end at once)
 * rather than shut down (which waits for them to finish): for a process whose ranks failed. */
void esper_groups_abort_on_free(void);
int esper_group_broadcast(EsperGroup *g, EsperTensor *const *ts, size_t n, int root, size_t bucket_bytes,
                          size_t *collectives, char *err, size_t len);
/* Each tensor of `ts` becomes its sum over the ranks times `scale` (1 / size: the mean). */
int esper_group_allreduce_sum(EsperGroup *g, EsperTensor *const *ts, size_t n, double scale, size_t bucket_bytes,
                              size_t *collectives, char *err, size_t len);
/* `*out`: every rank's `t`, stacked in rank order (a new leading dimension). */
int esper_group_all_gather(EsperGroup *g, const EsperTensor *t, EsperTensor **out, char *err, size_t len);
int esper_group_barrier(EsperGroup *g, char *err, size_t len);

/* sync_bn.cpp: BatchNorm in training mode with the statistics of every rank of `g`
 * (weight and bias of x's channels, dimension 1), with autograd, into `*out` (a new
 * tensor the caller owns); the running statistics are updated in place. Every rank
 * must call it, and run its backward, in the same order. */
int esper_sync_batch_norm(EsperGroup *g, const EsperTensor *x, const EsperTensor *weight, const EsperTensor *bias,
                          const EsperTensor *running_mean, const EsperTensor *running_var, double momentum, double eps,
                          EsperTensor **out, char *err, size_t len);
/* The backward exchanges still owed by this rank's synchronised BatchNorms (a backward
 * that failed part way), made with zeros, the last first; `*exchanges` gets how many.
 * `forget` clears the list without an exchange (no backward follows on any rank). */
int esper_sync_batch_norm_release(EsperGroup *g, size_t *exchanges, char *err, size_t len);
void esper_sync_batch_norm_forget(EsperGroup *g);

/* ---- grad_sync.cpp (every build): gradients averaged across the ranks during the backward ----
 * Post hooks on the gradient accumulators of `params` (leaf tensors that require a
 * gradient, on the group's device, each once), their gradients in `*buckets` buckets
 * (reverse order, one dtype each, up to `bucket_bytes`). Between `begin` and `finish`,
 * a bucket's allreduce is launched as soon as its gradients and the earlier buckets are
 * ready; `finish` launches the rest, waits for all and writes each `.grad` as the sum
 * over the ranks times `scale` (a parameter without a gradient on this rank adds zeros;
 * one without a gradient on every rank keeps its `.grad`); `ABANDON` does the same
 * collectives and writes no gradient; `FINISH_CAPTURED` is `FINISH` inside a CUDA graph
 * capture (no host read: a parameter without a gradient on this rank keeps its `.grad`);
 * `DISCARD` ends a failed capture (no collective launched or waited for, nothing
 * written). `*collectives` gets the number run. Freeing removes the hooks.
 * `esper_grad_post_hooks`: the post hooks on `t`'s gradient accumulator, -1 where it has
 * none alive. */
typedef struct EsperGradSync EsperGradSync;
typedef enum EsperGradSyncEnd {
    ESPER_GRAD_SYNC_FINISH = 0,
    ESPER_GRAD_SYNC_ABANDON = 1,
    ESPER_GRAD_SYNC_FINISH_CAPTURED = 2,
    ESPER_GRAD_SYNC_DISCARD = 3,
} EsperGradSyncEnd;
EsperGradSync *esper_grad_sync_new(EsperGroup *g, EsperTensor *const *params, size_t n, size_t bucket_bytes,
                                   double scale, size_t *buckets, char *err, size_t len);
int esper_grad_sync_begin(EsperGradSync *s, char *err, size_t len);
size_t esper_grad_sync_launched(EsperGradSync *s);
int esper_grad_sync_finish(EsperGradSync *s, EsperGradSyncEnd how, size_t *collectives, char *err, size_t len);
void esper_grad_sync_free(EsperGradSync *s);
int esper_grad_post_hooks(const EsperTensor *t);

/* ---- CUDA builds only (build.rs found CUDA: the `esper_cuda` cfg, ESPER_RTC) ---- */

/* graph.cpp: a side stream, and CUDA graphs captured on it. */
EsperStream *esper_stream_new(int device, char *err, size_t len);
void esper_stream_free(EsperStream *stream);
EsperSideStream *esper_side_stream_enter(const EsperStream *stream, char *err, size_t len);
int esper_side_stream_exit(EsperSideStream *scope, char *err, size_t len);
EsperGraph *esper_graph_begin(char *err, size_t len);
int esper_graph_end(EsperGraph *g, size_t *nodes, char *err, size_t len);
void esper_graph_abort(EsperGraph *g);
int esper_graph_replay(EsperGraph *g, char *err, size_t len);
void esper_graph_free(EsperGraph *g);

/* rtc.cpp: the runtime-compiled kernels (loaded, or compiled, on first use). */
int esper_pool_ready(char *err, size_t len);
int esper_relu_max_pool2x2(const EsperTensor *x, int relu, EsperTensor **out, char *err, size_t len);
int esper_nchw_copy(const EsperTensor *x, EsperTensor **out, char *err, size_t len);
/* Compiles `source` with NVRTC to PTX with `options` (no GPU needed) and writes the names
 * of its kernels, one a line, into `entries` (at most `entries_len` bytes). */
int esper_rtc_compile(const char *source, const char *name, const char *const *options, int n_options,
                      char *entries, size_t entries_len, char *err, size_t len);
/* The names of the kernels the launcher looks up in the program, one a line, into `out`
 * (at most `len` bytes); returns the bytes the whole list needs, NUL included. */
size_t esper_rtc_kernel_names(char *out, size_t len);

/* batchnorm.cpp, conv.cpp, wgrad.cpp: `*out` null where the tensors do not suit the
 * kernels (the caller runs libtorch's op). */
int esper_bn_relu(const EsperTensor *x, const EsperTensor *weight, const EsperTensor *bias,
                  const EsperTensor *running_mean, const EsperTensor *running_var, double momentum, double eps,
                  int pool, EsperTensor **out, char *err, size_t len);
int esper_first_conv(const EsperTensor *x, const EsperTensor *w, EsperTensor **out, char *err, size_t len);
int esper_conv3x3(const EsperTensor *x, const EsperTensor *w, EsperTensor **out, char *err, size_t len);

/* dist_nccl.cpp: a NCCL process group whose collectives run on cuda:`device`. */
EsperGroup *esper_group_nccl(EsperStore *store, const char *prefix, int rank, int size, int device, double timeout_s,
                             char *err, size_t len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ESPER_SHIM_H */

/*
 * esper_plugin.h: the portable plugin ABI of the Esper seed runtime.
 *
 * A portable plugin is a shared library that exports one C function,
 *
 *     const esper_plugin *esper_portable_plugin(const esper_ops *ops);
 *
 * and links no libtorch. Every tensor operation goes through the op table `ops` that the
 * runtime passes in: the ops run in the runtime's own libtorch, so autograd, devices and
 * memory formats work as for the runtime's own code, and a plugin keeps working when the
 * runtime moves to another libtorch. Rust authors use the `esper-plugin-portable` crate,
 * which wraps all of this in safe types; this header is for other languages and is the
 * reference for the layout (the `esper-plugin-sys` crate, whose folder holds this header,
 * mirrors it in Rust field for field).
 *
 * Versioning. ESPER_ABI_MAJOR.ESPER_ABI_MINOR is the ABI version, shared with native
 * plugins. A plugin built against ABI M.n loads in every runtime M.k with k >= n: later
 * minors only append fields to esper_ops (ops->size says how long the runtime's table
 * is). Another major, or a newer minor than the runtime's, is refused.
 *
 * Ownership. A tensor handle returned by an op (through `out`) or by `param` is owned by
 * the caller and released with ops->drop. The input of `forward` is borrowed: never drop
 * it (returning it as the output is fine; the runtime then keeps its own reference).
 * The output of `forward` is handed to the runtime, which drops it.
 *
 * Errors. Every function returning esper_status returns ESPER_OK (0) or an error code;
 * on error the message is ops->last_error() (valid until the next op on this thread).
 * Op messages name the op and its operands' shapes. A plugin reports its own errors with
 * ops->set_error(code, message) before returning the code.
 *
 * Threads. A seed may be used from any thread, one call at a time.
 */
#ifndef ESPER_PLUGIN_H
#define ESPER_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ESPER_ABI_MAJOR 1
/* 1.3 added controllers, to native plugins only: this header is unchanged from 1.2. */
#define ESPER_ABI_MINOR 3

typedef int32_t esper_status;
#define ESPER_OK 0
#define ESPER_ERR_TENSOR 1           /* an op failed: shape, dtype, device, ... */
#define ESPER_ERR_INVALID_ARGUMENT 2 /* an argument the blueprint cannot work with */
#define ESPER_ERR_BAD_OPTIONS 3      /* the blueprint's options were not accepted */
#define ESPER_ERR_PANIC 4            /* a panic (or exception) caught inside the plugin */
#define ESPER_ERR_UNKNOWN_BLUEPRINT 5
#define ESPER_ERR_OTHER 6

/* Opaque handles. */
typedef struct esper_tensor esper_tensor; /* a tensor of the runtime */
typedef struct esper_params esper_params; /* where `create` asks for parameters */
typedef struct esper_seed esper_seed;     /* the plugin's own seed state */

/* Element types (ops->dtype). */
#define ESPER_DTYPE_OTHER (-1)
#define ESPER_DTYPE_FLOAT32 0
#define ESPER_DTYPE_FLOAT64 1
#define ESPER_DTYPE_FLOAT16 2
#define ESPER_DTYPE_BFLOAT16 3
#define ESPER_DTYPE_INT64 4
#define ESPER_DTYPE_INT32 5
#define ESPER_DTYPE_BOOL 6
#define ESPER_DTYPE_UINT8 7

/* Device types (ops->device). */
#define ESPER_DEVICE_CPU 0
#define ESPER_DEVICE_CUDA 1
#define ESPER_DEVICE_OTHER 2

/* Parameter initialisers: kind, and up to two numbers. */
#define ESPER_INIT_ZEROS 0
#define ESPER_INIT_ONES 1
#define ESPER_INIT_CONSTANT 2        /* a = value */
#define ESPER_INIT_UNIFORM 3         /* a = lo, b = hi */
#define ESPER_INIT_NORMAL 4          /* a = mean, b = std */
#define ESPER_INIT_KAIMING_UNIFORM 5 /* over the fan-in (dims 1.. of the shape) */
typedef struct esper_init {
    int32_t kind;
    double a;
    double b;
} esper_init;

/* Parameter flags (ops->param). */
#define ESPER_PARAM_TRAINABLE 1    /* a parameter (gets gradients); without it a buffer */
#define ESPER_PARAM_OUTPUT_LAYER 2 /* part of the seed's output layer: zeroed by the runtime
                                    * when the seed is germinated into a MULTIPLY slot */

typedef esper_status (*esper_unary_fn)(const esper_tensor *x, esper_tensor **out);
typedef esper_status (*esper_binary_fn)(const esper_tensor *a, const esper_tensor *b, esper_tensor **out);
typedef esper_status (*esper_scalar_fn)(const esper_tensor *x, double s, esper_tensor **out);
typedef esper_status (*esper_dims_fn)(const esper_tensor *x, const int64_t *dims, size_t n, esper_tensor **out);
typedef esper_status (*esper_reduce_fn)(const esper_tensor *x, const int64_t *dims, size_t n, int32_t keepdim,
                                        esper_tensor **out);

/* The runtime's op table. Fields are only ever appended (ABI minor versions). */
typedef struct esper_ops {
    uint32_t abi_major;
    uint32_t abi_minor;
    uint64_t size; /* sizeof the runtime's esper_ops */

    /* Errors (per thread). */
    const char *(*last_error)(void);
    void (*set_error)(esper_status code, const char *message);

    /* Handles. */
    void (*drop)(esper_tensor *t);
    esper_unary_fn shallow_clone; /* a new handle to the same tensor */
    esper_status (*shape)(const esper_tensor *t, int64_t *dims, size_t cap, size_t *ndim);
    int32_t (*dtype)(const esper_tensor *t);
    int32_t (*device)(const esper_tensor *t, int32_t *index);

    /* Parameters (only inside `create`): created and kept by the runtime, on the seed's
     * device. `name` is ASCII letters, digits, `_`, parts joined by `.`; `flags` is
     * ESPER_PARAM_* bits (no ESPER_PARAM_TRAINABLE: a buffer). */
    esper_status (*param)(esper_params *params, const char *name, const int64_t *shape, size_t ndim, esper_init init,
                          int32_t flags, esper_tensor **out);

    /* Elementwise, broadcasting. */
    esper_binary_fn add;
    esper_binary_fn sub;
    esper_binary_fn mul;
    esper_binary_fn div;
    esper_scalar_fn add_scalar;
    esper_scalar_fn sub_scalar;
    esper_scalar_fn mul_scalar;
    esper_scalar_fn div_scalar;
    esper_scalar_fn pow_scalar;
    esper_unary_fn neg;
    esper_unary_fn relu;
    esper_unary_fn gelu;
    esper_unary_fn sigmoid;
    esper_unary_fn tanh;
    esper_unary_fn exp;
    esper_unary_fn sqrt;

    /* Layers. `bias`, `weight` may be NULL where marked. Pairs are (height, width). */
    esper_status (*conv2d)(const esper_tensor *x, const esper_tensor *weight, const esper_tensor *bias /* NULL */,
                           const int64_t stride[2], const int64_t padding[2], const int64_t dilation[2], int64_t groups,
                           esper_tensor **out);
    esper_status (*linear)(const esper_tensor *x, const esper_tensor *weight, const esper_tensor *bias /* NULL */,
                           esper_tensor **out);
    esper_binary_fn matmul;
    esper_status (*group_norm)(const esper_tensor *x, int64_t groups, const esper_tensor *weight /* NULL */,
                               const esper_tensor *bias /* NULL */, double eps, esper_tensor **out);
    esper_status (*layer_norm)(const esper_tensor *x, const int64_t *normalized_shape, size_t n,
                               const esper_tensor *weight /* NULL */, const esper_tensor *bias /* NULL */, double eps,
                               esper_tensor **out);
    esper_reduce_fn mean;
    esper_reduce_fn sum;
    esper_status (*adaptive_avg_pool2d)(const esper_tensor *x, const int64_t size[2], esper_tensor **out);
    esper_status (*max_pool2d)(const esper_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                               const int64_t padding[2], esper_tensor **out);
    esper_status (*softmax)(const esper_tensor *x, int64_t dim, esper_tensor **out);
    /* scaled_dot_product_attention(q, k, v): no mask, no dropout, not causal. */
    esper_status (*attention)(const esper_tensor *q, const esper_tensor *k, const esper_tensor *v,
                              esper_tensor **out);

    /* Shapes. */
    esper_dims_fn reshape;
    esper_dims_fn view;
    esper_dims_fn permute;
    esper_status (*transpose)(const esper_tensor *x, int64_t dim0, int64_t dim1, esper_tensor **out);
    esper_unary_fn contiguous;
    esper_status (*cat)(const esper_tensor *const *xs, size_t n, int64_t dim, esper_tensor **out);
    esper_unary_fn zeros_like;
    esper_unary_fn ones_like;
    esper_unary_fn detach;

    /* ABI 1.2. scaled_dot_product_attention(q, k, v, is_causal = true): query i attends
     * to keys 0..=i (q and k of the same length); no dropout. */
    esper_status (*causal_attention)(const esper_tensor *q, const esper_tensor *k, const esper_tensor *v,
                                     esper_tensor **out);
    /* Causal attention over a sliding window (ABI 1.2): query i attends to keys
     * i - window + 1 ..= i (those >= 0); `window` >= 1. No dropout. */
    esper_status (*window_attention)(const esper_tensor *q, const esper_tensor *k, const esper_tensor *v,
                                     int64_t window, esper_tensor **out);
} esper_ops;

/* One blueprint of the plugin. */
typedef struct esper_blueprint {
    const char *name;
    const char *topology;    /* e.g. "cnn" */
    const char *description;
    uint64_t param_estimate; /* elements at 64 channels, roughly */
    const char *options_schema; /* the options' JSON schema, or NULL */
    /* Creates a seed for `channels` channels. `options_json` is a JSON object's text ("" for
     * none): refuse unknown keys with ESPER_ERR_BAD_OPTIONS. */
    esper_status (*create)(esper_params *params, int64_t channels, const char *options_json, esper_seed **out);
    /* The seed's output for `input` (N, C, H, W): the same shape, dtype and device, the
     * input not written. `train` is 1 in training, 0 in evaluation. */
    esper_status (*forward)(esper_seed *seed, const esper_tensor *input, int32_t train, esper_tensor **out);
    /* Frees the seed and drops every handle it holds. */
    esper_status (*destroy)(esper_seed *seed);
} esper_blueprint;

/* What esper_portable_plugin returns: valid for the life of the process. */
typedef struct esper_plugin {
    uint32_t abi_major; /* ESPER_ABI_MAJOR the plugin was built against */
    uint32_t abi_minor; /* ESPER_ABI_MINOR the plugin was built against */
    const char *name;
    const char *version;
    size_t blueprint_count;
    const esper_blueprint *blueprints;
} esper_plugin;

/* The entry point. `ops` stays valid for the life of the process. Returns NULL (after
 * ops->set_error) when the plugin cannot work with this runtime. */
typedef const esper_plugin *(*esper_portable_entry_fn)(const esper_ops *ops);
#define ESPER_PORTABLE_ENTRY "esper_portable_plugin"

#ifdef __cplusplus
}
#endif

#endif /* ESPER_PLUGIN_H */

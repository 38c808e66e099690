/*
 * A portable plugin written in C: blueprint `c-gain`, a per-channel gain
 *
 *     y = x * (1 + tanh(gain)),  gain of shape [C], initialised to 0
 *
 * so the seed is the identity at birth. It includes only esper_plugin.h and links no
 * libtorch: every op goes through the runtime's op table. Built by tests/build.rs with
 * the `cc` crate. Variants for the loader tests (each refused at load, by name):
 *   -DFIXTURE_ABI_MAJOR=2 / -DFIXTURE_ABI_MINOR=9: claims another ABI (MINOR=1: an older one);
 *   -DFIXTURE_NULL_FORWARD: describes a blueprint without a forward function.
 */
#include "esper_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FIXTURE_ABI_MAJOR
#define FIXTURE_ABI_MAJOR ESPER_ABI_MAJOR
#endif
#ifndef FIXTURE_ABI_MINOR
#define FIXTURE_ABI_MINOR ESPER_ABI_MINOR
#endif

static const esper_ops *OPS;

typedef struct gain_seed {
    int64_t channels;
    esper_tensor *gain; /* [C], owned */
} gain_seed;

static esper_status fail(esper_status code, const char *message) {
    OPS->set_error(code, message);
    return code;
}

/* Options: none; "", "{}" and whitespace are accepted, anything else refused. */
static int options_empty(const char *json) {
    int braces = 0;
    for (const char *p = json; p && *p; ++p) {
        if (*p == '{' || *p == '}') {
            ++braces;
        } else if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            return 0;
        }
    }
    return braces == 0 || braces == 2;
}

static esper_status gain_create(esper_params *params, int64_t channels, const char *options_json, esper_seed **out) {
    if (!options_empty(options_json)) {
        char message[256];
        snprintf(message, sizeof message, "blueprint `c-gain` takes no options, got %.200s", options_json);
        return fail(ESPER_ERR_BAD_OPTIONS, message);
    }
    if (channels <= 0) {
        return fail(ESPER_ERR_INVALID_ARGUMENT, "blueprint `c-gain`: channels must be positive");
    }
    gain_seed *seed = calloc(1, sizeof *seed);
    if (!seed) {
        return fail(ESPER_ERR_OTHER, "out of memory");
    }
    esper_init zeros = {ESPER_INIT_ZEROS, 0.0, 0.0};
    int64_t shape[1] = {channels};
    esper_status s = OPS->param(params, "gain", shape, 1, zeros, ESPER_PARAM_TRAINABLE, &seed->gain);
    if (s != ESPER_OK) {
        free(seed);
        return s; /* the runtime's message stands */
    }
    seed->channels = channels;
    *out = (esper_seed *)seed;
    return ESPER_OK;
}

static esper_status gain_forward(esper_seed *raw, const esper_tensor *input, int32_t train, esper_tensor **out) {
    (void)train;
    gain_seed *seed = (gain_seed *)raw;
    int64_t shape[4] = {1, seed->channels, 1, 1};
    esper_tensor *g = NULL, *t = NULL, *f = NULL;
    esper_status s = OPS->reshape(seed->gain, shape, 4, &g);
    if (s == ESPER_OK) s = OPS->tanh(g, &t);
    if (s == ESPER_OK) s = OPS->add_scalar(t, 1.0, &f);
    if (s == ESPER_OK) s = OPS->mul(input, f, out);
    if (f) OPS->drop(f);
    if (t) OPS->drop(t);
    if (g) OPS->drop(g);
    return s;
}

static esper_status gain_destroy(esper_seed *raw) {
    gain_seed *seed = (gain_seed *)raw;
    if (seed) {
        OPS->drop(seed->gain);
        free(seed);
    }
    return ESPER_OK;
}

static const esper_blueprint BLUEPRINTS[] = {{
    .name = "c-gain",
    .topology = "cnn",
    .description = "per-channel gain x * (1 + tanh(gain)), written in C; the identity at birth",
    .param_estimate = 64,
    .options_schema = "{\"type\": \"object\", \"additionalProperties\": false}",
    .create = gain_create,
#ifdef FIXTURE_NULL_FORWARD
    .forward = NULL,
#else
    .forward = gain_forward,
#endif
    .destroy = gain_destroy,
}};

static const esper_plugin PLUGIN = {
    .abi_major = FIXTURE_ABI_MAJOR,
    .abi_minor = FIXTURE_ABI_MINOR,
    .name = "esper-fixture-c-gain",
    .version = "0.1.0",
    .blueprint_count = sizeof BLUEPRINTS / sizeof BLUEPRINTS[0],
    .blueprints = BLUEPRINTS,
};

#ifdef FIXTURE_NULL_FORWARD
/* Keeps gain_forward used in this variant (the compiler refuses unused functions). */
esper_status (*const fixture_unused_forward)(esper_seed *, const esper_tensor *, int32_t, esper_tensor **) = gain_forward;
#endif

const esper_plugin *esper_portable_plugin(const esper_ops *ops) {
    if (!ops || ops->abi_major != ESPER_ABI_MAJOR || ops->abi_minor < ESPER_ABI_MINOR ||
        ops->size < sizeof(esper_ops)) {
        if (ops) ops->set_error(ESPER_ERR_OTHER, "c-gain needs ABI " "1.2" " or a later 1.x op table");
        return NULL;
    }
    OPS = ops;
    return &PLUGIN;
}

// Gradients averaged across the ranks of a process group while the backward runs, as
// DDP's Reducer does: the parameters' gradients go in buckets (reverse parameter order,
// one dtype and device each, up to `bucket_bytes`: cpp/dist.cpp's rule), and a bucket's
// allreduce is launched, asynchronously, as soon as every gradient in it has been
// computed and every earlier bucket has been launched, so the collectives overlap the
// rest of the backward and every rank launches them in the same order.
//
// The hook: a post hook on each parameter's gradient accumulator (autograd's
// AccumulateGrad node), what DDP uses. It runs once per backward, after the parameter's
// `.grad` holds the step's gradient, on the thread that runs that node (the caller's for
// the CPU, autograd's device thread for CUDA, with the node's stream current). Rejected:
// c10d's `Reducer` (it wants a `c10d::ProcessGroup` around our backend, handles
// parameters without a gradient only with `find_unused_parameters`, and has no way to
// release the peers after a failed backward: its next `prepare_for_backward` refuses);
// a tensor hook (`register_hook`) fires before accumulation, on the incoming gradient.
//
// A step: `begin` arms the hooks (outside begin..finish they do nothing, so other
// backwards over the same parameters launch nothing); the backward's hooks copy each
// gradient into its bucket's flat buffer and launch the buckets that are complete;
// `finish` launches the buckets that are not (a parameter whose hook did not run
// contributes zeros), waits for them all and copies the mean back into the `.grad`
// tensors; `abandon` (after a failed backward) launches and waits alike but writes no
// gradient. Either way every rank runs the same collectives, so no peer is left waiting.
//
// Inside a CUDA graph capture (a NCCL group: its collectives are captured with the
// backward, and run at each replay) a step ends with `finish` in its captured form,
// which never reads the device from the host: a parameter this rank had no gradient for
// keeps its `.grad` (a captured backward reaches the same parameters on every rank: the
// graph has no data-dependent path). A capture that fails ends with `discard`: the
// buckets' captured collectives are dropped, never waited for, and nothing is launched
// (no collective ran; the ranks agree on the capture's outcome before any step runs).
//
// Each bucket's flat buffer is its gradients, then one presence flag per parameter (1
// where this rank had its gradient): summed by the same allreduce, they say which
// parameters had a gradient on some rank. Those get the mean in `.grad` on every rank
// (defined where this rank had none); one that had a gradient on no rank keeps its
// `.grad` as it was (DDP's rule for parameters unused everywhere). The flags are read
// on the host only for a bucket with a parameter this rank had no gradient for.
//
// The gradients are copied into the buckets and back, not kept as views of them: the
// trainer drops its gradients before each backward (`esper_clear_grads`), which a view
// would not survive, and `.grad` stays untouched until `finish` succeeds, so a failed
// step leaves nothing half-averaged in it.
//
// Dropping the handle removes the hooks; they hold the state only weakly, so they keep
// no tensor alive and do nothing once it is gone. The handle keeps the accumulators
// alive (a parameter's accumulator is otherwise freed with its last graph, and a new
// one would not have the hook). Adding and removing hooks is not safe while a backward
// over these parameters runs on another thread. No exception crosses the C boundary; a
// hook never throws into the backward: its failure is `finish`'s error.
#include "dist.h"
#include "esper_shim.h"

#include "error.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace ag = torch::autograd;

struct Bucket {
    std::vector<size_t> params;   // indices into State::params, in bucket order
    std::vector<int64_t> offsets; // each one's first element in `flat`
    int64_t data = 0;             // elements of gradient; the presence flags follow
    at::Tensor flat;              // [data + params.size()]
    size_t pending = 0;           // this step: hooks not yet run
    c10::intrusive_ptr<c10d::Work> work;  // this step's allreduce, once launched
};

struct State {
    c10::intrusive_ptr<c10d::Backend> backend;
    bool gloo = true;  // a Gloo group (else NCCL)
    int rank = 0;
    int size = 1;
    double scale = 1.0;
    std::vector<at::Tensor> params;
    std::vector<std::pair<size_t, size_t>> where;  // parameter -> (bucket, position in it)
    std::vector<Bucket> buckets;

    std::mutex mutex;  // everything below, and the buckets' step fields
    bool armed = false;
    std::vector<char> fired;  // this step: the parameter's hook ran
    std::vector<char> had;    // ... and copied a gradient in
    size_t next = 0;          // the next bucket to launch
    size_t launched = 0;      // collectives launched this step
    std::string error;        // the step's first failure

    void note(const std::string &what) {
        if (error.empty()) error = what;
    }

    // The allreduce of bucket `b`: presence flags and zeros for the gradients this rank
    // lacks, then the collective. A launch that fails is noted (the step's error) and
    // counts as launched: the group is broken, the peers' collective fails too.
    void launch(size_t b) {
        Bucket &bucket = buckets[b];
        try {
            at::NoGradGuard no_grad;
            auto flags = bucket.flat.narrow(0, bucket.data, static_cast<int64_t>(bucket.params.size()));
            size_t present = 0;
            for (size_t i : bucket.params) present += had[i] ? 1 : 0;
            if (present == bucket.params.size()) {
                flags.fill_(1);
            } else if (present == 0) {
                bucket.flat.zero_();
            } else {
                for (size_t pos = 0; pos < bucket.params.size(); ++pos) {
                    size_t i = bucket.params[pos];
                    if (had[i]) {
                        flags.narrow(0, static_cast<int64_t>(pos), 1).fill_(1);
                    } else {
                        bucket.flat.narrow(0, bucket.offsets[pos], params[i].numel()).zero_();
                        flags.narrow(0, static_cast<int64_t>(pos), 1).zero_();
                    }
                }
            }
            c10d::AllreduceOptions options;
            options.reduceOp = c10d::ReduceOp::SUM;
            std::vector<at::Tensor> one{bucket.flat};
            bucket.work = esper::dist::start(gloo, [&] { return backend->allreduce(one, options); });
        } catch (const std::exception &e) {
            note(std::string("launching bucket ") + std::to_string(b) + ": " + esper::message(e));
        }
        ++launched;
    }

    // Launches the buckets, in order, from `next` on while each is complete.
    void launch_ready() {
        while (next < buckets.size() && buckets[next].pending == 0) launch(next++);
    }

    // Parameter `i`'s hook: its gradient into its bucket.
    void ready(size_t i) noexcept {
        std::lock_guard<std::mutex> lock(mutex);
        if (!armed) return;
        try {
            if (fired[i]) {
                note("parameter " + std::to_string(i) +
                     "'s gradient came twice in one step (two backwards between begin and finish)");
                return;
            }
            fired[i] = 1;
            auto [b, pos] = where[i];
            Bucket &bucket = buckets[b];
            --bucket.pending;
            const at::Tensor &param = params[i];
            const at::Tensor &grad = param.grad();
            if (grad.defined()) {
                TORCH_CHECK(grad.layout() == at::kStrided, "parameter ", i, " has a sparse gradient");
                TORCH_CHECK(grad.sizes() == param.sizes(), "parameter ", i, " of shape ", param.sizes(),
                            " has a gradient of shape ", grad.sizes());
                at::NoGradGuard no_grad;  // a backward with create_graph must not record the copy
                bucket.flat.narrow(0, bucket.offsets[pos], param.numel()).view(param.sizes()).copy_(grad);
                had[i] = 1;
            }
            launch_ready();
        } catch (const std::exception &e) {
            note(std::string("parameter ") + std::to_string(i) + "'s gradient: " + esper::message(e));
        }
    }

    // The mean of bucket `b` into the `.grad` of each parameter some rank had a gradient
    // for (see the top of this file); `captured`: of each this rank had one for.
    void write_back(Bucket &bucket, bool captured) {
        auto data = bucket.flat.narrow(0, 0, bucket.data);
        if (scale != 1.0) data.mul_(scale);  // Gloo has no AVG: one scaling per bucket
        bool all_here = true;
        for (size_t i : bucket.params) all_here = all_here && (had[i] || captured);
        at::Tensor flags;  // read only where this rank lacked a gradient
        if (!all_here) {
            flags = bucket.flat.narrow(0, bucket.data, static_cast<int64_t>(bucket.params.size()))
                        .to(at::kCPU, at::kFloat);
        }
        std::vector<at::Tensor> grads, means;
        for (size_t pos = 0; pos < bucket.params.size(); ++pos) {
            size_t i = bucket.params[pos];
            at::Tensor &param = params[i];
            if (!had[i] && (captured || flags[static_cast<int64_t>(pos)].item<float>() <= 0.0f)) continue;
            if (!param.grad().defined()) {
                param.mutable_grad() = at::empty_like(param, at::MemoryFormat::Preserve);
            }
            grads.push_back(param.grad());
            means.push_back(bucket.flat.narrow(0, bucket.offsets[pos], param.numel()).view(param.sizes()));
        }
        if (!grads.empty()) at::_foreach_copy_(grads, means);
    }

    // The end of a step (see the top of this file): the rest of the buckets launched,
    // all waited for, the means written back unless abandoned or the step failed;
    // disarmed. Returns the step's error (empty: none) and sets `*collectives`.
    std::string end(EsperGradSyncEnd how, size_t *collectives) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!armed) note("finish or abandon without begin (no gradient was collected)");
        if (how == ESPER_GRAD_SYNC_DISCARD) {
            for (auto &bucket : buckets) bucket.work.reset();
            *collectives = launched;
            reset();
            return {};
        }
        while (next < buckets.size()) launch(next++);
        for (size_t b = 0; b < buckets.size(); ++b) {
            auto &work = buckets[b].work;
            if (!work) continue;
            try {
                // A CUDA group's wait makes the current stream wait for the collective;
                // Gloo's returns once the result is in the buffer.
                work->wait();
            } catch (const std::exception &e) {
                note(std::string("bucket ") + std::to_string(b) + ": " + esper::message(e));
            }
            work.reset();
        }
        if (how != ESPER_GRAD_SYNC_ABANDON && error.empty()) {
            try {
                at::NoGradGuard no_grad;
                for (auto &bucket : buckets) write_back(bucket, how == ESPER_GRAD_SYNC_FINISH_CAPTURED);
            } catch (const std::exception &e) {
                note(std::string("writing the averaged gradients back: ") + esper::message(e));
            }
        }
        *collectives = launched;
        std::string out = std::move(error);
        reset();
        return out;
    }

    // A step's fields as before its first hook; disarmed.
    void reset() {
        armed = false;
        std::fill(fired.begin(), fired.end(), 0);
        std::fill(had.begin(), had.end(), 0);
        for (auto &bucket : buckets) bucket.pending = bucket.params.size();
        next = 0;
        launched = 0;
        error.clear();
    }
};

// The post hook on a parameter's gradient accumulator: tells the state, if it is
// still there, that parameter `index`'s gradient is ready.
class ReadyHook : public ag::FunctionPostHook {
  public:
    ReadyHook(std::weak_ptr<State> state, size_t index) : state_(std::move(state)), index_(index) {}

    ag::variable_list operator()(const ag::variable_list &outputs, const ag::variable_list &) override {
        if (auto state = state_.lock()) state->ready(index_);
        return outputs;
    }

  private:
    std::weak_ptr<State> state_;
    size_t index_;
};

void check_param(const EsperGroup *g, const at::Tensor &t, size_t i) {
    TORCH_CHECK(t.defined(), "parameter ", i, " is an undefined tensor");
    TORCH_CHECK(t.requires_grad(), "parameter ", i, " does not require a gradient");
    TORCH_CHECK(t.is_leaf(), "parameter ", i, " is not a leaf tensor (it has a grad_fn)");
    TORCH_CHECK(t.layout() == at::kStrided, "parameter ", i, " is sparse");
    TORCH_CHECK(at::isFloatingType(t.scalar_type()), "parameter ", i, " is ", t.scalar_type(),
                ", not a floating-point tensor");
    at::Device want = g->device.value_or(at::Device(at::kCPU));
    TORCH_CHECK(t.device() == want, "parameter ", i, " is on ", t.device(), ", the process group's tensors on ", want);
}

}  // namespace

// The handle: the state the hooks share, and each hook's accumulator and key.
struct EsperGradSync {
    std::shared_ptr<State> state;
    std::vector<std::pair<std::shared_ptr<ag::Node>, uintptr_t>> hooks;

    ~EsperGradSync() {
        for (auto &[accumulator, key] : hooks) accumulator->del_post_hook(key);
    }
};

extern "C" {

EsperGradSync *esper_grad_sync_new(EsperGroup *g, EsperTensor *const *params, size_t n, size_t bucket_bytes,
                                   double scale, size_t *buckets, char *err, size_t len) {
    std::unique_ptr<EsperGradSync> sync;
    try {
        TORCH_CHECK(scale > 0.0 && std::isfinite(scale), "a scale must be positive and finite, not ", scale);
        auto state = std::make_shared<State>();
        state->backend = g->backend;
        state->gloo = !g->device.has_value();
        state->rank = g->rank;
        state->size = g->size;
        state->scale = scale;
        std::set<const void *> seen;
        for (size_t i = 0; i < n; ++i) {
            const at::Tensor &t = *params[i];
            check_param(g, t, i);
            TORCH_CHECK(seen.insert(t.unsafeGetTensorImpl()).second, "parameter ", i, " is listed twice");
            state->params.push_back(t);
        }
        state->where.resize(n);
        for (auto &members : esper::dist::buckets(state->params, /*reverse=*/true, bucket_bytes)) {
            Bucket bucket;
            for (size_t i : members) {
                state->where[i] = {state->buckets.size(), bucket.params.size()};
                bucket.params.push_back(i);
                bucket.offsets.push_back(bucket.data);
                bucket.data += state->params[i].numel();
            }
            const at::Tensor &first = state->params[members.front()];
            bucket.flat = at::zeros({bucket.data + static_cast<int64_t>(members.size())},
                                    at::TensorOptions().dtype(first.scalar_type()).device(first.device()));
            state->buckets.push_back(std::move(bucket));
        }
        state->fired.assign(n, 0);
        state->had.assign(n, 0);
        state->reset();
        sync = std::make_unique<EsperGradSync>();
        sync->state = state;
        for (size_t i = 0; i < n; ++i) {
            auto accumulator = torch::autograd::impl::grad_accumulator(state->params[i]);
            TORCH_CHECK(accumulator, "parameter ", i, " has no gradient accumulator");
            uintptr_t key = accumulator->add_post_hook(std::make_unique<ReadyHook>(state, i));
            sync->hooks.emplace_back(std::move(accumulator), key);
        }
        *buckets = state->buckets.size();
        return sync.release();
    } catch (const std::exception &e) {
        sync.reset();  // removes the hooks added so far
        if (err && len) {
            std::snprintf(err, len, "gradient sync on rank %d of %d: %s", g->rank, g->size, esper::message(e));
        }
        return nullptr;
    }
}

int esper_grad_sync_begin(EsperGradSync *s, char *err, size_t len) {
    State &state = *s->state;
    try {
        std::lock_guard<std::mutex> lock(state.mutex);
        TORCH_CHECK(!state.armed, "begin while a step is under way (finish or abandon it first)");
        state.armed = true;
        return 0;
    } catch (const std::exception &e) {
        if (err && len) std::snprintf(err, len, "gradient sync on rank %d of %d: %s", state.rank, state.size, esper::message(e));
        return 1;
    }
}

size_t esper_grad_sync_launched(EsperGradSync *s) {
    State &state = *s->state;
    try {
        std::lock_guard<std::mutex> lock(state.mutex);
        return state.launched;
    } catch (const std::exception &) {
        return 0;  // the lock failed (std::system_error): nothing to report
    }
}

int esper_grad_sync_finish(EsperGradSync *s, EsperGradSyncEnd how, size_t *collectives, char *err, size_t len) {
    State &state = *s->state;
    std::string error;
    try {
        TORCH_CHECK(how >= ESPER_GRAD_SYNC_FINISH && how <= ESPER_GRAD_SYNC_DISCARD, "no way to end a step numbered ",
                    static_cast<int>(how));
        error = state.end(how, collectives);
    } catch (const std::exception &e) {
        error = esper::message(e);
    }
    if (error.empty()) return 0;
    if (err && len) std::snprintf(err, len, "gradient sync on rank %d of %d: %s", state.rank, state.size, error.c_str());
    return 1;
}

void esper_grad_sync_free(EsperGradSync *s) {
    delete s;
}

int esper_grad_post_hooks(const EsperTensor *t) {
    try {
        auto accumulator = torch::autograd::impl::try_get_grad_accumulator(*t);
        return accumulator ? static_cast<int>(accumulator->post_hooks().size()) : -1;
    } catch (const std::exception &) {
        return -1;  // a tensor without autograd metadata to look in
    }
}

}  // extern "C"

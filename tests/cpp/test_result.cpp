// Tests of the wrapper's Result API (the try_ methods and Optimizer::create): each failure's
// status and a message naming its cause, the enum classes, load_shards, callables without
// exceptions, and value() of a failure. tools/test-cpp.sh builds it with -fno-exceptions, where
// this is the whole API, and with exceptions, where it stands beside the throwing one.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "adamw/adamw.hpp"

#if !ADAMW_CPP_EXCEPTIONS
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>
#endif

std::string version_from_second_tu();

#include "check.hpp"

// `result` must be a failure with `status` and `text` in its message; returns the message.
template <class R>
static std::string expect_failure(const R& result, adamw::Status status, const std::string& text, int line) {
    ++checks;
    if (result.ok() || result.status() != status || result.message().find(text) == std::string::npos) {
        ++failures;
        std::fprintf(stderr, "line %d: got %s \"%s\", expected %s with \"%s\"\n", line, result.status_name(),
                     result.message().c_str(), adamw::status_name(status), text.c_str());
    }
    return result.message();
}
#define EXPECT_FAILURE(status, text, ...) expect_failure(__VA_ARGS__, adamw::Status::status, text, __LINE__)

static void enums_and_versions() {
    CHECK(adamw::version() == version_from_second_tu());
    CHECK(adamw::to_c(adamw::Status::shape_mismatch) == ADAMW_STATUS_SHAPE_MISMATCH);
    CHECK(adamw::from_c(ADAMW_STATUS_BUSY) == adamw::Status::busy);
    CHECK(adamw::to_c(adamw::DType::bfloat16) == ADAMW_DTYPE_BFLOAT16);
    CHECK(adamw::from_c(ADAMW_DTYPE_FLOAT64) == adamw::DType::float64);
    CHECK(adamw::to_c(adamw::ScheduleKind::cosine_decay) == ADAMW_SCHEDULE_KIND_COSINE_DECAY);
    CHECK(adamw::from_c(ADAMW_DEVICE_KIND_CUDA) == adamw::DeviceKind::cuda);
    CHECK(std::string(adamw::status_name(adamw::Status::device)) == "ADAMW_STATUS_DEVICE");
    CHECK(adamw::Schedule::cosine_decay(0.1, 10).kind() == adamw::ScheduleKind::cosine_decay);
}

static void create_and_config() {
    adamw::Result<adamw::Optimizer> made = adamw::Optimizer::create(adamw::Config().learning_rate(0.01).name("mine"));
    CHECK(made.ok() && made.status() == adamw::Status::ok && made.message().empty());
    adamw::Optimizer opt = std::move(made).value();
    adamw::Result<std::string> json = opt.try_get_config();
    CHECK(json.ok() && json.value().find("\"name\":\"mine\"") != std::string::npos);
    CHECK(adamw::Optimizer::try_from_config(json.value()).value().try_get_config().value() == json.value());
    CHECK(opt.try_learning_rate().value() == 0.01f);

    std::string message = EXPECT_FAILURE(invalid_argument, "global_clipnorm",
                                         adamw::Optimizer::create(adamw::Config().clipnorm(1).global_clipnorm(1)));
    CHECK(message ==
          "At most one of `clipnorm` and `global_clipnorm` can be set. Received: clipnorm=1.0, global_clipnorm=1.0.");
    EXPECT_FAILURE(invalid_config, "foo is not a valid argument", adamw::Optimizer::try_from_config("{\"foo\": 1}"));
    EXPECT_FAILURE(invalid_argument, "1 less than the length of values",
                   adamw::Schedule::try_piecewise_constant_decay({1, 2}, {1.0, 2.0}));
    adamw::Result<adamw::Schedule> piecewise = adamw::Schedule::try_piecewise_constant_decay({2}, {0.1, 0.01});
    CHECK(piecewise.ok() && piecewise.value().kind() == adamw::ScheduleKind::piecewise_constant_decay);
    adamw::Optimizer scheduled = adamw::Optimizer::create(adamw::Config().learning_rate(piecewise.value())).value();
    EXPECT_FAILURE(invalid_argument, "LearningRateSchedule", scheduled.try_set_learning_rate(0.5));
    EXPECT_FAILURE(io, "cannot read the checkpoint missing.keras",
                   adamw::Optimizer::try_keras_file_optimizer_config("missing.keras"));
}

static void steps() {
    std::vector<float> w = {0.5f, -1.5f, 2.0f}, g = {0.1f, -0.2f, 0.3f};
    const adamw::Gradient entry = adamw::Gradient::dense<float>(0, w, g);
    adamw::Optimizer opt = adamw::Optimizer::create(adamw::Config()).value();
    EXPECT_FAILURE(not_built, "apply_gradients needs a built optimizer", opt.try_apply_gradients({entry}));
    CHECK(opt.try_build({adamw::Variable::of<float>("w", {3})}).ok());
    EXPECT_FAILURE(already_built, "already built", opt.try_build({adamw::Variable::of<float>("w", {3})}));
    adamw::Result<int64_t> step = opt.try_apply_gradients({entry});
    CHECK(step.ok() && step.value() == 1);
    uint32_t bits;
    std::memcpy(&bits, &w[0], 4);
    CHECK(bits == 0x3eff7cacu);  // Keras' first step (spec, appendix C)

    std::vector<float> short_w = {1, 2}, short_g = {1, 2};
    EXPECT_FAILURE(shape_mismatch, "has 3 elements, got 2",
                   opt.try_apply_gradients({adamw::Gradient::dense<float>(0, short_w, short_g)}));
    EXPECT_FAILURE(unknown_variable, "cannot recognize variable 4",
                   opt.try_apply_gradients({adamw::Gradient::dense<float>(4, w, g)}));
    // A gradient of another length than its values: thrown at once with exceptions, reported by
    // the step without them (the entry is never given to the library).
    std::vector<float> short_grad = {1, 2};
#if ADAMW_CPP_EXCEPTIONS
    bool threw = false;
    try {
        adamw::Gradient::dense<float>(0, w, short_grad);
    } catch (const adamw::Error& e) {
        threw = e.status() == adamw::Status::shape_mismatch;
    }
    CHECK(threw);
#else
    std::vector<adamw::Gradient> mismatched = {adamw::Gradient::dense<float>(0, w, short_grad)};
    EXPECT_FAILURE(shape_mismatch, "the gradient's length differs", opt.try_apply_gradients(mismatched));
    EXPECT_FAILURE(shape_mismatch, "the gradient's length differs", opt.try_minimize(mismatched, [] {}));
#endif
    CHECK(opt.try_iterations().value() == 1);

    adamw::Result<adamw::VariableInfo> info = opt.try_variable_info(1);
    CHECK(info.ok() && info.value().name == "AdamW/m/w" && info.value().dtype == adamw::DType::float32);
    EXPECT_FAILURE(unknown_variable, "optimizer variable 3 does not exist", opt.try_variable_info(3));
    EXPECT_FAILURE(dtype_mismatch, "float64 was asked for", opt.try_variable<double>(1));
    CHECK(opt.try_variable<int64_t>(0).value() == std::vector<int64_t>({1}));

    adamw::Optimizer moved = std::move(opt);
    EXPECT_FAILURE(null_argument, "moved from", opt.try_iterations());
    CHECK(moved.try_iterations().value() == 1);
}

// Callables: without exceptions a scalar callable fails a call by returning NaN; a callable that
// calls its own optimizer gets BUSY (the wrapper's lock is recursive: no deadlock).
static void callables() {
    std::vector<float> w = {1, 2}, g = {1, 1};
    adamw::Optimizer* self = nullptr;
    adamw::Status inner = adamw::Status::ok;
    adamw::Optimizer opt = adamw::Optimizer::create(adamw::Config().learning_rate([&](int64_t step) {
                               if (self) inner = self->try_iterations().status();
                               return step >= 1 ? std::nan("") : 0.1;
                           })).value();
    self = &opt;
    CHECK(opt.try_build({adamw::Variable::of<float>("w", {2})}).ok());
    CHECK(opt.try_apply_gradients({adamw::Gradient::dense<float>(0, w, g)}).value() == 1);
    CHECK(inner == adamw::Status::busy);
    std::vector<float> before = w;
    EXPECT_FAILURE(callback_failed, "returned NaN at step 1",
                   opt.try_apply_gradients({adamw::Gradient::dense<float>(0, w, g)}));
    CHECK(w == before && opt.try_iterations().value() == 1);

    // minimize: gradients of sum((w - 3)^2), from the current values
    adamw::Optimizer m = adamw::Optimizer::create(adamw::Config().learning_rate(0.1)).value();
    CHECK(m.try_build({adamw::Variable::of<float>("w", {2})}).ok());
    std::vector<adamw::Gradient> entries = {adamw::Gradient::dense<float>(0, w, g)};
    auto compute = [&] {
        for (std::size_t k = 0; k < w.size(); k++) g[k] = 2 * (w[k] - 3);
    };
    bool all_ok = true;
    for (int i = 0; i < 200; i++) all_ok = m.try_minimize(entries, compute).ok() && all_ok;
    CHECK(all_ok);
    CHECK(std::fabs(w[0] - 3) < 0.1f && std::fabs(w[1] - 3) < 0.1f);
}

// load_shards: two ranks' checkpoints (steps without clipping call no all-reduce) load into an
// unsharded optimizer, which then holds what one optimizer given the whole gradients holds.
static void shards() {
    const std::vector<float> grad = {0.5f, -0.25f, 0.125f, 1, -1, 2};
    std::vector<float> whole = {1, 2, 3, 4, 5, 6};
    adamw::Optimizer reference = adamw::Optimizer::create(adamw::Config()).value();
    CHECK(reference.try_build({adamw::Variable::of<float>("w", {6})}).ok());
    CHECK(reference.try_apply_gradients({adamw::Gradient::dense<float>(0, whole, grad)}).ok());
    std::vector<std::byte> saved[2];
    for (std::size_t rank = 0; rank < 2; rank++) {
        adamw::Optimizer opt = adamw::Optimizer::create(adamw::Config().mesh([](double*, std::size_t) {})).value();
        CHECK(opt.try_build({adamw::Variable::of<float>("w", {6}).shard(3 * rank, 3)}).ok());
        std::vector<float> part(whole.size() / 2), part_grad(grad.begin() + 3 * rank, grad.begin() + 3 * rank + 3);
        for (std::size_t i = 0; i < part.size(); i++) part[i] = static_cast<float>(3 * rank + i + 1);
        CHECK(opt.try_apply_gradients({adamw::Gradient::dense<float>(0, part, part_grad)}).ok());
        saved[rank] = opt.try_save().value();
    }
    adamw::Optimizer target = adamw::Optimizer::create(adamw::Config()).value();
    EXPECT_FAILURE(not_built, "load_shards needs a built optimizer", target.try_load_shards({saved[0], saved[1]}));
    CHECK(target.try_build({adamw::Variable::of<float>("w", {6})}).ok());
    const std::vector<std::byte> before = target.try_save().value();
    EXPECT_FAILURE(checkpoint_mismatch, "no shard checkpoints", target.try_load_shards({}));
    EXPECT_FAILURE(checkpoint_mismatch, "(a missing shard)", target.try_load_shards({saved[1]}));
    EXPECT_FAILURE(checkpoint_mismatch, "(a duplicated or overlapping shard)",
                   target.try_load_shards({saved[0], saved[1], saved[1]}));
    std::vector<std::byte> damaged = saved[0];
    damaged.back() ^= std::byte{1};
    EXPECT_FAILURE(invalid_checkpoint, "corrupted", target.try_load_shards({damaged, saved[1]}));
    CHECK(target.try_save().value() == before);
    CHECK(target.try_load_shards({saved[1], saved[0]}).ok());  // any order
    CHECK(target.try_save().value() == reference.try_save().value());
}

// value() of a failure: thrown as adamw::Error, or without exceptions printed and aborted.
static void value_of_a_failure() {
    adamw::Result<adamw::Optimizer> failed = adamw::Optimizer::create(adamw::Config().clipnorm(1).global_clipnorm(1));
    CHECK(!failed.ok() && failed.status() == adamw::Status::invalid_argument);
#if ADAMW_CPP_EXCEPTIONS
    bool threw = false;
    try {
        failed.value();
    } catch (const adamw::Error& e) {
        threw = e.status() == adamw::Status::invalid_argument && e.what() == failed.message();
    }
    CHECK(threw);
#else
    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0);
    std::fflush(stderr);
    pid_t child = fork();
    if (child == 0) {  // its stderr is the pipe
        dup2(pipe_fds[1], 2);
        failed.value();
        _exit(0);
    }
    close(pipe_fds[1]);
    std::string printed;
    char buf[256];
    for (ssize_t n; (n = read(pipe_fds[0], buf, sizeof buf)) > 0;) printed.append(buf, static_cast<std::size_t>(n));
    close(pipe_fds[0]);
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK(printed == "adamw: value() of a failed Result: ADAMW_STATUS_INVALID_ARGUMENT: " + failed.message() + "\n");
#endif
}

int main() {
    enums_and_versions();
    create_and_config();
    steps();
    callables();
    shards();
    value_of_a_failure();
    std::printf("%d passed, %d failed (%s)\n", checks - failures, failures,
                ADAMW_CPP_EXCEPTIONS ? "with exceptions" : "without exceptions");
    return failures == 0 ? 0 : 1;
}

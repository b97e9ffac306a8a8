// Tests of the C++ wrapper: every method with good and bad input, the exception's status and
// message, move semantics, and smoke trajectories from Keras reproduced bit for bit.
// usage: test_wrapper SMOKE.txt   (made by tools/smoke_to_text.py)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <thread>

#include "adamw/adamw.hpp"

std::string version_from_second_tu();

#include "check.hpp"

// Runs `body`, which must throw adamw::Error with `status` (a C value: from_c converts it);
// returns the message.
template <class Body>
static std::string expect_error(adamw_status status, Body&& body, int line) {
    ++checks;
    try {
        body();
    } catch (const adamw::Error& e) {
        if (e.status() == adamw::from_c(status)) return e.what();
        ++failures;
        std::fprintf(stderr, "line %d: threw %s (%s), expected %s\n", line, e.status_name(), e.what(),
                     adamw_status_name(status));
        return e.what();
    }
    ++failures;
    std::fprintf(stderr, "line %d: no exception, expected %s\n", line, adamw_status_name(status));
    return "";
}
#define EXPECT_ERROR(status, ...) expect_error(status, [&] { __VA_ARGS__; }, __LINE__)

static void versions() {
    CHECK(adamw::abi_version() == ADAMW_ABI_VERSION);
    CHECK(adamw::version() == version_from_second_tu());
}

static void config_and_schedules() {
    adamw::Optimizer opt(adamw::Config().learning_rate(0.01).weight_decay(0.1).amsgrad(true).name("mine"));
    std::string json = opt.get_config();
    CHECK(json.find("\"name\":\"mine\"") != std::string::npos);
    CHECK(json.find("\"amsgrad\":true") != std::string::npos);
    CHECK(opt.learning_rate() == 0.01f);
    adamw::Optimizer copy = adamw::Optimizer::from_config(json);
    CHECK(copy.get_config() == json);

    std::string message = EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT,
                                       adamw::Optimizer(adamw::Config().clipnorm(1).global_clipnorm(1)));
    CHECK(message == "At most one of `clipnorm` and `global_clipnorm` can be set. Received: clipnorm=1.0, global_clipnorm=1.0.");
    EXPECT_ERROR(ADAMW_STATUS_INVALID_CONFIG, adamw::Optimizer::from_config("{\"foo\": 1}"));
    EXPECT_ERROR(ADAMW_STATUS_INVALID_CONFIG, adamw::Optimizer::from_config("not json"));
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, adamw::Schedule::piecewise_constant_decay({1, 2}, {1.0, 2.0}));

    adamw::Schedule schedules[] = {
        adamw::Schedule::exponential_decay(0.1, 3, 0.5, true),
        adamw::Schedule::piecewise_constant_decay({2, 5}, {0.1, 0.05, 0.01}),
        adamw::Schedule::polynomial_decay(0.1, 10, 0.001, 2.0, true),
        adamw::Schedule::inverse_time_decay(0.1, 5, 0.5),
        adamw::Schedule::cosine_decay(0.0, 6, 0.1, 0.1, 3),
        adamw::Schedule::cosine_decay_restarts(0.1, 4, 2.0, 0.8, 0.01).name("restarts"),
    };
    const char* classes[] = {"ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay", "InverseTimeDecay",
                             "CosineDecay", "CosineDecayRestarts"};
    for (int i = 0; i < 6; i++) {
        adamw::Optimizer s(adamw::Config().learning_rate(schedules[i]));
        CHECK(s.get_config().find(classes[i]) != std::string::npos);
        EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, s.set_learning_rate(0.5));
    }
    adamw::Optimizer exp_decay(adamw::Config().learning_rate(schedules[0]));
    CHECK(exp_decay.learning_rate() == 0.1f);
}

static void steps_and_errors() {
    std::vector<float> kernel = {0.5f, -1.5f, 2.0f}, grad = {0.1f, -0.2f, 0.3f};
    adamw::Optimizer opt{adamw::Config()};
    EXPECT_ERROR(ADAMW_STATUS_NOT_BUILT, opt.apply_gradients({adamw::Gradient::dense<float>(0, kernel, grad)}));
    opt.build({adamw::Variable::of<float>("x", {3})});
    EXPECT_ERROR(ADAMW_STATUS_ALREADY_BUILT, opt.build({adamw::Variable::of<float>("x", {3})}));
    CHECK(opt.apply_gradients({adamw::Gradient::dense<float>(0, kernel, grad)}) == 1);
    uint32_t bits;
    std::memcpy(&bits, &kernel[0], 4);
    CHECK(bits == 0x3eff7cacu);  // Keras' first step (spec, appendix C)

    std::vector<std::byte> before = opt.save();
    std::vector<float> short_grad = {1, 2};
    EXPECT_ERROR(ADAMW_STATUS_SHAPE_MISMATCH, adamw::Gradient::dense<float>(0, kernel, short_grad));
    EXPECT_ERROR(ADAMW_STATUS_UNKNOWN_VARIABLE, opt.apply_gradients({adamw::Gradient::dense<float>(4, kernel, grad)}));
    std::vector<double> wide = {1, 2, 3}, wide_grad = {1, 1, 1};
    EXPECT_ERROR(ADAMW_STATUS_DTYPE_MISMATCH, opt.apply_gradients({adamw::Gradient::dense<double>(0, wide, wide_grad)}));
    EXPECT_ERROR(ADAMW_STATUS_NO_GRADIENTS, opt.apply_gradients({adamw::Gradient::none<float>(0, kernel)}));
    {
        adamw::Optimizer guarded(adamw::Config().reject_non_finite_gradients(true));
        guarded.build({adamw::Variable::of<float>("x", {3})});
        std::vector<float> bad = {0.1f, std::nanf(""), 0.3f};
        EXPECT_ERROR(ADAMW_STATUS_NON_FINITE_GRADIENT, guarded.apply_gradients({adamw::Gradient::dense<float>(0, kernel, bad)}));
        CHECK(guarded.iterations() == 0);
    }
    std::vector<int64_t> idx = {7};
    std::vector<float> row = {1};
    EXPECT_ERROR(ADAMW_STATUS_INDEX_OUT_OF_RANGE,
                 opt.apply_gradients({adamw::Gradient::sparse<float>(0, kernel, idx, row)}));
    CHECK(opt.save() == before);
    idx[0] = 2;
    CHECK(opt.apply_gradients({adamw::Gradient::sparse<float>(0, kernel, idx, row)}) == 2);
    CHECK(opt.apply_gradients({}) == 2);  // an empty call is a no-op
    EXPECT_ERROR(ADAMW_STATUS_ALREADY_BUILT, opt.set_iterations(9));
    EXPECT_ERROR(ADAMW_STATUS_ALREADY_BUILT, opt.exclude_from_weight_decay({}, {"x"}));
}

static void exclusion_and_reserve() {
    // With a zero gradient Adam moves nothing, so only weight decay can change a value.
    adamw::Optimizer opt(adamw::Config().learning_rate(1.0).weight_decay(0.5));
    opt.exclude_from_weight_decay({1}, {"^bias"});
    opt.build({adamw::Variable::of<float>("kernel", {2}), adamw::Variable::of<float>("frozen", {2}),
               adamw::Variable::of<float>("bias", {2})});
    opt.reserve_sparse(8);
    opt.set_threads(1);
    std::vector<float> k = {2, 2}, f = {2, 2}, b = {2, 2}, zero = {0, 0};
    opt.apply_gradients({adamw::Gradient::dense<float>(0, k, zero), adamw::Gradient::dense<float>(1, f, zero),
                         adamw::Gradient::dense<float>(2, b, zero)});
    CHECK(k[0] == 1.0f);  // 2 - (2 * 0.5) * 1
    CHECK(f[0] == 2.0f && b[0] == 2.0f);
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, adamw::Optimizer(adamw::Config()).exclude_from_weight_decay({}, {"("}));
}

static void multipliers() {
    // A zero gradient moves nothing but the decay: v - (v * wd) * lr, with the variable's own.
    adamw::Optimizer opt(adamw::Config().learning_rate(1.0).weight_decay(0.5).weight_decay_min_ndim(2));
    opt.build({adamw::Variable::of<float>("kernel", {2, 1}), adamw::Variable::of<float>("bias", {2})});
    opt.set_variable_multipliers(0, 0.25, 2.0);
    std::vector<float> k = {2, 2}, b = {2, 2}, zero = {0, 0};
    opt.apply_gradients({adamw::Gradient::dense<float>(0, k, zero), adamw::Gradient::dense<float>(1, b, zero)});
    CHECK(k[0] == 1.5f);  // 2 - (2 * 1.0) * 0.25
    CHECK(b[0] == 2.0f);  // one dimension: not decayed
    adamw::VariableProperties kernel = opt.variable_properties(0), bias = opt.variable_properties(1);
    CHECK(kernel.decayed && !kernel.excluded && kernel.ndim == 2 && kernel.dtype == adamw::DType::float32);
    CHECK(kernel.learning_rate_multiplier == 0.25 && kernel.weight_decay_multiplier == 2.0 && !kernel.has_master);
    CHECK(!bias.decayed && bias.excluded && bias.learning_rate_multiplier == 1.0);
    CHECK(opt.get_config().find("\"weight_decay_min_ndim\":2") != std::string::npos);
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, opt.set_variable_multipliers(0, -1.0, 1.0));
    EXPECT_ERROR(ADAMW_STATUS_UNKNOWN_VARIABLE, opt.set_variable_multipliers(5, 1.0, 1.0));
    CHECK(opt.try_variable_properties(2).status() == adamw::Status::unknown_variable);
    CHECK(opt.variable_properties(0).learning_rate_multiplier == 0.25);  // the refused calls changed nothing
}

// Keras 3's gradient accumulation, against Keras 3's numbers (the case of tests/c/test_api.c).
static void gradient_accumulation() {
    adamw::Optimizer opt(
        adamw::Config().learning_rate(0.1).weight_decay(0.01).global_clipnorm(1.0).gradient_accumulation_steps(2));
    opt.build({adamw::Variable::of<float>("w", {3}), adamw::Variable::of<float>("b", {2})});
    std::vector<float> w = {0.5f, -1.0f, 2.0f}, b = {0.25f, -0.75f};
    const std::vector<std::vector<float>> gw = {{0.1f, 0.2f, -0.3f}, {0.3f, -0.1f, 0.5f}, {1.0f, 1.0f, 1.0f}};
    const std::vector<std::vector<float>> gb = {{0.5f, 0.5f}, {-1.5f, 2.0f}, {0.0f, 3.0f}};
    const int64_t updates[3] = {0, 1, 1};
    for (int call = 0; call < 3; call++) {
        int64_t iterations = opt.apply_gradients(
            {adamw::Gradient::dense<float>(0, w, gw[call]), adamw::Gradient::dense<float>(1, b, gb[call])});
        CHECK(iterations == updates[call] && opt.iterations() == updates[call] && opt.calls() == call + 1);
    }
    CHECK(w[0] == 0x1.991746p-2f && w[1] == -0x1.195774p+0f && w[2] == 0x1.e5e3a8p+0f);
    CHECK(b[0] == 0x1.662478p-2f && b[1] == -0x1.b2d0c4p-1f);
    CHECK(opt.get_config().find("\"gradient_accumulation_steps\":2") != std::string::npos);
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, adamw::Optimizer(adamw::Config().gradient_accumulation_steps(1)));
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT,
                 adamw::Optimizer(adamw::Config().gradient_accumulation_steps(2).master_weights(true)));
}

// A variable added after a step steps as one built from the start and listed without a gradient.
static void add_variables() {
    adamw::Optimizer late(adamw::Config().learning_rate(0.1)), early(adamw::Config().learning_rate(0.1));
    late.build({adamw::Variable::of<float>("w", {3})});
    early.build({adamw::Variable::of<float>("w", {3}), adamw::Variable::of<float>("b", {2})});
    std::vector<float> w1 = {0.5f, -1, 2}, w2 = w1, b1 = {0.25f, -0.75f}, b2 = b1;
    const std::vector<float> gw = {0.1f, 0.2f, -0.3f}, gb = {0.5f, -1.5f};
    late.apply_gradients({adamw::Gradient::dense<float>(0, w1, gw)});
    early.apply_gradients({adamw::Gradient::dense<float>(0, w2, gw), adamw::Gradient::none<float>(1, b2)});
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, late.add_variables({adamw::Variable::of<float>("w", {3})}));
    late.add_variables({adamw::Variable::of<float>("b", {2})});
    for (int step = 0; step < 2; step++) {
        late.apply_gradients({adamw::Gradient::dense<float>(0, w1, gw), adamw::Gradient::dense<float>(1, b1, gb)});
        early.apply_gradients({adamw::Gradient::dense<float>(0, w2, gw), adamw::Gradient::dense<float>(1, b2, gb)});
    }
    CHECK(w1 == w2 && b1 == b2 && b1[0] != 0.25f);
}

static void step_report() {
    adamw::Optimizer opt(adamw::Config().learning_rate(0.01));
    CHECK(opt.step_report().norms == adamw::NormSource::none && !opt.step_report().applied);
    opt.set_report_gradient_norms(true);
    opt.build({adamw::Variable::of<float>("w", {3}), adamw::Variable::of<float>("b", {2})});
    std::vector<float> w = {1, 2, 3}, gw = {0.5f, -1.5f, 2.0f}, b = {0, 0}, gb = {3, 4};
    opt.apply_gradients({adamw::Gradient::dense<float>(0, w, gw), adamw::Gradient::dense<float>(1, b, gb)});
    adamw::StepReport report = opt.step_report();
    CHECK(report.iterations == 1 && report.applied && !report.loss_scale && report.clip_factor == 1.0);
    CHECK(report.norms == adamw::NormSource::update_pass);
    // Each square exact in float32 here: the sums are 6.5 and 25.
    std::vector<double> norms = opt.gradient_norms(2);
    CHECK(norms[0] == std::sqrt(6.5) && norms[1] == 5.0 && report.global_norm == std::sqrt(31.5));
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, opt.gradient_norms(3));
    // A re-initialized bias: its moments start again (no EMA: no values needed).
    opt.reset_variable(1);
    CHECK(opt.variable<float>(3) == std::vector<float>({0.0f, 0.0f}));  // m of b
    std::vector<float> new_w = {0, 0, 0};
    opt.reset_variable<float>(0, new_w);
    EXPECT_ERROR(ADAMW_STATUS_SHAPE_MISMATCH, opt.reset_variable<float>(0, adamw::span<const float>(new_w.data(), 2)));
    EXPECT_ERROR(ADAMW_STATUS_UNKNOWN_VARIABLE, opt.reset_variable(5));
}

static void callables() {
    std::vector<float> w = {1, 2}, g = {1, 1};
    int calls = 0;
    adamw::Optimizer opt(adamw::Config()
                             .learning_rate([&](int64_t step) {
                                 ++calls;
                                 if (step >= 2) throw std::runtime_error("boom at " + std::to_string(step));
                                 return 0.1 / double(step + 1);
                             })
                             .beta_1([](int64_t) { return 0.8; }));
    CHECK(calls == 1);  // once at creation, with step 0
    opt.build({adamw::Variable::of<float>("w", {2})});
    opt.apply_gradients({adamw::Gradient::dense<float>(0, w, g)});
    opt.apply_gradients({adamw::Gradient::dense<float>(0, w, g)});
    CHECK(opt.learning_rate() == float(0.1 / 2));
    std::vector<std::byte> before = opt.save();
    std::vector<float> w_before = w;
    std::string message = EXPECT_ERROR(ADAMW_STATUS_CALLBACK_FAILED, opt.apply_gradients({adamw::Gradient::dense<float>(0, w, g)}));
    CHECK(message.find("the callable threw: boom at 2") != std::string::npos);
    CHECK(opt.save() == before && w == w_before);
    // The text is its call's own: a failure through the raw handle leaves one behind, and the
    // next failure does not pick it up.
    adamw_gradient raw = adamw::Gradient::dense<float>(0, w, g).raw;
    CHECK(adamw_optimizer_apply_gradients(opt.handle(), &raw, 1, nullptr) == ADAMW_STATUS_CALLBACK_FAILED);
    std::vector<float> short_w = {1}, short_g = {1};
    message = EXPECT_ERROR(ADAMW_STATUS_SHAPE_MISMATCH, opt.apply_gradients({adamw::Gradient::dense<float>(0, short_w, short_g)}));
    CHECK(message.find("threw") == std::string::npos);
    CHECK(opt.get_config().find("\"beta_1\":0.8") != std::string::npos);
    message = EXPECT_ERROR(ADAMW_STATUS_CALLBACK_FAILED, adamw::Optimizer(adamw::Config().beta_2([](int64_t) -> double {
                               throw std::invalid_argument("at creation");
                           })));
    CHECK(message.find("the callable threw: at creation") != std::string::npos);

    // minimize: gradients of sum((w - 3)^2), from the current values
    adamw::Optimizer m(adamw::Config().learning_rate(0.1));
    m.build({adamw::Variable::of<float>("w", {2})});
    std::vector<adamw::Gradient> entries = {adamw::Gradient::dense<float>(0, w, g)};
    for (int i = 0; i < 200; i++)
        m.minimize(entries, [&] {
            for (std::size_t k = 0; k < w.size(); k++) g[k] = 2 * (w[k] - 3);
        });
    CHECK(std::fabs(w[0] - 3) < 0.1f && std::fabs(w[1] - 3) < 0.1f);
    message = EXPECT_ERROR(ADAMW_STATUS_CALLBACK_FAILED, m.minimize(entries, [] { throw std::logic_error("no loss"); }));
    CHECK(message.find("the gradient callable threw: no loss") != std::string::npos);
    CHECK(m.iterations() == 200);
}

static void state_and_checkpoints() {
    std::vector<float> kernel = {1, 2, 3, 4, 5, 6}, bias = {7, 8, 9};
    std::vector<float> gk(6, 0.5f), gb(3, -0.5f);
    auto make = [&] {
        adamw::Optimizer o(adamw::Config().use_ema(true).amsgrad(true).ema_momentum(0.5));
        o.build({adamw::Variable::of<float>("dense/kernel", {2, 3}, kernel),
                 adamw::Variable::of<float>("dense/bias", {3}, bias)});
        return o;
    };
    adamw::Optimizer opt = make();
    CHECK(opt.num_variables() == 9);
    adamw::VariableInfo info = opt.variable_info(3);
    CHECK(info.name == "AdamW/m/dense/kernel" && info.shape == std::vector<std::size_t>({2, 3}) && info.size == 6);
    EXPECT_ERROR(ADAMW_STATUS_UNKNOWN_VARIABLE, opt.variable_info(9));
    CHECK(opt.variable<float>(1) == kernel);  // the average starts as a copy
    EXPECT_ERROR(ADAMW_STATUS_DTYPE_MISMATCH, opt.variable<double>(1));
    for (int i = 0; i < 3; i++)
        opt.apply_gradients({adamw::Gradient::dense<float>(0, kernel, gk), adamw::Gradient::dense<float>(1, bias, gb)});
    CHECK(opt.variable<int64_t>(0) == std::vector<int64_t>({3}));

    // save to bytes and to a file; both resume identically
    std::vector<std::byte> bytes = opt.save();
    std::string path = "target/cpp-tests/checkpoint.safetensors";
    opt.save_file(path);
    std::vector<float> k2 = kernel, b2 = bias, k3 = kernel, b3 = bias;
    adamw::Optimizer from_bytes = make(), from_file = make();
    from_bytes.load(bytes);
    from_file.load_file(path);
    opt.apply_gradients({adamw::Gradient::dense<float>(0, kernel, gk), adamw::Gradient::dense<float>(1, bias, gb)});
    from_bytes.apply_gradients({adamw::Gradient::dense<float>(0, k2, gk), adamw::Gradient::dense<float>(1, b2, gb)});
    from_file.apply_gradients({adamw::Gradient::dense<float>(0, k3, gk), adamw::Gradient::dense<float>(1, b3, gb)});
    CHECK(kernel == k2 && bias == b2 && kernel == k3 && bias == b3);
    std::vector<std::byte> garbage(16, std::byte{7});
    std::vector<std::byte> state = from_bytes.save();
    EXPECT_ERROR(ADAMW_STATUS_INVALID_CHECKPOINT, from_bytes.load(garbage));
    EXPECT_ERROR(ADAMW_STATUS_IO, from_bytes.load_file("target/cpp-tests/does-not-exist"));
    EXPECT_ERROR(ADAMW_STATUS_IO, opt.save_file("target/cpp-tests/no/such/dir/x.safetensors"));
    adamw::Optimizer plain{adamw::Config()};
    plain.build({adamw::Variable::of<float>("dense/kernel", {2, 3}), adamw::Variable::of<float>("dense/bias", {3})});
    EXPECT_ERROR(ADAMW_STATUS_CHECKPOINT_MISMATCH, plain.load(bytes));
    CHECK(from_bytes.save() == state);

    // set_weights: counter and first average
    int64_t counter = 42;
    std::vector<float> avg(6, -1.0f), wrong(5, 0.0f);
    EXPECT_ERROR(ADAMW_STATUS_SHAPE_MISMATCH,
                 from_bytes.set_weights({adamw::Weight::of<int64_t>({}, adamw::span<const int64_t>(&counter, 1)),
                                         adamw::Weight::of<float>({5}, wrong)}));
    from_bytes.set_weights({adamw::Weight::of<int64_t>({}, adamw::span<const int64_t>(&counter, 1)),
                            adamw::Weight::of<float>({2, 3}, avg)});
    CHECK(from_bytes.iterations() == 42 && from_bytes.variable<float>(1) == avg);

    // finalize: the variables take their averages
    std::vector<std::pair<std::size_t, adamw::span<float>>> finals = {{0, adamw::span<float>(k2)}};
    from_bytes.finalize_variable_values(finals);
    CHECK(k2 == avg);
}

static void move_semantics() {
    adamw::Optimizer a(adamw::Config().learning_rate(0.5));
    adamw_optimizer* handle = a.handle();
    adamw::Optimizer b(std::move(a));
    CHECK(b.handle() == handle && a.handle() == nullptr);
    EXPECT_ERROR(ADAMW_STATUS_NULL_ARGUMENT, a.iterations());
    adamw::Optimizer c{adamw::Config()};
    c = std::move(b);  // c's old handle is freed (ASan would see a leak otherwise)
    CHECK(c.handle() == handle && c.learning_rate() == 0.5f);
}

// Replays the dense smoke cases (Keras' own results) through the wrapper, bit for bit.
static void smoke_trajectories(const char* path) {
    std::ifstream in(path);
    CHECK(in.good());
    std::string token;
    int cases = 0;
    while (in >> token) {
        CHECK(token == "CASE");
        std::string id, config;
        in >> id >> config;
        adamw::Optimizer opt = adamw::Optimizer::from_config(config);
        std::size_t n;
        in >> token >> n;
        std::vector<std::vector<double>> values(n);
        std::vector<std::string> dtypes(n);
        std::vector<adamw::Variable> vars;
        for (std::size_t v = 0; v < n; v++) {
            std::string name;
            std::size_t ndim, count;
            in >> name >> dtypes[v] >> ndim;
            std::vector<std::size_t> shape(ndim);
            for (auto& d : shape) in >> d;
            in >> count;
            values[v].resize(count);
            for (auto& x : values[v]) in >> x;
            vars.push_back(adamw::Variable{
                name, dtypes[v] == "float64" ? adamw::DType::float64 : adamw::DType::float32, shape, nullptr});
        }
        opt.build(vars);
        std::vector<std::vector<float>> f32(n);
        std::vector<std::vector<double>> f64(n);
        for (std::size_t v = 0; v < n; v++) {
            if (dtypes[v] == "float64") f64[v] = values[v];
            else f32[v].assign(values[v].begin(), values[v].end());
        }
        int mismatches = 0;
        while (in >> token && token == "STEP") {
            in >> n;
            std::vector<std::vector<float>> g32(n);
            std::vector<std::vector<double>> g64(n);
            std::vector<adamw::Gradient> entries;
            for (std::size_t v = 0; v < n; v++) {
                std::string kind;
                in >> kind;
                std::size_t count = 0;
                if (kind == "D") in >> count;
                std::vector<double> grad(count);
                for (auto& x : grad) in >> x;
                if (dtypes[v] == "float64") {
                    g64[v] = grad;
                    entries.push_back(kind == "D" ? adamw::Gradient::dense<double>(v, f64[v], g64[v])
                                                  : adamw::Gradient::none<double>(v, f64[v]));
                } else {
                    g32[v].assign(grad.begin(), grad.end());
                    entries.push_back(kind == "D" ? adamw::Gradient::dense<float>(v, f32[v], g32[v])
                                                  : adamw::Gradient::none<float>(v, f32[v]));
                }
            }
            int64_t iterations = opt.apply_gradients(entries);
            int64_t want_iterations;
            double want_lr;
            in >> token >> want_iterations >> want_lr;
            if (iterations != want_iterations || double(opt.learning_rate()) != want_lr) mismatches++;
            for (std::size_t v = 0; v < n; v++) {
                std::size_t count;
                in >> count;
                for (std::size_t k = 0; k < count; k++) {
                    double want;
                    in >> want;
                    double got = dtypes[v] == "float64" ? f64[v][k] : double(f32[v][k]);
                    if (!(got == want || (std::isnan(got) && std::isnan(want)))) mismatches++;
                }
            }
        }
        CHECK(token == "END");
        if (mismatches) std::fprintf(stderr, "smoke case %s: %d values differ from Keras\n", id.c_str(), mismatches);
        CHECK(mismatches == 0);
        cases++;
    }
    CHECK(cases >= 10);
}

/* The 16-bit bit types: rounding as numpy (and TensorFlow) rounds float32 to bfloat16 and
   float16, and a step with Keras' semantics, checked against tf-keras 2.15.1's bits for
   AdamW(learning_rate=0.01) on [0.5, -1.5, 2.0] with the gradient [0.1, -0.2, 0.3]. */
static void sixteen_bit() {
    struct Case {
        float value;
        std::uint16_t half, bfloat;
    };
    const Case cases[] = {
        {1.0f, 0x3c00, 0x3f80},        {1.00048828125f, 0x3c00, 0x3f80}, {1.00146484375f, 0x3c02, 0x3f80},
        {65504.0f, 0x7bff, 0x4780},    {65519.0f, 0x7bff, 0x4780},       {65520.0f, 0x7c00, 0x4780},
        {1e6f, 0x7c00, 0x4974},        {6.1e-05f, 0x03ff, 0x3880},       {3e-07f, 0x0005, 0x34a1},
        {5.9604645e-08f, 0x0001, 0x3380}, {2.9802322e-08f, 0x0000, 0x3300}, {4.4703484e-08f, 0x0001, 0x3340},
        {-0.0f, 0x8000, 0x8000},       {INFINITY, 0x7c00, 0x7f80},       {0.1f, 0x2e66, 0x3dcd},
        {-2.5f, 0xc100, 0xc020},
    };
    for (const Case& c : cases) {
        CHECK(adamw::float16_t::from_float(c.value).bits == c.half);
        CHECK(adamw::bfloat16_t::from_float(c.value).bits == c.bfloat);
        // Every 16-bit value widens exactly and rounds back to itself.
        CHECK(adamw::float16_t::from_float(adamw::float16_t{c.half}.to_float()).bits == c.half);
        CHECK(adamw::bfloat16_t::from_float(adamw::bfloat16_t{c.bfloat}.to_float()).bits == c.bfloat);
    }
    CHECK(adamw::float16_t{0x0001}.to_float() == 5.9604644775390625e-08f);
    CHECK(std::isnan(adamw::float16_t::from_float(std::nanf("")).to_float()));
    CHECK(std::isnan(adamw::bfloat16_t::from_float(std::nanf("")).to_float()));

    auto f16 = [](std::initializer_list<float> xs) {
        std::vector<adamw::float16_t> v;
        for (float x : xs) v.push_back(adamw::float16_t::from_float(x));
        return v;
    };
    std::vector<adamw::float16_t> w = f16({0.5f, -1.5f, 2.0f}), g = f16({0.1f, -0.2f, 0.3f});
    adamw::Optimizer opt{adamw::Config().learning_rate(0.01)};
    opt.build({adamw::Variable::of<adamw::float16_t>("h", {3})});
    std::vector<float> g32 = {0.1f, -0.2f, 0.3f};
    std::vector<float> w32 = {0.5f, -1.5f, 2.0f};
    EXPECT_ERROR(ADAMW_STATUS_DTYPE_MISMATCH, opt.apply_gradients({adamw::Gradient::dense<float>(0, w32, g32)}));
    CHECK(opt.apply_gradients({adamw::Gradient::dense<adamw::float16_t>(0, w, g)}) == 1);
    CHECK(w[0].bits == 0x37d8 && w[1].bits == 0xbdf6 && w[2].bits == 0x3ff6);
    std::vector<adamw::float16_t> v = opt.variable<adamw::float16_t>(2);
    CHECK(v.size() == 3 && v[0].bits == 0x00a8 && v[1].bits == 0x029f && v[2].bits == 0x05e7);
    EXPECT_ERROR(ADAMW_STATUS_DTYPE_MISMATCH, opt.variable<adamw::bfloat16_t>(2));

    // Float32 master weights: Keras' float32 step on the widened values (tf-keras' bits), and
    // the bfloat16 variable receives its rounding.
    std::vector<adamw::bfloat16_t> b = {{0x3f00}, {0xbfc0}, {0x4000}}, gb = {{0x3dcd}, {0xbe4d}, {0x3e9a}};
    adamw::Optimizer mw{adamw::Config().learning_rate(0.01).master_weights(true)};
    mw.build({adamw::Variable::of<adamw::bfloat16_t>("b", {3}, b)});
    CHECK(mw.apply_gradients({adamw::Gradient::dense<adamw::bfloat16_t>(0, b, gb)}) == 1);
    CHECK(b[0].bits == 0x3efb && b[1].bits == 0xbfbf && b[2].bits == 0x3fff);
    std::vector<float> master = mw.variable<float>(3);
    uint32_t master_bits[3];
    std::memcpy(master_bits, master.data(), sizeof master_bits);
    CHECK(master_bits[0] == 0x3efadeb6u && master_bits[1] == 0xbfbeb65du && master_bits[2] == 0x3ffeb5b4u);
    // A float32 gradient for it: the master follows a float32 variable given the same gradient,
    // and a variable without a master refuses it.
    std::vector<float> gf = {-0.37f, 0.011f, 2.5e-3f}, wide = {0.5f, -1.5f, 2.0f}, first(3);
    for (int i = 0; i < 3; i++) first[i] = gb[i].to_float();
    std::vector<int64_t> rows = {0};
    adamw::Optimizer reference{adamw::Config().learning_rate(0.01)};
    reference.build({adamw::Variable::of<float>("b", {3})});
    reference.apply_gradients({adamw::Gradient::dense<float>(0, wide, first)});
    CHECK(wide == master);
    CHECK(mw.apply_gradients({adamw::Gradient::dense_float32<adamw::bfloat16_t>(0, b, gf)}) == 2);
    reference.apply_gradients({adamw::Gradient::dense<float>(0, wide, gf)});
    CHECK(mw.variable<float>(3) == wide);
    CHECK(b[0].bits == adamw::bfloat16_t::from_float(wide[0]).bits && b[2].bits == adamw::bfloat16_t::from_float(wide[2]).bits);
    EXPECT_ERROR(ADAMW_STATUS_DTYPE_MISMATCH, opt.apply_gradients({adamw::Gradient::dense_float32<adamw::float16_t>(0, w, g32)}));
    std::vector<float> row = {0.25f, -0.5f, 1.0f};
    std::vector<adamw::bfloat16_t> matrix = b;
    adamw::Optimizer embedding{adamw::Config().learning_rate(0.01).master_weights(true)};
    embedding.build({adamw::Variable::of<adamw::bfloat16_t>("e", {1, 3}, matrix)});
    CHECK(embedding.apply_gradients({adamw::Gradient::sparse_float32<adamw::bfloat16_t>(0, matrix, rows, row)}) == 1);

    // The loss scaler (tf-keras' values for AdamW(0.01) in LossScaleOptimizer(initial_scale=4096,
    // dynamic_growth_steps=3) on [0.5, 1.5] with scaled gradients [100, -200]).
    EXPECT_ERROR(ADAMW_STATUS_INVALID_ARGUMENT, opt.loss_scale());
    adamw::Optimizer scaled{adamw::Config().learning_rate(0.01).loss_scale(true, 4096.0, 3)};
    CHECK(scaled.loss_scale() == std::make_pair(4096.0f, int64_t{0}));
    std::vector<float> sw = {0.5f, 1.5f}, sg = {100.0f, -200.0f};
    scaled.build({adamw::Variable::of<float>("w", {2})});
    for (int i = 0; i < 3; i++) scaled.apply_gradients({adamw::Gradient::dense<float>(0, sw, sg)});
    CHECK(scaled.loss_scale() == std::make_pair(8192.0f, int64_t{0}));
    CHECK(sw[0] == 0.4699443578720093f && sw[1] == 1.5298171043395996f);
    std::vector<float> overflowed = {INFINITY, 1.0f};
    CHECK(scaled.apply_gradients({adamw::Gradient::dense<float>(0, sw, overflowed)}) == 4);
    CHECK(sw[0] == 0.4699443578720093f && scaled.loss_scale().first == 4096.0f);
}

// Two ranks on threads with an in-process all-reduce (a lambda: any callable serves as the
// mesh), cut inside a leaf of Eigen's sum: with clipnorm the shards hold exactly one process's
// bits, and their checkpoints load_shards into one unsharded optimizer. A mesh that throws
// fails the step with its message and changes nothing.
struct TwoRankSum {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<double> sum;
    int arrived = 0, generation = 0, taken = 0;

    void all_reduce(double* values, std::size_t count) {
        std::unique_lock<std::mutex> lock(mutex);
        if (arrived == 0) sum.assign(values, values + count);
        else for (std::size_t i = 0; i < count; i++) sum[i] += values[i];
        int gen = generation;
        if (++arrived == 2) {
            arrived = 0;
            ++generation;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != gen; });
        }
        std::copy(sum.begin(), sum.begin() + static_cast<std::ptrdiff_t>(count), values);
        // The second reader lets the next call overwrite the sum.
        if (++taken == 2) {
            taken = 0;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return taken == 0; });
        }
    }
};

static void sharded_mesh() {
    const std::size_t n = 20000, cut = 9001;
    auto grad = [](int step, std::size_t i) { return static_cast<float>((i * 7 + step * 13) % 101) * 1e-3f - 0.05f; };
    std::vector<float> whole(n, 0.5f);
    adamw::Optimizer reference{adamw::Config().learning_rate(0.01).clipnorm(0.5)};
    reference.build({adamw::Variable::of<float>("w", {n})});
    for (int step = 0; step < 3; step++) {
        std::vector<float> g(n);
        for (std::size_t i = 0; i < n; i++) g[i] = grad(step, i);
        reference.apply_gradients({adamw::Gradient::dense<float>(0, whole, g)});
    }
    TwoRankSum collective;
    std::vector<float> held[2];
    std::vector<std::byte> saved[2];
    std::thread ranks[2];
    for (int rank = 0; rank < 2; rank++) {
        ranks[rank] = std::thread([&, rank] {
            std::size_t offset = rank == 0 ? 0 : cut, len = rank == 0 ? cut : n - cut;
            adamw::Optimizer opt{adamw::Config().learning_rate(0.01).clipnorm(0.5).mesh(
                [&](double* values, std::size_t count) { collective.all_reduce(values, count); })};
            opt.build({adamw::Variable::of<float>("w", {n}).shard(offset, len)});
            held[rank].assign(len, 0.5f);
            for (int step = 0; step < 3; step++) {
                std::vector<float> g(len);
                for (std::size_t i = 0; i < len; i++) g[i] = grad(step, offset + i);
                opt.apply_gradients({adamw::Gradient::dense<float>(0, held[rank], g)});
            }
            saved[rank] = opt.save();
        });
    }
    for (auto& t : ranks) t.join();
    std::vector<float> gathered = held[0];
    gathered.insert(gathered.end(), held[1].begin(), held[1].end());
    CHECK(gathered.size() == n && std::memcmp(gathered.data(), whole.data(), n * sizeof(float)) == 0);
    adamw::Optimizer unsharded{adamw::Config().learning_rate(0.01).clipnorm(0.5)};
    unsharded.build({adamw::Variable::of<float>("w", {n})});
    std::string message = EXPECT_ERROR(ADAMW_STATUS_CHECKPOINT_MISMATCH, unsharded.load_shards({saved[0]}));
    CHECK(message.find("(a missing shard)") != std::string::npos);
    unsharded.load_shards({saved[1], saved[0]});
    CHECK(unsharded.save() == reference.save());

    adamw::Optimizer broken{adamw::Config().clipnorm(0.5).mesh([](double*, std::size_t) { throw std::runtime_error("rank 1 is gone"); })};
    broken.build({adamw::Variable::of<float>("w", {4}).shard(0, 4)});
    std::vector<float> w(4, 1.0f), g(4, 0.5f);
    try {
        broken.apply_gradients({adamw::Gradient::dense<float>(0, w, g)});
        CHECK(false);
    } catch (const adamw::Error& e) {
        CHECK(e.status() == adamw::Status::callback_failed);
        CHECK(std::string(e.what()).find("rank 1 is gone") != std::string::npos);
    }
    CHECK(w == std::vector<float>(4, 1.0f) && broken.iterations() == 0);
}

// An optimizer on a device takes device_span buffers: on the host-kernels device (the test
// build's), host memory is device memory, and the steps give the CPU's bits.
static void device_path() {
    adamw::Config config;
    config.learning_rate(0.01).clipnorm(0.5).use_ema(true);
    adamw::Optimizer cpu(config), dev(config);
    try {
        dev.set_device(adamw::DeviceKind::host_kernels);
    } catch (const adamw::Error& e) {
        CHECK(e.status() == adamw::Status::device);
        std::fprintf(stderr, "note: this libadamw has no host kernels (built without `host-kernels`)\n");
        return;
    }
    bool threw = false;
    try {
        cpu.set_stream(nullptr);  // not on a device
    } catch (const adamw::Error& e) {
        threw = e.status() == adamw::Status::invalid_argument;
    }
    CHECK(threw);
    std::vector<float> w_cpu(5000), w_dev(5000), g(5000), rows(6);
    for (std::size_t i = 0; i < g.size(); i++) {
        w_cpu[i] = w_dev[i] = 0.001f * static_cast<float>(i % 89) - 0.04f;
        g[i] = 0.01f * static_cast<float>((i * 5) % 11) - 0.05f;
    }
    std::vector<float> e_cpu(6, 0.5f), e_dev(6, 0.5f);
    for (std::size_t i = 0; i < rows.size(); i++) rows[i] = 0.1f * static_cast<float>(i) - 0.2f;
    const std::vector<int64_t> indices = {2, 0, 2};
    for (adamw::Optimizer* o : {&cpu, &dev}) {
        std::vector<float>& w = o == &cpu ? w_cpu : w_dev;
        std::vector<float>& e = o == &cpu ? e_cpu : e_dev;
        o->build({adamw::Variable::of<float>("w", {5000}, w), adamw::Variable::of<float>("e", {3, 2}, e)});
    }
    dev.set_stream(nullptr);
    for (int step = 0; step < 3; step++) {
        cpu.apply_gradients({adamw::Gradient::dense<float>(0, w_cpu, g),
                             adamw::Gradient::sparse<float>(1, e_cpu, indices, rows)});
        dev.apply_gradients({adamw::Gradient::dense<float>(0, adamw::device_span<float>(w_dev.data(), w_dev.size()),
                                                           adamw::device_span<const float>(g.data(), g.size())),
                             adamw::Gradient::sparse<float>(1, adamw::device_span<float>(e_dev.data(), e_dev.size()),
                                                            indices,
                                                            adamw::device_span<const float>(rows.data(), rows.size()))});
    }
    CHECK(w_cpu == w_dev);
    CHECK(e_cpu == e_dev);
    // The indices in device memory too.
    cpu.apply_gradients({adamw::Gradient::sparse<float>(1, e_cpu, indices, rows)});
    dev.apply_gradients({adamw::Gradient::sparse<float>(1, adamw::device_span<float>(e_dev.data(), e_dev.size()),
                                                        adamw::device_span<const int64_t>(indices.data(), indices.size()),
                                                        adamw::device_span<const float>(rows.data(), rows.size()))});
    CHECK(e_cpu == e_dev);
    CHECK(cpu.save() == dev.save());
    cpu.finalize_variable_values<float>({{0, adamw::span<float>(w_cpu)}});
    dev.finalize_variable_values_on_device<float>({{0, adamw::device_span<float>(w_dev.data(), w_dev.size())}});
    CHECK(w_cpu == w_dev);
}

// Keras' own files: an archive's config and state, the same state from the weights file and the
// plain store, refusals, and a copy written back.
static void keras_files() {
    const std::string dir = "tests/data/keras_files/";
    std::string json = adamw::Optimizer::keras_file_optimizer_config(dir + "float64_clipnorm.keras");
    CHECK(json.find("\"clipnorm\":0.5") != std::string::npos);
    auto make = [&] {
        adamw::Optimizer opt = adamw::Optimizer::from_config(json);
        opt.build({adamw::Variable::of<double>("wide/kernel", {5, 3}), adamw::Variable::of<double>("wide/bias", {3})});
        return opt;
    };
    adamw::Optimizer opt = make();
    opt.load_keras_file(dir + "float64_clipnorm.keras");
    CHECK(opt.iterations() == 3);
    std::vector<std::byte> state = opt.save();
    adamw::Optimizer other = make();
    other.load_keras_file(dir + "float64_clipnorm.weights.h5");
    CHECK(other.save() == state);
    std::ifstream in(dir + "float64_clipnorm.store.safetensors", std::ios::binary);
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> store(chars.size());
    std::memcpy(store.data(), chars.data(), chars.size());
    adamw::Optimizer from_store = make();
    from_store.load_keras_store(store);
    CHECK(from_store.save() == state);
    EXPECT_ERROR(ADAMW_STATUS_INVALID_CHECKPOINT, adamw::Optimizer::keras_file_optimizer_config(dir + "float64_clipnorm.weights.h5"));
    EXPECT_ERROR(ADAMW_STATUS_CHECKPOINT_MISMATCH, opt.load_keras_file(dir + "dense_amsgrad.keras"));
    EXPECT_ERROR(ADAMW_STATUS_IO, opt.load_keras_file(dir + "missing.keras"));
    CHECK(opt.save() == state);
    opt.save_keras_file(dir + "float64_clipnorm.keras", "target/cpp-tests/float64_clipnorm.keras");
    adamw::Optimizer reread = make();
    reread.load_keras_file("target/cpp-tests/float64_clipnorm.keras");
    CHECK(reread.save() == state);
}

// The caller's parallel-for: steps whose tasks run on std::threads of the caller's (three, each
// taking every third index), and a parallel-for that throws after running none, give the bits of
// one thread; with a clip norm, so that the norm's sum runs in tasks too.
static void parallel_for() {
    constexpr std::size_t n = 200000;
    auto run = [&](adamw::ParallelFor hook, uint32_t threads) {
        adamw::Optimizer opt(adamw::Config().learning_rate(0.01).global_clipnorm(1.0).threads(threads));
        if (hook) opt.set_parallel_for(hook);
        opt.build({adamw::Variable::of<float>("w", {n})});
        std::vector<float> w(n), g(n);
        for (std::size_t i = 0; i < n; i++) {
            w[i] = float(i % 1000) * 1e-3f;
            g[i] = float((i * 613) % 977) * 1e-3f - 0.488f;
        }
        for (int step = 0; step < 3; step++) opt.apply_gradients({adamw::Gradient::dense<float>(0, w, g)});
        return w;
    };
    int hook_calls = 0;
    auto threaded = [&](const adamw::Tasks& tasks) {
        ++hook_calls;
        std::vector<std::thread> threads;
        for (std::size_t t = 0; t < 3; t++)
            threads.emplace_back([&tasks, t] {
                for (std::size_t i = t; i < tasks.size(); i += 3) tasks(i);
            });
        for (auto& thread : threads) thread.join();
    };
    auto throwing = [&](const adamw::Tasks&) {
        ++hook_calls;
        throw std::runtime_error("the engine's pool is shut down");
    };
    const std::vector<float> one = run(nullptr, 1);
    CHECK(run(threaded, 1) == one);
    CHECK(run(throwing, 0) == one);  // the library runs what the parallel-for did not
    CHECK(run(nullptr, 0) == one);
    CHECK(hook_calls > 0);
    adamw::Optimizer opt(adamw::Config{});
    opt.set_parallel_for(threaded);
    opt.set_parallel_for(nullptr);  // back to the config's threads
    CHECK(opt.try_set_parallel_for({}).ok());
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s SMOKE.txt\n", argv[0]);
        return 2;
    }
    versions();
    config_and_schedules();
    steps_and_errors();
    exclusion_and_reserve();
    multipliers();
    gradient_accumulation();
    add_variables();
    step_report();
    callables();
    state_and_checkpoints();
    move_semantics();
    smoke_trajectories(argv[1]);
    sixteen_bit();
    sharded_mesh();
    device_path();
    keras_files();
    parallel_for();
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}

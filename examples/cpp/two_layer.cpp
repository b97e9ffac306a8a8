// Trains a tiny two-layer network (1 -> 16 tanh -> 1) to fit sin(x), with the forward and
// backward passes written by hand, through the C++ wrapper of libadamw:
//  - a cosine-decay learning-rate schedule and weight decay with the biases excluded by name;
//  - an exponential moving average of the weights, copied into them at the end by
//    finalize_variable_values (what Keras' Model.fit does with use_ema);
//  - the optimizer's state saved halfway and reloaded into a fresh optimizer: training resumes
//    to exactly the same bits.
// It uses the Result API (Optimizer::create and the try_ methods), so it builds with and without
// exceptions (-fno-exceptions); with exceptions the same calls without `try_` throw adamw::Error.
#include <adamw/adamw.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

constexpr int kHidden = 16, kSamples = 64, kSteps = 1000;

struct Net {
    std::vector<float> w1 = std::vector<float>(kHidden), b1 = std::vector<float>(kHidden);
    std::vector<float> w2 = std::vector<float>(kHidden), b2 = std::vector<float>(1);
};

using Grads = Net;  // one gradient per weight, in the same shapes

// Mean squared error over the samples, and (when g is given) its gradient.
float loss(const Net& n, const std::vector<float>& xs, const std::vector<float>& ys, Grads* g) {
    if (g) *g = Grads();
    float total = 0;
    for (int s = 0; s < kSamples; s++) {
        float h[kHidden], y = n.b2[0];
        for (int j = 0; j < kHidden; j++) {
            h[j] = std::tanh(n.w1[j] * xs[s] + n.b1[j]);
            y += n.w2[j] * h[j];
        }
        float err = y - ys[s];
        total += err * err / kSamples;
        if (!g) continue;
        float dy = 2 * err / kSamples;
        g->b2[0] += dy;
        for (int j = 0; j < kHidden; j++) {
            g->w2[j] += dy * h[j];
            float dz = dy * n.w2[j] * (1 - h[j] * h[j]);
            g->w1[j] += dz * xs[s];
            g->b1[j] += dz;
        }
    }
    return total;
}

// Whether a call succeeded; prints a failure's status and message.
template <class T>
bool ok(const adamw::Result<T>& result) {
    if (!result.ok()) std::fprintf(stderr, "libadamw: %s: %s\n", result.status_name(), result.message().c_str());
    return result.ok();
}

adamw::Result<adamw::Optimizer> make_optimizer(const Net& n) {
    adamw::Config config;
    config.learning_rate(adamw::Schedule::cosine_decay(0.05, kSteps, 0.05))
        .weight_decay(0.01)
        .use_ema(true)
        .ema_momentum(0.98);
    adamw::Result<adamw::Optimizer> made = adamw::Optimizer::create(config);
    if (!made.ok()) return made;
    adamw::Optimizer opt = std::move(made).value();
    adamw::Result<void> done = opt.try_exclude_from_weight_decay({}, {"bias"});
    if (done.ok()) {
        done = opt.try_build({adamw::Variable::of<float>("hidden/kernel", {1, kHidden}, n.w1),
                              adamw::Variable::of<float>("hidden/bias", {kHidden}, n.b1),
                              adamw::Variable::of<float>("out/kernel", {kHidden, 1}, n.w2),
                              adamw::Variable::of<float>("out/bias", {1}, n.b2)});
    }
    return std::move(done).with_value(std::move(opt));
}

bool train(adamw::Optimizer& opt, Net& n, const std::vector<float>& xs, const std::vector<float>& ys, int from,
           int to, bool verbose) {
    Grads g;
    for (int t = from; t < to; t++) {
        float l = loss(n, xs, ys, &g);
        if (verbose && t % 100 == 0)
            std::printf("step %4d  loss %.5f  lr %.5f\n", t, l, opt.try_learning_rate().value());
        adamw::Result<int64_t> step = opt.try_apply_gradients(
            {adamw::Gradient::dense<float>(0, n.w1, g.w1), adamw::Gradient::dense<float>(1, n.b1, g.b1),
             adamw::Gradient::dense<float>(2, n.w2, g.w2), adamw::Gradient::dense<float>(3, n.b2, g.b2)});
        if (!ok(step)) return false;
    }
    return true;
}

}  // namespace

int main() {
    std::vector<float> xs(kSamples), ys(kSamples);
    for (int s = 0; s < kSamples; s++) {
        xs[s] = -3.0f + 6.0f * s / (kSamples - 1);
        ys[s] = std::sin(xs[s]);
    }
    Net net;
    for (int j = 0; j < kHidden; j++) {  // a fixed, spread-out initialization
        net.w1[j] = 0.5f + 0.1f * j;
        net.b1[j] = -3.0f + 0.4f * j;
        net.w2[j] = (j % 2 ? 0.1f : -0.1f);
    }

    adamw::Result<adamw::Optimizer> made = make_optimizer(net);
    if (!ok(made) || !train(made.value(), net, xs, ys, 0, kSteps / 2, true)) return 1;
    adamw::Optimizer& opt = made.value();
    // Checkpoint: the optimizer's state (and, as the engine's job, the weights).
    adamw::Result<std::vector<std::byte>> state = opt.try_save();
    Net at_checkpoint = net;
    if (!ok(state) || !train(opt, net, xs, ys, kSteps / 2, kSteps, true)) return 1;
    std::printf("final      loss %.5f\n", loss(net, xs, ys, nullptr));

    // Resume from the checkpoint in a fresh optimizer: the same bits at the end.
    Net resumed = at_checkpoint;
    adamw::Result<adamw::Optimizer> reloaded = make_optimizer(resumed);
    if (!ok(reloaded) || !ok(reloaded.value().try_load(state.value())) ||
        !train(reloaded.value(), resumed, xs, ys, kSteps / 2, kSteps, false))
        return 1;
    bool same = resumed.w1 == net.w1 && resumed.b1 == net.b1 && resumed.w2 == net.w2 && resumed.b2 == net.b2;
    std::printf("resumed from step %d: %s\n", kSteps / 2, same ? "identical to the uninterrupted run" : "DIFFERENT");

    // Use the moving averages as the final weights.
    if (!ok(opt.try_finalize_variable_values<float>({{0, net.w1}, {1, net.b1}, {2, net.w2}, {3, net.b2}}))) return 1;
    std::printf("with EMA   loss %.5f\n", loss(net, xs, ys, nullptr));
    return same ? 0 : 1;
}

// Threads sharing one adamw::Optimizer, built with -fsanitize=thread by tools/test-cpp.sh:
// every thread steps the same optimizer, whose learning-rate callable keeps state, and some
// calls fail on purpose (a wrong shape, the callable throwing, minimize's gradients throwing).
// Each thread must get its own status and message, and ThreadSanitizer must report no race.
//
// ThreadSanitizer cannot see inside libadamw (Rust, not instrumented; linked as libadamw.so):
// tests/cpp/tsan.supp ignores only what the library itself does through intercepted calls
// (memcpy, malloc, free...), ordered by its own lock, which TSan cannot see. Everything the
// wrapper and the callables do, the trampolines the library calls included, is still checked.
// This test uses only what the header offered before the Result API, so it builds against an
// older header too (an older header's shared exception text showed up here as a race).
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "adamw/adamw.hpp"

namespace {

// "big" is large enough for the library to hand its steps to its thread pool.
constexpr int kThreads = 4, kRounds = 48, kBig = 1 << 16;

thread_local int this_thread = -1;  // the test thread running (read by the callables)
thread_local bool fail_now = false;  // makes the learning-rate callable throw on this thread

// What one thread saw: its successful steps and every check that failed.
struct Log {
    int steps = 0;
    std::vector<std::string> problems;

    // Runs `call`, which must throw adamw::Error named `status` with `text` in its message.
    template <class Call>
    void expect(const char* status, const std::string& text, Call&& call) {
        try {
            call();
            problems.push_back(std::string("no error, expected ") + status);
        } catch (const adamw::Error& e) {
            const std::string what = e.what();
            if (std::string(e.status_name()) != status || what.find(text) == std::string::npos)
                problems.push_back(std::string(e.status_name()) + " \"" + what + "\", expected " + status + " with \"" +
                                   text + "\"");
            // Another thread's callable text must never reach this thread's error.
            if (text.find("threw") == std::string::npos && what.find("threw") != std::string::npos)
                problems.push_back("a callable's text in an error without one: " + what);
        }
    }
};

}  // namespace

int main() {
    long calls = 0;  // plain: the wrapper's lock orders the callable's calls
    adamw::Optimizer opt(adamw::Config()
                             .learning_rate([&](int64_t step) {
                                 ++calls;
                                 if (fail_now) throw std::runtime_error("thread " + std::to_string(this_thread));
                                 return 0.01 / static_cast<double>(step + 1);
                             })
                             .beta_1([](int64_t) { return 0.8; }));
    opt.build({adamw::Variable::of<float>("w", {3}), adamw::Variable::of<float>("big", {kBig})});

    Log logs[kThreads];
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
        threads.emplace_back([&, t] {
            this_thread = t;
            Log& log = logs[t];
            std::vector<float> w = {0.5f, -1.5f, 2.0f}, g = {0.1f, -0.2f, 0.3f}, big(kBig, 1.0f), big_g(kBig, 0.5f);
            std::vector<float> short_w = {1, 2}, short_g = {1, 2};
            std::vector<adamw::Gradient> entries = {adamw::Gradient::dense<float>(0, w, g)};
            const std::string me = "thread " + std::to_string(t);
            for (int round = 0; round < kRounds; round++) {
                switch (round % 4) {
                    case 0:  // a step
                        opt.apply_gradients({adamw::Gradient::dense<float>(0, w, g),
                                             adamw::Gradient::dense<float>(1, big, big_g)});
                        log.steps++;
                        break;
                    case 1:  // the library refuses the shape (before any callable runs)
                        log.expect("ADAMW_STATUS_SHAPE_MISMATCH", "has 3 elements, got 2",
                                   [&] { opt.apply_gradients({adamw::Gradient::dense<float>(0, short_w, short_g)}); });
                        break;
                    case 2:  // the learning-rate callable throws, naming this thread
                        fail_now = true;
                        log.expect("ADAMW_STATUS_CALLBACK_FAILED", "(the callable threw: " + me + ")",
                                   [&] { opt.apply_gradients({adamw::Gradient::dense<float>(0, w, g)}); });
                        fail_now = false;
                        break;
                    case 3:  // minimize: its gradients throw every other time
                        if (round % 8 == 3) {
                            log.expect("ADAMW_STATUS_CALLBACK_FAILED", "(the gradient callable threw: " + me + ")", [&] {
                                opt.minimize(entries, [&] { throw std::runtime_error(me); });
                            });
                        } else {
                            opt.minimize(entries, [&] { g[0] = -g[0]; });
                            log.steps++;
                        }
                        break;
                }
            }
        });
    }
    for (auto& t : threads) t.join();

    int steps = 0, problems = 0;
    for (int t = 0; t < kThreads; t++) {
        steps += logs[t].steps;
        for (const auto& p : logs[t].problems) std::fprintf(stderr, "thread %d: %s\n", t, p.c_str());
        problems += static_cast<int>(logs[t].problems.size());
    }
    // The callable runs once at creation, once per step, and once in each call it fails.
    const long expected_calls = 1 + steps + kThreads * (kRounds / 4);
    if (opt.iterations() != steps || calls != expected_calls) {
        std::fprintf(stderr, "iterations %lld, expected %d; %ld learning-rate calls, expected %ld\n",
                     static_cast<long long>(opt.iterations()), steps, calls, expected_calls);
        problems++;
    }
    std::printf("%d threads, %d steps, %ld learning-rate calls, %d problems\n", kThreads, steps, calls, problems);
    return problems == 0 ? 0 : 1;
}

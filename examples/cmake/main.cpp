// Uses an installed libadamw through the C++ wrapper.
#include <adamw/adamw.hpp>
#include <cstdio>
#include <vector>

int main() {
    adamw::Optimizer opt(adamw::Config().learning_rate(0.01));
    opt.build({adamw::Variable::of<float>("w", {2})});
    std::vector<float> w = {1, 2}, g = {0.5f, 0.5f};
    opt.apply_gradients({adamw::Gradient::dense<float>(0, w, g)});
    std::printf("consumer (C++): iterations %lld\n", static_cast<long long>(opt.iterations()));
    return opt.iterations() == 1 ? 0 : 1;
}

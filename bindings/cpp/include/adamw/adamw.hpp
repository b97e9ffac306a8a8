// libadamw for C++: a header-only wrapper over the C ABI (include/adamw.h).
//
//   adamw::Optimizer opt(adamw::Config().learning_rate(0.01).clipnorm(1.0));
//   opt.build({adamw::Variable::of<float>("dense/kernel", {4, 3}, kernel)});
//   opt.apply_gradients({adamw::Gradient::dense<float>(0, kernel, grad)});
//
// - RAII: adamw::Optimizer is move-only and frees its handle in the destructor.
// - Errors: every failing call throws adamw::Error (a std::runtime_error) carrying the status
//   code and the library's message; a failed call changes nothing.
// - Callables (learning rate, betas, minimize's gradients) may be any callable; an exception
//   thrown by one is caught at the boundary, fails the call with ADAMW_STATUS_CALLBACK_FAILED,
//   and its what() is appended to the Error's message. No exception ever crosses into the library.
// - Spans: std::span under C++20, adamw::span (pointer + size) under C++17.
// - Threads: as the C ABI: calls on one optimizer are serialized inside the library.
#ifndef ADAMW_HPP
#define ADAMW_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if __cplusplus >= 202002L
#include <span>
#endif

#include "adamw.h"

namespace adamw {

/// Elements in a device's memory (a CUDA device pointer and a count), for an optimizer on a
/// device (Optimizer::set_device): never read on the host. Made only explicitly, so that host
/// memory and device memory are never mixed up.
template <class T>
class device_span {
   public:
    constexpr device_span() noexcept = default;
    constexpr device_span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
    /// A view of the same elements as const.
    constexpr operator device_span<const T>() const noexcept { return device_span<const T>(data_, size_); }
    constexpr T* data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }

   private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

#if __cplusplus >= 202002L
template <class T>
using span = std::span<T>;
#else
/// A view of contiguous elements: a pointer and a count (std::span's subset used here).
template <class T>
class span {
   public:
    constexpr span() noexcept = default;
    constexpr span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
    template <std::size_t N>
    constexpr span(T (&array)[N]) noexcept : data_(array), size_(N) {}
    template <class Container, class = decltype(std::declval<Container&>().data())>
    constexpr span(Container& c) noexcept : data_(c.data()), size_(c.size()) {}
    template <class Container, class = decltype(std::declval<const Container&>().data())>
    constexpr span(const Container& c) noexcept : data_(c.data()), size_(c.size()) {}
    constexpr T* data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
    constexpr T* begin() const noexcept { return data_; }
    constexpr T* end() const noexcept { return data_ + size_; }

   private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};
#endif

/// A failed call: the status code and the library's message.
class Error : public std::runtime_error {
   public:
    Error(adamw_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    adamw_status status() const noexcept { return status_; }
    /// The status's name, e.g. "ADAMW_STATUS_SHAPE_MISMATCH".
    const char* status_name() const noexcept { return adamw_status_name(static_cast<uint32_t>(status_)); }

   private:
    adamw_status status_;
};

/// The library's version string and ABI version (compare with ADAMW_ABI_VERSION).
inline std::string version() { return adamw_version(); }
inline uint32_t abi_version() { return adamw_abi_version(); }

namespace detail {

inline std::string last_error() {
    std::size_t len = 0;
    adamw_last_error(nullptr, 0, &len);
    std::string message(len + 1, '\0');
    adamw_last_error(&message[0], message.size(), &len);
    message.resize(len);
    return message;
}

/// Throws the status as an Error; `extra` is appended to the message (a callback's exception).
inline void check(adamw_status status, const std::string& extra = std::string()) {
    if (status == ADAMW_STATUS_OK) return;
    std::string message = last_error();
    if (!extra.empty()) message += " (" + extra + ")";
    throw Error(status, message);
}

}  // namespace detail

/// A bfloat16 value, held as its bits (ADAMW_DTYPE_BFLOAT16): the top half of a float.
struct bfloat16_t {
    std::uint16_t bits = 0;

    /// The float rounded to nearest even (NaN stays NaN), as TensorFlow rounds.
    static bfloat16_t from_float(float f) noexcept {
        std::uint32_t u;
        std::memcpy(&u, &f, sizeof u);
        if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
        u += 0x7fffu + ((u >> 16) & 1u);
        return bfloat16_t{static_cast<std::uint16_t>(u >> 16)};
    }
    /// The exact float value.
    float to_float() const noexcept {
        std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
        float f;
        std::memcpy(&f, &u, sizeof f);
        return f;
    }
    friend bool operator==(bfloat16_t a, bfloat16_t b) noexcept { return a.bits == b.bits; }
    friend bool operator!=(bfloat16_t a, bfloat16_t b) noexcept { return a.bits != b.bits; }
};

/// An IEEE binary16 value, held as its bits (ADAMW_DTYPE_FLOAT16).
struct float16_t {
    std::uint16_t bits = 0;

    /// The float rounded to nearest even, subnormals included (NaN stays NaN, 65520 and above
    /// become infinity), as TensorFlow rounds.
    static float16_t from_float(float f) noexcept {
        std::uint32_t u;
        std::memcpy(&u, &f, sizeof u);
        const std::uint32_t sign = (u >> 16) & 0x8000u;
        std::uint32_t a = u & 0x7fffffffu;
        std::uint32_t out;
        if (a >= 0x47800000u) {  // 2^16 and above, infinity, NaN
            out = a > 0x7f800000u ? 0x7e00u : 0x7c00u;
        } else if (a < 0x38800000u) {  // below 2^-14: a subnormal float16 (or zero)
            // Adding 0.5 puts the float16 subnormal's bits at the bottom of the significand,
            // rounded to nearest even by the float addition itself.
            float magnitude, half = 0.5f;
            std::memcpy(&magnitude, &a, sizeof magnitude);
            magnitude += half;
            std::uint32_t m;
            std::memcpy(&m, &magnitude, sizeof m);
            out = m - 0x3f000000u;
        } else {  // normal: rebias the exponent, round the 13 dropped bits to nearest even
            out = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
        }
        return float16_t{static_cast<std::uint16_t>(sign | out)};
    }
    /// The exact float value.
    float to_float() const noexcept {
        const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
        const std::uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
        std::uint32_t u;
        if (exponent == 0x1fu) {
            u = sign | 0x7f800000u | (mantissa << 13);
        } else if (exponent != 0) {
            u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
        } else {  // zero or subnormal: mantissa * 2^-24, exact in float
            float f = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
            std::memcpy(&u, &f, sizeof u);
            u |= sign;
        }
        float f;
        std::memcpy(&f, &u, sizeof f);
        return f;
    }
    friend bool operator==(float16_t a, float16_t b) noexcept { return a.bits == b.bits; }
    friend bool operator!=(float16_t a, float16_t b) noexcept { return a.bits != b.bits; }
};

namespace detail {

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
    static constexpr uint32_t value = ADAMW_DTYPE_FLOAT32;
};
template <>
struct dtype_of<double> {
    static constexpr uint32_t value = ADAMW_DTYPE_FLOAT64;
};
template <>
struct dtype_of<int64_t> {
    static constexpr uint32_t value = ADAMW_DTYPE_INT64;
};
template <>
struct dtype_of<bfloat16_t> {
    static constexpr uint32_t value = ADAMW_DTYPE_BFLOAT16;
};
template <>
struct dtype_of<float16_t> {
    static constexpr uint32_t value = ADAMW_DTYPE_FLOAT16;
};

/// Callables owned by an optimizer, at a stable address for the C callbacks' user_data.
struct Callbacks {
    std::function<double(int64_t)> learning_rate, beta_1, beta_2;
    std::function<void(double*, std::size_t)> all_reduce;
    std::string exception;  // what() of the last exception a callable threw

    static int32_t call(std::function<double(int64_t)>* f, Callbacks* self, int64_t step, double* out) noexcept {
        try {
            *out = (*f)(step);
            return 0;
        } catch (const std::exception& e) {
            self->exception = std::string("the callable threw: ") + e.what();
        } catch (...) {
            self->exception = "the callable threw a non-standard exception";
        }
        return 1;
    }
    static int32_t learning_rate_trampoline(int64_t step, void* user_data, double* out) noexcept {
        auto* self = static_cast<Callbacks*>(user_data);
        return call(&self->learning_rate, self, step, out);
    }
    static int32_t beta_1_trampoline(int64_t step, void* user_data, double* out) noexcept {
        auto* self = static_cast<Callbacks*>(user_data);
        return call(&self->beta_1, self, step, out);
    }
    static int32_t beta_2_trampoline(int64_t step, void* user_data, double* out) noexcept {
        auto* self = static_cast<Callbacks*>(user_data);
        return call(&self->beta_2, self, step, out);
    }
    static int32_t all_reduce_trampoline(double* values, std::size_t count, void* user_data) noexcept {
        auto* self = static_cast<Callbacks*>(user_data);
        try {
            self->all_reduce(values, count);
            return 0;
        } catch (const std::exception& e) {
            self->exception = std::string("the mesh all-reduce threw: ") + e.what();
        } catch (...) {
            self->exception = "the mesh all-reduce threw a non-standard exception";
        }
        return 1;
    }
    /// Takes the recorded exception text (empty if none).
    std::string take() { return std::exchange(exception, std::string()); }
};

struct HandleDeleter {
    void operator()(adamw_optimizer* h) const noexcept { adamw_optimizer_free(h); }
};

}  // namespace detail

/// A learning-rate schedule (Keras' six). Build one with the named constructors.
class Schedule {
   public:
    static Schedule exponential_decay(double initial_learning_rate, double decay_steps, double decay_rate,
                                      bool staircase = false) {
        Schedule s(ADAMW_SCHEDULE_KIND_EXPONENTIAL_DECAY);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = decay_steps;
        s.raw_.decay_rate = decay_rate;
        s.raw_.staircase = staircase ? 1 : 0;
        return s;
    }
    static Schedule piecewise_constant_decay(std::vector<int64_t> boundaries, std::vector<double> values) {
        if (values.size() != boundaries.size() + 1)
            throw Error(ADAMW_STATUS_INVALID_ARGUMENT,
                        "The length of boundaries should be 1 less than the length of values.");
        Schedule s(ADAMW_SCHEDULE_KIND_PIECEWISE_CONSTANT_DECAY);
        s.boundaries_ = std::move(boundaries);
        s.values_ = std::move(values);
        return s;
    }
    static Schedule polynomial_decay(double initial_learning_rate, double decay_steps,
                                     double end_learning_rate = 0.0001, double power = 1.0, bool cycle = false) {
        Schedule s(ADAMW_SCHEDULE_KIND_POLYNOMIAL_DECAY);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = decay_steps;
        s.raw_.end_learning_rate = end_learning_rate;
        s.raw_.power = power;
        s.raw_.cycle = cycle ? 1 : 0;
        return s;
    }
    static Schedule inverse_time_decay(double initial_learning_rate, double decay_steps, double decay_rate,
                                       bool staircase = false) {
        Schedule s(ADAMW_SCHEDULE_KIND_INVERSE_TIME_DECAY);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = decay_steps;
        s.raw_.decay_rate = decay_rate;
        s.raw_.staircase = staircase ? 1 : 0;
        return s;
    }
    /// Cosine decay; `warmup_steps` > 0 adds Keras' linear warmup to `warmup_target` first.
    static Schedule cosine_decay(double initial_learning_rate, double decay_steps, double alpha = 0.0,
                                 double warmup_target = 0.0, double warmup_steps = 0.0) {
        Schedule s(ADAMW_SCHEDULE_KIND_COSINE_DECAY);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = decay_steps;
        s.raw_.alpha = alpha;
        s.raw_.has_warmup = warmup_steps > 0 ? 1 : 0;
        s.raw_.warmup_target = warmup_target;
        s.raw_.warmup_steps = warmup_steps;
        return s;
    }
    static Schedule cosine_decay_restarts(double initial_learning_rate, double first_decay_steps, double t_mul = 2.0,
                                          double m_mul = 1.0, double alpha = 0.0) {
        Schedule s(ADAMW_SCHEDULE_KIND_COSINE_DECAY_RESTARTS);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = first_decay_steps;
        s.raw_.t_mul = t_mul;
        s.raw_.m_mul = m_mul;
        s.raw_.alpha = alpha;
        return s;
    }
    Schedule& name(std::string n) {
        name_ = std::move(n);
        return *this;
    }

    /// The C view; valid while this Schedule lives and is not modified.
    const adamw_schedule& raw() {
        raw_.boundaries = boundaries_.data();
        raw_.num_boundaries = boundaries_.size();
        raw_.values = values_.data();
        raw_.name = name_.empty() ? nullptr : name_.c_str();
        return raw_;
    }

   private:
    explicit Schedule(adamw_schedule_kind kind) { detail::check(adamw_schedule_init(kind, &raw_)); }
    adamw_schedule raw_{};
    std::vector<int64_t> boundaries_;
    std::vector<double> values_;
    std::string name_;
};

/// The AdamW constructor arguments, Keras' defaults until set (named setters, chainable).
class Config {
   public:
    Config() : raw_(adamw_config_default()) {}
    Config& learning_rate(double lr) {
        raw_.learning_rate = lr;
        schedule_.reset();
        learning_rate_fn_ = nullptr;
        return *this;
    }
    Config& learning_rate(Schedule schedule) {
        schedule_ = std::make_shared<Schedule>(std::move(schedule));
        learning_rate_fn_ = nullptr;
        return *this;
    }
    /// A learning rate computed every step from the pre-increment iteration count.
    Config& learning_rate(std::function<double(int64_t)> fn) {
        learning_rate_fn_ = std::move(fn);
        return *this;
    }
    Config& weight_decay(double v) { return set(raw_.weight_decay, v); }
    Config& beta_1(double v) { return set(raw_.beta_1, v); }
    Config& beta_1(std::function<double(int64_t)> fn) {
        beta_1_fn_ = std::move(fn);
        return *this;
    }
    Config& beta_2(double v) { return set(raw_.beta_2, v); }
    Config& beta_2(std::function<double(int64_t)> fn) {
        beta_2_fn_ = std::move(fn);
        return *this;
    }
    Config& epsilon(double v) { return set(raw_.epsilon, v); }
    Config& amsgrad(bool v) { return set(raw_.amsgrad, static_cast<uint8_t>(v)); }
    Config& clipnorm(double v) { return set(raw_.clipnorm, v); }
    Config& global_clipnorm(double v) { return set(raw_.global_clipnorm, v); }
    Config& clipvalue(double v) { return set(raw_.clipvalue, v); }
    Config& use_ema(bool v) { return set(raw_.use_ema, static_cast<uint8_t>(v)); }
    Config& ema_momentum(double v) { return set(raw_.ema_momentum, v); }
    Config& ema_overwrite_frequency(int64_t v) { return set(raw_.ema_overwrite_frequency, v); }
    Config& jit_compile(bool v) { return set(raw_.jit_compile, static_cast<uint8_t>(v)); }
    /// Threads for a step: 0 a pool shared by the process, 1 the calling thread only (no
    /// allocation in a step), N a pool of N threads for this optimizer. Same bits for all.
    Config& threads(uint32_t n) { return set(raw_.threads, n); }
    /// The non-finite guard (an extension, off by default): a gradient holding NaN or an
    /// infinity fails the whole step (ADAMW_STATUS_NON_FINITE_GRADIENT) and changes nothing.
    Config& reject_non_finite_gradients(bool v) { return set(raw_.reject_non_finite_gradients, static_cast<uint8_t>(v)); }
    /// Float32 master weights for bfloat16 and float16 variables (an extension, off by default;
    /// see adamw_optimizer_set_master_weights): build then needs every variable's values.
    Config& master_weights(bool v) {
        master_weights_ = v;
        return *this;
    }
    /// Keras' LossScaleOptimizer around this AdamW (see adamw_optimizer_set_loss_scale): pass
    /// gradients of the loss times Optimizer::loss_scale(); each step unscales them.
    Config& loss_scale(bool dynamic = true, double initial_scale = 32768.0, int64_t dynamic_growth_steps = 2000) {
        loss_scale_ = true;
        dynamic_ = dynamic;
        initial_scale_ = initial_scale;
        dynamic_growth_steps_ = dynamic_growth_steps;
        return *this;
    }
    Config& name(std::string n) {
        name_ = std::move(n);
        return *this;
    }
    /// Sharded state (Keras' mesh): `all_reduce(values, count)` must sum the doubles across the
    /// ranks in place, the same on every rank (MPI_Allreduce with MPI_SUM, NCCL, ...); it may
    /// be any callable, and an exception it throws fails the step (CALLBACK_FAILED, nothing
    /// changes). apply_gradients is then collective; see adamw_all_reduce_fn for what it sums.
    Config& mesh(std::function<void(double*, std::size_t)> all_reduce) {
        all_reduce_ = std::move(all_reduce);
        return *this;
    }

   private:
    friend class Optimizer;
    template <class T, class V>
    Config& set(T& field, V value) {
        field = static_cast<T>(value);
        return *this;
    }
    adamw_config raw_;
    bool master_weights_ = false;
    bool loss_scale_ = false, dynamic_ = true;
    double initial_scale_ = 32768.0;
    int64_t dynamic_growth_steps_ = 2000;
    std::shared_ptr<Schedule> schedule_;
    std::function<double(int64_t)> learning_rate_fn_, beta_1_fn_, beta_2_fn_;
    std::function<void(double*, std::size_t)> all_reduce_;
    std::string name_;
};

/// A variable to build the optimizer over (name, dtype, shape, current values for EMA).
struct Variable {
    std::string name;
    uint32_t dtype = ADAMW_DTYPE_FLOAT32;
    std::vector<std::size_t> shape;
    const void* data = nullptr;
    /// With a mesh: hold only the flat elements `shard_offset .. shard_offset + shard_len`.
    bool sharded = false;
    std::size_t shard_offset = 0, shard_len = 0;

    /// This variable as a shard of `len` elements from flat element `offset` (needs a mesh);
    /// `data`, gradients and slots then have `len` elements.
    Variable shard(std::size_t offset, std::size_t len) const {
        Variable v = *this;
        v.sharded = true;
        v.shard_offset = offset;
        v.shard_len = len;
        return v;
    }

    /// A variable of element type T (float, double, bfloat16_t or float16_t); `values` may be
    /// empty without EMA and master weights.
    template <class T>
    static Variable of(std::string name, std::vector<std::size_t> shape, span<const T> values = {}) {
        return Variable{std::move(name), detail::dtype_of<T>::value, std::move(shape), values.data()};
    }
};

/// One variable's entry in apply_gradients: its values (updated in place) and its gradient.
struct Gradient {
    adamw_gradient raw{};

    template <class T>
    static Gradient dense(std::size_t variable, span<T> values, span<const T> gradient) {
        return none(variable, values).with_dense(gradient.data(), gradient.size());
    }
    /// Rows of the variable (Keras' IndexedSlices): one row of `rows` per index; repeats add up.
    template <class T>
    static Gradient sparse(std::size_t variable, span<T> values, span<const int64_t> indices, span<const T> rows) {
        return none(variable, values).with_rows(indices.data(), indices.size(), rows.data(), rows.size());
    }
    /// A float32 gradient (accumulated in float32) for a bfloat16 or float16 variable with
    /// master weights (see ADAMW_GRADIENT_DTYPE_SHIFT); DTYPE_MISMATCH for one without.
    template <class T>
    static Gradient dense_float32(std::size_t variable, span<T> values, span<const float> gradient) {
        static_assert(detail::dtype_of<T>::value == ADAMW_DTYPE_BFLOAT16 || detail::dtype_of<T>::value == ADAMW_DTYPE_FLOAT16,
                      "float32 gradients are for bfloat16 and float16 variables");
        return float32_gradient(none(variable, values)).with_dense(gradient.data(), gradient.size());
    }
    /// Float32 rows (accumulated in float32) for a bfloat16 or float16 variable with master weights.
    template <class T>
    static Gradient sparse_float32(std::size_t variable, span<T> values, span<const int64_t> indices,
                                   span<const float> rows) {
        static_assert(detail::dtype_of<T>::value == ADAMW_DTYPE_BFLOAT16 || detail::dtype_of<T>::value == ADAMW_DTYPE_FLOAT16,
                      "float32 gradients are for bfloat16 and float16 variables");
        return float32_gradient(none(variable, values)).with_rows(indices.data(), indices.size(), rows.data(), rows.size());
    }
    /// A dense gradient in device memory, for an optimizer on a device.
    template <class T>
    static Gradient dense(std::size_t variable, device_span<T> values, device_span<const T> gradient) {
        return on_device(variable, values).with_dense(gradient.data(), gradient.size());
    }
    /// Rows in device memory with their indices in host memory, for an optimizer on a device.
    template <class T>
    static Gradient sparse(std::size_t variable, device_span<T> values, span<const int64_t> indices,
                           device_span<const T> rows) {
        return on_device(variable, values).with_rows(indices.data(), indices.size(), rows.data(), rows.size());
    }
    /// Rows and their indices both in device memory (ADAMW_INDICES_ON_DEVICE: the indices are
    /// copied to the host and checked there before the step is enqueued).
    template <class T>
    static Gradient sparse(std::size_t variable, device_span<T> values, device_span<const int64_t> indices,
                           device_span<const T> rows) {
        Gradient g = on_device(variable, values).with_rows(indices.data(), indices.size(), rows.data(), rows.size());
        g.raw.dtype |= ADAMW_INDICES_ON_DEVICE;
        return g;
    }
    /// A variable in device memory listed without a gradient.
    template <class T>
    static Gradient on_device(std::size_t variable, device_span<T> values) {
        return listed<T>(variable, values.data(), values.size());
    }

    /// The variable is listed without a gradient (Keras' None): left alone.
    template <class T>
    static Gradient none(std::size_t variable, span<T> values) {
        return listed<T>(variable, values.data(), values.size());
    }

   private:
    /// An entry for the `len` values of type T at `data` (host or device memory), no gradient yet.
    template <class T>
    static Gradient listed(std::size_t variable, T* data, std::size_t len) {
        Gradient g;
        g.raw.variable = variable;
        g.raw.dtype = detail::dtype_of<T>::value;
        g.raw.data = data;
        g.raw.len = len;
        return g;
    }
    /// The same entry with its gradient's dtype float32, for a 16-bit variable with master weights.
    static Gradient float32_gradient(Gradient g) {
        g.raw.dtype |= uint32_t{ADAMW_DTYPE_FLOAT32} << ADAMW_GRADIENT_DTYPE_SHIFT;
        return g;
    }
    /// The same entry with a dense gradient of `len` elements at `gradient`.
    Gradient with_dense(const void* gradient, std::size_t len) const {
        if (len != raw.len) throw Error(ADAMW_STATUS_SHAPE_MISMATCH, "the gradient's length differs from the variable's");
        Gradient g = *this;
        g.raw.dense = gradient;
        return g;
    }
    /// The same entry with a sparse gradient: `num_indices` row indices and their rows.
    Gradient with_rows(const int64_t* indices, std::size_t num_indices, const void* rows, std::size_t num_rows) const {
        Gradient g = *this;
        g.raw.indices = indices;
        g.raw.num_indices = num_indices;
        g.raw.values = rows;
        g.raw.num_values = num_rows;
        return g;
    }
};

/// A value for set_weights: dtype, shape and data (the counter, index 0, is int64).
struct Weight {
    uint32_t dtype;
    std::vector<std::size_t> shape;
    const void* data;

    template <class T>
    static Weight of(std::vector<std::size_t> shape, span<const T> values) {
        return Weight{detail::dtype_of<T>::value, std::move(shape), values.data()};
    }
};

/// Describes an optimizer variable (see Optimizer::variable_info).
struct VariableInfo {
    std::string name;
    uint32_t dtype;
    std::vector<std::size_t> shape;
    std::size_t size;
};

/// tf.keras.optimizers.AdamW. Move-only; the destructor frees the handle.
class Optimizer {
   public:
    explicit Optimizer(const Config& config) : callbacks_(new detail::Callbacks) {
        adamw_config raw = config.raw_;
        adamw_schedule schedule_raw{};
        if (config.schedule_) {
            schedule_raw = config.schedule_->raw();
            raw.learning_rate_schedule = &schedule_raw;
        }
        raw.name = config.name_.empty() ? nullptr : config.name_.c_str();
        if (config.learning_rate_fn_) {
            callbacks_->learning_rate = config.learning_rate_fn_;
            raw.learning_rate_fn = &detail::Callbacks::learning_rate_trampoline;
            raw.learning_rate_user_data = callbacks_.get();
        }
        if (config.beta_1_fn_) {
            callbacks_->beta_1 = config.beta_1_fn_;
            raw.beta_1_fn = &detail::Callbacks::beta_1_trampoline;
            raw.beta_1_user_data = callbacks_.get();
        }
        if (config.beta_2_fn_) {
            callbacks_->beta_2 = config.beta_2_fn_;
            raw.beta_2_fn = &detail::Callbacks::beta_2_trampoline;
            raw.beta_2_user_data = callbacks_.get();
        }
        if (config.all_reduce_) {
            callbacks_->all_reduce = config.all_reduce_;
            raw.mesh_all_reduce = &detail::Callbacks::all_reduce_trampoline;
            raw.mesh_user_data = callbacks_.get();
        }
        adamw_optimizer* h = nullptr;
        adamw_status status = adamw_optimizer_new(&raw, &h);
        check(status);
        handle_.reset(h);
        if (config.master_weights_) check(adamw_optimizer_set_master_weights(h, 1));
        if (config.loss_scale_) {
            check(adamw_optimizer_set_loss_scale(h, config.dynamic_ ? 1 : 0, config.initial_scale_,
                                                 config.dynamic_growth_steps_));
        }
    }

    /// The current loss scale (multiply the loss by it) and the finite steps since it changed;
    /// throws INVALID_ARGUMENT without a loss scale.
    std::pair<float, int64_t> loss_scale() const {
        float scale = 0;
        int64_t counter = 0;
        check(adamw_optimizer_loss_scale(h(), &scale, &counter));
        return {scale, counter};
    }

    /// The compiled optimizer's config in a `.keras` archive, as JSON for from_config().
    static std::string keras_file_optimizer_config(const std::string& path) {
        std::size_t len = 0;
        detail::check(adamw_keras_file_optimizer_config(path.c_str(), nullptr, 0, &len));
        std::string json(len + 1, '\0');
        detail::check(adamw_keras_file_optimizer_config(path.c_str(), &json[0], json.size(), &len));
        json.resize(len);
        return json;
    }

    /// Keras' from_config(): an optimizer from get_config() JSON.
    static Optimizer from_config(const std::string& json) {
        adamw_optimizer* h = nullptr;
        detail::check(adamw_optimizer_from_config_json(json.data(), json.size(), &h));
        return Optimizer(h);
    }

    Optimizer(Optimizer&&) noexcept = default;
    Optimizer& operator=(Optimizer&&) noexcept = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// The C handle, for calls the wrapper does not cover; still owned by this object.
    adamw_optimizer* handle() const noexcept { return handle_.get(); }

    /// Keras' get_config() as JSON.
    std::string get_config() const {
        std::size_t len = 0;
        check(adamw_optimizer_get_config(h(), nullptr, 0, &len));
        std::string json(len + 1, '\0');
        check(adamw_optimizer_get_config(h(), &json[0], json.size(), &len));
        json.resize(len);
        return json;
    }

    int64_t iterations() const {
        int64_t it = 0;
        check(adamw_optimizer_iterations(h(), &it));
        return it;
    }
    void set_iterations(int64_t iterations) { check(adamw_optimizer_set_iterations(h(), iterations)); }
    /// The float32 learning rate of the last step (before any: at step 0).
    float learning_rate() const {
        float lr = 0;
        check(adamw_optimizer_current_learning_rate(h(), &lr));
        return lr;
    }
    void set_learning_rate(double learning_rate) { check(adamw_optimizer_set_learning_rate(h(), learning_rate)); }

    /// Before build: variables (indices into build's list) and regex patterns excluded from decay.
    void exclude_from_weight_decay(const std::vector<std::size_t>& variables,
                                   const std::vector<std::string>& patterns = {}) {
        std::vector<const char*> raw;
        for (const auto& p : patterns) raw.push_back(p.c_str());
        check(adamw_optimizer_exclude_from_weight_decay(h(), variables.data(), variables.size(), raw.data(),
                                                        raw.size()));
    }

    void build(const std::vector<Variable>& variables) {
        std::vector<adamw_variable> raw;
        raw.reserve(variables.size());
        for (const auto& v : variables) {
            adamw_variable r{};
            r.name = v.name.c_str();
            r.dtype = v.dtype;
            r.ndim = v.shape.size();
            r.shape = v.shape.data();
            r.data = v.data;
            r.sharded = v.sharded ? 1 : 0;
            r.shard_offset = v.shard_offset;
            r.shard_len = v.shard_len;
            raw.push_back(r);
        }
        check(adamw_optimizer_build(h(), raw.data(), raw.size()));
    }

    /// Moves the optimizer to a device before build (adamw_optimizer_set_device): its state lives
    /// there, its steps run there with the CPU's bits, and gradients take device_span buffers.
    void set_device(adamw_device_kind kind, uint32_t ordinal = 0) {
        check(adamw_optimizer_set_device(h(), static_cast<uint32_t>(kind), ordinal));
    }

    /// The CUDA stream (a cudaStream_t) that steps are enqueued on (adamw_optimizer_set_stream).
    void set_stream(void* stream) { check(adamw_optimizer_set_stream(h(), stream)); }

    /// Changes the thread setting (see Config::threads).
    void set_threads(uint32_t threads) { check(adamw_optimizer_set_threads(h(), threads)); }

    /// Reserves room for sparse gradients of up to `max_indices` indices (no allocation later).
    void reserve_sparse(std::size_t max_indices) { check(adamw_optimizer_reserve_sparse(h(), max_indices)); }

    /// One step; returns the new iteration count.
    int64_t apply_gradients(span<const Gradient> gradients) {
        int64_t it = 0;
        check(adamw_optimizer_apply_gradients(h(), raw_entries(gradients), gradients.size(), &it));
        return it;
    }
    int64_t apply_gradients(std::initializer_list<Gradient> gradients) {
        return apply_gradients(span<const Gradient>(gradients.begin(), gradients.size()));
    }

    /// Keras' minimize: `compute()` fills the gradient buffers of `gradients` from the current
    /// values (an exception from it fails the call and changes nothing), then the step runs.
    template <class Compute>
    int64_t minimize(span<const Gradient> gradients, Compute&& compute) {
        struct Context {
            Compute* compute;
            std::string exception;
        } context{&compute, std::string()};
        auto trampoline = [](void* user_data, const adamw_gradient*, std::size_t) noexcept -> int32_t {
            auto* ctx = static_cast<Context*>(user_data);
            try {
                (*ctx->compute)();
                return 0;
            } catch (const std::exception& e) {
                ctx->exception = std::string("the gradient callable threw: ") + e.what();
            } catch (...) {
                ctx->exception = "the gradient callable threw a non-standard exception";
            }
            return 1;
        };
        int64_t it = 0;
        adamw_status status = adamw_optimizer_minimize(h(), raw_entries(gradients), gradients.size(), trampoline,
                                                       &context, &it);
        detail::check(status, context.exception);
        return it;
    }

    /// With EMA, each listed variable takes its moving average's value (Keras' name).
    template <class T>
    void finalize_variable_values(const std::vector<std::pair<std::size_t, span<T>>>& variables) {
        std::vector<adamw_variable_data> raw;
        for (const auto& v : variables)
            raw.push_back(adamw_variable_data{v.first, detail::dtype_of<T>::value, v.second.data(), v.second.size()});
        check(adamw_optimizer_finalize_variable_values(h(), raw.data(), raw.size()));
    }

    /// finalize_variable_values over variables in device memory (an optimizer on a device).
    template <class T>
    void finalize_variable_values_on_device(const std::vector<std::pair<std::size_t, device_span<T>>>& variables) {
        std::vector<adamw_variable_data> raw;
        for (const auto& v : variables)
            raw.push_back(adamw_variable_data{v.first, detail::dtype_of<T>::value, v.second.data(), v.second.size()});
        check(adamw_optimizer_finalize_variable_values(h(), raw.data(), raw.size()));
    }

    /// Keras' len(optimizer.variables) and the description of one (Keras' order).
    std::size_t num_variables() const {
        std::size_t n = 0;
        check(adamw_optimizer_num_variables(h(), &n));
        return n;
    }
    VariableInfo variable_info(std::size_t index) const {
        adamw_variable_info info{};
        check(adamw_optimizer_variable_info(h(), index, &info));
        std::size_t len = 0;
        check(adamw_optimizer_variable_name(h(), index, nullptr, 0, &len));
        std::string name(len + 1, '\0');
        check(adamw_optimizer_variable_name(h(), index, &name[0], name.size(), &len));
        name.resize(len);
        return VariableInfo{name, info.dtype, std::vector<std::size_t>(info.shape, info.shape + info.ndim), info.len};
    }
    /// A copy of optimizer variable `index` as T (int64_t for index 0, else the variable's dtype).
    template <class T>
    std::vector<T> variable(std::size_t index) const {
        VariableInfo info = variable_info(index);
        std::vector<T> out(info.size);
        check(adamw_optimizer_get_variable(h(), index, detail::dtype_of<T>::value, out.data(), out.size()));
        return out;
    }
    void set_weights(const std::vector<Weight>& weights) {
        std::vector<adamw_weight> raw;
        for (const auto& w : weights) raw.push_back(adamw_weight{w.dtype, w.shape.size(), w.shape.data(), w.data});
        check(adamw_optimizer_set_weights(h(), raw.data(), raw.size()));
    }

    /// Keras' save_own_variables, as bytes (safetensors; see README).
    std::vector<std::byte> save() const {
        std::size_t len = 0;
        check(adamw_optimizer_save_own_variables(h(), nullptr, 0, &len));
        std::vector<std::byte> bytes(len);
        check(adamw_optimizer_save_own_variables(h(), reinterpret_cast<uint8_t*>(bytes.data()), bytes.size(), &len));
        return bytes;
    }
    /// Keras' load_own_variables: every optimizer variable from save()'s bytes.
    void load(span<const std::byte> bytes) {
        check(adamw_optimizer_load_own_variables(h(), reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    }
    /// Saves to a file atomically (temporary file, flush, rename): a failure leaves the old file.
    void save_file(const std::string& path) const { check(adamw_optimizer_save_file(h(), path.c_str())); }
    /// Loads a file written by save_file (ADAMW_STATUS_IO if it cannot be read).
    void load_file(const std::string& path) { check(adamw_optimizer_load_file(h(), path.c_str())); }

    /// Keras' own files (README, "Keras' own files"): loads the optimizer state of a `.keras`
    /// archive or a `.weights.h5` file written by tf-keras into this built optimizer; every
    /// count, shape and dtype is checked first (ADAMW_STATUS_CHECKPOINT_MISMATCH).
    void load_keras_file(const std::string& path) { check(adamw_optimizer_load_keras_file(h(), path.c_str())); }
    /// Writes out_path: the Keras file template_path with its optimizer state replaced by this one's.
    void save_keras_file(const std::string& template_path, const std::string& out_path) const {
        check(adamw_optimizer_save_keras_file(h(), template_path.c_str(), out_path.c_str()));
    }
    /// Loads a plain safetensors store (Keras' keys "0".."N-1", no libadamw metadata).
    void load_keras_store(span<const std::byte> bytes) {
        check(adamw_optimizer_load_keras_store(h(), reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    }

   private:
    explicit Optimizer(adamw_optimizer* h) : handle_(h), callbacks_(new detail::Callbacks) {}
    adamw_optimizer* h() const {
        if (!handle_) throw Error(ADAMW_STATUS_NULL_ARGUMENT, "this optimizer was moved from");
        return handle_.get();
    }
    void check(adamw_status status) const { detail::check(status, callbacks_ ? callbacks_->take() : std::string()); }
    static const adamw_gradient* raw_entries(span<const Gradient> gradients) {
        static_assert(sizeof(Gradient) == sizeof(adamw_gradient), "Gradient wraps adamw_gradient exactly");
        return gradients.size() ? &gradients[0].raw : nullptr;
    }

    std::unique_ptr<adamw_optimizer, detail::HandleDeleter> handle_;
    std::unique_ptr<detail::Callbacks> callbacks_;
};

}  // namespace adamw

#endif  // ADAMW_HPP

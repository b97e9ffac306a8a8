// libadamw for C++: a header-only wrapper over the C ABI (include/adamw.h).
//
//   adamw::Optimizer opt(adamw::Config().learning_rate(0.01).clipnorm(1.0));
//   opt.build({adamw::Variable::of<float>("dense/kernel", {4, 3}, kernel)});
//   opt.apply_gradients({adamw::Gradient::dense<float>(0, kernel, grad)});
//
// - Two error styles over one API. Every fallible call `f` has a twin `try_f` that returns an
//   adamw::Result<T> (Result<void>): the value, or a Status and the library's message (ok(),
//   value(), status(), message(), status_name()). The constructor's twin is the factory
//   Optimizer::create(config). With exceptions (__cpp_exceptions) both styles are there and
//   `f(args)` is `try_f(args).value()`, throwing adamw::Error (a std::runtime_error carrying
//   the Status and the message); under -fno-exceptions only the Result style is (every
//   translation unit of a program must use the same mode). A failed call changes nothing.
// - Callables (learning rate, betas, the mesh's all-reduce, minimize's gradients) may be any
//   callable, run on the thread that made the call. With exceptions, one that throws is caught
//   at the boundary and fails the call with Status::callback_failed, its what() appended to the
//   message; no exception ever crosses into the library.
// - Threads: one optimizer may be shared by threads; its calls are serialized, by the library
//   and by a lock in this wrapper (which orders stateful callables where ThreadSanitizer sees
//   it). Errors and callables' exception texts are per thread and per call.
// - RAII: adamw::Optimizer is move-only and frees its handle in the destructor.
// - Enums: Status, DType, ScheduleKind and DeviceKind are the C enums' values as enum classes;
//   to_c() and from_c() convert.
// - Spans: std::span under C++20, adamw::span (pointer + size) under C++17.
#ifndef ADAMW_HPP
#define ADAMW_HPP

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if __cplusplus >= 202002L
#include <span>
#endif

#if defined(__cpp_exceptions) || defined(_CPPUNWIND)
/// 1 when the compiler has exceptions (the throwing twins and adamw::Error exist), else 0.
#define ADAMW_CPP_EXCEPTIONS 1
#include <stdexcept>
#else
#define ADAMW_CPP_EXCEPTIONS 0
#endif

#include "adamw.h"

namespace adamw {

/// adamw_status: the outcome of a call (see include/adamw.h for each value).
enum class Status : std::uint32_t {
    ok = ADAMW_STATUS_OK,
    null_argument = ADAMW_STATUS_NULL_ARGUMENT,
    invalid_argument = ADAMW_STATUS_INVALID_ARGUMENT,
    invalid_config = ADAMW_STATUS_INVALID_CONFIG,
    shape_mismatch = ADAMW_STATUS_SHAPE_MISMATCH,
    dtype_mismatch = ADAMW_STATUS_DTYPE_MISMATCH,
    unknown_variable = ADAMW_STATUS_UNKNOWN_VARIABLE,
    index_out_of_range = ADAMW_STATUS_INDEX_OUT_OF_RANGE,
    not_built = ADAMW_STATUS_NOT_BUILT,
    already_built = ADAMW_STATUS_ALREADY_BUILT,
    no_gradients = ADAMW_STATUS_NO_GRADIENTS,
    callback_failed = ADAMW_STATUS_CALLBACK_FAILED,
    buffer_too_small = ADAMW_STATUS_BUFFER_TOO_SMALL,
    invalid_checkpoint = ADAMW_STATUS_INVALID_CHECKPOINT,
    checkpoint_mismatch = ADAMW_STATUS_CHECKPOINT_MISMATCH,
    busy = ADAMW_STATUS_BUSY,
    out_of_memory = ADAMW_STATUS_OUT_OF_MEMORY,
    internal = ADAMW_STATUS_INTERNAL,
    non_finite_gradient = ADAMW_STATUS_NON_FINITE_GRADIENT,
    io = ADAMW_STATUS_IO,
    device = ADAMW_STATUS_DEVICE,
};

/// adamw_dtype: element types (DType::int64 only for the iteration counter).
enum class DType : std::uint32_t {
    float32 = ADAMW_DTYPE_FLOAT32,
    float64 = ADAMW_DTYPE_FLOAT64,
    int64 = ADAMW_DTYPE_INT64,
    bfloat16 = ADAMW_DTYPE_BFLOAT16,
    float16 = ADAMW_DTYPE_FLOAT16,
};

/// adamw_schedule_kind: Keras' six learning-rate schedules (see Schedule).
enum class ScheduleKind : std::uint32_t {
    exponential_decay = ADAMW_SCHEDULE_KIND_EXPONENTIAL_DECAY,
    piecewise_constant_decay = ADAMW_SCHEDULE_KIND_PIECEWISE_CONSTANT_DECAY,
    polynomial_decay = ADAMW_SCHEDULE_KIND_POLYNOMIAL_DECAY,
    inverse_time_decay = ADAMW_SCHEDULE_KIND_INVERSE_TIME_DECAY,
    cosine_decay = ADAMW_SCHEDULE_KIND_COSINE_DECAY,
    cosine_decay_restarts = ADAMW_SCHEDULE_KIND_COSINE_DECAY_RESTARTS,
};

/// adamw_device_kind: where an optimizer's state lives (see Optimizer::set_device).
enum class DeviceKind : std::uint32_t {
    cpu = ADAMW_DEVICE_KIND_CPU,
    cuda = ADAMW_DEVICE_KIND_CUDA,
    host_kernels = ADAMW_DEVICE_KIND_HOST_KERNELS,
};

/// The C value of a C++ enum, and back (the same numbers).
constexpr adamw_status to_c(Status s) noexcept { return static_cast<adamw_status>(s); }
constexpr adamw_dtype to_c(DType d) noexcept { return static_cast<adamw_dtype>(d); }
constexpr adamw_schedule_kind to_c(ScheduleKind k) noexcept { return static_cast<adamw_schedule_kind>(k); }
constexpr adamw_device_kind to_c(DeviceKind k) noexcept { return static_cast<adamw_device_kind>(k); }
constexpr Status from_c(adamw_status s) noexcept { return static_cast<Status>(s); }
constexpr DType from_c(adamw_dtype d) noexcept { return static_cast<DType>(d); }
constexpr ScheduleKind from_c(adamw_schedule_kind k) noexcept { return static_cast<ScheduleKind>(k); }
constexpr DeviceKind from_c(adamw_device_kind k) noexcept { return static_cast<DeviceKind>(k); }

/// The status's name, e.g. "ADAMW_STATUS_SHAPE_MISMATCH".
inline const char* status_name(Status status) noexcept {
    return adamw_status_name(static_cast<std::uint32_t>(status));
}

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

#if ADAMW_CPP_EXCEPTIONS
/// A failed call, thrown by the throwing twins: the status and the library's message.
class Error : public std::runtime_error {
   public:
    Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    /// Why the call failed.
    Status status() const noexcept { return status_; }
    /// The status's name, e.g. "ADAMW_STATUS_SHAPE_MISMATCH".
    const char* status_name() const noexcept { return adamw::status_name(status_); }

   private:
    Status status_;
};
#endif

namespace detail {

/// What every Result holds: its status and, for a failure, the message naming the cause.
class ResultBase {
   public:
    /// Whether the call succeeded (status() is Status::ok).
    bool ok() const noexcept { return status_ == Status::ok; }
    /// Status::ok, or why the call failed.
    Status status() const noexcept { return status_; }
    /// The library's message (and a callable's exception text); empty on success.
    const std::string& message() const noexcept { return message_; }
    /// The status's name, e.g. "ADAMW_STATUS_SHAPE_MISMATCH".
    const char* status_name() const noexcept { return adamw::status_name(status_); }

   protected:
    ResultBase() = default;
    ResultBase(Status status, std::string message) : status_(status), message_(std::move(message)) {}
    /// The value of a failure is a bug in the caller: thrown as an Error, or without
    /// exceptions printed before std::abort() (as std::optional's would be undefined).
    void expect_ok() const {
        if (ok()) return;
#if ADAMW_CPP_EXCEPTIONS
        throw Error(status_, message_);
#else
        std::fprintf(stderr, "adamw: value() of a failed Result: %s: %s\n", status_name(), message_.c_str());
        std::abort();
#endif
    }

    Status status_ = Status::ok;
    std::string message_;
};

}  // namespace detail

/// The outcome of a try_ call: a T, or a failure's status and message.
template <class T>
class Result : public detail::ResultBase {
   public:
    /// A success holding `value`.
    Result(T value) : value_(std::move(value)) {}
    /// A failure: `status` (not Status::ok) and the message naming its cause.
    Result(Status status, std::string message) : ResultBase(status, std::move(message)) {}
    /// The value; a failure throws it as adamw::Error (without exceptions: prints and aborts).
    T& value() & {
        expect_ok();
        return *value_;
    }
    const T& value() const& {
        expect_ok();
        return *value_;
    }
    /// The value moved out (returned by value, so no reference outlives this Result).
    T value() && {
        expect_ok();
        return std::move(*value_);
    }

   private:
    std::optional<T> value_;
};

/// The outcome of a try_ call that returns nothing: success, or a status and message.
template <>
class Result<void> : public detail::ResultBase {
   public:
    /// A success.
    Result() = default;
    /// A failure: `status` (not Status::ok) and the message naming its cause.
    Result(Status status, std::string message) : ResultBase(status, std::move(message)) {}
    /// Nothing; a failure throws it as adamw::Error (without exceptions: prints and aborts).
    void value() const { expect_ok(); }
    /// This outcome carrying `value` on success, else the same failure. In
    /// `call(f, &x).with_value(x)` C++17 evaluates the call before the argument.
    template <class T>
    Result<T> with_value(T value) && {
        if (ok()) return Result<T>(std::move(value));
        return Result<T>(status_, std::move(message_));
    }
};

/// The library's version string and ABI version (compare with ADAMW_ABI_VERSION).
inline std::string version() { return adamw_version(); }
inline uint32_t abi_version() { return adamw_abi_version(); }

namespace detail {

/// Reads a string with the C ABI's size query: `c_function(args..., NULL, 0, &len)` gives its
/// length, a second call the text and its NUL. `out` is written only on success.
template <class CFunction, class... Args>
adamw_status read_string(std::string& out, CFunction c_function, Args... args) {
    std::size_t len = 0;
    adamw_status status = c_function(args..., nullptr, 0, &len);
    if (status != ADAMW_STATUS_OK) return status;
    std::string text(len + 1, '\0');
    status = c_function(args..., &text[0], text.size(), &len);
    text.resize(len);
    if (status == ADAMW_STATUS_OK) out = std::move(text);
    return status;
}

inline std::string last_error() {
    std::string message;
    read_string(message, adamw_last_error);
    return message;
}

/// The text of an exception a callable threw in the C call running on this thread. Per thread
/// because the library runs callables on the calling thread, so calls that other threads make
/// at the same time, on the same optimizer too, never see it.
inline std::string& callback_exception() {
    thread_local std::string text;
    return text;
}

/// Runs `c_call` (C calls returning the first failure's status) and returns its outcome: the
/// thread's last error, and the exception text of a callable that failed it (cleared first,
/// so the text is this call's own).
template <class CCall>
Result<void> run(CCall&& c_call) {
    callback_exception().clear();
    const adamw_status status = c_call();
    std::string thrown = std::exchange(callback_exception(), std::string());
    if (status == ADAMW_STATUS_OK) return Result<void>();
    std::string message = last_error();
    if (!thrown.empty()) message += " (" + thrown + ")";
    return Result<void>(from_c(status), std::move(message));
}

/// Calls `f` for the library: 0, or with exceptions 1 when `f` threw, its text (naming `who`)
/// kept for run(). Without exceptions there is nothing to catch.
template <class F>
int32_t guarded(const char* who, F&& f) noexcept {
#if ADAMW_CPP_EXCEPTIONS
    try {
        f();
        return 0;
    } catch (const std::exception& e) {
        callback_exception() = std::string(who) + " threw: " + e.what();
    } catch (...) {
        callback_exception() = std::string(who) + " threw a non-standard exception";
    }
    return 1;
#else
    (void)who;
    f();
    return 0;
#endif
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

/// One run of a step's tasks, as a parallel-for receives it (adamw_optimizer_set_parallel_for):
/// call `tasks(i)` for every i < tasks.size(), in any order, on any threads, concurrently, and
/// return when those calls have returned. Each task runs once however often its index is called,
/// and the tasks not run when the parallel-for returns run on the stepping thread.
class Tasks {
   public:
    Tasks(std::size_t n, adamw_task_fn task, void* data) noexcept : n_(n), task_(task), data_(data) {}
    std::size_t size() const noexcept { return n_; }
    void operator()(std::size_t index) const noexcept { task_(data_, index); }

   private:
    std::size_t n_;
    adamw_task_fn task_;
    void* data_;
};

/// The caller's parallel-for: any callable taking `const Tasks&` (see Optimizer::set_parallel_for).
using ParallelFor = std::function<void(const Tasks&)>;

namespace detail {

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
    static constexpr DType value = DType::float32;
};
template <>
struct dtype_of<double> {
    static constexpr DType value = DType::float64;
};
template <>
struct dtype_of<int64_t> {
    static constexpr DType value = DType::int64;
};
template <>
struct dtype_of<bfloat16_t> {
    static constexpr DType value = DType::bfloat16;
};
template <>
struct dtype_of<float16_t> {
    static constexpr DType value = DType::float16;
};
/// Whether T is a 16-bit float type (which master weights widen to float32).
template <class T>
constexpr bool is_16bit = dtype_of<T>::value == DType::bfloat16 || dtype_of<T>::value == DType::float16;

/// What an optimizer owns beside its handle, at a stable address (the callables' user_data):
/// its callables, and the lock its calls take.
struct State {
    std::function<double(int64_t)> learning_rate, beta_1, beta_2;
    std::function<void(double*, std::size_t)> all_reduce;
    ParallelFor parallel_for;
    // Recursive: a callable that calls its own optimizer gets BUSY from the library, as in C,
    // instead of a deadlock here.
    std::recursive_mutex mutex;

    /// Keeps `fn` (if set) as member F and points the C callback and its user_data at it.
    template <std::function<double(int64_t)> State::*F>
    void bind(const std::function<double(int64_t)>& fn, adamw_scalar_fn& c_fn, void*& user_data) {
        if (!fn) return;
        this->*F = fn;
        c_fn = &scalar_trampoline<F>;
        user_data = this;
    }
    template <std::function<double(int64_t)> State::*F>
    static int32_t scalar_trampoline(int64_t step, void* user_data, double* out) noexcept {
        auto& fn = static_cast<State*>(user_data)->*F;
        return guarded("the callable", [&] { *out = fn(step); });
    }
    /// An exception from the parallel-for is dropped: the tasks it did not run run in the library.
    static void parallel_for_trampoline(void* user_data, std::size_t n, adamw_task_fn task, void* data) noexcept {
        guarded("the parallel-for", [&] { static_cast<State*>(user_data)->parallel_for(Tasks(n, task, data)); });
        callback_exception().clear();
    }
    static int32_t all_reduce_trampoline(double* values, std::size_t count, void* user_data) noexcept {
        return guarded("the mesh all-reduce", [&] { static_cast<State*>(user_data)->all_reduce(values, count); });
    }
};

struct HandleDeleter {
    void operator()(adamw_optimizer* h) const noexcept { adamw_optimizer_free(h); }
};

/// Without exceptions, Gradient::with_dense marks an entry whose gradient's length differs from
/// its values' by pointing `indices` here (the library refuses dense and sparse together), and
/// try_apply_gradients / try_minimize report it with this message.
inline const int64_t length_mismatch_marker = 0;
inline const char* const length_mismatch_message = "the gradient's length differs from the variable's";

}  // namespace detail

/// A learning-rate schedule (Keras' six). Build one with the named constructors.
class Schedule {
   public:
    static Schedule exponential_decay(double initial_learning_rate, double decay_steps, double decay_rate,
                                      bool staircase = false) {
        Schedule s(ScheduleKind::exponential_decay);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = decay_steps;
        s.raw_.decay_rate = decay_rate;
        s.raw_.staircase = staircase ? 1 : 0;
        return s;
    }
    /// `values[i]` on the i-th interval of `boundaries`: INVALID_ARGUMENT unless there is one
    /// more value than boundaries (checked here: the C struct holds no count of values).
    static Result<Schedule> try_piecewise_constant_decay(std::vector<int64_t> boundaries, std::vector<double> values) {
        if (values.size() != boundaries.size() + 1)
            return Result<Schedule>(Status::invalid_argument,
                                    "The length of boundaries should be 1 less than the length of values.");
        Schedule s(ScheduleKind::piecewise_constant_decay);
        s.boundaries_ = std::move(boundaries);
        s.values_ = std::move(values);
        return s;
    }
#if ADAMW_CPP_EXCEPTIONS
    static Schedule piecewise_constant_decay(std::vector<int64_t> boundaries, std::vector<double> values) {
        return try_piecewise_constant_decay(std::move(boundaries), std::move(values)).value();
    }
#endif
    static Schedule polynomial_decay(double initial_learning_rate, double decay_steps,
                                     double end_learning_rate = 0.0001, double power = 1.0, bool cycle = false) {
        Schedule s(ScheduleKind::polynomial_decay);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = decay_steps;
        s.raw_.end_learning_rate = end_learning_rate;
        s.raw_.power = power;
        s.raw_.cycle = cycle ? 1 : 0;
        return s;
    }
    static Schedule inverse_time_decay(double initial_learning_rate, double decay_steps, double decay_rate,
                                       bool staircase = false) {
        Schedule s(ScheduleKind::inverse_time_decay);
        s.raw_.initial_learning_rate = initial_learning_rate;
        s.raw_.decay_steps = decay_steps;
        s.raw_.decay_rate = decay_rate;
        s.raw_.staircase = staircase ? 1 : 0;
        return s;
    }
    /// Cosine decay; `warmup_steps` > 0 adds Keras' linear warmup to `warmup_target` first.
    static Schedule cosine_decay(double initial_learning_rate, double decay_steps, double alpha = 0.0,
                                 double warmup_target = 0.0, double warmup_steps = 0.0) {
        Schedule s(ScheduleKind::cosine_decay);
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
        Schedule s(ScheduleKind::cosine_decay_restarts);
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
    /// Which of the six this is.
    ScheduleKind kind() const noexcept { return static_cast<ScheduleKind>(raw_.kind); }

    /// The C view; valid while this Schedule lives and is not modified.
    const adamw_schedule& raw() {
        raw_.boundaries = boundaries_.data();
        raw_.num_boundaries = boundaries_.size();
        raw_.values = values_.data();
        raw_.name = name_.empty() ? nullptr : name_.c_str();
        return raw_;
    }

   private:
    // Keras' defaults for `kind`. It cannot fail for a ScheduleKind; were it to (a library
    // without that kind), kind would stay 0, which creating the optimizer refuses.
    explicit Schedule(ScheduleKind kind) { adamw_schedule_init(static_cast<uint32_t>(kind), &raw_); }
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
    /// Variables with fewer dimensions are excluded from weight decay (an extension, 0 by
    /// default; 2 is llm.c's and nanoGPT's rule; see adamw_optimizer_set_weight_decay_min_ndim).
    Config& weight_decay_min_ndim(uint32_t n) {
        weight_decay_min_ndim_ = n;
        return *this;
    }
    /// Keras 3's gradient accumulation (see adamw_optimizer_set_gradient_accumulation_steps):
    /// every n-th apply_gradients updates the variables with the average of the n calls'
    /// gradients; 0 (the default) is off.
    Config& gradient_accumulation_steps(int64_t n) {
        gradient_accumulation_steps_ = n;
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
    uint32_t weight_decay_min_ndim_ = 0;
    int64_t gradient_accumulation_steps_ = 0;
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
    DType dtype = DType::float32;
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
        static_assert(detail::is_16bit<T>, "float32 gradients are for bfloat16 and float16 variables");
        return float32_gradient(none(variable, values)).with_dense(gradient.data(), gradient.size());
    }
    /// Float32 rows (accumulated in float32) for a bfloat16 or float16 variable with master weights.
    template <class T>
    static Gradient sparse_float32(std::size_t variable, span<T> values, span<const int64_t> indices,
                                   span<const float> rows) {
        static_assert(detail::is_16bit<T>, "float32 gradients are for bfloat16 and float16 variables");
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
        g.raw.dtype = to_c(detail::dtype_of<T>::value);
        g.raw.data = data;
        g.raw.len = len;
        return g;
    }
    /// The same entry with its gradient's dtype float32, for a 16-bit variable with master weights.
    static Gradient float32_gradient(Gradient g) {
        g.raw.dtype |= uint32_t{ADAMW_DTYPE_FLOAT32} << ADAMW_GRADIENT_DTYPE_SHIFT;
        return g;
    }
    /// The same entry with a dense gradient of `len` elements at `gradient`. A length other than
    /// the values' throws SHAPE_MISMATCH here; without exceptions the entry is marked, and
    /// try_apply_gradients and try_minimize report it.
    Gradient with_dense(const void* gradient, std::size_t len) const {
        Gradient g = *this;
        g.raw.dense = gradient;
        if (len != raw.len) {
#if ADAMW_CPP_EXCEPTIONS
            throw Error(Status::shape_mismatch, detail::length_mismatch_message);
#else
            g.raw.indices = &detail::length_mismatch_marker;
#endif
        }
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
    DType dtype;
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
    DType dtype;
    std::vector<std::size_t> shape;
    std::size_t size;
};

/// What an optimizer does with one model variable (adamw_optimizer_variable_properties).
struct VariableProperties {
    DType dtype;
    std::size_t ndim;
    bool decayed;   ///< its steps decay it: not excluded, weight-decay multiplier not 0
    bool excluded;  ///< by exclude_from_weight_decay or weight_decay_min_ndim
    bool has_master;
    double learning_rate_multiplier;
    double weight_decay_multiplier;
};

/// Where a step's gradient norms came from (adamw_norm_source).
enum class NormSource : std::uint32_t {
    none = ADAMW_NORM_SOURCE_NONE,
    clipnorm = ADAMW_NORM_SOURCE_CLIPNORM,
    global_clipnorm = ADAMW_NORM_SOURCE_GLOBAL_CLIPNORM,
    update_pass = ADAMW_NORM_SOURCE_UPDATE_PASS,
};

/// What the last step saw (adamw_optimizer_step_report).
struct StepReport {
    int64_t iterations;
    bool applied;                ///< false before any step and for a step the loss scale skipped
    std::optional<float> loss_scale;
    double global_norm;          ///< unscaled, before clipping; NaN when not computed
    double clip_factor;          ///< global_clipnorm's factor; 1 without a clip; NaN per variable
    NormSource norms;
};

/// tf.keras.optimizers.AdamW. Move-only; the destructor frees the handle. Every fallible
/// method is a try_ method returning a Result; its throwing twin (with exceptions) is at the end.
class Optimizer {
   public:
    /// Creates an optimizer from `config` (the Result twin of the constructor).
    static Result<Optimizer> create(const Config& config) {
        adamw_config raw = config.raw_;
        adamw_schedule schedule_raw{};
        if (config.schedule_) {
            schedule_raw = config.schedule_->raw();
            raw.learning_rate_schedule = &schedule_raw;
        }
        raw.name = config.name_.empty() ? nullptr : config.name_.c_str();
        std::unique_ptr<detail::State> state(new detail::State);
        state->bind<&detail::State::learning_rate>(config.learning_rate_fn_, raw.learning_rate_fn,
                                                   raw.learning_rate_user_data);
        state->bind<&detail::State::beta_1>(config.beta_1_fn_, raw.beta_1_fn, raw.beta_1_user_data);
        state->bind<&detail::State::beta_2>(config.beta_2_fn_, raw.beta_2_fn, raw.beta_2_user_data);
        if (config.all_reduce_) {
            state->all_reduce = config.all_reduce_;
            raw.mesh_all_reduce = &detail::State::all_reduce_trampoline;
            raw.mesh_user_data = state.get();
        }
        adamw_optimizer* h = nullptr;
        Result<void> made = detail::run([&] {
            adamw_status status = adamw_optimizer_new(&raw, &h);
            if (status == ADAMW_STATUS_OK && config.master_weights_) status = adamw_optimizer_set_master_weights(h, 1);
            if (status == ADAMW_STATUS_OK && config.weight_decay_min_ndim_ != 0) {
                status = adamw_optimizer_set_weight_decay_min_ndim(h, config.weight_decay_min_ndim_);
            }
            if (status == ADAMW_STATUS_OK && config.gradient_accumulation_steps_ != 0) {
                status = adamw_optimizer_set_gradient_accumulation_steps(h, config.gradient_accumulation_steps_);
            }
            if (status == ADAMW_STATUS_OK && config.loss_scale_) {
                status = adamw_optimizer_set_loss_scale(h, config.dynamic_ ? 1 : 0, config.initial_scale_,
                                                        config.dynamic_growth_steps_);
            }
            return status;
        });
        Optimizer opt(h, std::move(state));  // frees the handle if a setter failed
        return std::move(made).with_value(std::move(opt));
    }

    /// Keras' from_config(): an optimizer from get_config() JSON.
    static Result<Optimizer> try_from_config(const std::string& json) {
        adamw_optimizer* h = nullptr;
        Result<void> made = detail::run([&] { return adamw_optimizer_from_config_json(json.data(), json.size(), &h); });
        return std::move(made).with_value(Optimizer(h, std::unique_ptr<detail::State>(new detail::State)));
    }

    /// The compiled optimizer's config in a `.keras` archive, as JSON for from_config().
    static Result<std::string> try_keras_file_optimizer_config(const std::string& path) {
        std::string json;
        return detail::run([&] { return detail::read_string(json, adamw_keras_file_optimizer_config, path.c_str()); })
            .with_value(std::move(json));
    }

    Optimizer(Optimizer&&) noexcept = default;
    Optimizer& operator=(Optimizer&&) noexcept = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// The C handle, for calls the wrapper does not cover; still owned by this object. Calls
    /// made through it bypass this wrapper's lock (the library still serializes them).
    adamw_optimizer* handle() const noexcept { return handle_.get(); }

    /// The current loss scale (multiply the loss by it) and the finite steps since it changed;
    /// INVALID_ARGUMENT without a loss scale.
    Result<std::pair<float, int64_t>> try_loss_scale() const {
        float scale = 0;
        int64_t counter = 0;
        return call(adamw_optimizer_loss_scale, &scale, &counter).with_value(std::make_pair(scale, counter));
    }

    /// Keras' get_config() as JSON.
    Result<std::string> try_get_config() const {
        std::string json;
        return call([&](adamw_optimizer* h) { return detail::read_string(json, adamw_optimizer_get_config, h); })
            .with_value(std::move(json));
    }

    /// The iteration counter: the steps applied, plus any preset.
    Result<int64_t> try_iterations() const {
        int64_t it = 0;
        return call(adamw_optimizer_iterations, &it).with_value(it);
    }
    /// Presets the iteration counter (before build).
    Result<void> try_set_iterations(int64_t iterations) { return call(adamw_optimizer_set_iterations, iterations); }
    /// The apply_gradients calls counted (Keras 3's `_iterations`): with gradient accumulation
    /// of n calls, iterations() is calls() / n; without, the two are the same.
    Result<int64_t> try_calls() const {
        int64_t calls = 0;
        return call(adamw_optimizer_gradient_accumulation, static_cast<int64_t*>(nullptr), &calls).with_value(calls);
    }
    /// The float32 learning rate of the last step (before any: at step 0).
    Result<float> try_learning_rate() const {
        float lr = 0;
        return call(adamw_optimizer_current_learning_rate, &lr).with_value(lr);
    }
    /// A constant learning rate from the next step on (INVALID_ARGUMENT with a schedule or callable).
    Result<void> try_set_learning_rate(double learning_rate) {
        return call(adamw_optimizer_set_learning_rate, learning_rate);
    }

    /// Before build: variables (indices into build's list) and regex patterns excluded from decay.
    Result<void> try_exclude_from_weight_decay(const std::vector<std::size_t>& variables,
                                               const std::vector<std::string>& patterns = {}) {
        std::vector<const char*> raw;
        for (const auto& p : patterns) raw.push_back(p.c_str());
        return call(adamw_optimizer_exclude_from_weight_decay, variables.data(), variables.size(), raw.data(),
                    raw.size());
    }

    /// Builds the state over `variables`; afterwards a variable is named by its index here.
    Result<void> try_build(const std::vector<Variable>& variables) {
        std::vector<adamw_variable> raw = describe(variables);
        return call(adamw_optimizer_build, raw.data(), raw.size());
    }

    /// Adds variables after build (adamw_optimizer_add_variables): numbered after the built
    /// ones, their state as build makes it, names new; not with a mesh or on a device.
    Result<void> try_add_variables(const std::vector<Variable>& variables) {
        std::vector<adamw_variable> raw = describe(variables);
        return call(adamw_optimizer_add_variables, raw.data(), raw.size());
    }

   private:
    static std::vector<adamw_variable> describe(const std::vector<Variable>& variables) {
        std::vector<adamw_variable> raw;
        raw.reserve(variables.size());
        for (const auto& v : variables) {
            adamw_variable r{};
            r.name = v.name.c_str();
            r.dtype = to_c(v.dtype);
            r.ndim = v.shape.size();
            r.shape = v.shape.data();
            r.data = v.data;
            r.sharded = v.sharded ? 1 : 0;
            r.shard_offset = v.shard_offset;
            r.shard_len = v.shard_len;
            raw.push_back(r);
        }
        return raw;
    }

   public:

    /// Moves the optimizer to a device before build (adamw_optimizer_set_device): its state lives
    /// there, its steps run there with the CPU's bits, and gradients take device_span buffers.
    Result<void> try_set_device(DeviceKind kind, uint32_t ordinal = 0) {
        return call(adamw_optimizer_set_device, static_cast<uint32_t>(kind), ordinal);
    }

    /// The CUDA stream (a cudaStream_t) that steps are enqueued on (adamw_optimizer_set_stream).
    Result<void> try_set_stream(void* stream) { return call(adamw_optimizer_set_stream, stream); }

    /// Changes the thread setting (see Config::threads).
    Result<void> try_set_threads(uint32_t threads) { return call(adamw_optimizer_set_threads, threads); }

    /// Runs the tasks of every step on the caller's threads (adamw_optimizer_set_parallel_for):
    /// `fn` is any callable taking `const Tasks&`; an empty one restores Config::threads. The
    /// results are the same bits whatever it does; with one set the library starts no thread.
    /// With OpenMP:
    ///   opt.set_parallel_for([](const adamw::Tasks& tasks) {
    ///   #pragma omp parallel for schedule(static)
    ///       for (long i = 0; i < long(tasks.size()); i++) tasks(std::size_t(i));
    ///   });
    Result<void> try_set_parallel_for(ParallelFor fn) {
        std::lock_guard<std::recursive_mutex> lock(state_->mutex);
        adamw_parallel_for_fn c_fn = fn ? &detail::State::parallel_for_trampoline : nullptr;
        ParallelFor previous = std::exchange(state_->parallel_for, std::move(fn));
        Result<void> set = call(adamw_optimizer_set_parallel_for, c_fn, static_cast<void*>(state_.get()));
        if (!set.ok()) state_->parallel_for = std::move(previous);
        return set;
    }

    /// Reserves room for sparse gradients of up to `max_indices` indices (no allocation later).
    Result<void> try_reserve_sparse(std::size_t max_indices) {
        return call(adamw_optimizer_reserve_sparse, max_indices);
    }

    /// One step; returns the new iteration count.
    Result<int64_t> try_apply_gradients(span<const Gradient> gradients) {
        if (has_length_mismatch(gradients))
            return Result<int64_t>(Status::shape_mismatch, detail::length_mismatch_message);
        int64_t it = 0;
        return call(adamw_optimizer_apply_gradients, raw_entries(gradients), gradients.size(), &it).with_value(it);
    }
    Result<int64_t> try_apply_gradients(std::initializer_list<Gradient> gradients) {
        return try_apply_gradients(span<const Gradient>(gradients.begin(), gradients.size()));
    }

    /// Keras' minimize: `compute()` fills the gradient buffers of `gradients` from the current
    /// values (an exception from it fails the call and changes nothing), then the step runs.
    template <class Compute>
    Result<int64_t> try_minimize(span<const Gradient> gradients, Compute&& compute) {
        if (has_length_mismatch(gradients))
            return Result<int64_t>(Status::shape_mismatch, detail::length_mismatch_message);
        using Fn = std::remove_reference_t<Compute>;
        adamw_gradient_fn trampoline = [](void* user_data, const adamw_gradient*, std::size_t) noexcept -> int32_t {
            return detail::guarded("the gradient callable", [&] { (*static_cast<Fn*>(user_data))(); });
        };
        void* user_data = const_cast<void*>(static_cast<const void*>(&compute));
        int64_t it = 0;
        return call(adamw_optimizer_minimize, raw_entries(gradients), gradients.size(), trampoline, user_data, &it)
            .with_value(it);
    }

    /// With EMA, each listed variable takes its moving average's value (Keras' name).
    template <class T>
    Result<void> try_finalize_variable_values(const std::vector<std::pair<std::size_t, span<T>>>& variables) {
        return finalize<T>(variables);
    }
    /// finalize_variable_values over variables in device memory (an optimizer on a device).
    template <class T>
    Result<void> try_finalize_variable_values_on_device(
        const std::vector<std::pair<std::size_t, device_span<T>>>& variables) {
        return finalize<T>(variables);
    }

    /// Keras' len(optimizer.variables).
    Result<std::size_t> try_num_variables() const {
        std::size_t n = 0;
        return call(adamw_optimizer_num_variables, &n).with_value(n);
    }
    /// The description of optimizer variable `index` (Keras' order).
    Result<VariableInfo> try_variable_info(std::size_t index) const {
        VariableInfo info;
        return call([&](adamw_optimizer* h) { return read_info(h, index, info); }).with_value(std::move(info));
    }
    /// Model variable `variable`'s learning-rate and weight-decay multipliers, from the next step
    /// on (after build; 1 and 1 is Keras' step; see adamw_optimizer_set_variable_multipliers).
    Result<void> try_set_variable_multipliers(std::size_t variable, double learning_rate_multiplier,
                                              double weight_decay_multiplier) {
        return call(adamw_optimizer_set_variable_multipliers, variable, learning_rate_multiplier,
                    weight_decay_multiplier);
    }
    /// What the optimizer does with model variable `variable` (after build).
    Result<VariableProperties> try_variable_properties(std::size_t variable) const {
        adamw_variable_properties raw{};
        return call(adamw_optimizer_variable_properties, variable, &raw)
            .with_value(VariableProperties{static_cast<DType>(raw.dtype), raw.ndim, raw.decayed != 0,
                                           raw.excluded != 0, raw.has_master != 0, raw.learning_rate_multiplier,
                                           raw.weight_decay_multiplier});
    }
    /// Resets model variable `variable`'s optimizer state as build made it (m, v, vhat zeroed;
    /// the EMA average and a master from `values`, the variable's new values; see
    /// adamw_optimizer_reset_variable). Without EMA or masters, reset_variable(v) needs no values.
    template <class T>
    Result<void> try_reset_variable(std::size_t variable, span<const T> values) {
        return call(adamw_optimizer_reset_variable, variable, static_cast<uint32_t>(to_c(detail::dtype_of<T>::value)),
                    static_cast<const void*>(values.data()), values.size());
    }
    Result<void> try_reset_variable(std::size_t variable) {
        return call(adamw_optimizer_reset_variable, variable, static_cast<uint32_t>(ADAMW_DTYPE_FLOAT32),
                    static_cast<const void*>(nullptr), std::size_t{0});
    }
    /// What the last step saw (no cost; see adamw_optimizer_step_report).
    Result<StepReport> try_step_report() const {
        adamw_step_report raw{};
        return call(adamw_optimizer_step_report, &raw)
            .with_value(StepReport{raw.iterations, raw.applied != 0,
                                   raw.has_loss_scale != 0 ? std::optional<float>(raw.loss_scale) : std::nullopt,
                                   raw.global_norm, raw.clip_factor, static_cast<NormSource>(raw.norms)});
    }
    /// Per model variable, its gradient's norm in the last step (NaN when not listed or not computed).
    Result<std::vector<double>> try_gradient_norms(std::size_t num_variables) const {
        std::vector<double> norms(num_variables);
        return call(adamw_optimizer_gradient_norms, norms.data(), norms.size()).with_value(std::move(norms));
    }
    /// Whether steps without a clip by norm compute the norms in the update pass (off by default).
    Result<void> try_set_report_gradient_norms(bool enabled) {
        return call(adamw_optimizer_set_report_gradient_norms, static_cast<uint8_t>(enabled ? 1 : 0));
    }
    /// A copy of optimizer variable `index` as T (int64_t for index 0, else the variable's dtype).
    template <class T>
    Result<std::vector<T>> try_variable(std::size_t index) const {
        std::vector<T> out;
        return call([&](adamw_optimizer* h) {
                   VariableInfo info;
                   adamw_status status = read_info(h, index, info);
                   if (status != ADAMW_STATUS_OK) return status;
                   out.resize(info.size);
                   return adamw_optimizer_get_variable(h, index, to_c(detail::dtype_of<T>::value), out.data(),
                                                       out.size());
               })
            .with_value(std::move(out));
    }
    /// Keras' set_weights: assigns weights[i] to optimizer variable i (0 is the int64 counter).
    Result<void> try_set_weights(const std::vector<Weight>& weights) {
        std::vector<adamw_weight> raw;
        for (const auto& w : weights)
            raw.push_back(adamw_weight{to_c(w.dtype), w.shape.size(), w.shape.data(), w.data});
        return call(adamw_optimizer_set_weights, raw.data(), raw.size());
    }

    /// Keras' save_own_variables, as bytes (safetensors; see README).
    Result<std::vector<std::byte>> try_save() const {
        std::vector<std::byte> bytes;
        return call([&](adamw_optimizer* h) {
                   std::size_t len = 0;
                   adamw_status status = adamw_optimizer_save_own_variables(h, nullptr, 0, &len);
                   if (status != ADAMW_STATUS_OK) return status;
                   bytes.resize(len);
                   return adamw_optimizer_save_own_variables(h, bytes_of(bytes.data()), bytes.size(), &len);
               })
            .with_value(std::move(bytes));
    }
    /// Keras' load_own_variables: every optimizer variable from save()'s bytes.
    Result<void> try_load(span<const std::byte> bytes) {
        return call(adamw_optimizer_load_own_variables, bytes_of(bytes.data()), bytes.size());
    }
    /// Loads what every rank of another sharding saved (save()'s bytes, in any order; one
    /// unsharded checkpoint is one rank) into this built optimizer's own shards, or its whole
    /// state if unsharded (adamw_optimizer_load_shards). Each rank of the new sharding passes
    /// all the checkpoints; CHECKPOINT_MISMATCH names a missing or overlapping shard.
    Result<void> try_load_shards(const std::vector<span<const std::byte>>& checkpoints) {
        std::vector<const uint8_t*> data;
        std::vector<std::size_t> lens;
        for (const auto& c : checkpoints) {
            data.push_back(bytes_of(c.data()));
            lens.push_back(c.size());
        }
        return call(adamw_optimizer_load_shards, data.data(), lens.data(), checkpoints.size());
    }
    /// Saves to a file atomically (temporary file, flush, rename): a failure leaves the old file.
    Result<void> try_save_file(const std::string& path) const { return call(adamw_optimizer_save_file, path.c_str()); }
    /// Loads a file written by save_file (Status::io if it cannot be read).
    Result<void> try_load_file(const std::string& path) { return call(adamw_optimizer_load_file, path.c_str()); }

    /// Keras' own files (README, "Keras' own files"): loads the optimizer state of a `.keras`
    /// archive or a `.weights.h5` file written by tf-keras into this built optimizer; every
    /// count, shape and dtype is checked first (Status::checkpoint_mismatch).
    Result<void> try_load_keras_file(const std::string& path) {
        return call(adamw_optimizer_load_keras_file, path.c_str());
    }
    /// Writes out_path: the Keras file template_path with its optimizer state replaced by this one's.
    Result<void> try_save_keras_file(const std::string& template_path, const std::string& out_path) const {
        return call(adamw_optimizer_save_keras_file, template_path.c_str(), out_path.c_str());
    }
    /// Loads a plain safetensors store (Keras' keys "0".."N-1", no libadamw metadata).
    Result<void> try_load_keras_store(span<const std::byte> bytes) {
        return call(adamw_optimizer_load_keras_store, bytes_of(bytes.data()), bytes.size());
    }

#if ADAMW_CPP_EXCEPTIONS
    // The throwing twins: each is its try_ method's value(), throwing adamw::Error on failure.

    /// Creates an optimizer from `config` (see create).
    explicit Optimizer(const Config& config) : Optimizer(create(config).value()) {}
    static Optimizer from_config(const std::string& json) { return try_from_config(json).value(); }
    static std::string keras_file_optimizer_config(const std::string& path) {
        return try_keras_file_optimizer_config(path).value();
    }
    std::pair<float, int64_t> loss_scale() const { return try_loss_scale().value(); }
    std::string get_config() const { return try_get_config().value(); }
    int64_t iterations() const { return try_iterations().value(); }
    int64_t calls() const { return try_calls().value(); }
    void set_iterations(int64_t iterations) { try_set_iterations(iterations).value(); }
    float learning_rate() const { return try_learning_rate().value(); }
    void set_learning_rate(double learning_rate) { try_set_learning_rate(learning_rate).value(); }
    void exclude_from_weight_decay(const std::vector<std::size_t>& variables,
                                   const std::vector<std::string>& patterns = {}) {
        try_exclude_from_weight_decay(variables, patterns).value();
    }
    void build(const std::vector<Variable>& variables) { try_build(variables).value(); }
    void add_variables(const std::vector<Variable>& variables) { try_add_variables(variables).value(); }
    void set_device(DeviceKind kind, uint32_t ordinal = 0) { try_set_device(kind, ordinal).value(); }
    void set_stream(void* stream) { try_set_stream(stream).value(); }
    void set_threads(uint32_t threads) { try_set_threads(threads).value(); }
    void set_parallel_for(ParallelFor fn) { try_set_parallel_for(std::move(fn)).value(); }
    void reserve_sparse(std::size_t max_indices) { try_reserve_sparse(max_indices).value(); }
    int64_t apply_gradients(span<const Gradient> gradients) { return try_apply_gradients(gradients).value(); }
    int64_t apply_gradients(std::initializer_list<Gradient> gradients) {
        return try_apply_gradients(gradients).value();
    }
    template <class Compute>
    int64_t minimize(span<const Gradient> gradients, Compute&& compute) {
        return try_minimize(gradients, std::forward<Compute>(compute)).value();
    }
    template <class T>
    void finalize_variable_values(const std::vector<std::pair<std::size_t, span<T>>>& variables) {
        try_finalize_variable_values(variables).value();
    }
    template <class T>
    void finalize_variable_values_on_device(const std::vector<std::pair<std::size_t, device_span<T>>>& variables) {
        try_finalize_variable_values_on_device(variables).value();
    }
    std::size_t num_variables() const { return try_num_variables().value(); }
    VariableInfo variable_info(std::size_t index) const { return try_variable_info(index).value(); }
    void set_variable_multipliers(std::size_t variable, double learning_rate_multiplier, double weight_decay_multiplier) {
        try_set_variable_multipliers(variable, learning_rate_multiplier, weight_decay_multiplier).value();
    }
    VariableProperties variable_properties(std::size_t variable) const {
        return try_variable_properties(variable).value();
    }
    StepReport step_report() const { return try_step_report().value(); }
    template <class T>
    void reset_variable(std::size_t variable, span<const T> values) {
        try_reset_variable<T>(variable, values).value();
    }
    void reset_variable(std::size_t variable) { try_reset_variable(variable).value(); }
    std::vector<double> gradient_norms(std::size_t num_variables) const {
        return try_gradient_norms(num_variables).value();
    }
    void set_report_gradient_norms(bool enabled) { try_set_report_gradient_norms(enabled).value(); }
    template <class T>
    std::vector<T> variable(std::size_t index) const {
        return try_variable<T>(index).value();
    }
    void set_weights(const std::vector<Weight>& weights) { try_set_weights(weights).value(); }
    std::vector<std::byte> save() const { return try_save().value(); }
    void load(span<const std::byte> bytes) { try_load(bytes).value(); }
    void load_shards(const std::vector<span<const std::byte>>& checkpoints) { try_load_shards(checkpoints).value(); }
    void save_file(const std::string& path) const { try_save_file(path).value(); }
    void load_file(const std::string& path) { try_load_file(path).value(); }
    void load_keras_file(const std::string& path) { try_load_keras_file(path).value(); }
    void save_keras_file(const std::string& template_path, const std::string& out_path) const {
        try_save_keras_file(template_path, out_path).value();
    }
    void load_keras_store(span<const std::byte> bytes) { try_load_keras_store(bytes).value(); }
#endif

   private:
    Optimizer(adamw_optimizer* h, std::unique_ptr<detail::State> state) : state_(std::move(state)), handle_(h) {}

    /// Runs `c_function(handle, args...)` (a C function, or a lambda making several C calls)
    /// under this optimizer's lock. The library serializes calls too, but its lock is invisible
    /// to ThreadSanitizer; this one orders the callables' own state for it, and keeps a size
    /// query and its read together.
    template <class CFunction, class... Args>
    Result<void> call(CFunction&& c_function, Args... args) const {
        if (!handle_) return Result<void>(Status::null_argument, "this optimizer was moved from");
        std::lock_guard<std::recursive_mutex> lock(state_->mutex);
        return detail::run([&] { return c_function(handle_.get(), args...); });
    }
    static adamw_status read_info(adamw_optimizer* h, std::size_t index, VariableInfo& out) {
        adamw_variable_info info{};
        adamw_status status = adamw_optimizer_variable_info(h, index, &info);
        if (status == ADAMW_STATUS_OK) status = detail::read_string(out.name, adamw_optimizer_variable_name, h, index);
        if (status != ADAMW_STATUS_OK) return status;
        out.dtype = static_cast<DType>(info.dtype);
        out.shape.assign(info.shape, info.shape + info.ndim);
        out.size = info.len;
        return status;
    }
    template <class T, class Span>
    Result<void> finalize(const std::vector<std::pair<std::size_t, Span>>& variables) {
        std::vector<adamw_variable_data> raw;
        for (const auto& v : variables) {
            raw.push_back(
                adamw_variable_data{v.first, to_c(detail::dtype_of<T>::value), v.second.data(), v.second.size()});
        }
        return call(adamw_optimizer_finalize_variable_values, raw.data(), raw.size());
    }
    static bool has_length_mismatch(span<const Gradient> gradients) {
        for (const Gradient& g : gradients)
            if (g.raw.indices == &detail::length_mismatch_marker) return true;
        return false;
    }
    static const adamw_gradient* raw_entries(span<const Gradient> gradients) {
        static_assert(sizeof(Gradient) == sizeof(adamw_gradient), "Gradient wraps adamw_gradient exactly");
        return gradients.size() ? &gradients[0].raw : nullptr;
    }
    static const uint8_t* bytes_of(const std::byte* bytes) { return reinterpret_cast<const uint8_t*>(bytes); }
    static uint8_t* bytes_of(std::byte* bytes) { return reinterpret_cast<uint8_t*>(bytes); }

    // Declared first so that it outlives the handle, which holds pointers into it.
    std::unique_ptr<detail::State> state_;
    std::unique_ptr<adamw_optimizer, detail::HandleDeleter> handle_;
};

}  // namespace adamw

#endif  // ADAMW_HPP

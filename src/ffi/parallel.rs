//! The caller's parallel-for: `adamw_optimizer_set_parallel_for`.

use std::ffi::c_void;
use std::sync::Arc;

use super::handle::{adamw_optimizer, with_optimizer};
use super::status::adamw_status;
use crate::parallel::ParallelFor;

/// One task of a step, as the library gives it to a parallel-for: call `task(task_data, i)`.
pub type adamw_task_fn = unsafe extern "C" fn(task_data: *mut c_void, index: usize);

/// The caller's parallel-for: runs `task(task_data, i)` for every `i` in `0..n_tasks`, in any
/// order, on any threads, concurrently, and returns when every call it made has returned.
/// `user_data` is the pointer given to `adamw_optimizer_set_parallel_for`. See there for the
/// whole contract; with OpenMP:
/// ```c
/// static void omp_parallel_for(void *user_data, size_t n_tasks, adamw_task_fn task, void *task_data) {
///     (void)user_data;
///     #pragma omp parallel for schedule(static)
///     for (size_t i = 0; i < n_tasks; i++) task(task_data, i);
/// }
/// ```
pub type adamw_parallel_for_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, n_tasks: usize, task: adamw_task_fn, task_data: *mut c_void)>;

/// A C parallel-for and its `user_data`.
struct CParallelFor {
    run: unsafe extern "C" fn(*mut c_void, usize, adamw_task_fn, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the header's contract for `adamw_optimizer_set_parallel_for`: the function and its
// `user_data` may be used from whichever thread steps the optimizer, for as long as they are set.
unsafe impl Send for CParallelFor {}
// SAFETY: as above; the library calls the hook from one thread at a time (steps are serialized).
unsafe impl Sync for CParallelFor {}

/// Runs the task whose closure `task_data` points at (a `&(dyn Fn(usize) + Sync)`).
unsafe extern "C" fn run_task(task_data: *mut c_void, index: usize) {
    // SAFETY: `task_data` is the address of the reference `run_tasks` passed, alive until it
    // returns (the caller's contract: no call after the hook returned).
    let task = unsafe { &*task_data.cast::<&(dyn Fn(usize) + Sync)>() };
    // The task catches its own panics (`parallel::Job`); nothing may unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(index)));
}

impl ParallelFor for CParallelFor {
    fn run_tasks(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let mut task = task;
        let task_data = (&mut task as *mut &(dyn Fn(usize) + Sync)).cast::<c_void>();
        // SAFETY: the caller's function, called as its type declares; `task_data` lives until
        // this returns.
        unsafe { (self.run)(self.user_data, n_tasks, run_task, task_data) }
    }
}

/// Runs the tasks of every step on the caller's threads: `parallel_for(user_data, n, task,
/// task_data)` must call `task(task_data, i)` for `i` in `0..n` and return when those calls
/// have returned. NULL `parallel_for` restores the threads of `adamw_config.threads`.
/// Contract:
///  - the calls may run in any order, on any threads, concurrently; `parallel_for` is called
///    from the thread that steps the optimizer, one step at a time;
///  - every pass of a step (clip norms, finite checks, the update, master rounding) goes
///    through it; its tasks are cut by the variables' shapes alone, never by a thread count, so
///    the results are the same bits whatever `parallel_for` does;
///  - each task is claimed once (an atomic flag), so calling an index twice runs nothing twice,
///    and tasks not run when `parallel_for` returns run on the calling thread before the step
///    goes on; a static schedule (the same indices on the same threads every step) keeps each
///    thread's part of the variables in its cache while the threads keep pace;
///  - one call `task(task_data, i)` may run many tasks, up to all of them: it goes on with the
///    tasks after `i` while they are unclaimed, then takes whatever is still unclaimed, and
///    returns once every task is claimed. No thread waits while another has tasks not yet
///    started, so the tasks balance whatever the schedule (a thread that starts late or runs
///    slowly finds its share taken over, and its calls return at once);
///  - `task` must not be called after `parallel_for` returned, and `parallel_for` must not call
///    this optimizer (it would return ADAMW_STATUS_BUSY);
///  - a call's dense updates are one list of tasks over all its variables (a task may end one
///    variable and start the next); a pass of at most 32K elements runs on the calling thread
///    without a call, so a small step (its dense updates 32K elements in all) makes none;
///  - with a hook set, libadamw starts no thread of its own. Callbacks, sharded all-reduce and
///    optimizers on a device (which keep the hook for nothing) work as without one.
///
/// Ownership: `user_data` is kept, never dereferenced, and must stay valid while set.
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not a handle), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_parallel_for(
    optimizer: *mut adamw_optimizer,
    parallel_for: adamw_parallel_for_fn,
    user_data: *mut c_void,
) -> adamw_status {
    let hook = parallel_for.map(|run| Arc::new(CParallelFor { run, user_data }) as Arc<dyn ParallelFor>);
    // SAFETY: the caller passes a live handle.
    unsafe {
        with_optimizer(optimizer, |s| {
            s.optimizer.set_parallel_for(hook);
            Ok(())
        })
    }
}

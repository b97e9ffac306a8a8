//! Who runs a step's tasks: the calling thread, libadamw's own pool, or the caller's threads
//! through a parallel-for hook ([`ParallelFor`]).
//!
//! A step cuts its passes into tasks by the shapes alone (never by the thread count), so the
//! bits are the same whoever runs them. Every run goes through a [`Job`]: a task is claimed by
//! setting its bit in an atomic flag word, so each runs exactly once however often a hook calls
//! it, a hook's call of a task goes on with the tasks still unclaimed (so the tasks balance
//! across the hook's threads whatever its schedule), whatever is left unclaimed when the hook
//! returns runs on the calling thread, and the run returns only once every task has finished.
//!
//! The pool's threads start at the first run that needs them (never when a hook is set). The
//! calling thread works too: a pool of N threads is the caller and N - 1 workers, each of which
//! takes the same share of the tasks every step (its part of the variables stays in its cache)
//! and then helps with what is left. A worker that runs out of work waits briefly for the next
//! run, then sleeps, so that it does not spin against the caller's own threads.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs a number of tasks on the caller's threads: what an engine with a thread pool of its own
/// (OpenMP, a job system, Go's scheduler) gives the optimizer instead of libadamw's pool.
///
/// Contract: `run_tasks(n, task)` calls `task(i)` for `i` in `0..n`, in any order, on any
/// threads, concurrently, and returns when those calls have returned. Each task is claimed
/// once (an atomic flag), so a call that repeats an index runs nothing twice, and tasks not run
/// when `run_tasks` returns run on the calling thread. One call `task(i)` may run many tasks,
/// up to all of them: it goes on with the tasks still unclaimed, and returns once every task is
/// claimed, so the work balances across the hook's threads whatever its schedule. Giving the
/// same indices to the same threads every step (a static schedule) keeps each thread's part of
/// the variables in its cache while the threads keep pace (one that starts late finds its share
/// taken over for that step). `run_tasks` must not return, nor unwind, before its calls of
/// `task` have returned, and `task` must not be called after it.
pub trait ParallelFor: Send + Sync {
    /// Runs `task(0)` .. `task(n_tasks - 1)` (see the trait's contract).
    fn run_tasks(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync));
}

impl<F: Fn(usize, &(dyn Fn(usize) + Sync)) + Send + Sync> ParallelFor for F {
    fn run_tasks(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        self(n_tasks, task)
    }
}

/// Cache lines of task flags in one [`Job`].
const JOB_LINES: usize = 64;
/// Tasks one [`Job`] holds at most (a claim bit and a finish bit each, 64 to a line); a run of
/// more is several jobs.
const JOB_TASKS: usize = JOB_LINES * 64;

/// The claim and finish flags of a run of consecutive tasks, alone in a cache line: threads
/// working on tasks of different lines (each participant's share, under a static schedule)
/// never write to a line another is using, so claiming and finishing a task cost no transfer
/// of a line between cores.
#[repr(align(64))]
struct TaskLine {
    /// One bit per task, set by the thread that claims it.
    claimed: AtomicU64,
    /// One bit per task, set when it has finished.
    finished: AtomicU64,
}

/// One run's tasks (at most [`JOB_TASKS`]), and who has claimed and finished them.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    /// Added to a task's index in the job to give its index in the run.
    first: usize,
    n_tasks: usize,
    /// Consecutive tasks per line: task `i` is bit `i % per_line` of line `i / per_line`.
    per_line: usize,
    lines: [TaskLine; JOB_LINES],
    panicked: AtomicBool,
    /// Set by a hook's call that found every task claimed.
    all_claimed: AtomicBool,
}

impl<'a> Job<'a> {
    fn new(task: &'a (dyn Fn(usize) + Sync), first: usize, n_tasks: usize) -> Self {
        debug_assert!(n_tasks <= JOB_TASKS);
        Job {
            task,
            first,
            n_tasks,
            per_line: n_tasks.div_ceil(JOB_LINES).max(1),
            lines: [const { TaskLine { claimed: AtomicU64::new(0), finished: AtomicU64::new(0) } }; JOB_LINES],
            panicked: AtomicBool::new(false),
            all_claimed: AtomicBool::new(false),
        }
    }

    /// Task `i`'s line and bit.
    fn flag(&self, i: usize) -> (&TaskLine, u64) {
        (&self.lines[i / self.per_line], 1u64 << (i % self.per_line))
    }

    /// Runs task `i` unless it is out of range or another thread claimed it first; whether it
    /// ran.
    fn run(&self, i: usize) -> bool {
        if i >= self.n_tasks {
            return false;
        }
        let (line, bit) = self.flag(i);
        // A plain read first: a claimed task costs no write to a line other threads are using.
        if line.claimed.load(Ordering::Relaxed) & bit != 0 || line.claimed.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return false;
        }
        // A panic must not unwind into a caller's thread (a C hook's, a worker's): it is
        // recorded and raised again on the calling thread once every task has finished.
        if catch_unwind(AssertUnwindSafe(|| (self.task)(self.first + i))).is_err() {
            self.panicked.store(true, Ordering::Relaxed);
        }
        // Release: the task's writes are seen by the thread that sees it finished.
        line.finished.fetch_or(bit, Ordering::Release);
        true
    }

    /// What a hook's call of task `i` does: runs it and the tasks after it while they are
    /// unclaimed, then whatever is still unclaimed below `i` and then at the end, each highest
    /// first (the order of [`Job::run_share`]: under an ascending schedule, away from where
    /// the other threads work). No thread of the hook's waits while a task is unclaimed, so the
    /// tasks balance across its threads whatever its schedule: under a static one, a thread
    /// that starts late or is slowed by another program would otherwise hold the others at the
    /// hook's barrier with its whole share. Once a call has found every task claimed, later
    /// calls return after one load.
    fn run_hooked(&self, i: usize) {
        if i >= self.n_tasks || self.all_claimed.load(Ordering::Relaxed) {
            return;
        }
        let stop = (i..self.n_tasks).find(|&j| !self.run(j)).unwrap_or(self.n_tasks);
        self.run_unclaimed_descending(0, i);
        self.run_unclaimed_descending(stop, self.n_tasks);
        // Claims are never undone: every task stays claimed.
        self.all_claimed.store(true, Ordering::Relaxed);
    }

    /// Runs every unclaimed task of `lo..hi`, the highest first, reading each line's claims
    /// as a word.
    fn run_unclaimed_descending(&self, lo: usize, hi: usize) {
        if lo >= hi {
            return;
        }
        for l in (lo / self.per_line..=(hi - 1) / self.per_line).rev() {
            let line = &self.lines[l];
            let start = l * self.per_line;
            // The bits of `lo..hi` in this line.
            let wanted = low_bits(hi.min(start + self.per_line) - start) & !low_bits(lo.saturating_sub(start));
            loop {
                let unclaimed = !line.claimed.load(Ordering::Relaxed) & wanted;
                if unclaimed == 0 {
                    break;
                }
                self.run(start + (63 - unclaimed.leading_zeros() as usize));
            }
        }
    }

    /// Runs the unclaimed tasks of participant `p`'s share of `participants` (the same tasks
    /// every step, so that each thread finds its part of the variables in its own cache), then
    /// any task still unclaimed, last first.
    fn run_share(&self, p: usize, participants: usize) {
        let (lo, hi) = (self.n_tasks * p / participants, self.n_tasks * (p + 1) / participants);
        (lo..hi).for_each(|i| _ = self.run(i));
        // Others' tasks from the ends of their shares, away from where their owners work.
        self.run_unclaimed_descending(0, lo);
        self.run_unclaimed_descending(hi, self.n_tasks);
    }

    /// Runs what is unclaimed, then waits for the tasks other threads are running.
    fn finish(&self) {
        (0..self.n_tasks).for_each(|i| _ = self.run(i));
        for (l, line) in self.lines.iter().enumerate().take(self.n_tasks.div_ceil(self.per_line)) {
            let tasks = self.per_line.min(self.n_tasks - l * self.per_line);
            let mut spins = 0u32;
            while line.finished.load(Ordering::Acquire) != low_bits(tasks) {
                spins += 1;
                if spins < 1 << 10 { std::hint::spin_loop() } else { std::thread::yield_now() }
            }
        }
        if self.panicked.load(Ordering::Relaxed) {
            panic!("a task of the step panicked");
        }
    }
}

/// A word with its lowest `n` bits set (`n` ≤ 64).
fn low_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// How a step's tasks are run: the engine's setting.
pub(crate) struct Workers {
    threads: usize,
    hook: Option<Arc<dyn ParallelFor>>,
    /// Started at the first run that needs it.
    own_pool: OnceLock<Option<Arc<Pool>>>,
}

impl Workers {
    /// `threads` as [`crate::Config::threads`] describes: 0 the process's shared pool, 1 the
    /// calling thread only, N a pool of N threads (the caller and N - 1 of this engine's own).
    pub const fn new(threads: usize) -> Self {
        Workers { threads, hook: None, own_pool: OnceLock::new() }
    }

    /// The caller's parallel-for, or `None` for the threads of [`Workers::new`].
    pub fn set_hook(&mut self, hook: Option<Arc<dyn ParallelFor>>) {
        self.hook = hook;
    }

    /// The caller's parallel-for, if set.
    pub fn hook(&self) -> Option<Arc<dyn ParallelFor>> {
        self.hook.clone()
    }

    /// Whether a run may use more than the calling thread.
    pub fn parallel(&self) -> bool {
        self.hook.is_some() || self.threads != 1
    }

    /// Runs `task(0)` .. `task(n_tasks - 1)`, each once, and returns when all have finished.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if n_tasks <= 1 || !self.parallel() {
            return (0..n_tasks).for_each(task);
        }
        for first in (0..n_tasks).step_by(JOB_TASKS) {
            let job = Job::new(task, first, (n_tasks - first).min(JOB_TASKS));
            match &self.hook {
                Some(hook) => {
                    // The job must outlive every task a hook started, even one that panicked.
                    let hooked = catch_unwind(AssertUnwindSafe(|| hook.run_tasks(job.n_tasks, &|i| job.run_hooked(i))));
                    job.finish();
                    if let Err(panic) = hooked {
                        std::panic::resume_unwind(panic);
                    }
                }
                None => {
                    if let Some(pool) = self.pool() {
                        pool.run(&job);
                    }
                    job.finish();
                }
            }
        }
    }

    fn pool(&self) -> Option<&Arc<Pool>> {
        self.own_pool
            .get_or_init(|| match self.threads {
                0 => shared_pool(),
                n => Pool::start(n - 1, "adamw").map(Arc::new),
            })
            .as_ref()
    }
}

/// The pool behind `threads = 0`: one per process, one thread per core (the caller is one).
fn shared_pool() -> Option<Arc<Pool>> {
    static SHARED: OnceLock<Option<Arc<Pool>>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Pool::start(cores - 1, "adamw-shared").map(Arc::new)
        })
        .clone()
}

/// How long a worker looks for the next run before it sleeps: long enough for the passes of a
/// step that follow each other (a sleeping worker takes tens of microseconds to wake), short
/// enough not to take a core from the caller's own threads for long after a step. Measured with
/// `tools/bench_threads.sh` (16 tensors, 3.15M parameters, 2 cores): 50 µs let the worker sleep
/// about once a step and ran 1.4-1.7x the time of an OpenMP loop; 1 ms ran 1.0-1.25x.
const WORKER_SPIN: Duration = Duration::from_millis(1);

/// Worker threads that help the calling thread with one run at a time.
struct Pool {
    shared: Arc<PoolShared>,
    /// Held by the run in progress: a second caller at the same time runs its tasks itself.
    running: Mutex<()>,
    /// The caller and the workers asked for: every share is cut by this count (a worker that
    /// could not start leaves its share to the others).
    participants: usize,
    workers: Vec<JoinHandle<()>>,
}

/// What the caller and the workers share. A run is handed over without a lock: the caller
/// publishes its job's address and bumps `generation`; a worker counts itself `inside`, then
/// reads the address. The caller withdraws the address, then waits until no worker is inside.
/// Every access to `job` and `inside` is SeqCst, so a worker that reads the address before it
/// is withdrawn is seen inside by the caller's wait, and one that counts itself in after that
/// wait reads no address.
struct PoolShared {
    /// Incremented for every run published and at shutdown.
    generation: AtomicU64,
    /// The run in progress (a `Job` on the calling thread's stack), or null.
    job: AtomicPtr<Job<'static>>,
    /// Workers that may be reading `job`.
    inside: AtomicUsize,
    /// Workers that have started.
    running: AtomicUsize,
    /// Workers asleep on `wake` (with `asleep` held), which a new run must wake.
    sleeping: AtomicUsize,
    /// The processor the calling thread was on when it published the run (`NO_CPU` if unknown).
    caller_cpu: AtomicUsize,
    stop: AtomicBool,
    asleep: Mutex<()>,
    wake: Condvar,
}

impl Pool {
    /// A pool of `workers` threads; `None` if no thread could be started (runs then stay on the
    /// calling thread).
    fn start(workers: usize, name: &str) -> Option<Self> {
        let shared = Arc::new(PoolShared {
            generation: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            inside: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            caller_cpu: AtomicUsize::new(NO_CPU),
            stop: AtomicBool::new(false),
            asleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 0..workers {
            let shared = Arc::clone(&shared);
            let participant = i + 1; // the calling thread is participant 0
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || shared.work(participant, workers + 1));
            match thread {
                Ok(handle) => handles.push(handle),
                Err(_) => break,
            }
        }
        if handles.is_empty() && workers > 0 {
            return None;
        }
        // Every worker is running before the first run: what a thread allocates as it starts is
        // done by then, never during a step.
        while shared.running.load(Ordering::Acquire) < handles.len() {
            std::thread::yield_now();
        }
        Some(Pool { shared, running: Mutex::new(()), participants: workers + 1, workers: handles })
    }

    /// Runs `job` on the workers and the calling thread; returns when the workers have left it
    /// (the tasks are then finished or unclaimed: [`Job::finish`] runs and waits for the rest).
    fn run(&self, job: &Job<'_>) {
        let _running = match self.running.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return, // `finish` runs them here
        };
        let shared = &*self.shared;
        // Seen by a worker that sees the new generation (SeqCst below): see `move_off`.
        shared.caller_cpu.store(current_cpu(), Ordering::Relaxed);
        // SAFETY (of the workers' dereference): the address is withdrawn below, and the caller
        // then waits until no worker is inside before `job` goes away (see `PoolShared`).
        shared.job.store((job as *const Job<'_>).cast_mut().cast(), Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        if shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _asleep = lock(&shared.asleep);
            shared.wake.notify_all();
        }
        job.run_share(0, self.participants);
        shared.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        while shared.inside.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _asleep = lock(&self.shared.asleep);
            self.shared.wake.notify_all();
        }
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

impl PoolShared {
    /// A worker's life: wait for a run, help with it, repeat until the pool stops.
    fn work(&self, participant: usize, participants: usize) {
        let mut seen = self.generation.load(Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::Release);
        loop {
            if !self.spin_for_news(seen) {
                self.sleep_until_news(seen);
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            seen = self.generation.load(Ordering::SeqCst);
            let caller_cpu = self.caller_cpu.load(Ordering::Relaxed);
            if caller_cpu != NO_CPU && current_cpu() == caller_cpu {
                move_off(caller_cpu);
            }
            self.inside.fetch_add(1, Ordering::SeqCst);
            let job = self.job.load(Ordering::SeqCst);
            if !job.is_null() {
                // SAFETY: the job is alive while `inside` counts this worker (see `PoolShared`).
                unsafe { &*job }.run_share(participant, participants);
            }
            self.inside.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Spins until the generation moves past `seen` (true) or [`WORKER_SPIN`] has passed.
    fn spin_for_news(&self, seen: u64) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..256 {
                if self.generation.load(Ordering::SeqCst) != seen {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() > WORKER_SPIN {
                return false;
            }
        }
    }

    /// Sleeps until the generation moves past `seen` (a run, or the pool's stop).
    fn sleep_until_news(&self, seen: u64) {
        let mut asleep = lock(&self.asleep);
        // SeqCst with the caller's bump then check of `sleeping`: either the caller sees this
        // worker asleep and wakes it, or this worker sees the new generation and does not wait.
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        while self.generation.load(Ordering::SeqCst) == seen {
            asleep = self.wake.wait(asleep).unwrap_or_else(|p| p.into_inner());
        }
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What [`current_cpu`] gives where the system does not say.
const NO_CPU: usize = usize::MAX;

/// The processor the calling thread runs on (Linux), or [`NO_CPU`].
fn current_cpu() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: no arguments; it reads the calling thread's state only.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu >= 0 {
            return cpu as usize;
        }
    }
    NO_CPU
}

/// Moves the calling worker to another of its allowed processors than `cpu`, the caller's,
/// where there is one. A worker woken by the caller can be queued on the caller's processor
/// while another stands idle, and stay there: measured on a 2-vCPU Linux 6.18 guest
/// (`perf sched timehist`), the caller and its one worker took turns on one processor for
/// hundreds of milliseconds, each step then slower than the caller alone. The thread's
/// allowed set is narrowed to move it, then given back at once, so the scheduler stays free to
/// place it afterwards.
fn move_off(cpu: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: the sets are plain values on this stack, passed with their size; the calls act
    // on the calling thread only (pid 0).
    unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize
            || libc::sched_getaffinity(0, size, &mut allowed) != 0
            || !libc::CPU_ISSET(cpu, &allowed)
        {
            return;
        }
        let mut elsewhere = allowed;
        libc::CPU_CLR(cpu, &mut elsewhere);
        if libc::CPU_COUNT(&elsewhere) > 0 && libc::sched_setaffinity(0, size, &elsewhere) == 0 {
            libc::sched_setaffinity(0, size, &allowed);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A mutable slice that the tasks of one run share, each taking its own range.
pub(crate) struct Disjoint<'a, T> {
    start: *mut T,
    len: usize,
    borrowed: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: tasks reach the elements only through `range`, whose ranges are disjoint (its
// contract), so no element is shared; T: Send lets them move to the tasks' threads.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        Disjoint { start: slice.as_mut_ptr(), len: slice.len(), borrowed: std::marker::PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Elements `start..end`, or an empty slice when the whole is empty (an unused slot).
    ///
    /// # Safety
    /// No two live results overlap: each task of a run takes its own range, and [`Workers::run`]
    /// runs each task once.
    #[allow(clippy::mut_from_ref)] // the point: disjoint ranges of one exclusive borrow
    pub unsafe fn range(&self, start: usize, end: usize) -> &'a mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        assert!(start <= end && end <= self.len, "a task's range lies within its slice");
        // SAFETY: in bounds (checked); exclusive by the caller's contract; alive for 'a.
        unsafe { std::slice::from_raw_parts_mut(self.start.add(start), end - start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: all zeros is an empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: a plain value on this stack, passed with its size, for the calling thread.
        assert_eq!(unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }, 0);
        // SAFETY: every index is below CPU_SETSIZE, within the set.
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_worker_on_the_callers_processor_moves_off_it_and_keeps_its_allowed_set() {
        // On a thread of its own, so that the test's thread keeps its own placement.
        std::thread::spawn(|| {
            let allowed = allowed_cpus();
            let here = current_cpu();
            assert!(allowed.contains(&here), "{here} among {allowed:?}");
            move_off(here);
            let moved_to = current_cpu();
            assert_eq!(allowed_cpus(), allowed, "the allowed set is given back");
            if allowed.len() > 1 {
                // Moved by the narrowed set; the scheduler may move it again later, so one
                // look right after the move.
                assert_ne!(moved_to, here, "moved off {here} (allowed {allowed:?})");
            }
            // A processor outside the set, or past any set, changes nothing.
            move_off(usize::MAX - 1);
            assert_eq!(allowed_cpus(), allowed);
        })
        .join()
        .unwrap();
    }

    fn squares(workers: &Workers, n: usize) -> Vec<u64> {
        let mut out = vec![0u64; n];
        let shared = Disjoint::new(&mut out);
        workers.run(n, &|i| {
            // SAFETY: task i takes element i only.
            let slot = unsafe { shared.range(i, i + 1) };
            slot[0] = (i * i) as u64;
        });
        out
    }

    #[test]
    fn every_task_runs_once_whoever_runs_it() {
        let want: Vec<u64> = (0..1000u64).map(|i| i * i).collect();
        for threads in [0, 1, 2, 3] {
            assert_eq!(squares(&Workers::new(threads), 1000), want, "threads = {threads}");
        }
        let hooks: Vec<(&str, Arc<dyn ParallelFor>)> = vec![
            ("reversed", Arc::new(|n: usize, task: &(dyn Fn(usize) + Sync)| (0..n).rev().for_each(task))),
            ("twice", Arc::new(|n: usize, task: &(dyn Fn(usize) + Sync)| (0..2 * n).for_each(|i| task(i % n)))),
            ("none", Arc::new(|_: usize, _: &(dyn Fn(usize) + Sync)| {})),
            ("half", Arc::new(|n: usize, task: &(dyn Fn(usize) + Sync)| (0..n / 2).for_each(task))),
            (
                "threads",
                Arc::new(|n: usize, task: &(dyn Fn(usize) + Sync)| {
                    std::thread::scope(|s| {
                        for t in 0..3 {
                            s.spawn(move || (t..n).step_by(3).for_each(task));
                        }
                    })
                }),
            ),
        ];
        for (name, hook) in hooks {
            let mut workers = Workers::new(1);
            workers.set_hook(Some(hook));
            assert_eq!(squares(&workers, 1000), want, "hook {name}");
        }
    }

    /// A hook that calls `first` on one thread, then, once that thread has returned from all
    /// its calls, `second` on another.
    fn hook_with_a_late_second_thread(
        first: fn(usize) -> std::ops::Range<usize>,
        second: fn(usize) -> std::ops::Range<usize>,
    ) -> Arc<dyn ParallelFor> {
        Arc::new(move |n: usize, task: &(dyn Fn(usize) + Sync)| {
            let first_done = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    first(n).for_each(task);
                    first_done.store(true, Ordering::Release);
                });
                s.spawn(|| {
                    while !first_done.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                    second(n).for_each(task);
                });
            })
        })
    }

    #[test]
    fn a_hooks_thread_that_finishes_its_share_takes_over_a_late_threads_share() {
        // A static schedule on two threads, the second of which starts only once the first
        // has returned from all its calls: the first runs every task.
        let ran_on: Vec<Mutex<Option<std::thread::ThreadId>>> = (0..1000).map(|_| Mutex::new(None)).collect();
        let mut workers = Workers::new(1);
        workers.set_hook(Some(hook_with_a_late_second_thread(|n| 0..n / 2, |n| n / 2..n)));
        workers.run(ran_on.len(), &|i| *lock(&ran_on[i]) = Some(std::thread::current().id()));
        let first = lock(&ran_on[0]).expect("task 0 ran");
        assert_ne!(first, std::thread::current().id(), "task 0 ran on a hook's thread");
        for (i, thread) in ran_on.iter().enumerate() {
            assert_eq!(*lock(thread), Some(first), "task {i} ran on the first thread");
        }
    }

    #[test]
    fn a_hooks_thread_takes_over_the_unclaimed_tasks_below_its_own() {
        // As above with the shares swapped: the first thread starts at the middle, runs to the
        // end, then takes the first half from its top down.
        let order = Mutex::new(Vec::new());
        let mut workers = Workers::new(1);
        workers.set_hook(Some(hook_with_a_late_second_thread(|n| n / 2..n, |n| 0..n / 2)));
        workers.run(1000, &|i| lock(&order).push((i, std::thread::current().id())));
        let order = order.into_inner().unwrap();
        let want: Vec<usize> = (500..1000).chain((0..500).rev()).collect();
        assert_eq!(order.iter().map(|&(i, _)| i).collect::<Vec<_>>(), want, "the order the tasks ran in");
        assert!(order.iter().all(|&(_, thread)| thread == order[0].1), "every task on the first thread");
    }

    #[test]
    fn a_descending_scan_runs_the_unclaimed_tasks_of_its_range_once_highest_first() {
        for n in [1usize, 63, 64, 65, 1000, JOB_TASKS] {
            for (lo, hi) in [(0, n), (0, n / 2), (n / 3, n), (n / 3 + 1, 2 * n / 3 + 5), (n - 1, n), (n / 2, n / 2)] {
                let hi = hi.min(n);
                let ran = Mutex::new(Vec::new());
                let task = |i: usize| lock(&ran).push(i);
                let job = Job::new(&task, 0, n);
                // Every seventh task claimed before the scan.
                (0..n).step_by(7).for_each(|i| _ = job.run(i));
                lock(&ran).clear();
                job.run_unclaimed_descending(lo, hi);
                let want: Vec<usize> = (lo..hi).rev().filter(|i| i % 7 != 0).collect();
                assert_eq!(*lock(&ran), want, "n {n}, {lo}..{hi}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "a task of the step panicked")]
    fn a_panicking_task_panics_on_the_calling_thread() {
        Workers::new(2).run(8, &|i| assert!(i != 5));
    }

    /// A measurement, not a check (it asserts nothing): the time of a run of about 20 µs of
    /// work cut into 4 to 4,096 tasks on a pool of two, the best of 300 rounds, in µs. Run with
    /// `cargo test --release --lib run_overhead -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn run_overhead() {
        let workers = Workers::new(2);
        let data: Vec<AtomicU64> = (0..JOB_TASKS).map(|_| AtomicU64::new(0)).collect();
        for n in [4usize, 8, 32, 256, 4096] {
            let mut best = f64::MAX;
            for _ in 0..300 {
                let start = Instant::now();
                for _ in 0..100 {
                    workers.run(n, &|i| {
                        let mut x = data[i].load(Ordering::Relaxed);
                        for _ in 0..20_000 / n {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                        data[i].store(x, Ordering::Relaxed);
                    });
                }
                best = best.min(start.elapsed().as_secs_f64() / 100.0);
            }
            eprint!("{n} tasks: {:.2} µs  ", best * 1e6);
        }
        eprintln!();
    }
}

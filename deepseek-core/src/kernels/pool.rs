//! The persistent worker pool every kernel splits its output over.
//!
//! Decoding one token dispatches a few hundred small parallel jobs, a few microseconds each. A
//! general-purpose pool (rayon) parks idle workers and wakes them through the kernel for every
//! job, and its caller blocks instead of working; here the caller takes tasks too, and idle
//! workers spin briefly before parking, so back-to-back jobs start at memory speed (the scheme
//! llama.cpp's thread pool uses).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Below this many multiply-adds per task, splitting costs more than it saves.
const MIN_WORK_PER_TASK: usize = 1 << 15;

/// Most threads a pool accepts. A count from a caller (a C or Python parameter) must not make us
/// spawn threads until the OS refuses: far past any core count, and llama.cpp's cap is 512.
pub const MAX_THREADS: usize = 1024;

/// How long an idle worker spins for the next job before parking. (Under Miri, whose clock
/// advances per instruction interpreted, spinning that long would dominate the tests.)
const SPIN: Duration = Duration::from_micros(if cfg!(miri) { 5 } else { 1500 });

/// The job of the current generation: a task function called with task indices.
type Task<'a> = &'a (dyn Fn(usize) + Sync);

/// State shared by the caller and the workers.
struct Shared {
    /// `generation (24 bits) | tasks (20 bits) | next task to claim (20 bits)`: one word, so a
    /// claim can only succeed for the job it saw.
    state: AtomicU64,
    /// The current job (valid while any of its tasks is unfinished); a `*const Task` erased.
    /// A pointer, not an address, so its provenance survives (Miri checks it strictly).
    job: AtomicPtr<()>,
    done: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

const IDX_BITS: u32 = 20;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;

fn unpack(s: u64) -> (u64, usize, usize) {
    (
        s >> (2 * IDX_BITS),
        ((s >> IDX_BITS) & IDX_MASK) as usize,
        (s & IDX_MASK) as usize,
    )
}

impl Shared {
    /// Claims and runs tasks of generation `gen` until none is left.
    fn work(&self, gen: u64) {
        let mut s = self.state.load(Acquire);
        loop {
            let (g, tasks, next) = unpack(s);
            if g != gen || next >= tasks {
                return;
            }
            match self.state.compare_exchange_weak(s, s + 1, AcqRel, Acquire) {
                Ok(_) => {
                    // SAFETY: our claimed task is unfinished, so the caller is still inside
                    // `run` and the job it published for this generation is alive.
                    let job: Task<'_> = unsafe { *self.job.load(Acquire).cast::<Task<'_>>() };
                    if catch_unwind(AssertUnwindSafe(|| job(next))).is_err() {
                        self.panicked.store(true, Release);
                    }
                    self.done.fetch_add(1, AcqRel);
                    s = self.state.load(Acquire);
                }
                Err(now) => s = now,
            }
        }
    }
}

/// A fixed set of worker threads, created once per model or session (never per matmul).
pub struct Pool {
    shared: Option<Arc<Shared>>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serialises callers: one job at a time.
    caller: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads)
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = unpack(shared.state.load(Acquire)).0;
    loop {
        // Spin for the next generation, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let gen = loop {
            let g = unpack(shared.state.load(Acquire)).0;
            if g != seen || shared.stop.load(Acquire) {
                break g;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                shared.sleepers.fetch_add(1, SeqCst);
                while unpack(shared.state.load(SeqCst)).0 == seen && !shared.stop.load(SeqCst) {
                    guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                shared.sleepers.fetch_sub(1, SeqCst);
                continue;
            }
            std::hint::spin_loop();
        };
        if shared.stop.load(Acquire) {
            return;
        }
        seen = gen;
        shared.work(gen);
    }
}

impl Pool {
    /// A pool of `threads` workers, the caller counted (1 means run on the caller's thread).
    pub fn new(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::InvalidArgument("threads must be >= 1".into()));
        }
        if threads > MAX_THREADS {
            return Err(Error::InvalidArgument(format!(
                "threads {threads} exceeds the maximum of {MAX_THREADS}"
            )));
        }
        if threads == 1 {
            return Ok(Pool::serial());
        }
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut pool = Pool {
            shared: Some(shared.clone()),
            workers: Vec::new(),
            threads,
            caller: Mutex::new(()),
        };
        for i in 1..threads {
            let sh = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("deepseek-worker-{i}"))
                .spawn(move || worker(sh))
                .map_err(|e| {
                    Error::InvalidArgument(format!("cannot start {threads} threads: {e}"))
                })?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// A pool that runs everything on the caller's thread (for work already split by the caller).
    pub const fn serial() -> Self {
        Pool {
            shared: None,
            workers: Vec::new(),
            threads: 1,
            caller: Mutex::new(()),
        }
    }

    /// Number of threads, the caller counted.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(i)` for every `i < tasks` on the workers and the caller; returns when all ran.
    fn run(&self, tasks: usize, job: &(dyn Fn(usize) + Sync)) {
        let Some(shared) = &self.shared else {
            (0..tasks).for_each(job);
            return;
        };
        assert!(tasks < (1 << IDX_BITS), "too many tasks for one job");
        let _one_job_at_a_time = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        shared.done.store(0, Relaxed);
        shared.panicked.store(false, Relaxed);
        shared
            .job
            .store((&job as *const Task<'_>).cast_mut().cast(), Release);
        let (gen, _, _) = unpack(shared.state.load(Acquire));
        let gen = (gen + 1) & ((1 << 24) - 1);
        shared.state.store(
            (gen << (2 * IDX_BITS)) | ((tasks as u64) << IDX_BITS),
            SeqCst,
        );
        if shared.sleepers.load(SeqCst) > 0 {
            let _g = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        shared.work(gen);
        // Wait for tasks still running elsewhere; yield after a while in case their thread was
        // preempted (an oversubscribed machine), rather than spin against it.
        let mut spins = 0u32;
        while shared.done.load(Acquire) < tasks {
            spins = spins.saturating_add(1);
            if spins < 4096 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if shared.panicked.load(Acquire) {
            panic!("a worker task panicked");
        }
    }

    /// Runs `f` over disjoint sub-ranges covering `0..n`, in parallel when the work is large;
    /// `work_per_item` (multiply-adds per index) decides how many tasks are worth it.
    pub fn for_each_range<F>(&self, n: usize, work_per_item: usize, f: F)
    where
        F: Fn(std::ops::Range<usize>) + Sync,
    {
        let tasks_by_work = n.saturating_mul(work_per_item.max(1)) / MIN_WORK_PER_TASK;
        let tasks = (self.threads * 4).min(tasks_by_work).min(n);
        if self.shared.is_none() || tasks <= 1 {
            return f(0..n);
        }
        let per = n.div_ceil(tasks);
        self.run(tasks, &|k| {
            let r = (k * per).min(n)..((k + 1) * per).min(n);
            if !r.is_empty() {
                f(r)
            }
        });
    }

    /// Runs `f(i, part_i)` over the disjoint parts `buf[bounds[i]..bounds[i + 1]]`, in parallel;
    /// `work_per_part` (multiply-adds, on average) decides whether splitting is worth it.
    pub fn for_each_part<F>(&self, buf: &mut [f32], bounds: &[usize], work_per_part: usize, f: F)
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        assert!(
            bounds.windows(2).all(|w| w[0] <= w[1])
                && bounds.last().is_none_or(|&e| e <= buf.len()),
            "for_each_part: bounds must be sorted and inside the buffer"
        );
        let parts = bounds.len().saturating_sub(1);
        let base = PartPtr(buf.as_mut_ptr());
        self.for_each_range(parts, work_per_part, |r| {
            for i in r {
                // SAFETY: sorted bounds inside `buf` make the parts disjoint; each index is visited
                // by exactly one task, and all tasks end before `buf`'s borrow does.
                let part = unsafe {
                    std::slice::from_raw_parts_mut(base.at(bounds[i]), bounds[i + 1] - bounds[i])
                };
                f(i, part);
            }
        });
    }
}

/// The base pointer of a buffer split into disjoint parts.
#[derive(Clone, Copy)]
struct PartPtr(*mut f32);

impl PartPtr {
    #[inline]
    fn at(self, i: usize) -> *mut f32 {
        // SAFETY: callers stay within the buffer the pointer was taken from.
        unsafe { self.0.add(i) }
    }
}

// SAFETY: only used to hand disjoint parts to tasks that all end before the borrow does.
unsafe impl Send for PartPtr {}
// SAFETY: as above.
unsafe impl Sync for PartPtr {}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.stop.store(true, SeqCst);
            let _g = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

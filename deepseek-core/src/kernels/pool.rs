//! The persistent worker pool every kernel splits its output over.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Below this many multiply-adds per task, splitting costs more than it saves.
const MIN_WORK_PER_TASK: usize = 1 << 15;

/// A fixed set of worker threads, created once per model or session (never per matmul).
pub struct Pool {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads)
    }
}

impl Pool {
    /// A pool of `threads` workers (1 means run on the caller's thread).
    pub fn new(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::InvalidArgument("threads must be >= 1".into()));
        }
        let pool = if threads > 1 {
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("deepseek-worker-{i}"))
                .build()
                .map_err(|e| {
                    Error::InvalidArgument(format!("cannot start {threads} threads: {e}"))
                })?;
            Some(p)
        } else {
            None
        };
        Ok(Pool { pool, threads })
    }

    /// A pool that runs everything on the caller's thread (for work already split by the caller).
    pub const fn serial() -> Self {
        Pool {
            pool: None,
            threads: 1,
        }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` over disjoint sub-ranges covering `0..n`, in parallel when the work is large;
    /// `work_per_item` (multiply-adds per index) decides how many tasks are worth it.
    pub fn for_each_range<F>(&self, n: usize, work_per_item: usize, f: F)
    where
        F: Fn(std::ops::Range<usize>) + Sync,
    {
        let tasks_by_work = (n * work_per_item.max(1)) / MIN_WORK_PER_TASK;
        let tasks = (self.threads * 4).min(tasks_by_work).min(n);
        match &self.pool {
            Some(pool) if tasks > 1 => {
                let per = n.div_ceil(tasks);
                pool.install(|| {
                    (0..tasks).into_par_iter().for_each(|k| {
                        let r = (k * per).min(n)..((k + 1) * per).min(n);
                        if !r.is_empty() {
                            f(r)
                        }
                    })
                });
            }
            _ => f(0..n),
        }
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

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
}

//! Workers: `worker_threads = N` runs N current-thread tokio runtimes, each
//! on an OS thread of its own, like nginx's worker processes. Every worker
//! has its own socket on each listening address (`SO_REUSEPORT`: the kernel
//! spreads new connections over them), serves the connections it accepts on
//! its own thread until they end, and keeps its own idle upstream
//! connections, so nothing on the request path is locked by two workers.
//! Counts that must be exact process-wide (in-flight, `max_conns`,
//! `least_conn`) stay atomics in the shared runtime state.
//!
//! What exists once per process (signals, reloads, health checks, the
//! cluster, the admin API) runs on the thread that runs `main`, on a runtime
//! of its own; with one worker, that runtime is also the worker, like a
//! single nginx process.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

pub mod idle;

/// How many workers the process runs; set once, before any config is
/// turned into runtime state (upstream pools are sized by it).
static COUNT: OnceLock<usize> = OnceLock::new();

thread_local! {
    /// The worker this thread is (0 on a thread that is no worker's).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers run: 1 until [`start`] says otherwise.
pub fn count() -> usize {
    COUNT.get().copied().unwrap_or(1)
}

/// The worker running on this thread.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// `worker_threads` as configured, with 0 meaning one per CPU core.
pub fn resolve(worker_threads: usize) -> usize {
    match worker_threads {
        0 => thread::available_parallelism().map_or(1, NonZeroUsize::get),
        n => n,
    }
}

/// One worker's accepted connections, on a cache line of its own: each is
/// bumped by one worker only, and neighbours must not bounce between cores.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Accepted(AtomicU64);

/// The running workers: where to spawn each one's accept loops, and what
/// they have accepted.
#[derive(Debug)]
pub struct Workers {
    handles: Box<[Handle]>,
    accepted: Box<[Accepted]>,
}

impl Workers {
    /// The runtime this is called on, as the only worker.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> Workers {
        Workers::new(vec![Handle::current()])
    }

    fn new(handles: Vec<Handle>) -> Workers {
        let accepted = handles.iter().map(|_| Accepted::default()).collect();
        Workers {
            handles: handles.into_boxed_slice(),
            accepted,
        }
    }

    /// How many workers there are (at least one).
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on worker `worker`'s thread.
    pub fn spawn<F>(&self, worker: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handles[worker].spawn(task);
    }

    /// Counts a connection accepted by `worker`.
    pub fn accepted(&self, worker: usize) {
        self.accepted[worker].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted so far, by worker.
    pub fn accepted_counts(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .map(|a| a.0.load(Ordering::Relaxed))
            .collect()
    }
}

/// The workers' threads (none with one worker), to stop once the server is
/// done.
#[derive(Debug)]
pub struct Threads {
    /// Dropping a sender ends its worker's `block_on`.
    exits: Vec<oneshot::Sender<()>>,
    joins: Vec<thread::JoinHandle<()>>,
}

impl Threads {
    /// Stops every worker thread and waits for it. Connections still open
    /// (after `shutdown_timeout`) are cut, as the main runtime's are.
    pub fn stop(self) {
        drop(self.exits);
        for join in self.joins {
            // A worker that panicked has nothing left to stop.
            let _ = join.join();
        }
    }
}

/// Starts `count` workers and returns the runtime for the caller's thread
/// to `block_on`. With one worker that runtime is the worker; with more,
/// each gets a thread of its own (`sluice-worker-0`, ...) running a
/// current-thread runtime until [`Threads::stop`], and the returned
/// runtime serves no client. Call once per process.
pub fn start(count: usize) -> io::Result<(Runtime, Workers, Threads)> {
    let count = count.max(1);
    // A second call keeps the first count: the pools were sized by it.
    let _ = COUNT.set(count);
    let main = runtime(count == 1)?;
    let mut threads = Threads {
        exits: Vec::new(),
        joins: Vec::new(),
    };
    if count == 1 {
        let workers = Workers::new(vec![main.handle().clone()]);
        return Ok((main, workers, threads));
    }
    let mut handles = Vec::with_capacity(count);
    for worker in 0..count {
        let (ready, handle) = mpsc::channel();
        let (exit, exited) = oneshot::channel::<()>();
        let join = thread::Builder::new()
            .name(format!("sluice-worker-{worker}"))
            .spawn(move || run_worker(worker, &ready, exited))?;
        // An error here means the thread could not build its runtime;
        // `threads` drops, so the workers already started exit.
        let handle = handle
            .recv()
            .map_err(|_| io::Error::other("a worker thread died while starting"))??;
        handles.push(handle);
        threads.exits.push(exit);
        threads.joins.push(join);
    }
    Ok((main, Workers::new(handles), threads))
}

/// A worker's runtime: current-thread, with I/O and timers.
///
/// A lone worker (`sole`) yields the CPU once before its thread sleeps in
/// the kernel waiting for events. On a busy machine the threads that feed
/// it (clients, servers) run first, and by the time it asks the kernel
/// again their events are usually there: it goes on without sleeping, and
/// without waiting to be woken and scheduled again, which is where the
/// slowest of its requests spent their extra milliseconds. With one worker
/// this halved p99 (3.4 -> 1.3 ms in `bench/run.sh`, docs/benchmarks.md
/// run 11) at no measurable cost; on an idle machine the yield returns at
/// once, a system call per sleep. Several workers do not yield: they
/// sleep less often each, and yielding handed the CPU to one another,
/// which cost 10 % of the requests per second two workers served and 7 %
/// more CPU per request (p99 4.3 -> 2.0 ms).
fn runtime(sole: bool) -> io::Result<Runtime> {
    let mut builder = Builder::new_current_thread();
    builder.enable_all();
    if sole {
        builder.on_thread_park(thread::yield_now);
    }
    builder.build()
}

fn run_worker(
    worker: usize,
    ready: &mpsc::Sender<io::Result<Handle>>,
    exited: oneshot::Receiver<()>,
) {
    INDEX.set(worker);
    let runtime = match runtime(false) {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let _ = ready.send(Ok(runtime.handle().clone()));
    // A current-thread runtime runs its tasks only inside `block_on`.
    runtime.block_on(async {
        let _ = exited.await;
    });
    runtime.shutdown_background();
}

//! Several processes, one result (issue 12): data-parallel training and
//! sweeps across the ranks of an MPI job, bit-identical to one process.
//!
//! **The guarantee.** A step's global batch is cut into
//! `loop.micro_batches` micro-batches (by tokens, in batch order). Rank `r`
//! of `K` computes the block `[r M/K, (r+1) M/K)` and sums it in the fixed
//! pairwise tree of [`transformer::train::accumulate`]; the ranks then add
//! their block sums pairwise up the same tree ([`allreduce_tree`]: rank
//! `r` receives from `r + s` and adds, for `s = 1, 2, 4, ...`) and rank 0
//! sends the total back down it ([`broadcast_tree`]). Every process then
//! applies the same Adam update to the same weights. So 1 process (gradient
//! accumulation), 2 ranks and 4 ranks add the same numbers in the same
//! order, and their parameters, optimiser state and metrics are equal bit
//! for bit. This is done with point-to-point messages, not
//! `MPI_Allreduce`, whose order of addition is the library's choice.
//!
//! **Transport.** [`Collective`] is what the reduction needs: rank, size,
//! and blocking send / receive of `f32` buffers and bytes, each with a
//! deadline. Three implementations: [`Single`] (one process), [`Threads`]
//! (ranks as threads of one process, for tests and for checking the
//! arithmetic without MPI) and, with the `mpi` cargo feature, MPI through
//! the `mpi` crate (Open MPI from the Debian packages, started by
//! `mpirun`).
//!
//! **Failure.** A rank that never answers (a hung node) makes its partner
//! give up after [`timeout`] (`EXPERIMENTS_MPI_TIMEOUT_S`, default 300 s)
//! with a message naming both ranks, instead of waiting forever; under MPI
//! the job is then aborted. A rank that dies is noticed by `mpirun`, which
//! ends the job. Configs are compared by hash at start-up ([`agree`]).
//!
//! ```
//! use experiments::dist::{Threads, allreduce_tree};
//! // Four "ranks" as threads: everyone ends with ((a + b) + (c + d)).
//! let ranks = Threads::group(4, std::time::Duration::from_secs(5));
//! let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
//!     let handles: Vec<_> = ranks
//!         .iter()
//!         .enumerate()
//!         .map(|(r, c)| s.spawn(move || {
//!             let mut v = vec![[1e8f32, 1.0, -1e8, 1.0][r]];
//!             allreduce_tree(c, &mut v).unwrap();
//!             v
//!         }))
//!         .collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).collect()
//! });
//! assert!(sums.iter().all(|s| s == &vec![(1e8f32 + 1.0) + (-1e8 + 1.0)]));
//! ```

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use transformer::train::accumulate::{GradLayout, Micro, add_into, check_ranks, rank_block};
use transformer::{StepStats, Trainer};

/// What the fixed-order reduction needs from a transport: blocking
/// point-to-point messages between ranks, each with a deadline.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Sends `data` to rank `to`.
    fn send(&self, to: usize, data: &[f32]) -> Result<(), String>;
    /// Receives exactly `buf.len()` values from rank `from`.
    fn recv(&self, from: usize, buf: &mut [f32]) -> Result<(), String>;
    /// Sends a byte message to rank `to`.
    fn send_bytes(&self, to: usize, data: &[u8]) -> Result<(), String>;
    /// Receives a byte message from rank `from`, waiting at most the
    /// transport's timeout.
    fn recv_bytes(&self, from: usize) -> Result<Vec<u8>, String> {
        self.recv_bytes_within(from, None)
    }
    /// Receives a byte message from rank `from`, waiting at most `within`
    /// (`None`: the transport's timeout). A sweep's ranks finish their
    /// shares minutes apart: their final barrier waits longer than a step.
    fn recv_bytes_within(&self, from: usize, within: Option<Duration>) -> Result<Vec<u8>, String>;
}

/// How long a rank waits for a message before giving up:
/// `EXPERIMENTS_MPI_TIMEOUT_S` seconds (default 300: longer than a
/// validation pass or a checkpoint, which only rank 0 does while the
/// others wait).
pub fn timeout() -> Duration {
    let secs = std::env::var("EXPERIMENTS_MPI_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(300.0);
    Duration::from_secs_f64(secs)
}

fn timed_out(me: usize, other: usize, what: &str, after: Duration) -> String {
    format!(
        "rank {me}: no {what} rank {other} for {:.0} s: rank {other} has hung or died (raise \
         EXPERIMENTS_MPI_TIMEOUT_S if a step or a validation really takes that long)",
        after.as_secs_f64()
    )
}

/// One process: rank 0 of 1. Sending or receiving is an error (there is
/// nobody to talk to).
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn send(&self, to: usize, _: &[f32]) -> Result<(), String> {
        Err(format!("a single process has no rank {to} to send to"))
    }
    fn recv(&self, from: usize, _: &mut [f32]) -> Result<(), String> {
        Err(format!(
            "a single process has no rank {from} to receive from"
        ))
    }
    fn send_bytes(&self, to: usize, _: &[u8]) -> Result<(), String> {
        Err(format!("a single process has no rank {to} to send to"))
    }
    fn recv_bytes_within(&self, from: usize, _: Option<Duration>) -> Result<Vec<u8>, String> {
        Err(format!(
            "a single process has no rank {from} to receive from"
        ))
    }
}

enum Msg {
    F32(Vec<f32>),
    Bytes(Vec<u8>),
}

/// Ranks as threads of one process, over channels: the reduction's
/// arithmetic and failure handling, testable without MPI.
pub struct Threads {
    rank: usize,
    /// `to[r]`: the channel to rank r.
    to: Vec<Sender<Msg>>,
    /// `from[r]`: the channel from rank r.
    from: Vec<Mutex<Receiver<Msg>>>,
    timeout: Duration,
}

impl Threads {
    /// `size` connected ranks; receiving waits at most `timeout`.
    pub fn group(size: usize, timeout: Duration) -> Vec<Threads> {
        // channels[a][b]: a sends to b.
        let mut senders: Vec<Vec<Option<Sender<Msg>>>> = (0..size)
            .map(|_| (0..size).map(|_| None).collect())
            .collect();
        let mut receivers: Vec<Vec<Option<Receiver<Msg>>>> = (0..size)
            .map(|_| (0..size).map(|_| None).collect())
            .collect();
        for a in 0..size {
            for b in 0..size {
                let (tx, rx) = channel();
                senders[a][b] = Some(tx);
                receivers[b][a] = Some(rx);
            }
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| Threads {
                rank,
                to: to.into_iter().map(|s| s.expect("filled above")).collect(),
                from: from
                    .into_iter()
                    .map(|r| Mutex::new(r.expect("filled above")))
                    .collect(),
                timeout,
            })
            .collect()
    }

    fn take(&self, from: usize, what: &str, within: Option<Duration>) -> Result<Msg, String> {
        let rx = self.from[from]
            .lock()
            .map_err(|_| format!("rank {}: channel from {from} poisoned", self.rank))?;
        let wait = within.unwrap_or(self.timeout);
        rx.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => timed_out(self.rank, from, what, wait),
            RecvTimeoutError::Disconnected => {
                format!("rank {}: rank {from} is gone", self.rank)
            }
        })
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.to.len()
    }
    fn send(&self, to: usize, data: &[f32]) -> Result<(), String> {
        self.to[to]
            .send(Msg::F32(data.to_vec()))
            .map_err(|_| format!("rank {}: rank {to} is gone", self.rank))
    }
    fn recv(&self, from: usize, buf: &mut [f32]) -> Result<(), String> {
        match self.take(from, "values from", None)? {
            Msg::F32(v) if v.len() == buf.len() => {
                buf.copy_from_slice(&v);
                Ok(())
            }
            Msg::F32(v) => Err(format!(
                "rank {}: rank {from} sent {} values, expected {}",
                self.rank,
                v.len(),
                buf.len()
            )),
            Msg::Bytes(_) => Err(format!(
                "rank {}: rank {from} sent bytes, expected values",
                self.rank
            )),
        }
    }
    fn send_bytes(&self, to: usize, data: &[u8]) -> Result<(), String> {
        self.to[to]
            .send(Msg::Bytes(data.to_vec()))
            .map_err(|_| format!("rank {}: rank {to} is gone", self.rank))
    }
    fn recv_bytes_within(&self, from: usize, within: Option<Duration>) -> Result<Vec<u8>, String> {
        match self.take(from, "message from", within)? {
            Msg::Bytes(b) => Ok(b),
            Msg::F32(_) => Err(format!(
                "rank {}: rank {from} sent values, expected bytes",
                self.rank
            )),
        }
    }
}

fn check_power_of_two(c: &dyn Collective) {
    assert!(
        c.size().is_power_of_two(),
        "tree reduction over {} ranks: the rank count must be a power of two",
        c.size()
    );
}

/// Sums `local` over all ranks in the fixed tree (rank `r` adds rank
/// `r + s`'s partial sum into its own for `s = 1, 2, 4, ...`, its own as
/// the left operand), then gives every rank the total. The rank count must
/// be a power of two (a programming error otherwise: [`check_ranks`] says
/// so to the user first).
pub fn allreduce_tree(c: &dyn Collective, local: &mut [f32]) -> Result<(), String> {
    check_power_of_two(c);
    let (r, k) = (c.rank(), c.size());
    let mut s = 1;
    let mut other = Vec::new();
    while s < k {
        if r.is_multiple_of(2 * s) {
            other.resize(local.len(), 0.0);
            c.recv(r + s, &mut other)?;
            add_into(local, &other);
        } else {
            c.send(r - s, local)?;
            break;
        }
        s *= 2;
    }
    broadcast_tree(c, local)
}

/// Gives every rank rank 0's `buf`, down the same binomial tree.
pub fn broadcast_tree(c: &dyn Collective, buf: &mut [f32]) -> Result<(), String> {
    check_power_of_two(c);
    let (r, k) = (c.rank(), c.size());
    let mut s = k / 2;
    while s >= 1 {
        if r.is_multiple_of(2 * s) {
            c.send(r + s, buf)?;
        } else if r % (2 * s) == s {
            c.recv(r - s, buf)?;
        }
        s /= 2;
    }
    Ok(())
}

/// Gives every rank rank 0's bytes (`mine` is only read on rank 0). Any
/// rank count.
pub fn broadcast_bytes(c: &dyn Collective, mine: &[u8]) -> Result<Vec<u8>, String> {
    let (r, k) = (c.rank(), c.size());
    if r == 0 {
        for to in 1..k {
            c.send_bytes(to, mine)?;
        }
        Ok(mine.to_vec())
    } else {
        c.recv_bytes(0)
    }
}

/// Start-up agreement: every rank reports how its set-up went and a
/// fingerprint of what it is about to run (the config); rank 0 checks that
/// all succeeded with the same fingerprint and tells everyone. Returns the
/// same error on every rank if any failed or any fingerprint differs.
pub fn agree(c: &dyn Collective, mine: Result<u64, String>) -> Result<(), String> {
    agree_within(c, mine, None)
}

/// [`agree`], waiting at most `within` for the other ranks (`None`: the
/// transport's timeout).
pub fn agree_within(
    c: &dyn Collective,
    mine: Result<u64, String>,
    within: Option<Duration>,
) -> Result<(), String> {
    let encode = |m: &Result<u64, String>| match m {
        Ok(h) => format!("ok {h:016x}").into_bytes(),
        Err(e) => format!("err {e}").into_bytes(),
    };
    if c.size() == 1 {
        return mine.map(|_| ());
    }
    let verdict = if c.rank() == 0 {
        let mut all = vec![encode(&mine)];
        for from in 1..c.size() {
            all.push(c.recv_bytes_within(from, within)?);
        }
        let texts: Vec<String> = all
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let mut problems: Vec<String> = texts
            .iter()
            .enumerate()
            .filter_map(|(r, t)| t.strip_prefix("err ").map(|e| format!("rank {r}: {e}")))
            .collect();
        if problems.is_empty() && texts.iter().any(|t| t != &texts[0]) {
            let list: Vec<String> = texts
                .iter()
                .enumerate()
                .map(|(r, t)| format!("rank {r} {}", t.trim_start_matches("ok ")))
                .collect();
            problems.push(format!(
                "the ranks were started with different configs (fingerprints: {}); every rank \
                 must get the same flags and files",
                list.join(", ")
            ));
        }
        broadcast_bytes(c, problems.join("; ").as_bytes())?
    } else {
        c.send_bytes(0, &encode(&mine))?;
        c.recv_bytes_within(0, within)?
    };
    if verdict.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&verdict).into_owned())
    }
}

/// Waits until every rank has called it (a barrier over messages), at
/// most `within` (`None`: the transport's timeout).
pub fn barrier(c: &dyn Collective, within: Option<Duration>) -> Result<(), String> {
    agree_within(c, Ok(0), within)
}

/// Rank 0's stopping decision, given to every rank (a run with a wall-clock
/// budget stops when rank 0's clock says so): `code` is only read on rank 0.
pub fn decide(c: &dyn Collective, code: u8) -> Result<u8, String> {
    if c.size() == 1 {
        return Ok(code);
    }
    let b = broadcast_bytes(c, &[code])?;
    b.first()
        .copied()
        .ok_or_else(|| format!("rank {}: an empty decision from rank 0", c.rank()))
}

/// One data-parallel step: this rank computes its block of `micros` (all
/// the step's micro-batches, in order; every rank has them), the ranks sum
/// their blocks in the fixed tree, and every rank applies the same update.
/// Equal, bit for bit, to `trainer.step_micro(micros)` in one process.
pub fn step(
    c: &dyn Collective,
    trainer: &mut Trainer,
    micros: &[Micro<'_>],
) -> Result<StepStats, String> {
    step_timed(c, trainer, micros).map(|(s, _)| s)
}

/// Where a data-parallel step's time went on this rank.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTiming {
    /// Forward and backward of this rank's micro-batches and their sum.
    pub compute_s: f64,
    /// The tree all-reduce (waiting for partners included).
    pub reduce_s: f64,
    /// The optimiser update.
    pub update_s: f64,
}

/// [`step`], also saying where the time went (for the bench).
pub fn step_timed(
    c: &dyn Collective,
    trainer: &mut Trainer,
    micros: &[Micro<'_>],
) -> Result<(StepStats, StepTiming), String> {
    check_ranks(micros.len(), c.size())?;
    inject_fault(c.rank(), trainer.step);
    let layout = GradLayout::of(&mut trainer.model);
    let seed = trainer.step_seed();
    let block = rank_block(micros.len(), c.size(), c.rank());
    let clock = std::time::Instant::now();
    let mut sum = trainer.block_sum(&layout, micros, seed, block);
    let compute_s = clock.elapsed().as_secs_f64();
    if c.size() > 1 {
        allreduce_tree(c, &mut sum)?;
    }
    let reduce_s = clock.elapsed().as_secs_f64() - compute_s;
    let stats = trainer.apply_sum(&layout, &sum);
    let update_s = clock.elapsed().as_secs_f64() - compute_s - reduce_s;
    Ok((
        stats,
        StepTiming {
            compute_s,
            reduce_s,
            update_s,
        },
    ))
}

/// Fault injection for the failure tests: `EXPERIMENTS_FAULT=hang:R:S`
/// makes rank R stop answering before step S + 1 (a hung node), and
/// `exit:R:S` makes it exit with code 9 there (a dead one). Unset, it does
/// nothing.
fn inject_fault(rank: usize, step: u64) {
    static FAULT: OnceLock<Option<(String, usize, u64)>> = OnceLock::new();
    let fault = FAULT.get_or_init(|| {
        let v = std::env::var("EXPERIMENTS_FAULT").ok()?;
        let mut parts = v.split(':');
        let kind = parts.next()?.to_string();
        let r = parts.next()?.parse().ok()?;
        let s = parts.next()?.parse().ok()?;
        Some((kind, r, s))
    });
    if let Some((kind, r, s)) = fault
        && *r == rank
        && *s == step
    {
        eprintln!("rank {rank}: EXPERIMENTS_FAULT={kind} at step {step}");
        if kind == "exit" {
            std::process::exit(9);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

thread_local! {
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// This process's place in the job: MPI's world under `mpirun` (with the
/// `mpi` feature and after [`init`]), else a [`Single`] process. Inside
/// [`alone`], a [`Single`] process whatever the job.
pub fn world() -> &'static dyn Collective {
    static SINGLE: Single = Single;
    if ALONE.with(|a| a.get()) {
        return &SINGLE;
    }
    WORLD.get_or_init(|| Box::new(Single)).as_ref()
}

/// Runs `f` as a single process on this thread: how a sweep's rank trains
/// the runs dealt to it, each as on one machine.
pub fn alone<R>(f: impl FnOnce() -> R) -> R {
    let before = ALONE.with(|a| a.replace(true));
    let r = f();
    ALONE.with(|a| a.set(before));
    r
}

/// The rank count `mpirun` announced in the environment, if any.
fn launcher_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Keeps MPI initialised; finalises it when dropped (hold it in `main`).
pub struct Guard {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// Joins the MPI job if this process was started by `mpirun` (with the
/// `mpi` feature); otherwise this is a single process. Without the
/// feature, being started by `mpirun -np K` with K > 1 is an error: K
/// copies would each train alone and write the same folders.
pub fn init() -> Result<Guard, String> {
    #[cfg(feature = "mpi")]
    {
        if launcher_size().is_some() {
            let universe = mpi_backend::init()?;
            return Ok(Guard {
                _universe: Some(universe),
            });
        }
        Ok(Guard { _universe: None })
    }
    #[cfg(not(feature = "mpi"))]
    {
        match launcher_size() {
            Some(k) if k > 1 => Err(format!(
                "started by mpirun with {k} processes, but this binary was built without MPI: \
                 build it with `cargo build --release -p experiments --features mpi` (see the \
                 README, Distributed)"
            )),
            _ => Ok(Guard {}),
        }
    }
}

#[cfg(feature = "mpi")]
mod mpi_backend {
    //! The MPI transport: point-to-point messages polled against a
    //! deadline, so a hung rank becomes an error instead of a hang.

    use std::time::{Duration, Instant};

    use mpi::Threading;
    use mpi::point_to_point::{Destination, Source};
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;

    use super::{Collective, WORLD, timed_out, timeout};

    const TAG_F32: i32 = 11;
    const TAG_BYTES: i32 = 12;

    pub(super) struct Mpi {
        world: SimpleCommunicator,
        timeout: Duration,
    }

    // SAFETY: MPI is initialised with `Threading::Funneled` and only the
    // main thread talks to it: the training loop and the sweep's
    // coordinator run there (worker threads compute, never communicate).
    // The handle is a plain integer/pointer into the MPI library.
    unsafe impl Send for Mpi {}
    unsafe impl Sync for Mpi {}

    pub(super) fn init() -> Result<mpi::environment::Universe, String> {
        let (universe, _level) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or("MPI was already initialised")?;
        let world = universe.world();
        WORLD
            .set(Box::new(Mpi {
                world,
                timeout: timeout(),
            }))
            .map_err(|_| "dist::init called after dist::world()".to_string())?;
        Ok(universe)
    }

    impl Mpi {
        fn fail(&self, message: String) -> ! {
            eprintln!("error: {message}; aborting the MPI job");
            self.world.abort(3)
        }

        /// Waits for a message from `from` with `tag`; returns its length.
        fn wait(&self, from: usize, tag: i32, what: &str, within: Duration) -> usize {
            let t = Instant::now();
            let p = self.world.process_at_rank(from as i32);
            let mut pause = Duration::from_micros(1);
            loop {
                if let Some(status) = p.immediate_probe_with_tag(tag) {
                    let n = if tag == TAG_F32 {
                        status.count(f32::equivalent_datatype())
                    } else {
                        status.count(u8::equivalent_datatype())
                    };
                    return n.max(0) as usize;
                }
                if t.elapsed() > within {
                    self.fail(timed_out(self.rank(), from, what, within));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_micros(200));
            }
        }

        fn send_tagged<T: Equivalence>(&self, to: usize, data: &[T], tag: i32) {
            let t = Instant::now();
            let p = self.world.process_at_rank(to as i32);
            mpi::request::scope(|scope| {
                let mut req = p.immediate_send_with_tag(scope, data, tag);
                loop {
                    match req.test() {
                        Ok(_) => return,
                        Err(r) => req = r,
                    }
                    if t.elapsed() > self.timeout {
                        self.fail(timed_out(self.rank(), to, "answer from", self.timeout));
                    }
                    std::thread::yield_now();
                }
            })
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn send(&self, to: usize, data: &[f32]) -> Result<(), String> {
            self.send_tagged(to, data, TAG_F32);
            Ok(())
        }
        fn recv(&self, from: usize, buf: &mut [f32]) -> Result<(), String> {
            let n = self.wait(from, TAG_F32, "values from", self.timeout);
            if n != buf.len() {
                self.fail(format!(
                    "rank {}: rank {from} sent {n} values, expected {} (do the ranks run the \
                     same model?)",
                    self.rank(),
                    buf.len()
                ));
            }
            self.world
                .process_at_rank(from as i32)
                .receive_into_with_tag(buf, TAG_F32);
            Ok(())
        }
        fn send_bytes(&self, to: usize, data: &[u8]) -> Result<(), String> {
            self.send_tagged(to, data, TAG_BYTES);
            Ok(())
        }
        fn recv_bytes_within(
            &self,
            from: usize,
            within: Option<Duration>,
        ) -> Result<Vec<u8>, String> {
            let n = self.wait(
                from,
                TAG_BYTES,
                "message from",
                within.unwrap_or(self.timeout),
            );
            let mut buf = vec![0u8; n];
            self.world
                .process_at_rank(from as i32)
                .receive_into_with_tag(&mut buf[..], TAG_BYTES);
            Ok(buf)
        }
    }
}

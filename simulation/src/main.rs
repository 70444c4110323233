//! Runs real pushgate nodes (HTTP and gRPC servers, openraft, sled) on turmoil
//! hosts, drives clients against them under a named fault schedule, and checks
//! every history.
//!
//! ```text
//! cargo run -p simulation --release -- --seeds 0..20 --scenario all
//! ```
//!
//! ends with `runs=N faults=N ops=N violations=N` and exits non-zero on any
//! violation, printing the seed, the scenario and the command that replays it.
//!
//! Every run is a fresh child process of this binary. A run is a function of
//! its seed only if nothing carries over from earlier runs, and some state of
//! the libraries below is process-wide: tokio numbers tasks from one global
//! counter and shuts a crashed host's tasks down in an order that depends on
//! those numbers, so a crash after a hundred earlier runs closed sockets in
//! another order than the same crash in a fresh process. A replay command
//! runs in a fresh process; so does every run of a campaign.

mod check;
mod cluster;
mod model;
mod net;
mod scenario;

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use clap::Parser;

use scenario::Scenario;

#[derive(Parser, Debug)]
#[command(about = "Deterministic fault simulation of a pushgate cluster")]
struct Args {
    /// Seeds to run, as START..END (end excluded) or one seed.
    #[arg(long, default_value = "0..10", value_parser = parse_seeds)]
    seeds: Range<u64>,
    /// A scenario name, or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Print the history of every run, not only of failed ones.
    #[arg(long)]
    verbose: bool,
    /// Runs at a time (each in its own process); default: the number of CPUs.
    #[arg(long)]
    jobs: Option<usize>,
    /// Stop starting runs after the first violation.
    #[arg(long)]
    fail_fast: bool,
    /// Switch on one of pushgate's deliberate bugs (checker self-test).
    #[cfg(feature = "bug-injection")]
    #[arg(long, value_parser = parse_bug)]
    inject_bug: Option<pushgate::cluster::bugs::Bug>,
    /// Internal: run one seed of one scenario in this process and print its
    /// result line (what every child of a campaign does).
    #[arg(long, hide = true)]
    in_process: bool,
}

#[cfg(feature = "bug-injection")]
fn parse_bug(s: &str) -> Result<pushgate::cluster::bugs::Bug, String> {
    use pushgate::cluster::bugs::Bug;
    Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
        let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
        format!("unknown bug {s:?}; known: {}", names.join(", "))
    })
}

fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let a = a.parse().map_err(|e| format!("bad seed range start {a:?}: {e}"))?;
            let b = b.parse().map_err(|e| format!("bad seed range end {b:?}: {e}"))?;
            if a >= b {
                return Err(format!("empty seed range {s}"));
            }
            Ok(a..b)
        }
        None => {
            let a: u64 = s.parse().map_err(|e| format!("bad seed {s:?}: {e}"))?;
            Ok(a..a + 1)
        }
    }
}

/// What one run reports to the campaign, as the last line of its stdout:
/// `result faults=F ops=O violations=V trace=HEX`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RunSummary {
    faults: u64,
    ops: u64,
    violations: u64,
    trace: u64,
}

impl RunSummary {
    fn line(&self) -> String {
        format!(
            "result faults={} ops={} violations={} trace={:016x}",
            self.faults, self.ops, self.violations, self.trace
        )
    }

    fn parse(stdout: &str) -> Option<RunSummary> {
        let line = stdout.lines().rev().find_map(|l| l.strip_prefix("result "))?;
        let mut summary = RunSummary::default();
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            match key {
                "faults" => summary.faults = value.parse().ok()?,
                "ops" => summary.ops = value.parse().ok()?,
                "violations" => summary.violations = value.parse().ok()?,
                "trace" => summary.trace = u64::from_str_radix(value, 16).ok()?,
                _ => {}
            }
        }
        Some(summary)
    }
}

/// The one-line command that replays `seed` of `scenario` (with the bug
/// switched on, if one is).
fn replay_command(seed: u64, scenario: Scenario) -> String {
    #[allow(unused_mut)]
    let mut cmd = format!(
        "cargo run -p simulation --release -- --seeds {seed} --scenario {} --verbose",
        scenario.name()
    );
    #[cfg(feature = "bug-injection")]
    if let Some(bug) = pushgate::cluster::bugs::injected() {
        cmd = format!(
            "cargo run -p simulation --release --features bug-injection -- --seeds {seed} --scenario {} --verbose --inject-bug {}",
            scenario.name(),
            bug.name()
        );
    }
    cmd
}

/// Runs one seed of one scenario in this process, prints what the campaign
/// shows of it to stderr and its summary line to stdout.
fn run_in_process(scenario: Scenario, seed: u64, verbose: bool) -> RunSummary {
    let report = cluster::run(scenario, seed);
    let violations = check::check(&report);
    let trace = check::trace_hash(&report);
    if verbose || !violations.is_empty() {
        for op in &report.history {
            eprintln!("  {op}");
        }
        for line in report.operations.iter().chain(&report.applied) {
            eprintln!("  {line}");
        }
        let mut terms: Vec<(u64, u64)> = report.leaders.iter().map(|c| (c.term, c.node_id)).collect();
        terms.dedup();
        eprintln!("  leaders (term, node): {terms:?}");
        eprintln!("seed={seed} scenario={} trace={trace:016x}", scenario.name());
    }
    if !violations.is_empty() {
        eprintln!("VIOLATION seed={seed} scenario={}", scenario.name());
        const SHOWN: usize = 30;
        for v in violations.iter().take(SHOWN) {
            eprintln!("  {v}");
        }
        if violations.len() > SHOWN {
            eprintln!("  ... and {} more", violations.len() - SHOWN);
        }
        eprintln!("  replay: {}", replay_command(seed, scenario));
    }
    RunSummary {
        faults: report.faults,
        ops: report.history.len() as u64,
        violations: violations.len() as u64,
        trace,
    }
}

/// One run in a child process of this binary.
struct Child<'a> {
    args: &'a Args,
    scenario: Scenario,
    seed: u64,
}

impl Child<'_> {
    /// Runs the child; returns its summary and what it printed to stderr, or
    /// why it produced no summary (it crashed, or could not be started).
    fn run(&self) -> (Result<RunSummary, String>, Vec<u8>) {
        // The very binary that runs the campaign, even if a rebuild has
        // replaced the file since (Linux keeps the running image reachable).
        let exe = if cfg!(target_os = "linux") {
            std::path::PathBuf::from("/proc/self/exe")
        } else {
            match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => return (Err(format!("cannot find this executable: {e}")), Vec::new()),
            }
        };
        let mut cmd = Command::new(exe);
        cmd.arg("--in-process")
            .arg("--seeds")
            .arg(self.seed.to_string())
            .arg("--scenario")
            .arg(self.scenario.name());
        if self.args.verbose {
            cmd.arg("--verbose");
        }
        #[cfg(feature = "bug-injection")]
        if let Some(bug) = self.args.inject_bug {
            cmd.arg("--inject-bug").arg(bug.name());
        }
        let output = match cmd.output() {
            Ok(output) => output,
            Err(e) => return (Err(format!("cannot start a run: {e}")), Vec::new()),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        match RunSummary::parse(&stdout) {
            Some(summary) => (Ok(summary), output.stderr),
            None => (
                Err(format!("the run ended without a result ({})", output.status)),
                output.stderr,
            ),
        }
    }
}

fn campaign(args: &Args, scenarios: &[Scenario]) -> ExitCode {
    let runs: Vec<(u64, Scenario)> = args
        .seeds
        .clone()
        .flat_map(|seed| scenarios.iter().map(move |s| (seed, *s)))
        .collect();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, runs.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (done_tx, done_rx) = mpsc::channel();
    let (mut count, mut faults, mut ops, mut violations) = (0u64, 0u64, 0u64, 0u64);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let done_tx = done_tx.clone();
            let (runs, next, stop) = (&runs, &next, &stop);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(seed, scenario)) = runs.get(i) else { break };
                let result = Child { args, scenario, seed }.run();
                if done_tx.send((i, seed, scenario, result)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Reports in run order, whatever order the children finish in.
        let mut pending = BTreeMap::new();
        let mut shown = 0;
        for (i, seed, scenario, result) in done_rx {
            pending.insert(i, (seed, scenario, result));
            while let Some((seed, scenario, (summary, stderr))) = pending.remove(&shown) {
                shown += 1;
                let _ = std::io::stderr().write_all(&stderr);
                count += 1;
                match summary {
                    Ok(s) => {
                        faults += s.faults;
                        ops += s.ops;
                        violations += s.violations;
                        if s.violations > 0 && args.fail_fast {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    Err(e) => {
                        violations += 1;
                        eprintln!("VIOLATION seed={seed} scenario={}: {e}", scenario.name());
                        eprintln!("  replay: {}", replay_command(seed, scenario));
                        if args.fail_fast {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
        }
    });
    println!("runs={count} faults={faults} ops={ops} violations={violations}");
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenarios: Vec<Scenario> = if args.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        match Scenario::from_name(&args.scenario) {
            Some(s) => vec![s],
            None => {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                eprintln!("unknown scenario {:?}; known: all, {}", args.scenario, names.join(", "));
                return ExitCode::from(2);
            }
        }
    };
    #[cfg(feature = "bug-injection")]
    pushgate::cluster::bugs::inject(args.inject_bug);
    if !args.in_process {
        return campaign(&args, &scenarios);
    }
    let ([scenario], 1) = (scenarios.as_slice(), args.seeds.end - args.seeds.start) else {
        eprintln!("--in-process runs one seed of one scenario");
        return ExitCode::from(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let summary = run_in_process(*scenario, args.seeds.start, args.verbose);
    println!("{}", summary.line());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_line_reads_back() {
        let s = RunSummary {
            faults: 2,
            ops: 244,
            violations: 1,
            trace: 0x0b54_c20b_5169_8f63,
        };
        let stdout = format!("noise\n{}\n", s.line());
        assert_eq!(RunSummary::parse(&stdout), Some(s));
        assert_eq!(RunSummary::parse("runs=1\n"), None);
    }

    #[test]
    fn seed_ranges_parse() {
        assert_eq!(parse_seeds("3..7"), Ok(3..7));
        assert_eq!(parse_seeds("5"), Ok(5..6));
        assert!(parse_seeds("7..3").is_err());
        assert!(parse_seeds("x").is_err());
    }
}

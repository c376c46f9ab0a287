//! The `ringlb-bench` binary: parses the command line and runs a load test,
//! a plot or a built-in backend.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use mimalloc::MiMalloc;

use ringlb_bench::cli::{Cli, Command, PlotArgs, RunArgs, ServeArgs};
use ringlb_bench::report::{self, progress::Progress, Report};
use ringlb_bench::{engine, plot, serve};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone())
            .context("cannot install signal handler")?;
        signal_hook::flag::register(sig, flag.clone()).context("cannot install signal handler")?;
    }
    Ok(flag)
}

fn run_load(args: &RunArgs) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let stop = stop_on_signals()?;
    let progress = Progress::new(true, !cfg.workload.has_requests());
    let measure_wall = SystemTime::now() + Duration::from_millis(20) + cfg.warmup;
    let outcome = engine::run(&cfg, stop, &mut |iv| progress.interval(iv))?;
    progress.finish();
    let rep = Report::new(&cfg, &outcome, args.label.as_deref());
    let mut out = std::io::stdout().lock();
    write!(out, "{}", report::summary::render(&rep))?;
    if args.latency && cfg.workload.has_requests() {
        writeln!(out, "\n  Detailed Percentile spectrum:")?;
        write!(
            out,
            "{}",
            report::spectrum::classic_text(&outcome.stats.latency)
        )?;
        if args.u_latency && cfg.rate.is_some() {
            writeln!(
                out,
                "\n  Uncorrected Latency (measured from the actual send):"
            )?;
            write!(
                out,
                "{}",
                report::spectrum::classic_text(&outcome.stats.uncorrected)
            )?;
        }
    }
    if let Some(p) = &args.json {
        report::json::write(&rep, p)?;
    }
    if let Some(p) = &args.hdr_log {
        report::hdrlog::write(&outcome.intervals, measure_wall, p)?;
    }
    Ok(())
}

fn run_plot(args: &PlotArgs) -> anyhow::Result<()> {
    let format = match &args.format {
        Some(f) => plot::Format::parse(f)?,
        None => plot::Format::from_path(&args.output),
    };
    let mut curves = Vec::new();
    for p in &args.inputs {
        let r = report::json::read(p)?;
        curves.extend(plot::curves_of(&r, args.uncorrected));
    }
    plot::plot(
        &curves,
        &plot::PlotOptions {
            output: args.output.clone(),
            format,
            title: args.title.clone(),
            uncorrected: args.uncorrected,
            size: args.size,
        },
    )?;
    Ok(())
}

fn run_serve(args: &ServeArgs) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let handle = serve::start(args.to_config(), Some(stop))?;
    println!("listening on {}", handle.local_addr());
    std::io::stdout().flush()?;
    let counts = handle.join()?;
    println!("served {counts}");
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match &cli.command {
        Some(Command::Plot(p)) => run_plot(p),
        Some(Command::Serve(s)) => run_serve(s),
        None => run_load(&cli.run),
    };
    if let Err(e) = r {
        eprintln!("ringlb-bench: {e:#}");
        std::process::exit(1);
    }
}

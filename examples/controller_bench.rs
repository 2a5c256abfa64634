//! Prints how long the controller's decision takes per tick on a simulated cluster of 1,000
//! nodes and 10,000 executors, and what fraction of a tick (one pool batch delay) that is.
//! Prints, never asserts: timings depend on the machine.
//!
//! `cargo run --release --example controller_bench [seed] [ticks]`

use kess::controller::sim::{run_benchmark, SimConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let seed = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(7);
    let mut config = SimConfig::at_scale(seed);
    if let Some(ticks) = args.next().and_then(|arg| arg.parse().ok()) {
        config.ticks = ticks;
    }
    let report = run_benchmark(&config);
    println!("{report}");
    println!(
        "bench controller decide_mean_over_tick={:.5} decide_p99_over_tick={:.5}",
        report.mean.as_secs_f64() / config.tick.as_secs_f64(),
        report.p99.as_secs_f64() / config.tick.as_secs_f64()
    );
}

//! `kess bench` still runs end to end (a tiny configuration; nothing here looks at time).

use std::process::Command;

#[test]
fn bench_runs_and_prints_comparable_lines() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kess"))
        .args([
            "bench",
            "--total-bytes",
            "2MiB",
            "--block-sizes",
            "64KiB",
            "--streams",
            "1,4",
        ])
        .arg("--work-dir")
        .arg(work.path())
        .env("KESS_LOG", "warn")
        .output()
        .expect("run kess bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for streams in [1, 4] {
        for path in ["grpc", "tcp"] {
            let prefix = format!(
                "bench fetch path={path} block=65536 streams={streams} bytes=2097152 gbps="
            );
            assert!(
                stdout.lines().any(|l| l.starts_with(&prefix)),
                "missing {prefix}\n{stdout}"
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "bench cleans up"
    );
}

/// `kess bench-ess` without the Java service, cold page cache: kess's Spark path, gRPC path and
/// the sendfile reference each move every byte of every shape, and the summary lines are there.
#[test]
fn bench_ess_runs_every_shape_and_path() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kess"))
        .args([
            "bench-ess",
            "--total-bytes",
            "1MiB",
            "--tiny-total-bytes",
            "256KiB",
            "--concurrency",
            "1,4",
            "--executors",
            "2",
            // Two runs per path, so the median is taken over more than one.
            "--repeat",
            "2",
            // Every run starts from disk: the page-cache eviction works without root.
            "--cold",
        ])
        .arg("--work-dir")
        .arg(work.path())
        .env("KESS_LOG", "warn")
        .output()
        .expect("run kess bench-ess");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for idle in ["idle", "idle-after"] {
        assert!(
            stdout.contains(&format!("bench ess {idle} server=kess rss_bytes=")),
            "{stdout}"
        );
    }
    for shape in ["uniform", "skewed", "tiny"] {
        for concurrency in [1, 4] {
            let lines: Vec<&str> = stdout
                .lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "bench ess shape={shape} concurrency={concurrency} "
                    ))
                })
                .collect();
            let bytes = |path: &str| {
                lines
                    .iter()
                    .find(|l| l.contains(&format!(" path={path} ")))
                    .and_then(|l| l.split(" bytes=").nth(1))
                    .and_then(|v| v.split(' ').next())
                    .map(str::to_owned)
                    .unwrap_or_else(|| panic!("no {path} line for {shape}/{concurrency}\n{stdout}"))
            };
            // The bench itself fails if a path moves a different byte count; all three agree.
            assert_eq!(bytes("kess-spark"), bytes("sendfile"));
            for line in &lines {
                let runs = line.split(" gbps_runs=").nth(1).unwrap_or_default();
                assert_eq!(runs.split(',').count(), 2, "{line}");
                // The bench's own CPU (client, and the reference's sender) was counted.
                let bench_cpu: f64 = line
                    .split(" bench_cpu_s_per_gb=")
                    .nth(1)
                    .and_then(|v| v.split(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no bench_cpu_s_per_gb in {line}"));
                assert!(bench_cpu > 0.0, "{line}");
            }
            assert_eq!(bytes("kess-grpc"), bytes("sendfile"));
            for path in ["kess-spark", "kess-grpc"] {
                let prefix = format!(
                    "bench ess-ratio shape={shape} concurrency={concurrency} {path}/sendfile throughput="
                );
                let line = stdout
                    .lines()
                    .find(|l| l.starts_with(&prefix))
                    .unwrap_or_else(|| panic!("no {prefix}… line\n{stdout}"));
                // One ratio per round, each from that round's two runs.
                let paired = line.split(" paired=").nth(1).unwrap_or_default();
                assert_eq!(paired.split(',').count(), 2, "{line}");
            }
        }
    }
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "bench-ess cleans up"
    );
}

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

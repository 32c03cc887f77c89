//! `grpo sweep --jobs N`: the pending runs as N `grpo train` processes at a time.
//!
//! A process per run, not a thread: each gets its own rayon pool (`--threads` = this process's
//! threads / N), its own log, and its own Ctrl-C handling (it saves a checkpoint), and the runs
//! cannot share any state. A run trains exactly as `grpo train --config C --set ...` would, so
//! its folder is the same as the one a sequential sweep writes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::PendingRun;

/// The `grpo` arguments that train `run` with `threads` threads.
pub(crate) fn train_args(run: &PendingRun, threads: usize) -> Vec<String> {
    let mut args = vec![
        "--threads".to_string(),
        threads.to_string(),
        "train".into(),
        "--config".into(),
        run.config.display().to_string(),
    ];
    for o in &run.overrides {
        args.push("--set".into());
        args.push(o.clone());
    }
    if run.resume {
        args.push("--resume".into());
    }
    args
}

fn spawn(exe: &Path, run: &PendingRun, threads: usize) -> Result<Child> {
    if let Some(dir) = run.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = std::fs::File::create(&run.log)
        .with_context(|| format!("creating {}", run.log.display()))?;
    let err = log.try_clone()?;
    Command::new(exe)
        .args(train_args(run, threads))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {} for {}", exe.display(), run.label))
}

/// Trains `runs`, `jobs` at a time. On an interrupt no new run starts and the running ones are
/// asked to stop (they save a checkpoint; the sweep resumes them next time). The first failure
/// stops new starts too, and is reported with its log once the others have finished.
pub(crate) fn run_processes(
    runs: &[PendingRun],
    jobs: usize,
    interrupted: &AtomicBool,
) -> Result<()> {
    let exe = std::env::current_exe().context("finding the grpo executable")?;
    let threads = (rayon::current_num_threads() / jobs).max(1);
    let mut next = 0;
    let mut running: Vec<(usize, Child, Instant)> = Vec::new();
    let mut failed: Option<String> = None;
    let mut signalled = false;
    loop {
        let stop = interrupted.load(Ordering::SeqCst) || failed.is_some();
        while !stop && running.len() < jobs && next < runs.len() {
            let child = spawn(&exe, &runs[next], threads)?;
            eprintln!(
                "{} started (log {})",
                runs[next].label,
                runs[next].log.display()
            );
            running.push((next, child, Instant::now()));
            next += 1;
        }
        if running.is_empty() {
            break;
        }
        if interrupted.load(Ordering::SeqCst) && !signalled {
            signalled = true;
            for (_, child, _) in &running {
                // SAFETY: kill(2) on our own child's pid.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGINT);
                }
            }
        }
        let mut i = 0;
        while i < running.len() {
            let status = running[i].1.try_wait()?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let (idx, _, t0) = running.swap_remove(i);
            let run = &runs[idx];
            if status.success() {
                eprintln!(
                    "{} finished in {:.0}s",
                    run.label,
                    t0.elapsed().as_secs_f64()
                );
            } else if failed.is_none() && !interrupted.load(Ordering::SeqCst) {
                failed = Some(format!(
                    "{} failed ({status}); its output: {}",
                    run.label,
                    run.log.display()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(f) = failed {
        bail!("{f}");
    }
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted: re-run the same command to continue");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_trains_the_run_as_grpo_train_would() {
        let run = PendingRun {
            label: "[1/2] lambda seed 3".into(),
            config: "configs/lambda.toml".into(),
            cfg: crate::config::Config::load(
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/lambda.toml")),
                &[],
            )
            .unwrap(),
            overrides: vec![
                "train.seed=3".into(),
                "output.dir=out/runs/lambda-seed3".into(),
            ],
            resume: true,
            log: "out/logs/lambda-seed3.log".into(),
        };
        assert_eq!(
            train_args(&run, 1).join(" "),
            "--threads 1 train --config configs/lambda.toml --set train.seed=3 \
             --set output.dir=out/runs/lambda-seed3 --resume"
        );
    }
}

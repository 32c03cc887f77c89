//! One run per output folder.
//!
//! `grpo train`, `sweep` and `sft` take an exclusive `flock` on `OUTPUT/.grpo.lock` before they
//! write anything there, and hold it until they exit. A second run into the same folder stops at
//! once with the holder's pid instead of interleaving `metrics.jsonl` lines and overwriting the
//! first run's checkpoints. The kernel drops the lock when its process dies (even on `kill -9`),
//! so a lock file left by a dead run never blocks the next one: it is simply locked again and
//! rewritten. The file is never deleted (deleting it would let two runs lock two different
//! inodes under one name).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file's name inside the output folder.
pub const LOCK_FILE: &str = ".grpo.lock";

/// An exclusive lock on an output folder, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Creates `dir` if needed and locks it for `command` (e.g. "grpo train"), or fails naming
    /// the pid (and command) of the process that holds it.
    pub fn acquire(dir: &Path, command: &str) -> Result<RunLock> {
        if dir.as_os_str().is_empty() {
            bail!("output folder: expected a path, got an empty string");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        // No truncation on open: the holder's pid must survive a failed attempt to lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                bail!(
                    "{} is in use by another run ({holder}; lock file {}): wait for it to finish, \
                     stop it, or choose another output folder",
                    dir.display(),
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        let record = format!("{}\n{command}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(record.as_bytes()))
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// "pid N, grpo train" from a held lock file; the holder writes it right after locking, so a
/// moment's wait covers the gap between its lock and its write.
fn read_holder(file: &mut File) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            let mut lines = text.lines();
            if let Some(pid) = lines.next().filter(|p| p.parse::<u32>().is_ok()) {
                return match lines.next().filter(|c| !c.is_empty()) {
                    Some(cmd) => format!("pid {pid}, {cmd}"),
                    None => format!("pid {pid}"),
                };
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    "pid unknown".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_folder_fails_naming_the_holder_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let first = RunLock::acquire(&dir, "grpo train").unwrap();
        let err = format!("{:#}", RunLock::acquire(&dir, "grpo train").unwrap_err());
        assert!(
            err.contains(&format!("pid {}, grpo train", std::process::id())),
            "{err}"
        );
        assert!(err.contains("in use by another run"), "{err}");
        drop(first);
        // Released: the folder can be locked again, and the file names the new holder.
        let again = RunLock::acquire(&dir, "grpo sft").unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(text, format!("{}\ngrpo sft\n", std::process::id()));
    }

    #[test]
    fn stale_lock_file_from_a_dead_process_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        // A lock file as a killed run leaves it: a pid that is not running, no flock held.
        std::fs::write(tmp.path().join(LOCK_FILE), "999999999\ngrpo train\n").unwrap();
        let lock = RunLock::acquire(tmp.path(), "grpo train").unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(text.starts_with(&std::process::id().to_string()), "{text}");
    }

    #[test]
    fn empty_output_folder_is_rejected() {
        let err = RunLock::acquire(Path::new(""), "grpo train").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}

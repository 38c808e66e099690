//! The run folder's lock: an exclusive advisory lock (`flock`, through
//! [`File::try_lock`]) on `.esper.lock`, held for as long as the run writes the folder.
//! The file records the holder's PID, so a process refused names it; it stays when the
//! run ends (the next run takes it over), so nothing ever removes a lock file another
//! process may be holding.

use super::{RunFile, RunFolderError};
use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// The lock on a run folder, held while this value lives (the OS releases it when the
/// process ends, however it ends).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    _file: File,
}

impl RunLock {
    /// Takes the lock of run folder `dir` (which must exist), or refuses at once, naming
    /// the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self, RunFolderError> {
        let path = RunFile::Lock.path(dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // the holder's PID stays readable until the lock is ours
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(RunFolderError::io(&path, "open the lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(RunFolderError::Busy { dir: dir.to_path_buf(), pid: holder(&path) });
            }
            Err(TryLockError::Error(cause)) => {
                return Err(RunFolderError::Io { path, action: "lock", cause });
            }
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(RunFolderError::io(&path, "write"))?;
        Ok(Self { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID a lock file records (none while its holder is still writing it).
fn holder(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_refused_naming_the_holder_and_free_again_once_released() {
        let dir = std::env::temp_dir().join(format!("esper-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(lock.path()).unwrap(), format!("{}\n", std::process::id()));
        // flock locks belong to the open file: a second open in this process is refused too.
        let e = RunLock::acquire(&dir).unwrap_err();
        assert!(matches!(e, RunFolderError::Busy { pid: Some(p), .. } if p == std::process::id()), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "run folder {} is in use by another esper process (PID {}",
                dir.display(),
                std::process::id()
            )),
            "{text}"
        );
        drop(lock);
        let again = RunLock::acquire(&dir).unwrap();
        assert!(again.path().is_file());
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Writing a run's files: never through a symbolic link, and never leaving a
//! half-written file in place of a good one.
//!
//! [`publish`] writes `NAME.tmp` (created new, `O_NOFOLLOW`), syncs it and renames it
//! over `NAME`; a failed write (a full disk: `ENOSPC`, or `EFBIG` past `RLIMIT_FSIZE`)
//! removes the `.tmp` and leaves the previous `NAME` as it was. [`open_append`] opens a
//! log to append to, refusing a link.

use super::RunFolderError;
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// The name `name` is written under before it is renamed into place.
pub(crate) fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// Whether an open failed because `O_NOFOLLOW` met a symbolic link.
pub(crate) fn is_link_refusal(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Refuses a symbolic link at `path`.
pub fn refuse_link(path: &Path) -> Result<(), RunFolderError> {
    if is_link(path) {
        return Err(RunFolderError::Link { path: path.to_path_buf() });
    }
    Ok(())
}

/// Creates `path` as a new file (an existing file or link there is an error, nothing is
/// followed) holding `bytes`, synced to disk. A failed write removes it again.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), RunFolderError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(RunFolderError::io(path, "create"))?;
    if let Err(cause) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(RunFolderError::Io { path: path.to_path_buf(), action: "write", cause });
    }
    Ok(())
}

/// Replaces `path` with a file holding `bytes`, atomically: written to `path.tmp`
/// first (a stale one removed; a link there is removed, not followed), then renamed
/// over `path`. A link at `path` is refused. On any error `path` is as it was and no
/// `.tmp` is left.
pub fn publish(path: &Path, bytes: &[u8]) -> Result<(), RunFolderError> {
    refuse_link(path)?;
    let tmp = tmp_path(path);
    remove_stale(&tmp)?;
    write_new(&tmp, bytes)?;
    if let Err(cause) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(RunFolderError::Io { path: path.to_path_buf(), action: "publish", cause });
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// `path` with `.tmp` appended to its file name.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(tmp_name(&name))
}

/// Removes what an interrupted write left at `tmp` (a file or a link, never its target).
fn remove_stale(tmp: &Path) -> Result<(), RunFolderError> {
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RunFolderError::Io { path: tmp.to_path_buf(), action: "remove the stale", cause: e })
        }
        _ => Ok(()),
    }
}

/// Opens `path` to append to, created if missing; a link there is refused.
pub fn open_append(path: &Path) -> Result<File, RunFolderError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(RunFolderError::io(path, "open"))
}

/// Syncs a folder's entries (a rename in it) to disk, where the platform can.
pub fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp(name: &str) -> PathBuf {
        crate::test_dir(&format!("files-{name}"))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn publish_replaces_the_file_and_removes_a_stale_tmp_without_following_it() {
        let dir = temp("publish");
        let (path, target) = (dir.join("report.json"), dir.join("target"));
        fs::write(&target, "keep").unwrap();
        publish(&path, b"one").unwrap();
        symlink(&target, dir.join("report.json.tmp")).unwrap();
        publish(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(names(&dir), ["report.json", "target"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_link_in_place_of_a_run_file_is_never_written_through() {
        let dir = temp("links");
        let target = dir.join("target");
        fs::write(&target, "keep").unwrap();
        for name in ["report.json", "events.jsonl", "new"] {
            symlink(&target, dir.join(name)).unwrap();
        }
        let e = publish(&dir.join("report.json"), b"x").unwrap_err().to_string();
        assert!(e.starts_with(&format!("{} is a symbolic link", dir.join("report.json").display())), "{e}");
        let e = open_append(&dir.join("events.jsonl")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{} is a symbolic link", dir.join("events.jsonl").display())), "{e}");
        assert!(write_new(&dir.join("new"), b"x").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(names(&dir), ["events.jsonl", "new", "report.json", "target"]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Set in the child [`a_full_disk_keeps_the_previous_file_and_leaves_no_tmp`] starts.
    const FULL_DISK_CHILD: &str = "ESPER_TEST_FULL_DISK_FILE";

    #[test]
    fn a_full_disk_keeps_the_previous_file_and_leaves_no_tmp() {
        // In the child: a file size limit of 1 KiB (`ulimit -f 1`, SIGXFSZ ignored), so
        // writing past it fails with EFBIG as on a full disk.
        if let Some(path) = std::env::var_os(FULL_DISK_CHILD) {
            let e = publish(Path::new(&path), &[b'x'; 64 * 1024]).unwrap_err().to_string();
            assert!(e.contains("cannot write") && e.contains("report.json.tmp"), "{e}");
            return;
        }
        let dir = temp("full-disk");
        let path = dir.join("report.json");
        publish(&path, b"{\"good\": true}").unwrap();
        let exe = std::env::current_exe().unwrap();
        let child = std::process::Command::new("bash")
            .args(["-c", "trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\""])
            .arg(exe)
            .args(["--exact", "run_folder::files::tests::a_full_disk_keeps_the_previous_file_and_leaves_no_tmp"])
            .env(FULL_DISK_CHILD, &path)
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success() && shown.contains("1 passed"), "{shown}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"good\": true}");
        assert_eq!(names(&dir), ["report.json"]);
        let _ = fs::remove_dir_all(&dir);
    }
}

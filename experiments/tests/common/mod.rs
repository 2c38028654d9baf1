//! Helpers shared by the experiments crate's integration tests.

use std::path::PathBuf;

/// A fresh scratch folder under the system's temp dir (named by test tag
/// and process id, so parallel test binaries never collide), removed on
/// drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `<tmp>/exp-<tag>-<pid>`, empty.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("exp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

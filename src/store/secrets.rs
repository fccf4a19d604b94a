//! Passwords on their way to the directory: one file per journal entry
//! that carries one (`<store>/pending-passwords/<seq>`, folder 0700, file
//! 0600), written and synced before the entry is journaled, deleted once
//! the entry is applied or skipped, and swept at start-up for entries that
//! are no longer pending.
//!
//! Why files and not sled keys: sled is log-structured, so a removed value
//! stays in its segment files until the segment is rewritten, for an
//! unbounded time; a deleted file is gone from the store's folder at once.
//! The password is never in a resource snapshot nor in the journal entry
//! (which only says `holds_password`).
//!
//! Knows seqs, files and [`Password`]; nothing of what the entry means.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::journal::Password;

/// The folder of pending passwords of one store.
pub(super) struct Secrets {
    dir: PathBuf,
}

/// The folder's name under the store's path.
pub const FOLDER: &str = "pending-passwords";

impl Secrets {
    /// Opens (creates) the folder under the store's `path`.
    pub(super) fn open(path: &Path) -> Result<Secrets, StoreError> {
        let dir = path.join(FOLDER);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| error(&dir, e))?;
        Ok(Secrets { dir })
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(seq.to_string())
    }

    /// Holds `password` for entry `seq`, durably: the file and the folder
    /// are synced before this returns, so the entry journaled next never
    /// points at a password a crash could lose.
    pub(super) fn put(&self, seq: u64, password: &Password) -> Result<(), StoreError> {
        let path = self.file(seq);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| error(&path, e))?;
        f.write_all(password.expose().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| error(&path, e))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| error(&self.dir, e))
    }

    /// The password held for entry `seq`, if it is still held.
    pub(super) fn get(&self, seq: u64) -> Result<Option<Password>, StoreError> {
        let path = self.file(seq);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(Password::new(String::from_utf8(bytes).map_err(
                |_| StoreError::Corrupt {
                    record: path.display().to_string(),
                    detail: "not UTF-8".into(),
                },
            )?))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(error(&path, e)),
        }
    }

    /// Forgets the password of entry `seq` (none held is fine). A failure
    /// is logged, not returned: the entry's state is recorded already, and
    /// the next start-up's sweep removes the file.
    pub(super) fn forget(&self, seq: u64) {
        let path = self.file(seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete an applied entry's password file; it is removed at the next start")
            }
        }
    }

    /// Deletes every held password whose entry `keep` does not want (no
    /// longer pending: applied or skipped while a delete failed, or never
    /// journaled because the daemon stopped between the file and the
    /// entry). Returns how many were removed.
    pub(super) fn sweep(
        &self,
        keep: impl Fn(u64) -> Result<bool, StoreError>,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in fs::read_dir(&self.dir).map_err(|e| error(&self.dir, e))? {
            let item = item.map_err(|e| error(&self.dir, e))?;
            let name = item.file_name();
            let seq = name.to_str().and_then(|n| n.parse::<u64>().ok());
            let wanted = match seq {
                Some(seq) => keep(seq)?,
                None => false,
            };
            if !wanted {
                fs::remove_file(item.path()).map_err(|e| error(&item.path(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// How many passwords are held.
    pub(super) fn count(&self) -> usize {
        fs::read_dir(&self.dir).map_or(0, Iterator::count)
    }
}

fn error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Secret {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Intent, Kind, Store, Write};
    use super::*;

    fn tmp() -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("scim2ldap-pw-{}", uuid::Uuid::new_v4()));
        let s = Store::open(&dir).unwrap();
        (dir, s)
    }

    /// Every byte of every file under `dir`, searched for `needle`.
    fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else if fs::read(&p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
                {
                    out.push(p);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn held_until_applied_then_gone_and_swept_at_open() {
        let (dir, s) = tmp();
        let pw = Password::new("canary-3f9c1e");
        let mut u = json!({"id": "1", "userName": "a", "password": "canary-3f9c1e"});
        let seq = s
            .write_with_password(
                Write {
                    kind: Kind::User,
                    id: "1",
                    resource: &mut u,
                    intent: Intent::Create,
                    members: None,
                },
                Some(&pw),
            )
            .unwrap();
        s.commit(seq).await.unwrap();
        // Never in the snapshot nor the journal entry; held beside it.
        assert!(s
            .get(Kind::User, "1")
            .unwrap()
            .unwrap()
            .get("password")
            .is_none());
        let e = s.entry(seq).unwrap().unwrap();
        assert!(e.holds_password && e.password.is_none());
        assert!(e.snapshot.get("password").is_none());
        assert_eq!(s.pending_password(seq).unwrap(), Some(pw.clone()));
        let held = files_holding(&dir, b"canary-3f9c1e");
        assert_eq!(held, vec![dir.join(FOLDER).join(seq.to_string())]);

        s.mark_applied(&e, None).unwrap();
        assert_eq!(s.pending_password(seq).unwrap(), None);
        assert_eq!(s.pending_passwords(), 0);
        s.flush().unwrap();
        assert_eq!(files_holding(&dir, b"canary-3f9c1e"), Vec::<PathBuf>::new());

        // A file whose entry is not pending (a delete lost in a crash, or
        // written for an entry never journaled) is removed at open.
        fs::write(dir.join(FOLDER).join(seq.to_string()), "stale").unwrap();
        fs::write(dir.join(FOLDER).join("999"), "orphan").unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.pending_passwords(), 0);
        drop(s);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn skip_forgets_it_and_a_pending_one_survives_a_restart() {
        let (dir, s) = tmp();
        let mut seqs = Vec::new();
        for (id, pw) in [("1", "pw-one"), ("2", "pw-two")] {
            let mut u = json!({"id": id, "userName": id});
            let seq = s
                .write_with_password(
                    Write {
                        kind: Kind::User,
                        id,
                        resource: &mut u,
                        intent: Intent::Create,
                        members: None,
                    },
                    Some(&Password::new(pw)),
                )
                .unwrap();
            s.commit(seq).await.unwrap();
            seqs.push(seq);
        }
        s.skip(seqs[0]).unwrap();
        assert_eq!(s.pending_password(seqs[0]).unwrap(), None);
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.pending_password(seqs[1]).unwrap(),
            Some(Password::new("pw-two"))
        );
        assert_eq!(s.pending_passwords(), 1);
        drop(s);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A store written by an older version kept the password in the
    /// snapshot and the journal entry: opening it removes both.
    #[tokio::test]
    async fn passwords_stored_by_older_versions_are_removed_at_open() {
        let (dir, s) = tmp();
        let mut u = json!({"id": "1", "userName": "a"});
        let seq = s
            .write(Write {
                kind: Kind::User,
                id: "1",
                resource: &mut u,
                intent: Intent::Create,
                members: None,
            })
            .unwrap();
        s.commit(seq).await.unwrap();
        // What an older version wrote.
        let tree = &s.inner.tree;
        let rkey = super::super::keys::res_key(super::super::keys::RESOURCE, Kind::User, "1");
        let jkey = super::super::keys::seq_key(super::super::keys::JOURNAL, seq);
        let mut snap: serde_json::Value =
            serde_json::from_slice(&tree.get(&rkey).unwrap().unwrap()).unwrap();
        snap["password"] = json!("old-secret");
        tree.insert(&rkey, serde_json::to_vec(&snap).unwrap())
            .unwrap();
        let mut entry: serde_json::Value =
            serde_json::from_slice(&tree.get(&jkey).unwrap().unwrap()).unwrap();
        entry["snapshot"]["password"] = json!("old-secret");
        tree.insert(&jkey, serde_json::to_vec(&entry).unwrap())
            .unwrap();
        tree.remove(super::super::keys::META_NO_PASSWORDS).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert!(s
            .get(Kind::User, "1")
            .unwrap()
            .unwrap()
            .get("password")
            .is_none());
        assert!(s
            .entry(seq)
            .unwrap()
            .unwrap()
            .snapshot
            .get("password")
            .is_none());
        drop(s);
        let _ = fs::remove_dir_all(&dir);
    }
}

//! Who runs the scripts (tracked and notify), and keepalived's `enable_script_security`: a
//! script that a user other than root could change is refused, since xvrrp would run what that
//! user wrote.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// The user (and group) scripts run as: keepalived's `script_user USER [GROUP]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptUser {
    /// As written: `user` or `user:group`.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl ScriptUser {
    /// Looks up `user` or `user:group` (names or numbers) in the system's databases.
    pub fn resolve(text: &str) -> Result<Self, String> {
        use nix::unistd::{Group, User};
        let (user, group) = match text.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (text, None),
        };
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(uid.into()),
            Err(_) => User::from_name(user),
        }
        .map_err(|e| format!("cannot look up the user {user:?}: {e}"))?
        .ok_or_else(|| format!("expected an existing user (name or uid), got {user:?}"))?;
        let gid = match group {
            None => found.gid.as_raw(),
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => Group::from_name(g)
                    .map_err(|e| format!("cannot look up the group {g:?}: {e}"))?
                    .ok_or_else(|| format!("expected an existing group, got {g:?}"))?
                    .gid
                    .as_raw(),
            },
        };
        Ok(Self {
            name: text.to_owned(),
            uid: found.uid.as_raw(),
            gid,
        })
    }
}

/// The program a `/bin/sh -c` command line runs first: its first word, found on `PATH` when it
/// has no `/`.
fn program(command: &str) -> Option<PathBuf> {
    let first = command.split_whitespace().next()?;
    if first.contains('/') {
        return Some(PathBuf::from(first));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(first))
        .find(|p| p.is_file())
}

/// Why a command is not safe to run as root under `enable_script_security`, if it is not: its
/// program, or a directory above it (symbolic links followed), is owned by a user other than
/// root or writable by group or others (a directory with the sticky bit, like /tmp, only where
/// the program exists: others cannot replace it there, but could create it). A program that
/// does not exist yet is judged by the directory it would be created in; one not found on
/// `PATH` is not judged (it fails when run, as without script security).
pub fn insecure(command: &str) -> Option<String> {
    let prog = program(command)?;
    let mut existing = prog.as_path();
    while !existing.exists() {
        existing = existing.parent()?;
    }
    let missing = existing != prog;
    let real = match existing.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            return Some(format!(
                "enable_script_security: cannot resolve {}: {e}",
                existing.display()
            ));
        }
    };
    let mut at: Option<&Path> = Some(&real);
    while let Some(p) = at {
        let first = p == real;
        match std::fs::metadata(p) {
            Ok(m) if m.uid() != 0 => {
                return Some(format!(
                    "enable_script_security: {} is owned by uid {}, not root: that user could change what runs",
                    p.display(),
                    m.uid()
                ));
            }
            Ok(m)
                if m.mode() & 0o022 != 0
                    && ((first && (missing || !m.is_dir())) || m.mode() & 0o1000 == 0) =>
            {
                return Some(format!(
                    "enable_script_security: {} is writable by group or others (mode {:o}): they could change what runs{}",
                    p.display(),
                    m.mode() & 0o7777,
                    if missing {
                        format!(" ({} does not exist yet)", prog.display())
                    } else {
                        String::new()
                    }
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Some(format!(
                    "enable_script_security: cannot read {}: {e}",
                    p.display()
                ));
            }
        }
        at = p.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xvrrp-scripts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn script(d: &Path, mode: u32) -> PathBuf {
        let p = d.join("check.sh");
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn programs_others_can_change_are_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root-owned files");
            return;
        }
        let d = dir("modes");
        let p = script(&d, 0o755);
        assert_eq!(insecure(&format!("{} --quick", p.display())), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
        let why = insecure(&p.display().to_string()).unwrap();
        assert!(why.contains("writable by group or others"), "{why}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = insecure(&p.display().to_string()).unwrap();
        assert!(why.contains(&d.display().to_string()), "{why}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&p, Some(65534.into()), None).unwrap();
        let why = insecure(&p.display().to_string()).unwrap();
        assert!(why.contains("owned by uid 65534"), "{why}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn programs_on_path_are_found_and_missing_ones_judged_by_where_they_would_be() {
        assert!(program("sh -c true").is_some_and(|p| p.ends_with("sh") && p.is_file()));
        assert_eq!(program("/bin/sh -c true"), Some(PathBuf::from("/bin/sh")));
        // Not on PATH: it fails when run, as without script security.
        assert_eq!(insecure("no-such-program-xvrrp --x"), None);
        if nix::unistd::geteuid().is_root() {
            // Anyone could create it in /tmp (sticky or not).
            let why = insecure("/tmp/xvrrp-no-such-dir/check.sh").unwrap();
            assert!(
                why.contains("/tmp is writable") && why.contains("does not exist yet"),
                "{why}"
            );
            // /etc is root's.
            assert_eq!(insecure("/etc/xvrrp-no-such-dir/check.sh"), None);
        }
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let root = ScriptUser::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let nobody = ScriptUser::resolve("65534").unwrap();
        assert_eq!(nobody.uid, 65534);
        assert_eq!(ScriptUser::resolve("root:65534").unwrap().gid, 65534);
        assert!(ScriptUser::resolve("no-such-user-xvrrp").is_err());
        assert!(ScriptUser::resolve("root:no-such-group-xvrrp").is_err());
    }
}

//! Client authentication: the users file, password hashes and roles.
//!
//! A node that requires authentication (the default of `ringkv-node`)
//! reads its users from a TOML file (`--users-file`):
//!
//! ```toml
//! [[user]]
//! name = "admin"
//! role = "admin"            # read, readwrite or admin
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! ```
//!
//! Passwords are stored only as argon2id hashes in the PHC string format,
//! with their parameters; `ringkv-node users add` writes them (that is how
//! the first admin is made, before the node starts). Checking a password
//! recomputes the hash and compares in constant time (`argon2`'s
//! `verify_password`); an unknown user is checked against a decoy hash with
//! the same parameters, so the answer takes as long either way and does
//! not say which was wrong.
//!
//! Every node of a cluster should be given the same file; a node reads it
//! at start only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::Role;

/// Longest user name, in bytes.
pub const MAX_USER_NAME_BYTES: usize = 64;

/// Longest password accepted, in bytes: far above any passphrase, and a
/// bound on what one `Hello` makes the node hash.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Most users in one file.
pub const MAX_USERS: usize = 10_000;

/// Largest users file read, in bytes.
const MAX_USERS_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The users a client port admits, by name.
pub struct Users {
    by_name: BTreeMap<String, (Role, String)>,
    /// Checked for unknown names, so that they cost what a known one does.
    decoy: String,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} users)", self.by_name.len())
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    role: String,
    password_hash: String,
}

fn bad(what: impl fmt::Display) -> Error {
    Error::InvalidInput(format!("users: {what}"))
}

/// Checks a user name: 1 to [`MAX_USER_NAME_BYTES`] bytes of ASCII
/// letters, digits and `_ . - @`.
pub fn check_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "user name {name:?} must be 1 to {MAX_USER_NAME_BYTES} ASCII letters, digits or _.-@"
        )))
    }
}

impl Users {
    /// Parses the text of a users file and checks every entry: names,
    /// roles, and that each hash is an argon2 PHC string.
    pub fn parse(text: &str) -> Result<Users> {
        let file: UsersFile = toml::from_str(text).map_err(|e| {
            let one_line = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            bad(one_line)
        })?;
        if file.user.len() > MAX_USERS {
            return Err(bad(format!("more than {MAX_USERS} users")));
        }
        let mut by_name = BTreeMap::new();
        let mut params = None;
        for entry in file.user {
            check_user_name(&entry.name)?;
            let role: Role = entry
                .role
                .parse()
                .map_err(|e| bad(format!("user {}: {e}", entry.name)))?;
            let parsed = PasswordHash::new(&entry.password_hash).map_err(|e| {
                bad(format!(
                    "user {}: password_hash is not a PHC string: {e}",
                    entry.name
                ))
            })?;
            if parsed.algorithm != argon2::ARGON2ID_IDENT {
                return Err(bad(format!(
                    "user {}: password_hash must be argon2id, got {}",
                    entry.name, parsed.algorithm
                )));
            }
            let p = Params::try_from(&parsed)
                .map_err(|e| bad(format!("user {}: bad argon2 parameters: {e}", entry.name)))?;
            params.get_or_insert(p);
            if by_name
                .insert(entry.name.clone(), (role, entry.password_hash))
                .is_some()
            {
                return Err(bad(format!("user {} appears twice", entry.name)));
            }
        }
        let decoy = hash_with(
            "decoy password for names that do not exist",
            params.unwrap_or_default(),
        )?;
        Ok(Users { by_name, decoy })
    }

    /// Reads and parses a users file.
    pub fn read(path: &Path) -> Result<Users> {
        let text = read_text(path)?;
        Users::parse(&text).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The role of `name` if `password` is theirs. CPU-heavy by design
    /// (tens of milliseconds): call it off the async threads, and bound
    /// how many run at once.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        if password.len() > MAX_PASSWORD_BYTES {
            return None;
        }
        let (role, hash) = match self.by_name.get(name) {
            Some((role, hash)) => (Some(*role), hash.as_str()),
            None => (None, self.decoy.as_str()),
        };
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        if ok {
            role
        } else {
            None
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening the users file {}", path.display()), e))?;
    let mut bytes = Vec::new();
    file.take(MAX_USERS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading the users file {}", path.display()), e))?;
    if bytes.len() as u64 > MAX_USERS_FILE_BYTES {
        return Err(bad(format!(
            "{} is larger than {MAX_USERS_FILE_BYTES} bytes",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| bad(format!("{} is not UTF-8", path.display())))
}

fn hash_with(password: &str, params: Params) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| bad(format!("salt: {e}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| bad(format!("hashing a password: {e}")))
}

/// An argon2id hash of `password` with the default parameters (19 MiB,
/// two passes: OWASP's first recommendation), as a PHC string.
pub fn hash_password(password: &str) -> Result<String> {
    check_password(password)?;
    hash_with(password, Params::default())
}

/// An argon2id hash with `memory_kib` KiB and `passes` passes: for tests,
/// where the default cost would slow every connection down.
pub fn hash_password_with_cost(password: &str, memory_kib: u32, passes: u32) -> Result<String> {
    check_password(password)?;
    let params = Params::new(memory_kib, passes, 1, None)
        .map_err(|e| bad(format!("argon2 parameters: {e}")))?;
    hash_with(password, params)
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(bad(format!(
            "a password must be 1 to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Adds `name` with `role` and a hash of `password` to the users file at
/// `path` (creating it, mode 0600), or replaces that user's role and
/// password. The file is rewritten through a temporary file and a rename.
pub fn add_user(path: &Path, name: &str, role: Role, password_hash: String) -> Result<()> {
    check_user_name(name)?;
    let mut file: UsersFile = if path.exists() {
        let text = read_text(path)?;
        // Refuse to rewrite a file that does not parse: it may be someone's
        // hand edit with a typo, and rewriting would drop it.
        Users::parse(&text).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("{}: {m}", path.display())),
            other => other,
        })?;
        toml::from_str(&text).map_err(|e| bad(e.to_string()))?
    } else {
        UsersFile::default()
    };
    file.user.retain(|u| u.name != name);
    file.user.push(UserEntry {
        name: name.to_string(),
        role: role.name().to_string(),
        password_hash,
    });
    let text = toml::to_string(&file).map_err(|e| bad(format!("writing: {e}")))?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap(password: &str) -> String {
        hash_password_with_cost(password, 256, 1).unwrap()
    }

    fn users(entries: &[(&str, &str, &str)]) -> Users {
        let mut text = String::new();
        for (name, role, password) in entries {
            text.push_str(&format!(
                "[[user]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{}\"\n",
                cheap(password)
            ));
        }
        Users::parse(&text).unwrap()
    }

    #[test]
    fn the_right_password_gives_the_role_and_nothing_else_does() {
        let u = users(&[("ann", "admin", "s3cret"), ("rob", "read", "other")]);
        assert_eq!(u.verify("ann", "s3cret"), Some(Role::Admin));
        assert_eq!(u.verify("rob", "other"), Some(Role::Read));
        assert_eq!(u.verify("ann", "other"), None);
        assert_eq!(u.verify("ann", "s3cret "), None);
        assert_eq!(u.verify("nobody", "s3cret"), None);
        assert_eq!(u.verify("ann", &"x".repeat(MAX_PASSWORD_BYTES + 1)), None);
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let h = cheap("pw");
        let cases = [
            (format!("[[user]]\nname = \"a b\"\nrole = \"admin\"\npassword_hash = \"{h}\"\n"), "user name"),
            (format!("[[user]]\nname = \"a\"\nrole = \"root\"\npassword_hash = \"{h}\"\n"), "unknown role"),
            ("[[user]]\nname = \"a\"\nrole = \"read\"\npassword_hash = \"plain\"\n".to_string(), "PHC"),
            (format!("[[user]]\nname = \"a\"\nrole = \"read\"\npassword_hash = \"{h}\"\n[[user]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"{h}\"\n"), "twice"),
            (format!("[[user]]\nname = \"a\"\nrole = \"read\"\npassword_hash = \"{h}\"\npassword = \"x\"\n"), "password"),
            ("[[user]]\nname = \"a\"\nrole = \"read\"\npassword_hash = \"$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g\"\n".to_string(), "argon2id"),
        ];
        for (text, want) in cases {
            let m = Users::parse(&text).unwrap_err().to_string();
            assert!(m.contains(want), "{m} (wanted {want:?})");
        }
        assert!(Users::parse("").unwrap().is_empty());
    }

    #[test]
    fn add_user_creates_then_updates_the_file_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        add_user(&path, "admin", Role::Admin, cheap("first")).unwrap();
        add_user(&path, "app", Role::ReadWrite, cheap("apppw")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Replacing a user changes its role and password, keeps the others.
        add_user(&path, "admin", Role::Read, cheap("second")).unwrap();
        let u = Users::read(&path).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u.verify("admin", "first"), None);
        assert_eq!(u.verify("admin", "second"), Some(Role::Read));
        assert_eq!(u.verify("app", "apppw"), Some(Role::ReadWrite));
        // A broken file is not overwritten.
        std::fs::write(&path, "[[user]]\nname = 1\n").unwrap();
        assert!(add_user(&path, "x", Role::Read, cheap("p")).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[[user]]\nname = 1\n"
        );
        assert!(hash_password("").is_err());
    }
}

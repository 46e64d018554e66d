//! The HMAC key: loaded from a file or an environment variable (hex), never
//! printed, and the signing/verifying of canonical command bytes. Both ends
//! use it: controllers sign here, the host's verifier checks with
//! [`HmacKey::verify`].

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use leyline::AdaptationCommand;
use leyline::command::canonical_bytes;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted, in bytes: HMAC-SHA256 keys shorter than the hash
/// output weaken it (RFC 2104 §3), so a short key is a configuration error.
pub const MIN_KEY_BYTES: usize = 32;
/// Longest key accepted, in bytes (HMAC hashes longer keys down anyway; the
/// cap only bounds what we read).
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest key file read: the hex of the longest key plus whitespace.
pub const KEY_FILE_BYTES_CAP: u64 = (MAX_KEY_BYTES as u64) * 2 + 64;
/// Length of an HMAC-SHA256 tag.
pub const SIGNATURE_BYTES: usize = 32;

/// Why a key could not be loaded. No variant ever carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read HMAC key file {path}: {source}")]
    Io {
        /// Key file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The key file is larger than [`KEY_FILE_BYTES_CAP`].
    #[error("HMAC key file {path} is {size} bytes; the cap is {cap}")]
    FileTooLarge {
        /// Key file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// No key file was named and the environment variable is not set.
    #[error("no HMAC key: no key file is configured and environment variable {var} is not set")]
    EnvMissing {
        /// Variable that was looked up.
        var: String,
    },
    /// The environment variable is not valid Unicode.
    #[error("environment variable {var} holding the HMAC key is not valid Unicode")]
    EnvNotUnicode {
        /// Variable that was looked up.
        var: String,
    },
    /// The text is not hex. The offending character is deliberately not shown.
    #[error("HMAC key from {source_name} is not valid hex: {problem}")]
    NotHex {
        /// Where the key came from (file path or `env:VAR`).
        source_name: String,
        /// Odd length or the position of the first non-hex character.
        problem: String,
    },
    /// The key is shorter than [`MIN_KEY_BYTES`] or longer than [`MAX_KEY_BYTES`].
    #[error("HMAC key from {source_name} is {len} bytes; it must be {min}..={max} bytes")]
    BadLength {
        /// Where the key came from.
        source_name: String,
        /// Its length in bytes.
        len: usize,
        /// Minimum.
        min: usize,
        /// Maximum.
        max: usize,
    },
}

/// An HMAC-SHA256 key, ready to sign and verify. `Debug` never shows it.
#[derive(Clone)]
pub struct HmacKey {
    // Keyed once; cloning the keyed state per command skips the key schedule.
    mac: HmacSha256,
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl HmacKey {
    /// A key from raw bytes (length-checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<HmacKey, KeyError> {
        Self::from_bytes_named(bytes, "bytes")
    }

    /// A key from hex text; surrounding whitespace is trimmed.
    pub fn from_hex(text: &str) -> Result<HmacKey, KeyError> {
        Self::from_hex_named(text, "hex")
    }

    /// Reads a hex key file (size-capped before reading).
    pub fn from_file(path: &Path) -> Result<HmacKey, KeyError> {
        let io = |source| KeyError::Io { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > KEY_FILE_BYTES_CAP {
            return Err(KeyError::FileTooLarge { path: path.to_path_buf(), size, cap: KEY_FILE_BYTES_CAP });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_hex_named(&text, &path.display().to_string())
    }

    /// Reads a hex key from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<HmacKey, KeyError> {
        match std::env::var(var) {
            Ok(text) => Self::from_hex_named(&text, &format!("env:{var}")),
            Err(std::env::VarError::NotPresent) => Err(KeyError::EnvMissing { var: var.to_owned() }),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::EnvNotUnicode { var: var.to_owned() }),
        }
    }

    fn from_hex_named(text: &str, source_name: &str) -> Result<HmacKey, KeyError> {
        let trimmed = text.trim();
        if trimmed.len() > MAX_KEY_BYTES * 2 {
            return Err(KeyError::BadLength {
                source_name: source_name.to_owned(),
                len: trimmed.len() / 2,
                min: MIN_KEY_BYTES,
                max: MAX_KEY_BYTES,
            });
        }
        let bytes = hex::decode(trimmed).map_err(|e| KeyError::NotHex {
            source_name: source_name.to_owned(),
            // hex's own message names the offending character: a key byte.
            problem: match e {
                hex::FromHexError::InvalidHexCharacter { index, .. } => format!("non-hex character at index {index}"),
                hex::FromHexError::OddLength => "odd number of hex digits".to_owned(),
                hex::FromHexError::InvalidStringLength => "invalid length".to_owned(),
            },
        })?;
        Self::from_bytes_named(&bytes, source_name)
    }

    fn from_bytes_named(bytes: &[u8], source_name: &str) -> Result<HmacKey, KeyError> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
            return Err(KeyError::BadLength {
                source_name: source_name.to_owned(),
                len: bytes.len(),
                min: MIN_KEY_BYTES,
                max: MAX_KEY_BYTES,
            });
        }
        // HMAC accepts keys of any length, so this cannot fail.
        match HmacSha256::new_from_slice(bytes) {
            Ok(mac) => Ok(HmacKey { mac }),
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
        }
    }

    /// The HMAC-SHA256 tag of `bytes`.
    pub fn tag(&self, bytes: &[u8]) -> [u8; SIGNATURE_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Whether `signature` is the tag of `bytes`, compared in constant time.
    pub fn verify(&self, bytes: &[u8], signature: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac.verify_slice(signature).is_ok()
    }
}

/// The signature a controller attaches to `command`: HMAC-SHA256 over
/// [`canonical_bytes`] (which exclude the signature field).
pub fn sign(command: &AdaptationCommand, key: &HmacKey) -> Vec<u8> {
    key.tag(&canonical_bytes(command)).to_vec()
}

/// Signs `command` in place (replacing any existing signature).
pub fn sign_in_place(command: &mut AdaptationCommand, key: &HmacKey) {
    command.signature = Some(sign(command, key));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn debug_is_redacted() {
        let key = HmacKey::from_hex(KEY_HEX).expect("valid key");
        assert_eq!(format!("{key:?}"), "HmacKey(<redacted>)");
    }

    #[test]
    fn rfc4231_style_tag_round_trips_and_rejects_tampering() {
        let key = HmacKey::from_hex(KEY_HEX).expect("valid key");
        let tag = key.tag(b"payload");
        assert!(key.verify(b"payload", &tag));
        assert!(!key.verify(b"payloae", &tag));
        assert!(!key.verify(b"payload", &tag[..31]));
        let other = HmacKey::from_bytes(&[7u8; 32]).expect("valid key");
        assert!(!other.verify(b"payload", &tag));
    }

    #[test]
    fn known_answer_matches_an_independent_hmac() {
        // Same computation done directly with the hmac crate; guards against
        // the cached keyed state leaking between calls.
        let key = HmacKey::from_bytes(&[0x0b; 32]).expect("valid key");
        let _ = key.tag(b"first message");
        let mut direct = HmacSha256::new_from_slice(&[0x0b; 32]).expect("any length");
        direct.update(b"Hi There");
        let expected: [u8; 32] = direct.finalize().into_bytes().into();
        assert_eq!(key.tag(b"Hi There"), expected);
    }

    #[test]
    fn bad_hex_error_does_not_echo_key_material() {
        let bad = format!("{}zz", &KEY_HEX[..62]);
        let err = HmacKey::from_hex(&bad).unwrap_err().to_string();
        assert!(err.contains("index 62"), "{err}");
        assert!(!err.contains('z'), "{err}");
        assert!(!err.contains(&KEY_HEX[..16]), "{err}");
    }

    #[test]
    fn short_and_long_keys_are_refused() {
        assert!(matches!(HmacKey::from_bytes(&[1; 31]), Err(KeyError::BadLength { len: 31, .. })));
        assert!(matches!(HmacKey::from_bytes(&[1; MAX_KEY_BYTES + 1]), Err(KeyError::BadLength { .. })));
        assert!(HmacKey::from_hex("").is_err());
    }
}

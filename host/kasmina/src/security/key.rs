//! The HMAC key. The key type, its loading and signing live in
//! `kasmina-client` (controllers need them without linking the host) and
//! are re-exported here; what stays is choosing the key the settings name.

pub use kasmina_client::key::{
    HmacKey, KEY_FILE_BYTES_CAP, KeyError, MAX_KEY_BYTES, MIN_KEY_BYTES, SIGNATURE_BYTES, sign, sign_in_place,
};

use crate::settings::SecuritySettings;

/// Loading the key that [`SecuritySettings`] name. A trait because
/// [`HmacKey`] belongs to `kasmina-client`, which knows nothing of settings.
pub trait KeyFromSettings: Sized {
    /// The key the settings name: `security.key_file` if set (an unreadable
    /// file is an error, never a fall-through to the environment), else the
    /// variable `security.key_env`.
    fn from_settings(security: &SecuritySettings) -> Result<Self, KeyError>;
}

impl KeyFromSettings for HmacKey {
    fn from_settings(security: &SecuritySettings) -> Result<HmacKey, KeyError> {
        match &security.key_file {
            Some(path) => HmacKey::from_file(path),
            None => HmacKey::from_env(&security.key_env),
        }
    }
}

//! Protected attributes sealed at rest (field-level encryption): XChaCha20-Poly1305 under a key
//! of the key file, a random 192-bit nonce per row (no practical limit on rows per key, unlike
//! AES-GCM's 96-bit nonces), and the application id as associated data, so a sealed value opens
//! only on its own row. Layout: key id (1 byte) | nonce (24) | ciphertext | tag (16).
//!
//! The key file has one key per line, `<id> <64 hex digits>` (id 1–255; `#` starts a comment):
//! the last line seals, every line opens, so a key is rotated by appending a line.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use bytestring::ByteString;

use crate::domain::{ProtectedAttributes, SealedBytes};

const NONCE: usize = 24;
/// Key id, nonce and tag: what sealing adds to the plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE + 16;
/// Length marking an absent text (and `i32::MIN` an absent age) in the plaintext.
const ABSENT: u16 = u16::MAX;

/// Why a key file or a sealed value could not be used. Retrying never helps.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("line {line} of the key file: {reason}")]
    KeyFile { line: usize, reason: String },
    #[error("the key file holds no key")]
    NoKey,
    #[error("the sealed protected attributes of {application_id} do not open: {reason}")]
    Unopenable { application_id: String, reason: &'static str },
}

/// The keys of the key file: the active one seals, all of them open.
pub struct ProtectedKeys {
    active: u8,
    keys: BTreeMap<u8, XChaCha20Poly1305>,
}

impl std::fmt::Debug for ProtectedKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.keys().copied().collect();
        formatter.debug_struct("ProtectedKeys").field("active", &self.active).field("ids", &ids).finish()
    }
}

impl ProtectedKeys {
    /// Reads the key file's text; errors name the line, never the key.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let (mut keys, mut active) = (BTreeMap::new(), None);
        for (index, line) in text.lines().enumerate() {
            let line_error = |reason: &str| SealError::KeyFile { line: index + 1, reason: reason.into() };
            let content = line.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let (id, key) =
                content.split_once(char::is_whitespace).ok_or_else(|| line_error("expected `<id> <key>`"))?;
            let id: u8 = id.parse().ok().filter(|id| *id > 0).ok_or_else(|| line_error("the id must be 1 to 255"))?;
            let bytes = hex::decode(key.trim()).map_err(|_| line_error("the key must be hex digits"))?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| line_error("the key must be 32 bytes (64 hex digits)"))?;
            if keys.insert(id, XChaCha20Poly1305::new(&key.into())).is_some() {
                return Err(line_error("the id is used twice"));
            }
            active = Some(id);
        }
        Ok(Self { active: active.ok_or(SealError::NoKey)?, keys })
    }

    /// A new key file's text with one random key (id 1).
    pub fn generate() -> String {
        format!("1 {}\n", hex::encode(rand::random::<[u8; 32]>()))
    }

    /// `protected` sealed under the active key, bound to `application_id`.
    pub fn seal(&self, application_id: &str, protected: &ProtectedAttributes) -> SealedBytes {
        let nonce: [u8; NONCE] = rand::random();
        let mut out = SealedBytes::new();
        out.push(self.active);
        out.extend_from_slice(&nonce);
        encode(protected, &mut out);
        let tag = self.keys[&self.active]
            .encrypt_inout_detached(&XNonce::from(nonce), application_id.as_bytes(), (&mut out[1 + NONCE..]).into())
            .expect("in-memory sealing");
        out.extend_from_slice(&tag);
        out
    }

    /// The attributes `sealed` holds, if it was sealed for `application_id` under a known key.
    pub fn open(&self, application_id: &str, sealed: &[u8]) -> Result<ProtectedAttributes, SealError> {
        let fail = |reason| SealError::Unopenable { application_id: application_id.to_owned(), reason };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(fail("too short"));
        }
        let key = self.keys.get(&sealed[0]).ok_or_else(|| fail("sealed under a key id the key file does not hold"))?;
        let nonce: [u8; NONCE] = sealed[1..1 + NONCE].try_into().map_err(|_| fail("too short"))?;
        let payload = Payload { msg: &sealed[1 + NONCE..], aad: application_id.as_bytes() };
        let plain = key
            .decrypt(&XNonce::from(nonce), payload)
            .map_err(|_| fail("authentication failed (another key, another row, or altered)"))?;
        decode(&plain).ok_or_else(|| fail("malformed plaintext"))
    }
}

/// A stored row's protected columns, read by name: a row written sealed holds them only in
/// `protected_sealed`, a row written before sealing in the plaintext columns.
#[derive(sqlx::FromRow)]
pub struct StoredProtected {
    application_id: String,
    sex_status: Option<String>,
    age_in_years: Option<i16>,
    foreign_worker: Option<String>,
    protected_sealed: Option<Vec<u8>>,
}

impl StoredProtected {
    /// The row's application id and protected attributes, opened with `keys` if sealed.
    pub fn open(self, keys: &ProtectedKeys) -> Result<(String, ProtectedAttributes), SealError> {
        let protected = match &self.protected_sealed {
            Some(sealed) => keys.open(&self.application_id, sealed)?,
            None => ProtectedAttributes {
                personal_status_and_sex: self.sex_status.map(ByteString::from),
                age_in_years: self.age_in_years.map(i32::from),
                foreign_worker: self.foreign_worker.map(ByteString::from),
            },
        };
        Ok((self.application_id, protected))
    }
}

/// The plaintext of `protected`, appended to `out`.
fn encode(protected: &ProtectedAttributes, out: &mut SealedBytes) {
    let text = |value: Option<&str>, out: &mut SealedBytes| match value {
        Some(value) => {
            let value = &value.as_bytes()[..value.len().min(usize::from(ABSENT) - 1)];
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            out.extend_from_slice(value);
        }
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    };
    text(protected.personal_status_and_sex.as_deref(), out);
    out.extend_from_slice(&protected.age_in_years.unwrap_or(i32::MIN).to_le_bytes());
    text(protected.foreign_worker.as_deref(), out);
}

fn decode(mut bytes: &[u8]) -> Option<ProtectedAttributes> {
    fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
        let (head, tail) = (bytes.get(..count)?, bytes.get(count..)?);
        *bytes = tail;
        Some(head)
    }
    fn text(bytes: &mut &[u8]) -> Option<Option<ByteString>> {
        let length = u16::from_le_bytes(take(bytes, 2)?.try_into().ok()?);
        if length == ABSENT {
            return Some(None);
        }
        Some(Some(ByteString::try_from(take(bytes, usize::from(length))?).ok()?))
    }
    let personal_status_and_sex = text(&mut bytes)?;
    let age = i32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
    let foreign_worker = text(&mut bytes)?;
    bytes.is_empty().then_some(ProtectedAttributes {
        personal_status_and_sex,
        age_in_years: (age != i32::MIN).then_some(age),
        foreign_worker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> ProtectedKeys {
        ProtectedKeys::parse(text).unwrap()
    }

    /// The cipher seals as the published XChaCha20-Poly1305 vectors say, on the portable
    /// backends `.cargo/config.toml` selects: draft-irtf-cfrg-xchacha-03 A.3.1 (114 bytes) and
    /// Wycheproof's one-byte case (short texts are what is sealed here).
    #[test]
    fn seals_the_published_vectors() {
        let cases = [
            (
                "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
                "404142434445464748494a4b4c4d4e4f5051525354555657",
                "50515253c0c1c2c3c4c5c6c7",
                hex::encode(
                    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the \
                             future, sunscreen would be it.",
                ),
                "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39\
                 ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
                 21f9664c97637da9768812f615c68b13b52ec0875924c1c7987947deafd8780acf49",
            ),
            (
                "303ccb2e1567c3d9f629a5c632dbc62a9a82c525674f67988b31bd1dee990538",
                "05188738844ab90a8b11beef38eaec3e100d8f4f85ae7a41",
                "",
                "62".into(),
                "45d15734f984d749fa3f0550a70c43dddf",
            ),
        ];
        for (key, nonce, aad, plain, sealed) in cases {
            let cipher = XChaCha20Poly1305::new_from_slice(&hex::decode(key).unwrap()).unwrap();
            let nonce: [u8; NONCE] = hex::decode(nonce).unwrap().try_into().unwrap();
            let mut text = hex::decode(plain).unwrap();
            let tag = cipher
                .encrypt_inout_detached(&XNonce::from(nonce), &hex::decode(aad).unwrap(), (&mut text[..]).into())
                .unwrap();
            text.extend_from_slice(&tag);
            assert_eq!(hex::encode(text), sealed);
        }
    }

    fn attributes() -> ProtectedAttributes {
        ProtectedAttributes {
            personal_status_and_sex: Some("female : divorced/separated/married".into()),
            age_in_years: Some(23),
            foreign_worker: None,
        }
    }

    /// A sealed value opens to what was sealed, on its own row only, under any key of the file;
    /// it holds no plaintext, and two seals of one value differ (random nonces).
    #[test]
    fn seals_open_on_their_own_row_only() {
        let keys = keys(&ProtectedKeys::generate());
        let sealed = keys.seal("app-1", &attributes());
        assert_eq!(keys.open("app-1", &sealed).unwrap(), attributes());
        assert!(matches!(keys.open("app-2", &sealed), Err(SealError::Unopenable { .. })));
        assert_ne!(sealed, keys.seal("app-1", &attributes()));
        assert!(!sealed.windows(6).any(|window| window == b"female"), "no plaintext in the sealed value");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(keys.open("app-1", &altered).is_err());
        let empty = ProtectedAttributes::default();
        assert_eq!(keys.open("x", &keys.seal("x", &empty)).unwrap(), empty);
    }

    /// Rotation: a new last line seals; values sealed under the older key still open; a file
    /// without that older key cannot open them.
    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = format!("1 {}", "11".repeat(32));
        let rotated = keys(&format!("# rotated 2026-12\n{old}\n2 {}  # current\n", "22".repeat(32)));
        let before = keys(&old).seal("a", &attributes());
        assert_eq!(before[0], 1);
        assert_eq!(rotated.seal("a", &attributes())[0], 2);
        assert_eq!(rotated.open("a", &before).unwrap(), attributes());
        let without_old = keys(&format!("2 {}", "22".repeat(32)));
        assert!(without_old.open("a", &before).is_err());
    }

    /// A malformed key file is refused naming the line, never echoing the key.
    #[test]
    fn malformed_key_files_name_the_line() {
        let cases = [
            ("1 abcd".to_owned(), 1),
            (format!("# comment\n0 {}", "00".repeat(32)), 2),
            ("1 zz".to_owned(), 1),
            (format!("1 {0}\n1 {0}", "33".repeat(32)), 2),
        ];
        for (text, line) in &cases {
            let line = *line;
            match ProtectedKeys::parse(text) {
                Err(SealError::KeyFile { line: found, reason }) => {
                    assert_eq!(found, line, "{text}: {reason}");
                    assert!(!reason.contains("3333"), "{reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(ProtectedKeys::parse("# nothing\n"), Err(SealError::NoKey)));
        assert!(!format!("{:?}", keys(&format!("7 {}", "44".repeat(32)))).contains("4444"));
    }
}

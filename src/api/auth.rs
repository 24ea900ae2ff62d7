//! The API token: where it comes from, the header that carries it, and a
//! token file followed as it is rotated. The secret never shows in `Debug`.

use std::fmt;

use reqwest::header::HeaderValue;

/// An API token. Its `Debug` and `Display` never show the secret.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token read from the environment or a file; the trailing newline
    /// a file usually ends with is dropped. `None` if nothing is left.
    pub fn new(raw: &str) -> Option<Token> {
        let t = raw.trim_end_matches(['\n', '\r']).trim();
        (!t.is_empty()).then(|| Token(t.to_string()))
    }

    /// Replaces every occurrence of the secret in text the server sent back,
    /// in case a proxy echoes request headers into an error page.
    fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where the token comes from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A fixed token (from `TALKOVER_TOKEN`).
    Token(Token),
    /// A file read again whenever it changes (`--talkover.token-file`), so
    /// a rotated token (a Kubernetes Secret updated in place) is picked up
    /// without a restart.
    File(std::path::PathBuf),
}

impl Credentials {
    /// Whether a token can be read now: a token file that is missing,
    /// unreadable or empty is refused at start, naming the flag.
    pub fn check(&self) -> Result<(), String> {
        let Credentials::File(path) = self else {
            return Ok(());
        };
        let raw = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "invalid value '{}' for '--talkover.token-file': {e}",
                path.display()
            )
        })?;
        match Token::new(&raw) {
            Some(_) => Ok(()),
            None => Err(format!(
                "invalid value '{}' for '--talkover.token-file': the file is empty",
                path.display()
            )),
        }
    }
}

/// The current `Authorization` header, following a token file.
#[derive(Debug)]
pub(super) struct Auth {
    file: Option<std::path::PathBuf>,
    /// A std lock: held for a clone or a swap, never across an await.
    current: std::sync::RwLock<AuthState>,
}

#[derive(Debug, Default)]
struct AuthState {
    token: Option<Token>,
    header: Option<HeaderValue>,
    /// Modification time and length of the file when last read.
    stamp: Option<(std::time::SystemTime, u64)>,
}

impl Auth {
    pub(super) fn new(credentials: Option<Credentials>) -> Auth {
        let (file, token) = match credentials {
            None => (None, None),
            Some(Credentials::Token(t)) => (None, Some(t)),
            Some(Credentials::File(path)) => (Some(path), None),
        };
        let auth = Auth {
            file,
            current: std::sync::RwLock::new(AuthState::default()),
        };
        match token {
            Some(t) => auth.set(t, None),
            None => {
                auth.reload();
            }
        }
        auth
    }

    fn set(&self, token: Token, stamp: Option<(std::time::SystemTime, u64)>) {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.0))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
        header.set_sensitive(true);
        let mut st = self.current.write().unwrap_or_else(|e| e.into_inner());
        *st = AuthState {
            token: Some(token),
            header: Some(header),
            stamp,
        };
    }

    fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    /// The header to send, after re-reading the token file if it changed.
    pub(super) fn header(&self) -> Option<HeaderValue> {
        if let Some(path) = &self.file {
            let seen = self.current.read().unwrap_or_else(|e| e.into_inner()).stamp;
            if Self::stamp(path) != seen {
                self.reload();
            }
        }
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .header
            .clone()
    }

    /// Reads the token file again; true if it now holds another token.
    pub(super) fn reload(&self) -> bool {
        let Some(path) = &self.file else { return false };
        let stamp = Self::stamp(path);
        let token = std::fs::read_to_string(path)
            .ok()
            .as_deref()
            .and_then(Token::new);
        let Some(token) = token else {
            tracing::warn!(path = %path.display(), "token file unreadable or empty; keeping the previous token");
            let mut st = self.current.write().unwrap_or_else(|e| e.into_inner());
            st.stamp = stamp;
            return false;
        };
        let changed = {
            let st = self.current.read().unwrap_or_else(|e| e.into_inner());
            st.token.as_ref().map(|t| &t.0) != Some(&token.0)
        };
        if changed {
            tracing::info!(path = %path.display(), "token file changed; using the new token");
        }
        self.set(token, stamp);
        changed
    }

    pub(super) fn redact(&self, text: &str) -> String {
        match &self.current.read().unwrap_or_else(|e| e.into_inner()).token {
            Some(t) => t.redact(text),
            None => text.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_and_trailing_newline() {
        let t = Token::new("talq_abc\n").expect("token");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(Token::new("\n").is_none());
    }
}

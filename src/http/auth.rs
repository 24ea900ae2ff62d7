//! Basic authentication that costs nothing twice and cannot starve polling.
//!
//! A bcrypt check costs hundreds of milliseconds of CPU by design. Run on
//! the async workers, a flood of wrong passwords took the threads that poll
//! the API. Here checks run on the blocking pool, one at a time, so a flood
//! can use at most one of the cores; a request waiting for its turn holds
//! only a connection (which `--web.max-connections` bounds). A (user,
//! password) pair that passed is remembered, as exporter-toolkit does, so
//! the right scraper pays for bcrypt once; wrong pairs are never
//! remembered, and the memory is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use axum::extract::Request;
use axum::http::header;
use tokio::sync::Semaphore;

/// Pairs remembered after passing; past this the oldest is forgotten.
const CACHE_CAP: usize = 256;

/// Checked against for unknown users, so timing does not reveal names.
const DUMMY_HASH: &str = "$2y$10$1111111111111111111111.uOJ8Hf2ABEDpWy3ZLVm7bEgT0u6PnG";

/// The users of `basic_auth_users` and what has been verified.
#[derive(Debug)]
pub(crate) struct BasicAuth {
    /// User name to bcrypt hash.
    pub(crate) hashes: BTreeMap<String, String>,
    /// One bcrypt check at a time.
    checks: Semaphore,
    /// bcrypt checks run, for the tests.
    #[cfg(test)]
    bcrypt_runs: std::sync::atomic::AtomicUsize,
    /// Pairs that passed, oldest first. A std lock: held for a lookup or
    /// an insert, never across an await.
    passed: Mutex<VecDeque<(String, String)>>,
}

impl Default for BasicAuth {
    fn default() -> Self {
        BasicAuth::new(BTreeMap::new())
    }
}

impl BasicAuth {
    pub(crate) fn new(hashes: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            hashes,
            checks: Semaphore::new(1),
            #[cfg(test)]
            bcrypt_runs: Default::default(),
            passed: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether `credentials` (from [`credentials`]) are those of a configured user.
    pub(crate) async fn authorized(&self, credentials: Option<(String, String)>) -> bool {
        let Some((user, password)) = credentials else {
            return false;
        };
        self.check(&user, &password).await
    }

    async fn check(&self, user: &str, password: &str) -> bool {
        if self.remembered(user, password) {
            return true;
        }
        let hash = self
            .hashes
            .get(user)
            .map_or(DUMMY_HASH, String::as_str)
            .to_string();
        let known = self.hashes.contains_key(user);
        // The semaphore is never closed, so this always gets a permit.
        let Ok(_turn) = self.checks.acquire().await else {
            return false;
        };
        #[cfg(test)]
        self.bcrypt_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let candidate = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(candidate, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
                && known;
        if ok {
            self.remember(user, password);
        }
        ok
    }

    fn remembered(&self, user: &str, password: &str) -> bool {
        let passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        // Every entry is compared in full, so the time taken says nothing
        // about how much of a guess was right.
        passed.iter().fold(false, |found, (u, p)| {
            found | (constant_time_eq(u, user) & constant_time_eq(p, password))
        })
    }

    fn remember(&self, user: &str, password: &str) {
        let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if passed.iter().any(|(u, p)| u == user && p == password) {
            return;
        }
        if passed.len() >= CACHE_CAP {
            passed.pop_front();
        }
        passed.push_back((user.to_string(), password.to_string()));
    }

    #[cfg(test)]
    fn remembered_count(&self) -> usize {
        self.passed.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The user and password of an `Authorization: Basic` header.
pub(crate) fn credentials(req: &Request) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (user, password) = pair.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn right_pairs_are_remembered_wrong_ones_never() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let auth = BasicAuth::new([("prom".to_string(), hash)].into());
        assert!(!auth.check("prom", "wrong").await);
        assert!(!auth.check("nobody", "secret").await);
        assert_eq!(auth.remembered_count(), 0, "failures are not remembered");
        assert!(auth.check("prom", "secret").await);
        assert_eq!(auth.remembered_count(), 1);
        let runs = |a: &BasicAuth| a.bcrypt_runs.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(runs(&auth), 3);
        // From now on the right pair costs no bcrypt check.
        for _ in 0..100 {
            assert!(auth.check("prom", "secret").await);
        }
        assert_eq!(runs(&auth), 3);
        assert!(!auth.check("prom", "secre").await);
        assert!(!auth.check("prom", "secret2").await);
        assert_eq!(runs(&auth), 5, "wrong pairs are checked every time");
    }

    #[test]
    fn the_memory_is_bounded() {
        let auth = BasicAuth::new(BTreeMap::new());
        for i in 0..CACHE_CAP + 10 {
            auth.remember("u", &format!("p{i}"));
        }
        assert_eq!(auth.remembered_count(), CACHE_CAP);
        assert!(!auth.remembered("u", "p0"), "the oldest was forgotten");
        assert!(auth.remembered("u", &format!("p{}", CACHE_CAP + 9)));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "a"));
    }
}

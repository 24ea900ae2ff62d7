//! The pollers: one loop per watched webhook that polls its log with the
//! counting engine ([`talkover_count::collect`]), backs off, hands each new
//! state to the state file, and reports readiness.
//!
//! - `poller`: one webhook's loop: schedule, backoff, handing states on.
//! - `fleet`: the pollers of every watched webhook.

mod fleet;
mod poller;

pub(crate) use fleet::panic_message;
pub use fleet::Fleet;
pub use poller::{api_wait_cap, run_target, Links};
pub use talkover_count::collect::{PageSource, PollConfig};

use talkover_count::api::{ApiError, ApiHealth, LogPage};
use talkover_count::clock::ClockOffset;
use talkover_count::target::Target;

use crate::api;

impl PageSource for api::Client {
    async fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        per_page: u32,
    ) -> Result<LogPage, ApiError> {
        api::Client::fetch_logs(self, target, page, per_page).await
    }

    fn clock_offset(&self) -> Option<ClockOffset> {
        self.clock().offset()
    }

    fn health(&self) -> Option<&ApiHealth> {
        Some(api::Client::health(self))
    }
}

#[cfg(test)]
mod tests;

//! When a leader starts writing the newest entry format.
//!
//! During a rolling upgrade members run different releases, and a member
//! that meets an entry in a format it does not know stops (see
//! `codec::ENTRY_FORMAT_VERSION`). So a leader writes the format the log has
//! reached (`codec::BASE_ENTRY_FORMAT` in a new cluster) until every member
//! reports, over the `Status` call, that it applies the newest format; from
//! then on it writes the newest. A log that already holds a newest-format
//! entry (applied here) needs no asking: every member applied it or will
//! stop at it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use super::batcher::Batcher;
use super::codec::ENTRY_FORMAT_VERSION;
use super::network::Peers;
use super::state_machine::SharedState;
use super::status::StatusSource;

/// How often a leader asks its members while some may run an older release.
const ASK_EVERY: Duration = Duration::from_secs(2);

/// Runs until the batcher writes the newest format or the node stops.
pub async fn adopt_newest_when_every_member_applies_it(
    status: StatusSource,
    peers: Peers,
    batcher: Batcher,
    shared: Arc<SharedState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let reached = shared.log_entry_format.load(Ordering::Acquire);
        if reached >= ENTRY_FORMAT_VERSION {
            batcher.use_newest_entry_format();
            return;
        }
        // The format of the log so far (say 2, written by an older leader
        // whose members still run that release) goes on.
        batcher.use_entry_format(reached);
        let (leader, members) = {
            let m = status.raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader,
                m.membership_config.membership().nodes().count(),
            )
        };
        // A single node forwards nothing: it keeps the base format, and its
        // data directory stays readable by the releases before until a push
        // needs more (see `batcher::batch_format`).
        if leader && members > 1 {
            let cluster = status.cluster_status(&peers).await;
            let behind: Vec<String> = cluster
                .nodes
                .iter()
                .filter_map(|(id, m)| match &m.report {
                    Some(r) if r.entry_format >= ENTRY_FORMAT_VERSION => None,
                    Some(r) => Some(format!(
                        "node {id} runs pushgate {} (entry format {})",
                        r.version, r.entry_format
                    )),
                    None => Some(format!("node {id} did not answer")),
                })
                .collect();
            if behind.is_empty() {
                tracing::info!(
                    entry_format = ENTRY_FORMAT_VERSION,
                    "every member applies the newest log entry format: writing it from now on (pushes forwarded by \
                     followers are applied exactly once)"
                );
                batcher.use_newest_entry_format();
                return;
            }
            tracing::debug!(behind = ?behind, "keeping the older log entry format until every member applies the newest");
        }
        tokio::select! {
            _ = tokio::time::sleep(ASK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

//! Named fault schedules. A schedule is a list of faults at fixed simulated
//! times; which node a fault hits may depend on the run (the current leader)
//! and on the seed.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// No faults: the baseline every checker must accept.
    Calm,
    /// The leader crashes (disk kept) and restarts five seconds later.
    LeaderCrash,
    /// The leader is cut off from the other replicas (clients still reach
    /// it), then the partition heals.
    LeaderIsolated,
    /// A random follower is cut off, then the partition heals.
    FollowerIsolated,
    /// The leader's messages to the others are dropped, theirs to it still
    /// arrive (one-way partition), then it heals.
    LeaderMuted,
    /// The leader is cut off and reconnected every second for six seconds.
    FlappingLeader,
    /// Every message takes up to 800 ms for six seconds (elections time out).
    LatencySpike,
    /// 2% of messages are lost for six seconds (in turmoil a lost TCP segment
    /// breaks its connection: connections die and are re-established).
    LossyNetwork,
}

/// One fault action at a simulated time.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    CrashLeader,
    RestartCrashed,
    IsolateLeader,
    IsolateFollower,
    MuteLeader,
    Heal,
    SlowNetwork,
    LoseMessages,
    NormalNetwork,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Calm,
        Scenario::LeaderCrash,
        Scenario::LeaderIsolated,
        Scenario::FollowerIsolated,
        Scenario::LeaderMuted,
        Scenario::FlappingLeader,
        Scenario::LatencySpike,
        Scenario::LossyNetwork,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Calm => "calm",
            Scenario::LeaderCrash => "leader-crash",
            Scenario::LeaderIsolated => "leader-isolated",
            Scenario::FollowerIsolated => "follower-isolated",
            Scenario::LeaderMuted => "leader-muted",
            Scenario::FlappingLeader => "flapping-leader",
            Scenario::LatencySpike => "latency-spike",
            Scenario::LossyNetwork => "lossy-network",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Faults by simulated time since the start. Every schedule has healed
    /// by [`FAULTS_END`].
    pub fn schedule(self) -> Vec<(Duration, Fault)> {
        let s = Duration::from_secs;
        match self {
            Scenario::Calm => vec![],
            Scenario::LeaderCrash => vec![(s(6), Fault::CrashLeader), (s(11), Fault::RestartCrashed)],
            Scenario::LeaderIsolated => vec![(s(6), Fault::IsolateLeader), (s(12), Fault::Heal)],
            Scenario::FollowerIsolated => vec![(s(6), Fault::IsolateFollower), (s(12), Fault::Heal)],
            Scenario::LeaderMuted => vec![(s(6), Fault::MuteLeader), (s(12), Fault::Heal)],
            Scenario::FlappingLeader => (6..12)
                .flat_map(|t| {
                    [
                        (s(t), Fault::IsolateLeader),
                        (s(t) + Duration::from_millis(500), Fault::Heal),
                    ]
                })
                .collect(),
            Scenario::LatencySpike => vec![(s(6), Fault::SlowNetwork), (s(12), Fault::NormalNetwork)],
            Scenario::LossyNetwork => vec![(s(6), Fault::LoseMessages), (s(12), Fault::NormalNetwork)],
        }
    }
}

/// When client traffic stops and the final, fault-free checks begin.
pub const FAULTS_END: Duration = Duration::from_secs(16);

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
    /// Five nodes, no faults.
    CalmFive,
    /// Five nodes: the leader and one follower (a minority) are cut off from
    /// the other three, which elect a new leader; then it heals.
    MinoritySplit,
    /// Five nodes: the leader keeps two followers (a majority), two are cut
    /// off; then it heals.
    MajoritySplit,
    /// Five nodes: the leader and a follower crash together (disk kept) and
    /// restart five seconds later.
    TwoCrash,
    /// A follower's disk is lost: it crashes with its data directory deleted,
    /// and is replaced by the README's procedure (remove its id, start a node
    /// with a new id and an empty directory, add it).
    DiskLoss,
    /// Every node crashes at once (disks kept) and restarts a second later;
    /// then again, with half a second down. A leader may come back as the
    /// leader of its old term: its first reads must still reflect every
    /// push acknowledged before the crash.
    FullRestart,
    /// Wall clocks disagree and jump: every follower's clock falls an hour
    /// behind, the leader crashes (so one of them leads and stamps the
    /// pushes), the new leader's clock jumps back two hours more, and the
    /// crashed node comes back. Push and failure times must stay monotonic
    /// per group (the checker follows which is later).
    ClockSkew,
    /// Membership changes under a partition: a follower is cut off and the
    /// operator replaces it while it is (remove its id, start a node with a
    /// new id, add it); then the partition heals. The removed node still
    /// runs and clients still ask it: it must not serve a stale read or
    /// take a push, nor disrupt the new configuration when it returns.
    ReplaceIsolated,
    /// A membership change while the leader is cut off: the operator adds a
    /// fourth node (through whichever node answers, so the majority's new
    /// leader carries it out), then the partition heals and the old leader
    /// must step down and catch up with the new configuration.
    AddDuringSplit,
    /// The leader is cut off and the operator removes it through the
    /// majority (the cluster goes on with two voters); then the partition
    /// heals. The removed node still runs and clients still ask it.
    RemoveIsolatedLeader,
    /// The leader crashes while the operator adds a fourth node: at a
    /// moment between 0 and 700 ms after the request that the seed picks,
    /// so that across seeds the crash falls while the new node catches up
    /// as a learner, while the joint configuration is being committed, and
    /// after the change. The operator retries until the change is made; the
    /// crashed node comes back five seconds later.
    AddLeaderCrash,
    /// The node being added is cut off from every other node while it
    /// catches up (at a moment the seed picks), then the partition heals.
    /// The cluster must keep serving with its three voters meanwhile, and
    /// finish the change once the new node is back.
    AddCutOff,
    /// The README's rolling upgrade: each node in turn is stopped
    /// gracefully (as by SIGTERM) and started again, the followers first,
    /// the leader last. Besides the usual checks, no node but the one
    /// stopping may answer anything with a 5xx: a stopping leader hands
    /// over first.
    RollingRestart,
    /// A majority lost for good: both followers crash and their data
    /// directories are deleted. The operator follows the README: stops the
    /// survivor (the leader), runs `pushgate cluster recover --force` on its
    /// data directory and starts it again, the only voter of a new cluster;
    /// then starts the lost ids on empty directories and adds them. The
    /// survivor led, so it holds every acknowledged push.
    MajorityLost,
}

/// One fault action at a simulated time.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    CrashLeader,
    CrashFollower,
    /// Every running node crashes.
    CrashAll,
    RestartCrashed,
    /// The leader and `with_leader - 1` random followers on one side, the
    /// other nodes on the other; clients reach both.
    Split {
        with_leader: usize,
    },
    IsolateFollower,
    MuteLeader,
    Heal,
    SlowNetwork,
    LoseMessages,
    NormalNetwork,
    /// A random follower crashes and its data directory is deleted.
    LoseDisk,
    /// The lost node's id is removed, a node with a new id is started on a
    /// new host with an empty directory, and it is added.
    ReplaceLost,
    /// The same replacement for the follower cut off by `IsolateFollower`,
    /// which keeps running.
    ReplaceIsolated,
    /// The node added by `AddNode` is cut off from every other node.
    IsolateAdded,
    /// The node cut off by a `Split` that left the leader alone, or by
    /// `IsolateFollower`, is removed (and keeps running).
    RemoveIsolated,
    /// A node with a new id is started on a new host with an empty
    /// directory, and the operator adds it.
    AddNode,
    /// The leader is stopped gracefully (as by SIGTERM).
    StopLeader,
    /// A follower not stopped before in this run is stopped gracefully.
    StopFollower,
    /// The nodes stopped gracefully are started again, each once it has
    /// exited.
    RestartStopped,
    /// Every follower crashes and its data directory is deleted.
    LoseFollowerDisks,
    /// The leader is stopped, recovered offline as the only voter of a new
    /// cluster (`cluster::recover`) and started again.
    RecoverLeader,
    /// The nodes whose disks were lost start again on empty directories and
    /// the operator adds them, one after the other.
    AddBackLost,
    /// Every follower's wall clock is set back by this many seconds.
    FollowerClocksBack(i64),
    /// The leader's wall clock jumps back by this many seconds.
    LeaderClockBack(i64),
}

impl Scenario {
    pub const ALL: [Scenario; 22] = [
        Scenario::Calm,
        Scenario::LeaderCrash,
        Scenario::LeaderIsolated,
        Scenario::FollowerIsolated,
        Scenario::LeaderMuted,
        Scenario::FlappingLeader,
        Scenario::LatencySpike,
        Scenario::LossyNetwork,
        Scenario::CalmFive,
        Scenario::MinoritySplit,
        Scenario::MajoritySplit,
        Scenario::TwoCrash,
        Scenario::DiskLoss,
        Scenario::FullRestart,
        Scenario::ClockSkew,
        Scenario::ReplaceIsolated,
        Scenario::AddDuringSplit,
        Scenario::RemoveIsolatedLeader,
        Scenario::AddLeaderCrash,
        Scenario::AddCutOff,
        Scenario::RollingRestart,
        Scenario::MajorityLost,
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
            Scenario::CalmFive => "calm-5",
            Scenario::MinoritySplit => "minority-split-5",
            Scenario::MajoritySplit => "majority-split-5",
            Scenario::TwoCrash => "two-crash-5",
            Scenario::DiskLoss => "disk-loss",
            Scenario::FullRestart => "full-restart",
            Scenario::ClockSkew => "clock-skew",
            Scenario::ReplaceIsolated => "replace-isolated",
            Scenario::AddDuringSplit => "add-during-split",
            Scenario::RemoveIsolatedLeader => "remove-isolated-leader",
            Scenario::AddLeaderCrash => "add-leader-crash",
            Scenario::AddCutOff => "add-cut-off",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::MajorityLost => "majority-lost",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// How many voters the cluster starts with.
    pub fn nodes(self) -> usize {
        match self {
            Scenario::CalmFive | Scenario::MinoritySplit | Scenario::MajoritySplit | Scenario::TwoCrash => 5,
            _ => 3,
        }
    }

    /// Whether every fault is a graceful stop or a restart (see
    /// `Report::graceful`).
    pub fn graceful_only(self) -> bool {
        self == Scenario::RollingRestart
    }

    /// Faults by simulated time since the start; where a fault's moment
    /// matters to the millisecond, `seed` picks it. Every schedule has
    /// healed by [`FAULTS_END`].
    pub fn schedule(self, seed: u64) -> Vec<(Duration, Fault)> {
        let s = Duration::from_secs;
        let jitter = |step_ms: u64, steps: u64| Duration::from_millis(step_ms * (seed % steps));
        let isolate_leader = Fault::Split { with_leader: 1 };
        match self {
            Scenario::Calm | Scenario::CalmFive => vec![],
            Scenario::LeaderCrash => vec![(s(6), Fault::CrashLeader), (s(11), Fault::RestartCrashed)],
            Scenario::LeaderIsolated => vec![(s(6), isolate_leader), (s(12), Fault::Heal)],
            Scenario::FollowerIsolated => vec![(s(6), Fault::IsolateFollower), (s(12), Fault::Heal)],
            Scenario::LeaderMuted => vec![(s(6), Fault::MuteLeader), (s(12), Fault::Heal)],
            Scenario::FlappingLeader => (6..12)
                .flat_map(|t| [(s(t), isolate_leader), (s(t) + Duration::from_millis(500), Fault::Heal)])
                .collect(),
            Scenario::LatencySpike => vec![(s(6), Fault::SlowNetwork), (s(12), Fault::NormalNetwork)],
            Scenario::LossyNetwork => vec![(s(6), Fault::LoseMessages), (s(12), Fault::NormalNetwork)],
            Scenario::MinoritySplit => vec![(s(6), Fault::Split { with_leader: 2 }), (s(12), Fault::Heal)],
            Scenario::MajoritySplit => vec![(s(6), Fault::Split { with_leader: 3 }), (s(12), Fault::Heal)],
            Scenario::TwoCrash => vec![
                (s(6), Fault::CrashLeader),
                (s(6), Fault::CrashFollower),
                (s(11), Fault::RestartCrashed),
            ],
            Scenario::DiskLoss => vec![(s(6), Fault::LoseDisk), (s(8), Fault::ReplaceLost)],
            Scenario::ReplaceIsolated => vec![
                (s(6), Fault::IsolateFollower),
                (s(7), Fault::ReplaceIsolated),
                (s(12), Fault::Heal),
            ],
            Scenario::AddDuringSplit => vec![(s(6), isolate_leader), (s(7), Fault::AddNode), (s(12), Fault::Heal)],
            Scenario::RemoveIsolatedLeader => vec![
                (s(6), isolate_leader),
                (s(7), Fault::RemoveIsolated),
                (s(12), Fault::Heal),
            ],
            Scenario::AddLeaderCrash => vec![
                (s(6), Fault::AddNode),
                (s(6) + jitter(4, 15), Fault::CrashLeader),
                (s(11), Fault::RestartCrashed),
            ],
            Scenario::AddCutOff => vec![
                (s(6), Fault::AddNode),
                (s(6) + jitter(5, 10), Fault::IsolateAdded),
                (s(12), Fault::Heal),
            ],
            Scenario::ClockSkew => vec![
                (s(6), Fault::FollowerClocksBack(3_600)),
                (s(7), Fault::CrashLeader),
                (s(9), Fault::LeaderClockBack(7_200)),
                (s(11), Fault::RestartCrashed),
            ],
            Scenario::RollingRestart => vec![
                (s(6), Fault::StopFollower),
                (s(7), Fault::RestartStopped),
                (s(9), Fault::StopFollower),
                (s(10), Fault::RestartStopped),
                (s(12) + jitter(10, 50), Fault::StopLeader),
                (s(14), Fault::RestartStopped),
            ],
            Scenario::MajorityLost => vec![
                (s(6), Fault::LoseFollowerDisks),
                (s(7), Fault::RecoverLeader),
                (s(9), Fault::AddBackLost),
            ],
            Scenario::FullRestart => vec![
                (s(6), Fault::CrashAll),
                (s(7), Fault::RestartCrashed),
                (s(10), Fault::CrashAll),
                (s(10) + Duration::from_millis(500), Fault::RestartCrashed),
            ],
        }
    }
}

/// When client traffic stops and the final, fault-free checks begin.
pub const FAULTS_END: Duration = Duration::from_secs(16);

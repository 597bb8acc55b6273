//! The group coordinator (Kafka's classic group protocol): membership, rebalances, static
//! members, session expiry, and committed offsets made durable in the internal
//! `__consumer_offsets` topic, from which they are rebuilt on start.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use kappa_log::records::{encode_batch, plain_record};
use kappa_log::{ControlType, Log};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::topics::{now_ms, TopicError, TopicRegistry};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const MIN_SESSION_TIMEOUT_MS: i32 = 1_000;
const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;
const MAX_METADATA_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A committed offset as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// Committed offsets by topic: (topic, [(partition, offset if any)]).
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// What a JoinGroup gets back.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member's (id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: error.code(),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member must come back with the id it is given.
    pub require_known_member_id: bool,
}

impl Member {
    /// This member's metadata for `protocol` (empty if it does not support it).
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(p, _)| p == protocol)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<(i16, Bytes)>>,
}

#[derive(Default)]
struct Group {
    state: Option<GroupState>,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`), so consumers started together share one generation.
    initial_join: Option<InitialJoin>,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
}

/// Kafka's InitialDelayedJoin: the join phase of an empty group's first rebalance ends at
/// `until`; a member joining meanwhile pushes it back by the delay again, while `remaining`
/// (of the rebalance timeout) lasts.
#[derive(Debug, Clone, Copy)]
struct InitialJoin {
    until: Instant,
    delay: Duration,
    remaining: Duration,
    new_member_added: bool,
}

impl Group {
    fn state(&self) -> GroupState {
        self.state.unwrap_or(GroupState::Empty)
    }

    /// Every member with its metadata for the chosen protocol, as the leader gets them.
    fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
            .collect()
    }

    /// Whether `instance_id` belongs to a static member of this group under another id.
    fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.static_member(i))
            .is_some_and(|id| id != member_id)
    }

    fn static_member(&self, instance_id: &str) -> Option<String> {
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance_id))
            .map(|(id, _)| id.clone())
    }

    /// Protocols every member supports, picked by the members' votes (each votes for its most
    /// preferred candidate), ties going to the first member's preference.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(*c).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .map(|c| (*c).clone())
    }

    fn prepare_rebalance(&mut self) {
        if self.state() != GroupState::PreparingRebalance {
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or(Duration::from_secs(60));
            self.rebalance_deadline = Some(Instant::now() + timeout);
            self.state = Some(GroupState::PreparingRebalance);
            // Members waiting in SyncGroup learn that the round is over.
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send((ResponseError::RebalanceInProgress.code(), Bytes::new()));
                }
            }
        }
    }

    /// Completes the join phase when every member has rejoined (or, with `force`, drops those
    /// that have not).
    fn try_complete_join(&mut self, force: bool) {
        if self.state() != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_join.is_some() && !force {
            return;
        }
        self.initial_join = None;
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if !all_joined && !force {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = Some(GroupState::Empty);
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = Some(GroupState::CompletingRebalance);
        let leader = self.leader.clone().unwrap_or_default();
        let all = self.member_list();
        let now = Instant::now();
        for (id, m) in self.members.iter_mut() {
            m.assignment = Bytes::new();
            m.last_heartbeat = now;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    fn remove_member(&mut self, member_id: &str) {
        if let Some(m) = self.members.shift_remove(member_id) {
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send((ResponseError::UnknownMemberId.code(), Bytes::new()));
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        match self.state() {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.state = Some(GroupState::Empty);
                    self.generation += 1;
                    self.protocol = None;
                } else {
                    self.prepare_rebalance();
                }
            }
            GroupState::PreparingRebalance => self.try_complete_join(false),
            GroupState::Empty => {}
        }
    }

    /// Kafka's order of checks: a static instance now known under another member id is fenced
    /// (KIP-345: a newer instance took its place), then the member and generation.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if self.is_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }
}

/// One group's description (DescribeGroups).
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// Offsets a transaction committed (TxnOffsetCommit), waiting for its marker:
/// producer id -> (group, topic, partition, offset).
type PendingTxnOffsets = HashMap<i64, Vec<(String, String, i32, CommittedOffset)>>;

pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Applied to `groups` when the transaction commits, dropped when it aborts.
    pending_txn: Mutex<PendingTxnOffsets>,
    offsets_log: Arc<Log>,
    /// Serializes appends to the offsets log with the in-memory update they carry.
    commit_lock: tokio::sync::Mutex<()>,
    /// Kafka's `group.initial.rebalance.delay.ms`.
    initial_rebalance_delay: Duration,
}

#[derive(Serialize, Deserialize)]
struct OffsetKey {
    group: String,
    topic: String,
    partition: i32,
}

impl GroupCoordinator {
    /// Opens (creating if needed) the offsets topic and replays it.
    pub fn open(
        topics: &TopicRegistry,
        initial_rebalance_delay: Duration,
    ) -> Result<GroupCoordinator, TopicError> {
        let log = topics.internal_log(OFFSETS_TOPIC)?;
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut pending: PendingTxnOffsets = HashMap::new();
        log.scan_batches(|header, mut batch_bytes| {
                if header.is_control() {
                    // A transaction's marker: its offsets take effect, or never do.
                    let txn = pending.remove(&header.producer_id).unwrap_or_default();
                    if kappa_log::batch::control_type(&batch_bytes) == Some(ControlType::Commit) {
                        for (group, topic, partition, value) in txn {
                            groups
                                .entry(group)
                                .or_default()
                                .offsets
                                .insert((topic, partition), value);
                        }
                    }
                    return;
                }
                let set = match RecordBatchDecoder::decode(&mut batch_bytes) {
                    Ok(set) => set,
                    Err(e) => {
                        tracing::warn!(offset = header.base_offset, error = %e, "skipping an undecodable batch in {OFFSETS_TOPIC}");
                        return;
                    }
                };
                for record in set.records {
                    let Some(key) = record
                        .key
                        .as_ref()
                        .and_then(|k| serde_json::from_slice::<OffsetKey>(k).ok())
                    else {
                        continue;
                    };
                    if header.is_transactional() {
                        if let Some(value) = record
                            .value
                            .as_ref()
                            .and_then(|v| serde_json::from_slice::<CommittedOffset>(v).ok())
                        {
                            pending.entry(header.producer_id).or_default().push((
                                key.group,
                                key.topic,
                                key.partition,
                                value,
                            ));
                        }
                        continue;
                    }
                    let group = groups.entry(key.group).or_default();
                    match record
                        .value
                        .as_ref()
                        .and_then(|v| serde_json::from_slice::<CommittedOffset>(v).ok())
                    {
                        Some(value) => {
                            group.offsets.insert((key.topic, key.partition), value);
                        }
                        None => {
                            group.offsets.remove(&(key.topic, key.partition));
                        }
                    }
                }
        })?;
        groups.retain(|_, g| !g.offsets.is_empty());
        Ok(GroupCoordinator {
            groups: Mutex::new(groups),
            pending_txn: Mutex::new(pending),
            offsets_log: log,
            commit_lock: tokio::sync::Mutex::new(()),
            initial_rebalance_delay,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn join(&self, req: JoinRequest) -> JoinResult {
        if req.group_id.is_empty() {
            return JoinResult::error(ResponseError::InvalidGroupId, &req.member_id);
        }
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&req.session_timeout_ms) {
            return JoinResult::error(ResponseError::InvalidSessionTimeout, &req.member_id);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return JoinResult::error(ResponseError::InconsistentGroupProtocol, &req.member_id);
        }
        let waiter = {
            let mut groups = self.lock();
            let group = groups.entry(req.group_id.clone()).or_default();
            if !group.members.is_empty() {
                let compatible = group.protocol_type.as_deref() == Some(req.protocol_type.as_str())
                    && req.protocols.iter().any(|(p, _)| {
                        group
                            .members
                            .values()
                            .all(|m| m.protocols.iter().any(|(q, _)| q == p))
                    });
                let rejoining_alone =
                    group.members.len() == 1 && group.members.contains_key(&req.member_id);
                if !compatible && !rejoining_alone {
                    return JoinResult::error(
                        ResponseError::InconsistentGroupProtocol,
                        &req.member_id,
                    );
                }
            }
            let mut member_id = req.member_id.clone();
            let mut unchanged_static_rejoin = false;
            let mut replaced_static = false;
            let leader_before = group.leader.clone().unwrap_or_default();
            if let Some(instance) = &req.instance_id {
                if let Some(old_id) = group.static_member(instance) {
                    if !member_id.is_empty() && member_id != old_id {
                        return JoinResult::error(ResponseError::FencedInstanceId, &member_id);
                    }
                    if member_id.is_empty() {
                        // A restarted static member takes its old place under a new id.
                        member_id = format!("{instance}-{}", uuid::Uuid::new_v4());
                        if let Some(mut old) = group.members.shift_remove(&old_id) {
                            if let Some(w) = old.join_waiter.take() {
                                let _ = w.send(JoinResult::error(
                                    ResponseError::FencedInstanceId,
                                    &old_id,
                                ));
                            }
                            if let Some(w) = old.sync_waiter.take() {
                                let _ =
                                    w.send((ResponseError::FencedInstanceId.code(), Bytes::new()));
                            }
                            let same_protocols = old.protocols == req.protocols;
                            group.members.insert(member_id.clone(), old);
                            replaced_static = true;
                            if group.leader.as_deref() == Some(old_id.as_str()) {
                                group.leader = Some(member_id.clone());
                            }
                            unchanged_static_rejoin =
                                same_protocols && group.state() == GroupState::Stable;
                        }
                    }
                } else if member_id.is_empty() {
                    member_id = format!("{instance}-{}", uuid::Uuid::new_v4());
                }
            } else if member_id.is_empty() {
                let id = format!(
                    "{}-{}",
                    if req.client_id.is_empty() {
                        "member"
                    } else {
                        &req.client_id
                    },
                    uuid::Uuid::new_v4()
                );
                if req.require_known_member_id {
                    group.pending.insert(id.clone(), Instant::now());
                    return JoinResult::error(ResponseError::MemberIdRequired, &id);
                }
                member_id = id;
            } else if !group.members.contains_key(&member_id)
                && group.pending.remove(&member_id).is_none()
            {
                return JoinResult::error(ResponseError::UnknownMemberId, &member_id);
            }
            group.pending.remove(&member_id);

            let existing = group.members.get(&member_id);
            let protocols_changed = existing.is_none_or(|m| m.protocols != req.protocols);
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            let (tx, rx) = oneshot::channel();
            let member = Member {
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: Duration::from_millis(req.session_timeout_ms as u64),
                rebalance_timeout: Duration::from_millis(
                    req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64,
                ),
                protocols: req.protocols.clone(),
                assignment: existing.map(|m| m.assignment.clone()).unwrap_or_default(),
                last_heartbeat: Instant::now(),
                join_waiter: None,
                sync_waiter: None,
            };
            group.protocol_type = Some(req.protocol_type.clone());
            let state = group.state();
            // As in Kafka: a known member rejoining with the same protocols after the join phase
            // (its JoinGroup answer lost, say) is answered for the current generation.
            let repeated_join =
                state == GroupState::CompletingRebalance && !protocols_changed && !replaced_static;
            if unchanged_static_rejoin
                || repeated_join
                || (state == GroupState::Stable && !protocols_changed && !is_leader)
            {
                // Nothing changed for this member: answer with the current generation, no rebalance.
                let slot = group.members.entry(member_id.clone()).or_insert(member);
                slot.last_heartbeat = Instant::now();
                // A static leader back under a new id is told the old leader id, as in Kafka
                // (KIP-345): it must not compute an assignment a stable group would not
                // hand out; everyone keeps the one they have.
                let leader = if unchanged_static_rejoin {
                    leader_before
                } else {
                    group.leader.clone().unwrap_or_default()
                };
                let members = if leader == member_id {
                    group.member_list()
                } else {
                    Vec::new()
                };
                return JoinResult {
                    error: 0,
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    leader,
                    member_id,
                    members,
                };
            }
            let mut member = member;
            member.join_waiter = Some(tx);
            let is_new = group.members.insert(member_id.clone(), member).is_none();
            if state == GroupState::Empty && !self.initial_rebalance_delay.is_zero() {
                group.prepare_rebalance();
                let delay = self.initial_rebalance_delay;
                let timeout = group
                    .members
                    .values()
                    .map(|m| m.rebalance_timeout)
                    .max()
                    .unwrap_or(delay);
                group.initial_join = Some(InitialJoin {
                    until: Instant::now() + delay,
                    delay,
                    remaining: timeout.saturating_sub(delay),
                    new_member_added: false,
                });
            } else {
                if let Some(initial) = group.initial_join.as_mut() {
                    initial.new_member_added |= is_new;
                }
                group.prepare_rebalance();
            }
            group.try_complete_join(false);
            rx
        };
        match waiter.await {
            Ok(result) => result,
            Err(_) => JoinResult::error(ResponseError::UnknownMemberId, &req.member_id),
        }
    }

    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> (i16, Bytes) {
        let waiter = {
            let mut groups = self.lock();
            let Some(group) = groups.get_mut(group_id) else {
                return (ResponseError::UnknownMemberId.code(), Bytes::new());
            };
            if let Err(e) = group.check_member(member_id, instance_id, generation) {
                return (e.code(), Bytes::new());
            }
            match group.state() {
                GroupState::PreparingRebalance | GroupState::Empty => {
                    return (ResponseError::RebalanceInProgress.code(), Bytes::new());
                }
                GroupState::Stable => {
                    let m = &group.members[member_id];
                    return (0, m.assignment.clone());
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.members.get_mut(member_id) {
                m.sync_waiter = Some(tx);
                m.last_heartbeat = Instant::now();
            }
            if group.leader.as_deref() == Some(member_id) {
                let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                group.state = Some(GroupState::Stable);
                for (id, m) in group.members.iter_mut() {
                    m.assignment = assigned.remove(id).unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send((0, m.assignment.clone()));
                    }
                }
            }
            rx
        };
        waiter
            .await
            .unwrap_or((ResponseError::RebalanceInProgress.code(), Bytes::new()))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if let Err(e) = group.check_member(member_id, instance_id, generation) {
            return e.code();
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
        }
        match group.state() {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// LeaveGroup for one member (by id, or by static instance id when the id is empty).
    pub fn leave(&self, group_id: &str, member_id: &str, instance_id: Option<&str>) -> i16 {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        let id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => match group.static_member(instance) {
                Some(id) => id,
                None => return ResponseError::UnknownMemberId.code(),
            },
            _ => member_id.to_string(),
        };
        if group.is_fenced(&id, instance_id) {
            return ResponseError::FencedInstanceId.code();
        }
        if let (Some(instance), Some(m)) = (instance_id, group.members.get(&id)) {
            if m.instance_id.as_deref() != Some(instance) {
                return ResponseError::FencedInstanceId.code();
            }
        }
        if !group.members.contains_key(&id) {
            return ResponseError::UnknownMemberId.code();
        }
        group.remove_member(&id);
        0
    }

    /// Expires members whose session ran out and ends rebalances whose time is up.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for (name, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none()
                        && now.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %name, member = %id, "session expired; removing member");
                group.remove_member(&id);
            }
            group
                .pending
                .retain(|_, since| now.duration_since(*since) < Duration::from_secs(300));
            if let Some(initial) = group.initial_join.filter(|i| now >= i.until) {
                if initial.new_member_added && !initial.remaining.is_zero() {
                    let delay = initial.delay.min(initial.remaining);
                    group.initial_join = Some(InitialJoin {
                        until: now + delay,
                        remaining: initial.remaining - delay,
                        new_member_added: false,
                        ..initial
                    });
                } else {
                    group.try_complete_join(true);
                }
            }
            if group.rebalance_deadline.is_some_and(|d| now >= d) {
                tracing::info!(group = %name, "rebalance timeout; completing without absent members");
                group.try_complete_join(true);
            }
        }
    }

    /// Stores offsets durably, then in memory. `generation` -1 with an empty member id is a
    /// commit from outside the group protocol (assign()-style consumers, admin tools).
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<(String, i32, CommittedOffset)>,
        topics: &TopicRegistry,
    ) -> Result<Vec<(String, i32, i16)>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        {
            let groups = self.lock();
            if let Some(group) = groups.get(group_id) {
                if generation >= 0 || !member_id.is_empty() {
                    group.check_member(member_id, instance_id, generation)?;
                    // As in Kafka: members commit while a rebalance is being prepared (their
                    // generation is still current), but not between join and sync.
                    if group.state() == GroupState::CompletingRebalance {
                        return Err(ResponseError::RebalanceInProgress);
                    }
                } else if !group.members.is_empty() {
                    // Kafka refuses simple commits while the group has live members.
                    return Err(ResponseError::UnknownMemberId);
                }
            } else if generation >= 0 {
                return Err(ResponseError::IllegalGeneration);
            }
        }
        let (results, accepted) = check_offsets(offsets, topics);
        let accepted = accepted
            .into_iter()
            .map(|(t, p, o)| (t, p, Some(o)))
            .collect();
        self.persist(group_id, accepted)
            .await
            .map_err(|_| ResponseError::KafkaStorageError)?;
        Ok(results)
    }

    /// Appends offset records (None: a tombstone), waits for the fsync, applies them in memory.
    async fn persist(
        &self,
        group_id: &str,
        entries: Vec<(String, i32, Option<CommittedOffset>)>,
    ) -> Result<(), kappa_log::LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _serial = self.commit_lock.lock().await;
        let now = now_ms();
        let records: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, (topic, partition, value))| {
                let key = OffsetKey {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                plain_record(
                    i as i64,
                    now,
                    serde_json::to_vec(&key).ok().map(Bytes::from),
                    value
                        .as_ref()
                        .and_then(|v| serde_json::to_vec(v).ok())
                        .map(Bytes::from),
                )
            })
            .collect();
        let buf = encode_batch(&records, Compression::None)?;
        let log = self.offsets_log.clone();
        tokio::task::spawn_blocking(move || {
            let info = log.append(&buf, now)?;
            log.flush_to(info.last_offset + 1)
        })
        .await
        .map_err(|e| kappa_log::LogError::Io(std::io::Error::other(e.to_string())))??;
        let mut groups = self.lock();
        let group = groups.entry(group_id.to_string()).or_default();
        for (topic, partition, value) in entries {
            match value {
                Some(v) => {
                    group.offsets.insert((topic, partition), v);
                }
                None => {
                    group.offsets.remove(&(topic, partition));
                }
            }
        }
        Ok(())
    }

    /// TxnOffsetCommit: checks the member as OffsetCommit does (KIP-447: generation, member
    /// and instance id when given), then writes the offsets to `__consumer_offsets` as a
    /// transactional batch of the producer. They take effect with the transaction's COMMIT
    /// marker ([`GroupCoordinator::complete_txn`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn txn_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        producer_id: i64,
        producer_epoch: i16,
        offsets: Vec<(String, i32, CommittedOffset)>,
        topics: &TopicRegistry,
    ) -> Result<Vec<(String, i32, i16)>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        if generation >= 0 || !member_id.is_empty() {
            let groups = self.lock();
            match groups.get(group_id) {
                Some(group) => group.check_member(member_id, instance_id, generation)?,
                None => return Err(ResponseError::IllegalGeneration),
            }
        }
        let (results, accepted) = check_offsets(offsets, topics);
        if accepted.is_empty() {
            return Ok(results);
        }
        let _serial = self.commit_lock.lock().await;
        let now = now_ms();
        let records: Vec<_> = accepted
            .iter()
            .enumerate()
            .map(|(i, (topic, partition, value))| {
                let key = OffsetKey {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                let mut record = plain_record(
                    i as i64,
                    now,
                    serde_json::to_vec(&key).ok().map(Bytes::from),
                    serde_json::to_vec(value).ok().map(Bytes::from),
                );
                record.transactional = true;
                record.producer_id = producer_id;
                record.producer_epoch = producer_epoch;
                record
            })
            .collect();
        let buf = encode_batch(&records, Compression::None)
            .map_err(|_| ResponseError::UnknownServerError)?;
        let log = self.offsets_log.clone();
        let written = tokio::task::spawn_blocking(move || {
            let info = log.append(&buf, now)?;
            log.flush_to(info.last_offset + 1)
        })
        .await
        .map_err(|_| ResponseError::KafkaStorageError)?;
        match written {
            Ok(_) => {}
            Err(kappa_log::LogError::InvalidProducerEpoch { .. }) => {
                return Err(ResponseError::ProducerFenced)
            }
            Err(_) => return Err(ResponseError::KafkaStorageError),
        }
        let mut pending = self.pending_txn.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(producer_id).or_default();
        for (topic, partition, value) in accepted {
            entry.push((group_id.to_string(), topic, partition, value));
        }
        Ok(results)
    }

    /// Writes the transaction marker of `producer_id` to `__consumer_offsets` (durably), then
    /// applies its pending offsets (commit) or drops them (abort).
    pub async fn complete_txn(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), kappa_log::LogError> {
        let _serial = self.commit_lock.lock().await;
        let kind = if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        let log = self.offsets_log.clone();
        let written = tokio::task::spawn_blocking(move || {
            let info = log.append_marker(producer_id, producer_epoch, kind, 0, now_ms())?;
            log.flush_to(info.last_offset + 1)
        })
        .await
        .map_err(|e| kappa_log::LogError::Io(std::io::Error::other(e.to_string())))?;
        match written {
            Ok(_) | Err(kappa_log::LogError::InvalidProducerEpoch { .. }) => {}
            Err(e) => return Err(e),
        }
        let txn = self
            .pending_txn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&producer_id)
            .unwrap_or_default();
        if commit {
            let mut groups = self.lock();
            for (group, topic, partition, value) in txn {
                groups
                    .entry(group)
                    .or_default()
                    .offsets
                    .insert((topic, partition), value);
            }
        }
        Ok(())
    }

    /// Whether a transaction has committed offsets for the partition that are not decided
    /// yet (OffsetFetch's `require_stable` answers UNSTABLE_OFFSET_COMMIT then, KIP-447).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .any(|(g, t, p, _)| g == group_id && t == topic && *p == partition)
    }

    /// Committed offsets: of the given partitions, or all of the group's when `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> TopicOffsets {
        let groups = self.lock();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
        match wanted {
            Some(list) => list
                .into_iter()
                .map(|(topic, parts)| {
                    let found = parts
                        .into_iter()
                        .map(|p| (p, offsets.and_then(|o| o.get(&(topic.clone(), p)).cloned())))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                    BTreeMap::new();
                for ((topic, p), o) in offsets.into_iter().flatten() {
                    by_topic
                        .entry(topic.clone())
                        .or_default()
                        .push((*p, Some(o.clone())));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    /// (group, protocol type, state) of every known group.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.lock();
        let mut out: Vec<_> = groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state().name(),
                )
            })
            .collect();
        out.sort();
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state().name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state() == GroupState::Stable
                || g.state() == GroupState::CompletingRebalance
            {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    let meta = m.metadata(&protocol);
                    (
                        id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        meta,
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// Every committed offset: (group, topic, partition, offset), for lag metrics.
    pub fn all_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.lock();
        let mut out = Vec::new();
        for (g, group) in groups.iter() {
            for ((t, p), o) in &group.offsets {
                out.push((g.clone(), t.clone(), *p, o.offset));
            }
        }
        out.sort();
        out
    }

    /// DeleteGroups: only groups without members; their offsets are tombstoned.
    pub async fn delete_group(&self, group_id: &str) -> i16 {
        let entries: Vec<(String, i32, Option<CommittedOffset>)> = {
            let groups = self.lock();
            match groups.get(group_id) {
                None => return ResponseError::GroupIdNotFound.code(),
                Some(g) if !g.members.is_empty() => return ResponseError::NonEmptyGroup.code(),
                Some(g) => g
                    .offsets
                    .keys()
                    .map(|(t, p)| (t.clone(), *p, None))
                    .collect(),
            }
        };
        if self.persist(group_id, entries).await.is_err() {
            return ResponseError::KafkaStorageError.code();
        }
        let mut groups = self.lock();
        if groups.get(group_id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_id);
        }
        0
    }

    /// OffsetDelete: removes offsets of topics the group's members are not subscribed to.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, i16)>, ResponseError> {
        let (results, entries) = {
            let groups = self.lock();
            let Some(group) = groups.get(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            let subscribed = group_subscriptions(group);
            let mut results = Vec::new();
            let mut entries = Vec::new();
            for (t, p) in partitions {
                if subscribed.contains(&t) {
                    results.push((t, p, ResponseError::GroupSubscribedToTopic.code()));
                } else {
                    if group.offsets.contains_key(&(t.clone(), p)) {
                        entries.push((t.clone(), p, None));
                    }
                    results.push((t, p, 0));
                }
            }
            (results, entries)
        };
        self.persist(group_id, entries)
            .await
            .map_err(|_| ResponseError::KafkaStorageError)?;
        Ok(results)
    }
}

/// Topics the members of a consumer group subscribe to, read from their join metadata.
/// Per offset, its error code (unknown partition, metadata too large; 0 when accepted), and
/// the accepted ones.
#[allow(clippy::type_complexity)]
fn check_offsets(
    offsets: Vec<(String, i32, CommittedOffset)>,
    topics: &TopicRegistry,
) -> (Vec<(String, i32, i16)>, Vec<(String, i32, CommittedOffset)>) {
    let mut results = Vec::new();
    let mut accepted = Vec::new();
    for (topic, partition, offset) in offsets {
        let known = topics
            .get(&topic)
            .is_some_and(|t| t.partition(partition).is_some());
        let code = if !known {
            ResponseError::UnknownTopicOrPartition.code()
        } else if offset
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
        {
            ResponseError::OffsetMetadataTooLarge.code()
        } else {
            accepted.push((topic.clone(), partition, offset));
            0
        };
        results.push((topic, partition, code));
    }
    (results, accepted)
}

fn group_subscriptions(group: &Group) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if group.protocol_type.as_deref() != Some("consumer") {
        return Vec::new();
    }
    let mut topics = Vec::new();
    for m in group.members.values() {
        for (_, meta) in &m.protocols {
            let mut buf = meta.clone();
            if buf.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
                topics.extend(sub.topics.iter().map(|t: &StrBytes| t.to_string()));
            }
        }
    }
    topics.sort();
    topics.dedup();
    topics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;

    struct Fixture {
        coordinator: Arc<GroupCoordinator>,
        _topics: TopicRegistry,
        _dir: tempfile::TempDir,
        ticker: tokio::task::JoinHandle<()>,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.ticker.abort();
        }
    }

    /// A coordinator whose clock (`tick`) runs every 10 ms, as the broker's every 100 ms.
    fn fixture(initial_rebalance_delay_ms: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let topics = TopicRegistry::open(&config).unwrap();
        let delay = Duration::from_millis(initial_rebalance_delay_ms);
        let coordinator = Arc::new(GroupCoordinator::open(&topics, delay).unwrap());
        let c = coordinator.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                c.tick();
            }
        });
        Fixture {
            coordinator,
            _topics: topics,
            _dir: dir,
            ticker,
        }
    }

    fn join_request(member_id: &str, instance_id: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            instance_id: instance_id.map(Into::into),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"metadata"))],
            require_known_member_id: false,
        }
    }

    fn state(c: &GroupCoordinator) -> GroupState {
        c.lock()
            .get("g")
            .map(|g| g.state())
            .unwrap_or(GroupState::Empty)
    }

    /// Consumers started together form one generation: the first rebalance of an empty group
    /// waits `group.initial.rebalance.delay.ms` for more (librdkafka's 0102 and 0113 expect one
    /// assignment each, no revocation).
    #[tokio::test]
    async fn an_empty_groups_first_rebalance_waits_for_members_starting_together() {
        let f = fixture(300);
        let c = f.coordinator.clone();
        let first = tokio::spawn(async move { c.join(join_request("", None)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!first.is_finished(), "the first member waits for others");
        let c = f.coordinator.clone();
        let second = tokio::spawn(async move { c.join(join_request("", None)).await });
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!((first.error, second.error), (0, 0));
        assert_eq!((first.generation, second.generation), (1, 1));
        let leader = if first.leader == first.member_id {
            &first
        } else {
            &second
        };
        assert_eq!(leader.members.len(), 2);
        assert_eq!(state(&f.coordinator), GroupState::CompletingRebalance);
    }

    /// A member repeating its JoinGroup between join and sync (same protocols) is answered for
    /// the current generation, as in Kafka, rather than starting another rebalance.
    #[tokio::test]
    async fn a_repeated_join_before_sync_does_not_start_a_rebalance() {
        let f = fixture(100);
        let c = f.coordinator.clone();
        let first = tokio::spawn(async move { c.join(join_request("", None)).await });
        let second = f.coordinator.join(join_request("", None)).await;
        let first = first.await.unwrap();
        assert_eq!(state(&f.coordinator), GroupState::CompletingRebalance);
        for again in [&first, &second] {
            let repeated = tokio::time::timeout(
                Duration::from_secs(1),
                f.coordinator.join(join_request(&again.member_id, None)),
            )
            .await
            .expect("answered at once");
            assert_eq!(repeated.error, 0);
            assert_eq!(repeated.generation, again.generation);
            assert_eq!(repeated.leader, again.leader);
            assert_eq!(repeated.members.len(), again.members.len());
        }
        assert_eq!(state(&f.coordinator), GroupState::CompletingRebalance);
    }

    /// Without the delay (0), a lone member's rebalance completes at once.
    #[tokio::test]
    async fn no_initial_delay_completes_a_lone_join_at_once() {
        let f = fixture(0);
        let joined = tokio::time::timeout(
            Duration::from_millis(50),
            f.coordinator.join(join_request("", None)),
        )
        .await
        .expect("no delay");
        assert_eq!((joined.error, joined.generation), (0, 1));
    }

    /// Two static members, stable. Returns (leader's join, follower's join).
    async fn stable_static_pair(c: &Arc<GroupCoordinator>) -> (JoinResult, JoinResult) {
        let c1 = c.clone();
        let a = tokio::spawn(async move { c1.join(join_request("", Some("a"))).await });
        let c2 = c.clone();
        let b = tokio::spawn(async move { c2.join(join_request("", Some("b"))).await });
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.error, b.error, a.generation), (0, 0, b.generation));
        let (leader, follower) = if a.leader == a.member_id {
            (a, b)
        } else {
            (b, a)
        };
        let assignments = vec![
            (leader.member_id.clone(), Bytes::from_static(b"leader's")),
            (
                follower.member_id.clone(),
                Bytes::from_static(b"follower's"),
            ),
        ];
        let g = leader.generation;
        let (lid, fid) = (leader.member_id.clone(), follower.member_id.clone());
        let c1 = c.clone();
        let ls = tokio::spawn(async move { c1.sync("g", &lid, None, g, assignments).await });
        let fs = c.sync("g", &fid, None, g, Vec::new()).await;
        assert_eq!(fs, (0, Bytes::from_static(b"follower's")));
        assert_eq!(ls.await.unwrap(), (0, Bytes::from_static(b"leader's")));
        assert_eq!(state(c), GroupState::Stable);
        (leader, follower)
    }

    /// KIP-345: a static member restarted (new member id, same instance id) gets its place
    /// back without a rebalance; the instance it replaced is fenced (FENCED_INSTANCE_ID, not
    /// UNKNOWN_MEMBER_ID) on heartbeat, sync, commit and leave, as in Kafka.
    #[tokio::test]
    async fn a_restarted_static_member_keeps_its_assignment_and_fences_the_old_one() {
        let f = fixture(100);
        let c = &f.coordinator;
        let (leader, follower) = stable_static_pair(c).await;
        let follower_instance = if leader.member_id.starts_with("a-") {
            "b"
        } else {
            "a"
        };
        let back = c.join(join_request("", Some(follower_instance))).await;
        assert_eq!(back.error, 0);
        assert_ne!(back.member_id, follower.member_id);
        assert_eq!(back.generation, follower.generation, "no rebalance");
        assert_eq!(state(c), GroupState::Stable);
        assert_eq!(
            c.sync(
                "g",
                &back.member_id,
                Some(follower_instance),
                back.generation,
                Vec::new()
            )
            .await,
            (0, Bytes::from_static(b"follower's"))
        );
        let fenced = ResponseError::FencedInstanceId.code();
        let old = follower.member_id.as_str();
        let g = follower.generation;
        assert_eq!(c.heartbeat("g", old, Some(follower_instance), g), fenced);
        assert_eq!(
            c.sync("g", old, Some(follower_instance), g, Vec::new())
                .await
                .0,
            fenced
        );
        let topics = &f._topics;
        assert_eq!(
            c.commit("g", old, Some(follower_instance), g, Vec::new(), topics)
                .await
                .err(),
            Some(ResponseError::FencedInstanceId)
        );
        // A transactional offset commit of the replaced instance is fenced the same way.
        assert_eq!(
            c.txn_commit(
                "g",
                old,
                Some(follower_instance),
                g,
                7,
                0,
                Vec::new(),
                topics
            )
            .await
            .err(),
            Some(ResponseError::FencedInstanceId)
        );
        assert_eq!(c.leave("g", old, Some(follower_instance)), fenced);
        // The replacement and the leader are untouched.
        assert_eq!(
            c.heartbeat("g", &back.member_id, Some(follower_instance), g),
            0
        );
        assert_eq!(c.heartbeat("g", &leader.member_id, None, g), 0);
        assert_eq!(state(c), GroupState::Stable);
    }

    /// A restarted static leader is told the old leader id and no member list (Kafka's
    /// JoinGroup below v9): it computes no assignment, and the group stays as it was.
    #[tokio::test]
    async fn a_restarted_static_leader_is_not_asked_to_assign() {
        let f = fixture(100);
        let c = &f.coordinator;
        let (leader, follower) = stable_static_pair(c).await;
        let leader_instance = if leader.member_id.starts_with("a-") {
            "a"
        } else {
            "b"
        };
        let back = c.join(join_request("", Some(leader_instance))).await;
        assert_eq!(back.error, 0);
        assert_eq!(back.generation, leader.generation);
        assert_eq!(back.leader, leader.member_id, "the old leader id");
        assert!(back.members.is_empty());
        assert_eq!(state(c), GroupState::Stable);
        assert_eq!(
            c.sync("g", &back.member_id, None, back.generation, Vec::new())
                .await,
            (0, Bytes::from_static(b"leader's"))
        );
        assert_eq!(
            c.heartbeat("g", &follower.member_id, None, follower.generation),
            0
        );
    }
}

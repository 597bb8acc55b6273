//! The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::groups::{CommittedOffset, JoinRequest};
use crate::topics::now_ms;

use super::metadata::{GROUP_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use super::{by_topic, str_bytes, topic_name, RequestContext};

pub(super) fn find_coordinator(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let node = BrokerId(broker.config.node_id);
    let host = str_bytes(&broker.advertised_host);
    let port = broker.advertised_port;
    // Key type 0: group; 1: transactional id. This broker coordinates both.
    let error = if req.key_type == 0 || req.key_type == 1 {
        0
    } else {
        ctx.err(ResponseError::InvalidRequest)
    };
    if ctx.api_version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(if error == 0 { node } else { BrokerId(-1) })
                    .with_host(if error == 0 {
                        host.clone()
                    } else {
                        StrBytes::default()
                    })
                    .with_port(if error == 0 { port } else { -1 })
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    if error != 0 {
        return FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}

pub(super) async fn join_group(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let v = ctx.api_version;
    let result = broker
        .groups
        .join(JoinRequest {
            group_id: req.group_id.0.to_string(),
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: if v >= 1 {
                req.rebalance_timeout_ms
            } else {
                req.session_timeout_ms
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
                .collect(),
            require_known_member_id: v >= 4,
        })
        .await;
    ctx.code(result.error);
    let members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&id))
                .with_group_instance_id(instance.filter(|_| v >= 5).map(|s| str_bytes(&s)))
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation)
        .with_protocol_type(
            result
                .protocol_type
                .filter(|_| v >= 7)
                .map(|s| str_bytes(&s)),
        )
        .with_protocol_name(match (result.protocol, v >= 7) {
            (Some(p), _) => Some(str_bytes(&p)),
            (None, true) => None,
            (None, false) => Some(StrBytes::default()),
        })
        .with_leader(str_bytes(&result.leader))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(members)
}

pub(super) async fn sync_group(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| {
            (
                a.member_id.to_string(),
                Bytes::copy_from_slice(&a.assignment),
            )
        })
        .collect();
    let (error, assignment) = broker
        .groups
        .sync(
            &req.group_id.0,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            assignments,
        )
        .await;
    ctx.code(error);
    let mut resp = SyncGroupResponse::default()
        .with_error_code(error)
        .with_assignment(assignment);
    if ctx.api_version >= 5 {
        resp = resp
            .with_protocol_type(req.protocol_type)
            .with_protocol_name(req.protocol_name);
    }
    resp
}

pub(super) fn heartbeat(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let code = broker.groups.heartbeat(
        &req.group_id.0,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(ctx.code(code))
}

pub(super) fn leave_group(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    if ctx.api_version < 3 {
        let code = broker.groups.leave(&group, &req.member_id, None);
        return LeaveGroupResponse::default().with_error_code(ctx.code(code));
    }
    let members = req
        .members
        .into_iter()
        .map(|m| {
            let code = broker
                .groups
                .leave(&group, &m.member_id, m.group_instance_id.as_deref());
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(ctx.code(code))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub(super) async fn offset_commit(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let now = now_ms();
    let mut wanted = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            wanted.push((
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_timestamp: now,
                },
            ));
        }
    }
    let all: Vec<(String, i32)> = wanted.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let results = match broker
        .groups
        .commit(
            &req.group_id.0,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id_or_member_epoch,
            wanted,
            &broker.topics,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => all.into_iter().map(|(t, p)| (t, p, e.code())).collect(),
    };
    let topics = by_topic(results, |p, code| {
        OffsetCommitResponsePartition::default()
            .with_partition_index(p)
            .with_error_code(ctx.code(code))
    });
    OffsetCommitResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(t, parts)| {
                OffsetCommitResponseTopic::default()
                    .with_name(topic_name(&t))
                    .with_partitions(parts)
            })
            .collect(),
    )
}

pub(super) fn offset_fetch(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let v = ctx.api_version;
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    // KIP-447: a consumer that asks for stable offsets waits while a transaction's offset
    // commit for the partition is undecided.
    let require_stable = v >= 7 && req.require_stable;
    let group_id = req.group_id.0.to_string();
    let topics = broker
        .groups
        .fetch_offsets(&group_id, wanted)
        .into_iter()
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, o)| {
                    if require_stable && broker.groups.has_pending_txn_offset(&group_id, &t, p) {
                        return OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(str_bytes("")))
                            .with_error_code(ctx.err(ResponseError::UnstableOffsetCommit));
                    }
                    let (offset, epoch, metadata) = match o {
                        Some(o) => (o.offset, o.leader_epoch, o.metadata),
                        None => (-1, -1, Some(String::new())),
                    };
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if v >= 5 { epoch } else { -1 })
                        .with_metadata(Some(str_bytes(&metadata.unwrap_or_default())))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub(super) fn list_groups(broker: &Arc<Broker>, req: ListGroupsRequest) -> ListGroupsResponse {
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(state))
        })
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type))
                .with_group_state(str_bytes(state))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) fn describe_groups(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let v = ctx.api_version;
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let described = if v >= 3 {
                described.with_authorized_operations(if req.include_authorized_operations {
                    GROUP_OPERATIONS
                } else {
                    OPERATIONS_NOT_REQUESTED
                })
            } else {
                described
            };
            match broker.groups.describe(&id.0) {
                None => described.with_group_state(str_bytes("Dead")),
                Some(d) => described
                    .with_group_state(str_bytes(d.state))
                    .with_protocol_type(str_bytes(&d.protocol_type))
                    .with_protocol_data(str_bytes(&d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|(member, instance, client, host, metadata, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&member))
                                    .with_group_instance_id(
                                        instance.filter(|_| v >= 4).map(|s| str_bytes(&s)),
                                    )
                                    .with_client_id(str_bytes(&client))
                                    .with_client_host(str_bytes(&host))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete_groups(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in req.groups_names {
        let code = broker.groups.delete_group(&id.0).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(ctx.code(code)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub(super) async fn offset_delete(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match broker
        .groups
        .delete_offsets(&req.group_id.0, partitions)
        .await
    {
        Err(e) => OffsetDeleteResponse::default().with_error_code(ctx.err(e)),
        Ok(results) => {
            let topics = by_topic(results, |p, code| {
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p)
                    .with_error_code(ctx.code(code))
            });
            OffsetDeleteResponse::default().with_topics(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(topic_name(&t))
                            .with_partitions(parts)
                    })
                    .collect(),
            )
        }
    }
}

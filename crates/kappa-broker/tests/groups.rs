//! Group APIs spoken directly: offsets committed outside the group protocol, OffsetFetch of all
//! or some partitions, OffsetDelete, DeleteGroups and their error codes, and a JoinGroup flow.

mod common;

use common::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kappa_broker::BrokerConfig;
use tokio::net::TcpStream;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn group(s: &str) -> GroupId {
    GroupId(StrBytes::from_string(s.to_string()))
}

async fn commit(
    s: &mut TcpStream,
    g: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let req = OffsetCommitRequest::default()
        .with_group_id(group(g))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )]);
    let r: OffsetCommitResponse = call(s, ApiKey::OffsetCommit, 8, &req).await;
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

async fn fetch_offsets(
    s: &mut TcpStream,
    g: &str,
    topic: Option<(&str, Vec<i32>)>,
) -> Vec<(String, i32, i64)> {
    let req = OffsetFetchRequest::default()
        .with_group_id(group(g))
        .with_topics(topic.map(|(t, parts)| {
            vec![OffsetFetchRequestTopic::default()
                .with_name(name(t))
                .with_partition_indexes(parts)]
        }));
    let r: OffsetFetchResponse = call(s, ApiKey::OffsetFetch, 7, &req).await;
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
        })
        .collect()
}

#[tokio::test]
async fn offsets_commit_fetch_delete_and_group_deletion() {
    let running = start(BrokerConfig {
        num_partitions: 3,
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    assert_eq!(produce(&mut s, "orders", 1, Some(batch(&["a"]))).await.0, 0);
    assert_eq!(
        commit(&mut s, "g1", "", -1, "orders", &[(0, 5), (1, 7), (2, 9)]).await,
        vec![0, 0, 0]
    );
    // An unknown partition or topic is refused, the rest is stored.
    assert_eq!(
        commit(&mut s, "g1", "", -1, "orders", &[(7, 1)]).await,
        vec![3]
    );
    assert_eq!(
        commit(&mut s, "g1", "", -1, "nope", &[(0, 1)]).await,
        vec![3]
    );
    // A generation for a group that has none is illegal.
    assert_eq!(
        commit(&mut s, "g2", "m", 4, "orders", &[(0, 1)]).await,
        vec![22]
    );

    let all = fetch_offsets(&mut s, "g1", None).await;
    assert_eq!(
        all,
        vec![
            ("orders".into(), 0, 5),
            ("orders".into(), 1, 7),
            ("orders".into(), 2, 9)
        ]
    );
    let some = fetch_offsets(&mut s, "g1", Some(("orders", vec![1, 2]))).await;
    assert_eq!(some, vec![("orders".into(), 1, 7), ("orders".into(), 2, 9)]);
    // Never committed: -1, no error.
    assert_eq!(
        fetch_offsets(&mut s, "other", Some(("orders", vec![0]))).await,
        vec![("orders".into(), 0, -1)]
    );

    let del = OffsetDeleteRequest::default()
        .with_group_id(group("g1"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(name("orders"))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(1)
            ])]);
    let r: OffsetDeleteResponse = call(&mut s, ApiKey::OffsetDelete, 0, &del).await;
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    assert_eq!(
        fetch_offsets(&mut s, "g1", Some(("orders", vec![1]))).await,
        vec![("orders".into(), 1, -1)]
    );
    let r: OffsetDeleteResponse = call(
        &mut s,
        ApiKey::OffsetDelete,
        0,
        &del.clone().with_group_id(group("missing")),
    )
    .await;
    assert_eq!(r.error_code, 69, "GROUP_ID_NOT_FOUND");

    let r: DeleteGroupsResponse = call(
        &mut s,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![group("g1"), group("missing")]),
    )
    .await;
    let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
    assert_eq!(codes, vec![0, 69]);
    assert_eq!(
        fetch_offsets(&mut s, "g1", Some(("orders", vec![0]))).await,
        vec![("orders".into(), 0, -1)]
    );

    // Offsets survive a restart of the coordinator: they are read back from __consumer_offsets.
    assert_eq!(
        commit(&mut s, "g3", "", -1, "orders", &[(2, 42)]).await,
        vec![0]
    );
    let reopened = kappa_broker::groups::GroupCoordinator::open(
        &running.broker.topics,
        std::time::Duration::ZERO,
    )
    .unwrap();
    let fetched = reopened.fetch_offsets("g3", Some(vec![("orders".into(), vec![2])]));
    assert_eq!(fetched[0].1[0].1.as_ref().map(|o| o.offset), Some(42));
}

#[tokio::test]
async fn join_sync_heartbeat_leave() {
    let running = start(BrokerConfig::default()).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(group("jg"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(bytes::Bytes::from_static(b"meta"))])
    };
    // v4+: a new member is first given its id.
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 7, &join("")).await;
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
    let id = r.member_id.to_string();
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 7, &join(&id)).await;
    assert_eq!(
        (r.error_code, r.generation_id, r.leader.as_str()),
        (0, 1, id.as_str())
    );
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    let sync = SyncGroupRequest::default()
        .with_group_id(group("jg"))
        .with_generation_id(1)
        .with_member_id(StrBytes::from_string(id.clone()))
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(id.clone()))
                .with_assignment(bytes::Bytes::from_static(b"assigned")),
        ]);
    let r: SyncGroupResponse = call(&mut s, ApiKey::SyncGroup, 5, &sync).await;
    assert_eq!((r.error_code, &r.assignment[..]), (0, &b"assigned"[..]));
    let hb = |generation| {
        HeartbeatRequest::default()
            .with_group_id(group("jg"))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(id.clone()))
    };
    let r: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 4, &hb(1)).await;
    assert_eq!(r.error_code, 0);
    let r: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 4, &hb(7)).await;
    assert_eq!(r.error_code, 22, "ILLEGAL_GENERATION");
    let r: DescribeGroupsResponse = call(
        &mut s,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![group("jg")]),
    )
    .await;
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    assert_eq!(&r.groups[0].members[0].member_assignment[..], b"assigned");
    let leave = LeaveGroupRequest::default()
        .with_group_id(group("jg"))
        .with_members(vec![leave_group_request::MemberIdentity::default()
            .with_member_id(StrBytes::from_string(id.clone()))]);
    let r: LeaveGroupResponse = call(&mut s, ApiKey::LeaveGroup, 5, &leave).await;
    assert_eq!(r.members[0].error_code, 0);
    let r: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 4, &hb(2)).await;
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID");
    let r: ListGroupsResponse =
        call(&mut s, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).await;
    let listed: Vec<(String, String)> = r
        .groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect();
    assert!(listed.contains(&("jg".to_string(), "Empty".to_string())));
}

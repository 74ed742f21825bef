//! ListGroups (v0-v5), DescribeGroups (v0-v5) and DeleteGroups (v0-v2)
//! over both kinds of group: classic groups as the classic state machine
//! sees them, the others (KIP-848 and native members, or committed offsets
//! only) as the native coordinator does. Only a group without members is
//! deleted (NON_EMPTY_GROUP otherwise), with its committed offsets.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::ResponseError;

use super::codec::{broker_code, text, At};
use super::{KafkaGroups, MalformedRequest};

/// Groups one DescribeGroups or DeleteGroups may name.
const MAX_NAMED: usize = 1000;

/// Kafka's state of a native group ("Reconciling" and "Stable" are
/// KIP-848's names too).
fn native_state(state: &str, members: u32) -> &str {
    match (state, members) {
        (_, 0) => "Empty",
        ("Reconciling", _) => "Reconciling",
        _ => "Stable",
    }
}

/// (name, state, protocol type, group type) of every group.
fn listing(groups: &KafkaGroups) -> Vec<(String, String, String, &'static str)> {
    let classic = groups.classic.list();
    let mut out: Vec<_> = classic
        .iter()
        .map(|(name, state, ptype)| (name.clone(), (*state).to_owned(), ptype.clone(), "classic"))
        .collect();
    for g in groups.broker.groups.list() {
        if classic.iter().any(|(name, ..)| *name == g.group) {
            continue;
        }
        let native = groups.broker.groups.native_members(&g.group);
        let (ptype, gtype) = if native > 0 { ("consumer", "consumer") } else { ("", "classic") };
        out.push((g.group, native_state(&g.state, native as u32).to_owned(), ptype.to_owned(), gtype));
    }
    out.sort();
    out
}

/// Answers ListGroups (v4+ filters by state, v5+ by type).
pub(super) fn list(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: ListGroupsRequest = at.decode(body)?;
    if let Some(code) = groups.not_coordinator() {
        return at.encode(&ListGroupsResponse::default().with_error_code(code));
    }
    let wanted = |filter: &[kafka_protocol::protocol::StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    let listed = listing(groups)
        .into_iter()
        .filter(|(_, state, _, gtype)| wanted(&req.states_filter, state) && wanted(&req.types_filter, gtype))
        .map(|(name, state, ptype, gtype)| {
            let mut g =
                ListedGroup::default().with_group_id(GroupId(text(name))).with_protocol_type(text(ptype));
            if at.version >= 4 {
                g = g.with_group_state(text(state));
            }
            if at.version >= 5 {
                g = g.with_group_type(text(gtype));
            }
            g
        })
        .collect();
    at.encode(&ListGroupsResponse::default().with_groups(listed))
}

/// One group as DescribeGroups shows it: classic groups with their
/// members' metadata and assignments, native groups with their members,
/// unknown groups as "Dead" (as Kafka answers them).
fn described(groups: &KafkaGroups, name: &GroupId) -> DescribedGroup {
    let base = DescribedGroup::default().with_group_id(name.clone()).with_error_message(None);
    if crate::groups::validate_group(name).is_err() {
        return base.with_error_code(ResponseError::InvalidGroupId.code()).with_group_state(text("Dead"));
    }
    if let Some(code) = groups.not_coordinator() {
        return base.with_error_code(code).with_group_state(text("Dead"));
    }
    if let Some(view) = groups.classic.describe(name).filter(|v| !v.members.is_empty()) {
        let members = view
            .members
            .into_iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(text(m.member_id))
                    .with_group_instance_id(m.instance_id.map(text))
                    .with_client_id(text(m.client_id))
                    .with_client_host(text(m.client_host))
                    .with_member_metadata(m.metadata)
                    .with_member_assignment(m.assignment)
            })
            .collect();
        return base
            .with_group_state(text(view.state))
            .with_protocol_type(text(view.protocol_type))
            .with_protocol_data(text(view.protocol))
            .with_members(members);
    }
    match groups.broker.groups.describe(&groups.broker.topics, name) {
        Ok(g) => {
            let members: Vec<DescribedGroupMember> = g
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(text(m.member_id))
                        .with_client_id(text(m.client_id))
                        .with_client_host(text(m.host))
                })
                .collect();
            let ptype = if members.is_empty() { "" } else { "consumer" };
            base.with_group_state(text(native_state(&g.state, members.len() as u32)))
                .with_protocol_type(text(ptype))
                .with_members(members)
        }
        Err(_) => base.with_group_state(text("Dead")),
    }
}

/// Answers DescribeGroups.
pub(super) fn describe(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: DescribeGroupsRequest = at.decode(body)?;
    if req.groups.len() > MAX_NAMED {
        return Err(at.malformed(format!("{} groups (at most {MAX_NAMED})", req.groups.len())));
    }
    let described = req.groups.iter().map(|name| described(groups, name)).collect();
    at.encode(&DescribeGroupsResponse::default().with_groups(described))
}

/// Deletes one group: refused while it has members.
async fn delete_one(groups: &KafkaGroups, name: &GroupId) -> i16 {
    if crate::groups::validate_group(name).is_err() {
        return ResponseError::InvalidGroupId.code();
    }
    if let Some(code) = groups.not_coordinator() {
        return code;
    }
    if groups.classic.has_members(name) {
        return ResponseError::NonEmptyGroup.code();
    }
    let broker = std::sync::Arc::clone(&groups.broker);
    let group = name.to_string();
    let deleted = tokio::task::spawn_blocking(move || broker.groups.delete(&group)).await;
    match deleted {
        Ok(Ok(())) => {
            tracing::info!(group = %name.as_str(), "group deleted by a Kafka client");
            0
        }
        Ok(Err(e)) => broker_code(&e),
        Err(_) => ResponseError::UnknownServerError.code(),
    }
}

/// Answers DeleteGroups.
pub(super) async fn delete(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: DeleteGroupsRequest = at.decode(body)?;
    if req.groups_names.len() > MAX_NAMED {
        return Err(at.malformed(format!("{} groups (at most {MAX_NAMED})", req.groups_names.len())));
    }
    let mut results = Vec::with_capacity(req.groups_names.len());
    for name in &req.groups_names {
        let code = delete_one(groups, name).await;
        results.push(DeletableGroupResult::default().with_group_id(name.clone()).with_error_code(code));
    }
    at.encode(&DeleteGroupsResponse::default().with_results(results))
}

//! The group coordinator's error type: one variant per way a group request
//! is refused, with the fields that explain it. It lives beside
//! `BrokerError` (which wraps it) so that `errors` depends on no module
//! above it; `groups` re-exports it. Its wire codes are mapped with every
//! other error's, in `crate::errors`.

/// Why the coordinator refused a group request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The group name breaks the rules (1 to 249 bytes).
    #[error("invalid group name `{name}`: must be 1-249 bytes")]
    InvalidGroupId {
        /// The name (its first 300 characters).
        name: String,
    },
    /// No group of that name has members or offsets.
    #[error("unknown group `{group}`")]
    UnknownGroup {
        /// The group.
        group: String,
    },
    /// The group was deleted while the request waited for it.
    #[error("group `{group}` was deleted meanwhile: rejoin")]
    Deleted {
        /// The group.
        group: String,
    },
    /// The member id is not one of the group's (it expired, or left).
    #[error("group `{group}` has no member `{member}`: rejoin")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id sent.
        member: String,
    },
    /// A member committed to a partition it does not hold (its assignment
    /// moved on since it fetched): the member's view is stale.
    #[error("member `{member}` of group `{group}` does not hold {topic}/{partition}")]
    StaleMemberEpoch {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A commit without a member id, to a group that has members.
    #[error("group `{group}` has active members: join it to commit")]
    MemberRequired {
        /// The group.
        group: String,
    },
    /// The operation needs a group without members.
    #[error("group `{group}` has {members} active member(s): stop its consumers before {action}")]
    NotEmpty {
        /// The group.
        group: String,
        /// Its members.
        members: usize,
        /// What was refused ("resetting offsets", "deleting it").
        action: &'static str,
    },
    /// Creating the group would pass `max_groups`.
    #[error("cannot create group `{group}`: the broker keeps {groups} groups (max_groups = {max_groups}); delete unused groups or raise max_groups")]
    TooManyGroups {
        /// The group that was not created.
        group: String,
        /// Groups the broker keeps.
        groups: usize,
        /// The limit.
        max_groups: usize,
    },
    /// The group is used by Kafka clients of the other group protocol
    /// (classic JoinGroup members, or native/KIP-848 members): one group
    /// speaks one protocol at a time.
    #[error("group `{group}` has active members using another group protocol ({other}): stop them first or use another group")]
    InconsistentProtocol {
        /// The group.
        group: String,
        /// The protocol its members use ("classic" or "consumer").
        other: &'static str,
    },
    /// This broker does not coordinate groups now (cluster mode: it does not
    /// lead the offsets topic's partition, or is still loading it).
    #[error("this broker is not the group coordinator ({why}): find the coordinator and retry")]
    NotCoordinator {
        /// Why ("another broker leads __sluice_offsets", "loading").
        why: String,
    },
}

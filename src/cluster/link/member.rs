//! A member as the cluster stores it in Redis (one JSON object per member
//! in `i:<id>:m:<channel>`), written and read back.

use shards::MemberView;

use crate::frame::json_str;

pub fn member_json(m: &MemberView) -> String {
    format!(
        "{{\"socketId\":{},\"userId\":{},\"info\":{},\"joinedAt\":{}}}",
        json_str(&m.socket_id),
        json_str(&m.user_id),
        m.info.as_deref().unwrap_or("null"),
        m.joined_at
    )
}

pub fn parse_member(json: &str) -> Option<MemberView> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(MemberView {
        socket_id: v.get("socketId")?.as_str()?.into(),
        user_id: v.get("userId")?.as_str()?.into(),
        info: match v.get("info") {
            None | Some(serde_json::Value::Null) => None,
            Some(i) => Some(i.to_string().into()),
        },
        joined_at: v.get("joinedAt")?.as_u64()?,
    })
}

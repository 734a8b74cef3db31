//! A REST request's failure: its HTTP status and the JSON error body, and
//! how a gateway failure (`rules::Fail`) maps onto one.

/// A failed request: its status and the protocol's error body.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "bad_request", message)
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
            .to_string()
            .into_bytes()
    }
}

/// A gateway failure (`rules::Fail`) as a REST answer: every code is a
/// client error here except `internal`.
impl From<crate::rules::Fail> for ApiError {
    fn from(f: crate::rules::Fail) -> Self {
        use crate::rules::ErrorCode as C;
        let status = match f.code {
            C::NotFound => 404,
            C::Unauthorized => 401,
            C::Forbidden => 403,
            C::TooLarge => 413,
            C::RateLimited => 429,
            C::Internal => 500,
            C::BadRequest | C::InvalidChannel | C::UnknownSubscription => 400,
        };
        ApiError::new(status, f.code.as_str(), f.message)
    }
}

//! Every relay error becomes an RFC 9457 problem-details response here, in
//! one place. Internals are logged, never returned.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short, safe explanation for the client.
    pub detail: String,
    /// What is logged (never sent).
    pub internal: Option<String>,
    /// Seconds for `Retry-After` (set for 429; 503 and 507 get a default).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A client error with a safe detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
            internal: None,
            retry_after: None,
        }
    }

    /// 429 (a quota), to be retried after `secs` seconds.
    pub fn too_many(detail: impl Into<String>, secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 500 with the cause logged only. (Storage errors go through
    /// `From<StoreError>`, which answers 503 or 507 where the request may
    /// be retried.)
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: "internal error; the relay operator can find the cause in the relay's log"
                .into(),
            internal: Some(e.to_string()),
            retry_after: None,
        }
    }
}

impl From<super::store::StoreError> for ApiError {
    fn from(e: super::store::StoreError) -> Self {
        use super::blobs::BlobError;
        use super::store::StoreError;
        let (status, detail) = match &e {
            StoreError::Blob(BlobError::Full(_)) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "the relay's ciphertext storage is full; nothing was stored. Retry later; \
                 the relay operator must free space",
            ),
            StoreError::Blob(BlobError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the relay's ciphertext storage is unavailable; nothing was stored. Retry \
                 later; the relay operator can find the cause in the relay's log",
            ),
            StoreError::Db(db) if super::store::db_unavailable(db) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the relay's database is temporarily unavailable; retry later",
            ),
            StoreError::Batch {
                unavailable: true, ..
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the relay's storage is temporarily unavailable; nothing was recorded. Retry later",
            ),
            _ => return ApiError::internal(e),
        };
        ApiError {
            status,
            detail: detail.into(),
            internal: Some(e.to_string()),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(i) = &self.internal {
            tracing::error!(status = self.status.as_u16(), error = %i, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), detail = %self.detail, "request refused");
        }
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        let retry = self.retry_after.or(match self.status {
            StatusCode::SERVICE_UNAVAILABLE => Some(2),
            StatusCode::INSUFFICIENT_STORAGE => Some(60),
            _ => None,
        });
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::blobs::BlobError;
    use crate::relay::store::StoreError;

    fn status_of(e: StoreError) -> (StatusCode, String) {
        let a = ApiError::from(e);
        assert!(a.internal.is_some(), "the cause is kept for the log");
        (a.status, a.detail)
    }

    #[test]
    fn storage_failures_are_told_apart_without_internals() {
        let io = |n| std::io::Error::from_raw_os_error(n);
        let (s, d) = status_of(StoreError::Blob(BlobError::from(io(28))));
        assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
        assert!(d.contains("full") && !d.contains("os error"), "{d}");
        let (s, d) = status_of(StoreError::Blob(BlobError::from(io(20))));
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!d.contains("os error"), "{d}");
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(io(104)),
        ] {
            assert_eq!(
                status_of(StoreError::Db(e)).0,
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        assert_eq!(
            status_of(StoreError::Db(sqlx::Error::RowNotFound)).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status_of(StoreError::Corrupt("x".into())).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

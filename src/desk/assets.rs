//! The desk's static files, embedded in the binary: one stylesheet and one
//! script. Nothing else is ever loaded (no CDN, no web fonts).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("static/desk.css");
const JS: &str = include_str!("static/desk.js");

/// `GET /static/{file}`.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "desk.css" => (CSS, "text/css; charset=utf-8"),
        "desk.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

//! The dashboard's files, embedded in the binary at build time (nothing is fetched at run time)
//! and served with their content types and cache headers: the page is revalidated on every load
//! (`no-cache` with an `ETag`), the script and style sheet it names carry a hash of their content
//! in their names and are cached for good (`immutable`), so a new binary's page never runs an old
//! script.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

struct Asset {
    /// The name the page uses, before hashing.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("static/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("static/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("static/favicon.svg"),
    },
];

const PAGE: &str = include_str!("static/index.html");

/// A short hash of a file's content: FNV-1a, stable across builds (std's hasher is not).
fn content_hash(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:012x}", hash >> 16)
}

/// `app.js` → `app.3f2a…​.js`.
fn hashed_name(asset: &Asset) -> String {
    let (stem, extension) = asset.name.rsplit_once('.').unwrap_or((asset.name, ""));
    format!("{stem}.{}.{extension}", content_hash(asset.body))
}

/// The page with each asset's hashed name in place of its plain one, and its ETag.
static RENDERED_PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let page = ASSETS.iter().fold(PAGE.to_owned(), |page, asset| {
        page.replace(&format!("/ui/{}", asset.name), &format!("/ui/{}", hashed_name(asset)))
    });
    let etag = format!("\"{}\"", content_hash(page.as_bytes()));
    (page, etag)
});

/// Headers every file of the dashboard carries: no sniffing, no framing by other sites, and
/// scripts, styles and requests from this server only.
fn hardened(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    headers.insert("X-Frame-Options", HeaderValue::from_static("DENY"));
    headers.insert(
        "Content-Security-Policy",
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    headers.insert("Referrer-Policy", HeaderValue::from_static("no-referrer"));
    response
}

/// `/ui`: the page lives at `/ui/`, so its relative URLs resolve there.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `/ui/`: the page, revalidated on each load.
pub async fn page(headers: HeaderMap) -> Response {
    let (page, etag) = &*RENDERED_PAGE;
    let cache = [(CACHE_CONTROL, "no-cache"), (ETAG, etag.as_str())];
    if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|given| given.as_bytes() == etag.as_bytes())
    {
        return hardened((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    hardened((cache, [(CONTENT_TYPE, "text/html; charset=utf-8")], page.clone()).into_response())
}

/// `/ui/<file>`: a file by its hashed name, cached for good; by its plain name (someone typing
/// it), revalidated.
pub async fn file(Path(name): Path<String>) -> Response {
    for asset in &ASSETS {
        let cache = if name == hashed_name(asset) {
            "public, max-age=31536000, immutable"
        } else if name == asset.name {
            "no-cache"
        } else {
            continue;
        };
        return hardened(([(CONTENT_TYPE, asset.content_type), (CACHE_CONTROL, cache)], asset.body).into_response());
    }
    hardened((StatusCode::NOT_FOUND, format!("no such file in the dashboard: {name}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page names every asset by its hashed name, which the file route serves.
    #[test]
    fn the_page_names_each_asset_by_its_hash() {
        let (page, _) = &*RENDERED_PAGE;
        for asset in &ASSETS {
            let hashed = format!("/ui/{}", hashed_name(asset));
            assert!(page.contains(&hashed), "{} is not named {hashed}", asset.name);
            assert!(
                !page.contains(&format!("\"/ui/{}\"", asset.name)),
                "{} left unhashed",
                asset.name
            );
        }
    }
}

//! What an attempt keeps of a receiver's answer. An endpoint may point at any public host that
//! trusts Pier's address, and its attempts are readable over the API, so the log keeps only a
//! short excerpt (enough to see why a receiver refused), and only of answers a receiver writes
//! for people or programs to read: a final status (2xx, 4xx, 5xx) with a text or JSON body.
//! Anything else (a redirect, an image, an archive) keeps nothing (ASVS 5.0 V14.2.6: only the
//! data the function needs).

use pier_core::validation;

use crate::model::bounds;

/// Whether an answer with `status` and `content_type` keeps an excerpt.
pub(super) fn kept(status: u16, content_type: Option<&str>) -> bool {
    let final_status = matches!(status / 100, 2 | 4 | 5);
    final_status && content_type.is_some_and(readable)
}

/// Text or JSON: `text/*`, `application/json` and `application/*+json` (which covers
/// `application/problem+json`).
fn readable(content_type: &str) -> bool {
    let media_type = validation::media_type(content_type);
    let text = media_type
        .strip_prefix("text/")
        .is_some_and(|subtype| !subtype.is_empty());
    text || validation::is_json(&media_type)
}

/// At most [`bounds::RESPONSE_BODY_BYTES`] bytes of `body` as text, cut at a character
/// boundary. Bytes that are not UTF-8 read as U+FFFD, and so does NUL, which PostgreSQL text
/// cannot hold.
pub(super) fn excerpt(body: &[u8]) -> String {
    let mut cut = body.len().min(bounds::RESPONSE_BODY_BYTES);
    // A character the cut splits is left out rather than shown as U+FFFD.
    if let Err(err) = std::str::from_utf8(&body[..cut])
        && err.error_len().is_none()
    {
        cut = err.valid_up_to();
    }
    let mut text = String::from_utf8_lossy(&body[..cut]).replace('\0', "\u{fffd}");
    // Replacements are longer than what they replace.
    let mut end = text.len().min(bounds::RESPONSE_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_text_or_json_answers_are_kept() {
        for (status, content_type) in [
            (200, "application/json"),
            (422, "application/problem+json; charset=utf-8"),
            (503, "text/plain; charset=utf-8"),
            (201, "Application/Vnd.Example+JSON"),
            (400, "text/html"),
        ] {
            assert!(kept(status, Some(content_type)), "{status} {content_type}");
        }
        for (status, content_type) in [
            (200, Some("image/png")),
            (200, Some("application/octet-stream")),
            (200, Some("application/jsonp")),
            (200, Some("text")),
            (200, None),
            (302, Some("text/html")),
            (304, Some("application/json")),
            (101, Some("text/plain")),
        ] {
            assert!(!kept(status, content_type), "{status} {content_type:?}");
        }
    }

    #[test]
    fn excerpts_are_cut_on_a_character_boundary() {
        let max = bounds::RESPONSE_BODY_BYTES;
        assert_eq!(excerpt(b"ok"), "ok");
        assert_eq!(excerpt(&vec![b'a'; max * 2]).len(), max);
        // A 3-byte character across the limit is left out whole.
        let mut body = vec![b'a'; max - 1];
        body.extend_from_slice("€".as_bytes());
        assert_eq!(excerpt(&body), "a".repeat(max - 1));
        // Replacements never push it past the limit.
        let nul = excerpt(&vec![0; max]);
        assert!(
            nul.len() <= max && nul.chars().all(|c| c == '\u{fffd}'),
            "{nul}"
        );
        assert_eq!(excerpt(b"a\xffb"), "a\u{fffd}b");
    }
}

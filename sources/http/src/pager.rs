//! Pagination: which URL comes next, and when to stop.

use url::Url;

use crate::config::Pagination;
use crate::scan;

/// What a page told the pager.
#[derive(Debug)]
pub(crate) struct PageSeen<'a> {
    /// The URL that answered.
    pub url: &'a Url,
    /// Its `Link: rel="next"` target.
    pub link_next: Option<&'a str>,
    /// Its body.
    pub body: &'a [u8],
    /// Records on it.
    pub records: usize,
}

/// Walks the pages of one request.
#[derive(Debug, Clone)]
pub(crate) struct Pager {
    pagination: Pagination,
    base: Url,
    page: u64,
    offset: u64,
    /// Once the total is known: the page numbers (or offset indexes) still to fetch,
    /// `first..end`.
    known: Option<(u64, u64)>,
}

/// `url` with the query parameter `name` set to `value` (replacing any it had).
pub(crate) fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let mut out = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(name, value);
    out
}

/// A small value of the body at `path`, as text: strings unquoted, numbers as written;
/// `None` when missing, `null` or empty.
fn value_at(body: &[u8], path: &str) -> Result<Option<String>, String> {
    let malformed = |e: scan::ScanError| e.to_string();
    let at = scan::skip_ws(body, 0);
    let whole = (at, scan::skip_value(body, at).map_err(malformed)?);
    let span = scan::pointer(body, whole, &scan::parse_path(path)).map_err(malformed)?;
    let Some((start, end)) = span else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_slice(&body[start..end])
        .map_err(|e| format!("`{path}` at byte {start}: {e}"))?;
    Ok(match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        other => return Err(format!("`{path}` is {other}, not a string or number")),
    })
}

fn count_at(body: &[u8], path: &str) -> Result<Option<u64>, String> {
    value_at(body, path)?
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("`{path}` is `{v}`, not a count"))
        })
        .transpose()
}

impl Pager {
    pub(crate) fn new(pagination: Pagination, base: Url) -> Self {
        let (page, offset) = match &pagination {
            Pagination::PageNumber { start, .. } => (*start, 0),
            _ => (0, 0),
        };
        Self {
            pagination,
            base,
            page,
            offset,
            known: None,
        }
    }

    fn page_url(&self, page: u64) -> Url {
        match &self.pagination {
            Pagination::PageNumber {
                param,
                page_size_param,
                page_size,
                ..
            } => {
                let url = with_param(&self.base, param, &page.to_string());
                match (page_size_param, page_size) {
                    (Some(p), Some(size)) => with_param(&url, p, &size.to_string()),
                    _ => url,
                }
            }
            _ => self.base.clone(),
        }
    }

    fn offset_url(&self, offset: u64) -> Url {
        match &self.pagination {
            Pagination::Offset {
                offset_param,
                limit_param,
                limit,
                ..
            } => with_param(
                &with_param(&self.base, offset_param, &offset.to_string()),
                limit_param,
                &limit.to_string(),
            ),
            _ => self.base.clone(),
        }
    }

    /// The first page's URL.
    pub(crate) fn first(&self) -> Url {
        match &self.pagination {
            Pagination::PageNumber { .. } => self.page_url(self.page),
            Pagination::Offset { .. } => self.offset_url(0),
            _ => self.base.clone(),
        }
    }

    /// After the first page, when the body gave the total: the remaining pages' URLs, at
    /// most `limit` of them (for parallel fetching). `None`: pages are found one by one.
    pub(crate) fn remaining(&mut self, limit: u64) -> Option<Vec<Url>> {
        /// URLs made at once (the rest stay as a range).
        const CHUNK: u64 = 4096;
        let (first, end) = self.known?;
        let stop = end.min(first.saturating_add(limit.min(CHUNK)));
        self.known = (stop < end).then_some((stop, end));
        let end = stop;
        Some(match &self.pagination {
            Pagination::Offset { limit: size, .. } => (first..end)
                .map_while(|i| i.checked_mul(*size))
                .map(|offset| self.offset_url(offset))
                .collect(),
            _ => (first..end).map(|p| self.page_url(p)).collect(),
        })
    }

    /// The next URL after `seen`, or `None` at the end.
    pub(crate) fn next(&mut self, seen: &PageSeen<'_>) -> Result<Option<Url>, String> {
        match self.pagination.clone() {
            Pagination::None => Ok(None),
            Pagination::PageNumber {
                total_pages_path,
                start,
                ..
            } => {
                if seen.records == 0 {
                    return Ok(None);
                }
                if let Some(path) = total_pages_path {
                    let first = self.page == start;
                    let total = count_at(seen.body, &path)?
                        .ok_or_else(|| format!("no page count at `{path}`"))?;
                    if first {
                        // Page numbers `start ..= start + total - 1`.
                        self.known = Some((start + 1, start.saturating_add(total)));
                        self.page = start.saturating_add(total);
                    }
                    return Ok(None);
                }
                self.page += 1;
                Ok(Some(self.page_url(self.page)))
            }
            Pagination::Offset {
                limit, total_path, ..
            } => {
                if seen.records == 0 {
                    return Ok(None);
                }
                if let Some(path) = total_path {
                    let first = self.offset == 0;
                    let total = count_at(seen.body, &path)?
                        .ok_or_else(|| format!("no record count at `{path}`"))?;
                    if first {
                        self.known = Some((1, total.div_ceil(limit.max(1))));
                        self.offset = total;
                    }
                    return Ok(None);
                }
                if (seen.records as u64) < limit {
                    return Ok(None);
                }
                self.offset += limit;
                Ok(Some(self.offset_url(self.offset)))
            }
            Pagination::Cursor {
                cursor_path,
                cursor_param,
            } => Ok(value_at(seen.body, &cursor_path)?
                .map(|token| with_param(&self.base, &cursor_param, &token))),
            Pagination::LinkHeader => seen
                .link_next
                .map(|next| {
                    seen.url
                        .join(next)
                        .map_err(|e| format!("the Link header's next URL `{next}`: {e}"))
                })
                .transpose(),
            Pagination::NextUrl { next_url_path } => value_at(seen.body, &next_url_path)?
                .map(|next| {
                    seen.url
                        .join(&next)
                        .map_err(|e| format!("the next URL `{next}`: {e}"))
                })
                .transpose(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(url: &'a Url, body: &'a str, records: usize) -> PageSeen<'a> {
        PageSeen {
            url,
            link_next: None,
            body: body.as_bytes(),
            records,
        }
    }

    #[test]
    fn offsets_stop_on_a_short_page_or_use_the_total() {
        let base = Url::parse("http://h/x?a=1").expect("url");
        let mut p = Pager::new(
            Pagination::Offset {
                offset_param: "offset".into(),
                limit_param: "limit".into(),
                limit: 10,
                total_path: None,
            },
            base.clone(),
        );
        assert_eq!(p.first().as_str(), "http://h/x?a=1&offset=0&limit=10");
        let next = p.next(&seen(&base, "[]", 10)).expect("ok").expect("more");
        assert_eq!(next.as_str(), "http://h/x?a=1&offset=10&limit=10");
        assert!(p.next(&seen(&base, "[]", 3)).expect("ok").is_none());

        let mut p = Pager::new(
            Pagination::Offset {
                offset_param: "offset".into(),
                limit_param: "limit".into(),
                limit: 10,
                total_path: Some("/total".into()),
            },
            base.clone(),
        );
        assert!(
            p.next(&seen(&base, r#"{"total": 35}"#, 10))
                .expect("ok")
                .is_none()
        );
        let rest = p.remaining(u64::MAX).expect("known");
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[2].as_str(), "http://h/x?a=1&offset=30&limit=10");
    }

    #[test]
    fn cursor_tokens_and_next_urls() {
        let base = Url::parse("http://h/x").expect("url");
        let mut p = Pager::new(
            Pagination::Cursor {
                cursor_path: "meta.next".into(),
                cursor_param: "after".into(),
            },
            base.clone(),
        );
        let next = p
            .next(&seen(&base, r#"{"meta": {"next": "t 1"}}"#, 1))
            .expect("ok");
        assert_eq!(next.expect("more").as_str(), "http://h/x?after=t+1");
        assert!(
            p.next(&seen(&base, r#"{"meta": {"next": null}}"#, 1))
                .expect("ok")
                .is_none()
        );

        let mut p = Pager::new(
            Pagination::NextUrl {
                next_url_path: "/next".into(),
            },
            base.clone(),
        );
        let next = p
            .next(&seen(&base, r#"{"next": "/y?page=2"}"#, 1))
            .expect("ok");
        assert_eq!(next.expect("more").as_str(), "http://h/y?page=2");
    }
}

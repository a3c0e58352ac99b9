//! Walking a request's pages: fetch, find the records, find the next page. Pages whose URLs
//! are known up front (a total in the first page) are fetched `parallelism` at a time and
//! handed on in page order.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use url::Url;

use crate::client::{Client, Response, head};
use crate::config::BodyFormat;
use crate::error::HttpError;
use crate::pager::{PageSeen, Pager};
use crate::scan;

/// A fetched page with the spans of its records.
#[derive(Debug)]
pub(crate) struct Page {
    /// 1-based.
    pub number: u64,
    /// Its URL for messages (redacted).
    pub shown: String,
    /// The body.
    pub body: Bytes,
    /// Where each record is in `body`.
    pub records: Vec<(usize, usize)>,
}

/// How a body holds its records.
#[derive(Debug, Clone)]
pub(crate) struct Records {
    /// JSON or NDJSON.
    pub format: BodyFormat,
    /// The path to the record array (JSON).
    pub path: Vec<String>,
    /// As configured, for messages.
    pub path_text: String,
}

impl Records {
    /// The records of `body`.
    pub(crate) fn find(&self, body: &[u8]) -> Result<Vec<(usize, usize)>, String> {
        match self.format {
            BodyFormat::Ndjson => lines(body),
            BodyFormat::Json => {
                let malformed = |e: scan::ScanError| e.to_string();
                let at = scan::skip_ws(body, 0);
                let end = scan::skip_value(body, at).map_err(malformed)?;
                let rest = scan::skip_ws(body, end);
                if rest != body.len() {
                    return Err(format!(
                        "malformed JSON at byte {rest}: text after the document"
                    ));
                }
                match scan::pointer(body, (at, end), &self.path).map_err(malformed)? {
                    None => Err(format!(
                        "no records at `{}` (records_path); the body starts: {}",
                        self.path_text,
                        head(body)
                    )),
                    Some((start, _)) if body[start] == b'[' => {
                        scan::elements(body, start).map_err(malformed)
                    }
                    Some((start, end)) if &body[start..end] == b"null" => Ok(Vec::new()),
                    Some(_) => Err(format!(
                        "`{}` (records_path) is not an array; the body starts: {}",
                        self.path_text,
                        head(body)
                    )),
                }
            }
        }
    }
}

/// The non-blank lines of an NDJSON body, each holding exactly one JSON value.
fn lines(body: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let end = body[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |i| start + i);
        let first = scan::skip_ws(&body[..end], start);
        if first < end {
            let value_end = scan::skip_value(&body[..end], first).map_err(|e| e.to_string())?;
            let rest = scan::skip_ws(&body[..end], value_end);
            if rest < end {
                return Err(format!(
                    "malformed NDJSON at byte {rest}: more than one value on a line"
                ));
            }
            out.push((first, value_end));
        }
        start = end + 1;
    }
    Ok(out)
}

/// The pages of one run's request.
#[derive(Debug)]
pub(crate) struct Walker {
    client: Arc<Client>,
    body: Option<serde_json::Value>,
    records: Records,
    pager: Pager,
    next: Option<Url>,
    queue: VecDeque<Url>,
    fetched: u64,
    max_pages: u64,
    parallelism: usize,
    /// The last page's URL and a hash of its body: an API that answers the same page again
    /// (it ignores the page parameter, or hands back the same token) would loop forever.
    last: Option<(Url, u64)>,
}

impl Walker {
    pub(crate) fn new(
        client: Arc<Client>,
        body: Option<serde_json::Value>,
        records: Records,
        pager: Pager,
        max_pages: Option<u64>,
        parallelism: usize,
    ) -> Self {
        let first = pager.first();
        Self {
            client,
            body,
            records,
            pager,
            next: Some(first),
            queue: VecDeque::new(),
            fetched: 0,
            max_pages: max_pages.unwrap_or(u64::MAX),
            parallelism: parallelism.max(1),
            last: None,
        }
    }

    fn page(&self, number: u64, response: Response) -> Result<Page, HttpError> {
        let shown = self.client.display(&response.url);
        let records = self
            .records
            .find(&response.body)
            .map_err(|message| HttpError::Page {
                page: number,
                url: shown.clone(),
                message: self.client.redact(&message),
            })?;
        Ok(Page {
            number,
            shown,
            body: response.body,
            records,
        })
    }

    /// Refill the queue from the pages the total made known (a chunk at a time).
    fn refill(&mut self) {
        if self.queue.is_empty()
            && let Some(more) = self
                .pager
                .remaining(self.max_pages.saturating_sub(self.fetched))
        {
            self.queue.extend(more);
        }
    }

    /// The next page in order, or `None` after the last.
    pub(crate) async fn next_page(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<Page>, HttpError> {
        if self.fetched >= self.max_pages {
            return Ok(None);
        }
        self.refill();
        let (url, known) = match self.queue.pop_front() {
            Some(url) => (url, true),
            None => match self.next.take() {
                Some(url) => (url, false),
                None => return Ok(None),
            },
        };
        self.fetched += 1;
        let number = self.fetched;
        let response = self.client.fetch(&url, self.body.as_ref(), cancel).await?;
        let link_next = response.link_next.clone();
        let final_url = response.url.clone();
        let page = self.page(number, response)?;
        let digest = xxhash_rust::xxh3::xxh3_64(&page.body);
        if let Some((last_url, last_digest)) = &self.last
            && (*last_url == url || (*last_digest == digest && !page.records.is_empty()))
        {
            return Err(HttpError::Page {
                page: number,
                url: page.shown,
                message: "the API answered the same page again (it ignores the page parameter \
                          or repeats its next token); set the pagination's total, or max_pages"
                    .to_string(),
            });
        }
        self.last = Some((url, digest));
        if !known {
            let seen = PageSeen {
                url: &final_url,
                link_next: link_next.as_deref(),
                body: &page.body,
                records: page.records.len(),
            };
            self.next = self.pager.next(&seen).map_err(|message| HttpError::Page {
                page: number,
                url: page.shown.clone(),
                message: self.client.redact(&message),
            })?;
        }
        debug!(page = number, records = page.records.len(), url = %page.shown, "page");
        Ok(Some(page))
    }

    /// Fetch every remaining page into `out` in order (pages already known are fetched
    /// `parallelism` at a time). Stops when `out` closes.
    pub(crate) async fn run(
        mut self,
        out: mpsc::Sender<Result<Page, HttpError>>,
        cancel: CancellationToken,
    ) {
        loop {
            self.refill();
            if self.queue.len() > 1 && self.parallelism > 1 {
                let urls: Vec<Url> = self.queue.drain(..).collect();
                let first = self.fetched;
                self.fetched += urls.len() as u64;
                let this = &self;
                let cancel = &cancel;
                let mut pages = futures::stream::iter(urls.into_iter().enumerate())
                    .map(|(i, url)| async move {
                        let response = this.client.fetch(&url, this.body.as_ref(), cancel).await?;
                        this.page(first + i as u64 + 1, response)
                    })
                    .buffered(self.parallelism);
                while let Some(page) = pages.next().await {
                    let failed = page.is_err();
                    if out.send(page).await.is_err() || failed {
                        return;
                    }
                }
                continue;
            }
            let page = self.next_page(&cancel).await.transpose();
            let Some(page) = page else { return };
            let failed = page.is_err();
            if out.send(page).await.is_err() || failed {
                return;
            }
        }
    }
}

//! The guard of a paged remote listing (audits, usage syncs): a remote whose cursors repeat,
//! cycle or never end stops the listing with a clear error instead of running forever.

use std::collections::HashMap;

/// The cursors one listing has followed, and how many pages it has read.
pub(crate) struct Cursors {
    /// Cursor → the page that returned it.
    seen: HashMap<String, u32>,
    pages: u32,
    max_pages: u32,
    /// The setting that raises `max_pages`, for the message.
    setting: &'static str,
}

impl Cursors {
    pub(crate) fn new(max_pages: u32, setting: &'static str) -> Self {
        Self {
            seen: HashMap::new(),
            pages: 0,
            max_pages: max_pages.max(1),
            setting,
        }
    }

    /// Records one page read whose answer named `next` (`None` or empty: the last page).
    /// Returns the cursor of the page to read next, `None` when the listing is complete, or
    /// why it must stop. Messages never quote a cursor (remote data of any length).
    pub(crate) fn next(&mut self, next: Option<String>) -> Result<Option<String>, String> {
        self.pages += 1;
        let page = self.pages;
        let Some(cursor) = next.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        if let Some(first) = self.seen.get(&cursor) {
            return Err(if *first + 1 == page {
                format!(
                    "page {page} returned the same next cursor as page {first}: \
                     the remote would send the same page forever"
                )
            } else {
                format!(
                    "page {page} returned the next cursor of page {first} again: \
                     the remote's cursors go round in a cycle"
                )
            });
        }
        if page >= self.max_pages {
            return Err(format!(
                "stopped after {page} pages, the most {} allows; the remote still had a next page",
                self.setting
            ));
        }
        self.seen.insert(cursor.clone(), page);
        Ok(Some(cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn a_listing_ends_at_its_last_page() {
        let mut g = Cursors::new(10, "audit.max_pages");
        assert_eq!(g.next(c("a")).unwrap(), c("a"));
        assert_eq!(g.next(c("b")).unwrap(), c("b"));
        assert_eq!(g.next(c("")).unwrap(), None);
    }

    #[test]
    fn a_repeated_cursor_stops() {
        let mut g = Cursors::new(10, "audit.max_pages");
        g.next(c("a")).unwrap();
        let e = g.next(c("a")).unwrap_err();
        assert!(
            e.contains("page 2 returned the same next cursor as page 1"),
            "{e}"
        );
    }

    #[test]
    fn a_cycle_stops() {
        let mut g = Cursors::new(10, "audit.max_pages");
        g.next(c("a")).unwrap();
        g.next(c("b")).unwrap();
        let e = g.next(c("a")).unwrap_err();
        assert!(
            e.contains("page 3 returned the next cursor of page 1"),
            "{e}"
        );
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn pages_are_capped() {
        let mut g = Cursors::new(3, "usage.max_pages");
        g.next(c("1")).unwrap();
        g.next(c("2")).unwrap();
        let e = g.next(c("3")).unwrap_err();
        assert!(e.contains("stopped after 3 pages"), "{e}");
        assert!(e.contains("usage.max_pages"), "{e}");
        // The cap is on pages read: a last page at the cap is fine.
        let mut g = Cursors::new(3, "usage.max_pages");
        g.next(c("1")).unwrap();
        g.next(c("2")).unwrap();
        assert_eq!(g.next(None).unwrap(), None);
    }
}

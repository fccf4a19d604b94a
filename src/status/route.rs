//! The status page's routes on the operational listener: `GET /status`
//! (HTML) and `GET /status.json` (the [`Snapshot`]), through the
//! listener's extension point ([`crate::ops::Route`]). The snapshot is read
//! on a blocking thread: it walks the pending markers.

use std::sync::Arc;

use super::{collect, page, Monitor, Sources};
use crate::ops::{Page, PageFuture, Route};
use crate::store::Store;
use crate::writer::WriterHandle;

/// Serves the status page from the daemon's store, writer and monitor.
pub struct StatusRoute {
    pub store: Store,
    pub writer: WriterHandle,
    pub monitor: Arc<Monitor>,
}

impl Route for StatusRoute {
    fn paths(&self) -> &[&'static str] {
        &["/status", "/status.json"]
    }

    fn get<'a>(&'a self, path: &'a str, _query: Option<&'a str>) -> PageFuture<'a> {
        Box::pin(async move {
            let (store, writer, monitor) = (
                self.store.clone(),
                self.writer.clone(),
                self.monitor.clone(),
            );
            let json = path == "/status.json";
            let read = tokio::task::spawn_blocking(move || {
                let snapshot = collect(&Sources {
                    store: &store,
                    writer: Some(&writer),
                    monitor: Some(&monitor),
                })?;
                Ok::<_, crate::store::StoreError>(if json {
                    Page::json(200, &serde_json::to_value(&snapshot).unwrap_or_default())
                } else {
                    Page::html(
                        200,
                        page::render(
                            &snapshot,
                            &monitor.history(),
                            monitor.applied_since_sample(store.applied_count()),
                        ),
                    )
                })
            })
            .await;
            match read {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => Page::text(500, format!("reading the store: {e}\n")),
                Err(e) => Page::text(500, format!("reading the status: {e}\n")),
            }
        })
    }
}

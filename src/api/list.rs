//! Lists: `GET /Users?...`, `POST /Users/.search` and `POST /.search`
//! (filter, sort, paging), streamed over the store or an index's
//! candidates; [`Pager`] keeps only the page (or, sorted, a bounded top-k
//! of keys), so totalResults is exact and memory is bounded by the page.
//!
//! Reads the store, never writes it; presents each resource through
//! `present.rs`.

use serde_json::{json, Value};

use super::{
    blocking, Api, ApiRequest, ApiResponse, Method, GROUP_SCHEMA, LIST_SCHEMA, USER_SCHEMA,
};
use super::{DEFAULT_PAGE, MAX_PAGE};
use crate::scim::filter::Filter;
use crate::scim::query::{ListQuery, PageLimits, TopK};
use crate::scim::schema::SchemaRegistry;
use crate::scim::ScimError;
use crate::store::Kind;

const PAGE_LIMITS: PageLimits = PageLimits {
    default: DEFAULT_PAGE,
    max: MAX_PAGE,
};

/// Most candidates an indexed lookup may have to be answered on the async
/// worker (each is one read by id).
const INLINE_CANDIDATES: usize = 8;

impl Api {
    /// `GET /Users?...` and `POST /Users/.search`: filter, sort, page,
    /// then project each resource (`attributes` / `excludedAttributes`).
    pub(super) fn list(&self, kind: Kind, req: &ApiRequest) -> Result<ApiResponse, ScimError> {
        let q = match req.method {
            Method::Post => ListQuery::from_search_request(self.body(req)?, PAGE_LIMITS)?,
            _ => ListQuery::from_params(&req.query, PAGE_LIMITS)?,
        };
        // A lookup by an indexed attribute (`userName eq ...`, what Entra
        // and Okta send before every create) reads a few entries: it runs
        // here, on the async worker. Handing the worker over
        // (`blocking`) costs more than such a lookup. Anything else may
        // stream over the whole store, and is handed over.
        let candidates = match &q.filter {
            Some(f) => self.candidates(kind, f)?,
            None => None,
        };
        let small = kind == Kind::User
            && candidates
                .as_ref()
                .is_some_and(|ids| ids.len() <= INLINE_CANDIDATES);
        let run = move || self.list_matching(kind, req, &q, candidates);
        if small {
            run()
        } else {
            blocking(run)
        }
    }

    fn list_matching(
        &self,
        kind: Kind,
        req: &ApiRequest,
        q: &ListQuery,
        candidates: Option<Vec<String>>,
    ) -> Result<ApiResponse, ScimError> {
        let model = self.model.current();
        let (total, page) = match (&q.filter, &q.sort_by) {
            // Paging in id order: the store reads just the page.
            (None, None) => {
                let internal = |e: crate::store::StoreError| ScimError::internal(e.to_string());
                let page = self
                    .store
                    .scan_page(kind, q.start_index - 1, q.count)
                    .map_err(internal)?;
                (
                    self.store.count(kind),
                    page.into_iter().map(|r| (kind, r)).collect(),
                )
            }
            _ => {
                let mut pager = Pager::new(q);
                self.matching_in(kind, q.filter.as_ref(), candidates, &mut |r| {
                    pager.offer(kind, r, model.registry(kind));
                })?;
                pager.finish(self)?
            }
        };
        self.list_page(req, q, total, page)
    }

    /// `POST /.search` (RFC 7644 §3.4.3): one search over every resource
    /// type served; attributes are resolved against each type's schemas.
    /// Streams like a list: only the page (or, sorted, the keys of its
    /// first `startIndex + count - 1` resources) is kept.
    pub(super) fn search_all(
        &self,
        served: &[Kind],
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        let q = ListQuery::from_search_request(self.body(req)?, PAGE_LIMITS)?;
        let model = self.model.current();
        let mut pager = Pager::new(&q);
        for &kind in served {
            self.matching(kind, q.filter.as_ref(), &mut |r| {
                // Sort keys are read as the User schema defines them.
                pager.offer(kind, r, model.registry(Kind::User));
            })?;
        }
        let (total, page) = pager.finish(self)?;
        self.list_page(req, &q, total, page)
    }

    /// Presents and projects the resources of a page.
    fn list_page(
        &self,
        req: &ApiRequest,
        q: &ListQuery,
        total: usize,
        page: Vec<(Kind, Value)>,
    ) -> Result<ApiResponse, ScimError> {
        let model = self.model.current();
        let resources = page
            .into_iter()
            .map(|(kind, r)| {
                let mut r = self.present_in(kind, r, req, &q.projection, true)?;
                q.projection.apply(&mut r, model.registry(kind));
                Ok(r)
            })
            .collect::<Result<Vec<_>, ScimError>>()?;
        Ok(list_response(total, q.start_index, resources))
    }

    /// Hands every resource of `kind` that `filter` matches (all of them
    /// without a filter) to `each`, in id order, one at a time: nothing
    /// is collected here. A single-string equality on an indexed
    /// attribute reads only its candidates; any other filter streams over
    /// the store.
    fn matching(
        &self,
        kind: Kind,
        filter: Option<&Filter>,
        each: &mut dyn FnMut(Value),
    ) -> Result<(), ScimError> {
        let candidates = match filter {
            Some(f) => self.candidates(kind, f)?,
            None => None,
        };
        self.matching_in(kind, filter, candidates, each)
    }

    /// The ids an indexed single-string equality can match (its
    /// candidates, still to be checked against the filter), or `None`
    /// when the filter is not such a lookup and the store must be
    /// scanned. Validates the filter first.
    fn candidates(&self, kind: Kind, filter: &Filter) -> Result<Option<Vec<String>>, ScimError> {
        let model = self.model.current();
        filter.validate(model.registry(kind))?;
        let internal = |e: crate::store::StoreError| ScimError::internal(e.to_string());
        Ok(match filter.eq_lookup() {
            Some((path, value)) => {
                let name = match &path.sub {
                    Some(sub) => format!("{}.{sub}", path.name),
                    None => path.name.clone(),
                };
                let core = path.urn.as_deref().is_none_or(|u| {
                    u.eq_ignore_ascii_case(USER_SCHEMA) || u.eq_ignore_ascii_case(GROUP_SCHEMA)
                });
                if core {
                    self.store.lookup(kind, &name, value).map_err(internal)?
                } else {
                    None
                }
            }
            None => None,
        })
    }

    /// [`Api::matching`] with the candidates already looked up.
    fn matching_in(
        &self,
        kind: Kind,
        filter: Option<&Filter>,
        indexed: Option<Vec<String>>,
        each: &mut dyn FnMut(Value),
    ) -> Result<(), ScimError> {
        let model = self.model.current();
        let reg: &SchemaRegistry = model.registry(kind);
        let internal = |e: crate::store::StoreError| ScimError::internal(e.to_string());
        let wanted = |r: &Value| filter.is_none_or(|f| f.matches(r, reg));
        match indexed {
            Some(mut ids) => {
                ids.sort();
                for id in ids {
                    if let Some(r) = self.store.get(kind, &id).map_err(internal)? {
                        if wanted(&r) {
                            each(r);
                        }
                    }
                }
            }
            None => {
                for r in self.store.scan(kind) {
                    let r = r.map_err(internal)?;
                    if wanted(&r) {
                        each(r);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Collects one page of a filtered or sorted list while the matching
/// resources stream past: it counts them all (totalResults is exact) but
/// keeps only the page's resources, or, when sorted, the sort keys and
/// ids of the first `startIndex + count - 1` (a bounded top-k); the
/// page's resources are then read again by id.
struct Pager {
    skip: usize,
    take: usize,
    total: usize,
    sorted: Option<TopK<(Kind, String)>>,
    page: Vec<(Kind, Value)>,
}

impl Pager {
    fn new(q: &ListQuery) -> Pager {
        let skip = q.start_index - 1;
        Pager {
            skip,
            take: q.count,
            total: 0,
            sorted: q
                .sort_by
                .as_ref()
                .map(|by| TopK::new(by, q.descending, skip.saturating_add(q.count))),
            page: Vec::new(),
        }
    }

    fn offer(&mut self, kind: Kind, r: Value, reg: &SchemaRegistry) {
        let position = self.total;
        self.total += 1;
        match &mut self.sorted {
            Some(top) => {
                let id = r
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                top.offer(&r, reg, (kind, id));
            }
            None => {
                if position >= self.skip && self.page.len() < self.take {
                    self.page.push((kind, r));
                }
            }
        }
    }

    /// totalResults and the page. A resource removed between the scan and
    /// the read is left out of the page.
    fn finish(self, api: &Api) -> Result<(usize, Vec<(Kind, Value)>), ScimError> {
        let Some(top) = self.sorted else {
            return Ok((self.total, self.page));
        };
        let mut page = Vec::new();
        for (kind, id) in top.into_sorted().into_iter().skip(self.skip) {
            if let Some(r) = api
                .store
                .get(kind, &id)
                .map_err(|e| ScimError::internal(e.to_string()))?
            {
                page.push((kind, r));
            }
        }
        Ok((self.total, page))
    }
}

fn list_response(total: usize, start_index: usize, resources: Vec<Value>) -> ApiResponse {
    ApiResponse::json(
        200,
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

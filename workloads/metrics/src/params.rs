//! Query-string parsing with 400 errors that name the parameter and the accepted form.

use telemetry_core::record::parse_timestamp;

use crate::app_error::AppError;
use crate::page_token;
use crate::store::{GpuSortField, SortOrder, TelemetryFilter, to_bson_bound};

/// Page size used when a request gives no `limit`, and the largest `limit` accepted.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    default: u32,
    max: u32,
}

impl PageLimits {
    /// Checks that both sizes are at least 1 and that the default does not exceed the maximum.
    pub fn new(default: u32, max: u32) -> crate::Result<Self> {
        if default == 0 || max == 0 {
            return Err(crate::Error::Config(format!(
                "--api-page-size-default ({default}) and --api-page-size-max ({max}) must be at least 1"
            )));
        }
        if default > max {
            return Err(crate::Error::Config(format!(
                "--api-page-size-default ({default}) is larger than --api-page-size-max ({max}); \
                 lower the default or raise the maximum"
            )));
        }
        Ok(PageLimits { default, max })
    }
}

/// Raw query-string pairs, consumed one parameter at a time so that leftovers can be reported.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        QueryParams { pairs }
    }

    /// Removes and returns the value of `name`; a repeated parameter is a 400.
    fn take(&mut self, name: &'static str) -> Result<Option<String>, AppError> {
        let mut values = Vec::new();
        self.pairs.retain(|(key, value)| {
            let matches = key == name;
            if matches {
                values.push(value.clone());
            }
            !matches
        });
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err(AppError::invalid_parameter(
                name,
                format!("{name} is given {} times; give it once", values.len()),
            )),
        }
    }

    /// Like [`QueryParams::take`], but an empty value is a 400.
    fn take_non_empty(&mut self, name: &'static str) -> Result<Option<String>, AppError> {
        match self.take(name)? {
            Some(value) if value.is_empty() => Err(AppError::invalid_parameter(
                name,
                format!("{name} is empty; give a value or omit it"),
            )),
            other => Ok(other),
        }
    }

    /// Rejects any parameter that no `take` consumed, so a misspelt filter is not ignored.
    fn finish(self, accepted: &str) -> Result<(), AppError> {
        match self.pairs.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => {
                let message = format!(
                    "unknown query parameter {name:?}; the accepted parameters are {accepted}"
                );
                Err(AppError::invalid_parameter(name, message))
            }
        }
    }

    fn take_limit(&mut self, limits: PageLimits) -> Result<u32, AppError> {
        let Some(text) = self.take("limit")? else {
            return Ok(limits.default);
        };
        let accepted = format!("an integer from 1 to {}", limits.max);
        let limit: u64 = text.parse().map_err(|_| {
            AppError::invalid_parameter("limit", format!("limit {text:?} is not {accepted}"))
        })?;
        if limit == 0 || limit > u64::from(limits.max) {
            return Err(AppError::invalid_parameter(
                "limit",
                format!(
                    "limit {limit} is out of range; the maximum page size is {}, so use {accepted}",
                    limits.max
                ),
            ));
        }
        Ok(limit as u32)
    }

    fn take_order(&mut self, name: &'static str) -> Result<SortOrder, AppError> {
        match self.take(name)?.as_deref() {
            None | Some("asc") => Ok(SortOrder::Asc),
            Some("desc") => Ok(SortOrder::Desc),
            Some(other) => Err(AppError::invalid_parameter(
                name,
                format!("{name} {other:?} is invalid; use asc or desc"),
            )),
        }
    }

    fn take_time(
        &mut self,
        name: &'static str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, AppError> {
        let Some(text) = self.take_non_empty(name)? else {
            return Ok(None);
        };
        parse_timestamp(&text).map(Some).map_err(|err| {
            // A `+` offset that the client did not percent-encode arrives as a space.
            let hint = if text.contains(' ') {
                "; percent-encode a + offset as %2B"
            } else {
                ""
            };
            AppError::invalid_parameter(
                name,
                format!(
                    "{name} {text:?} is not an RFC 3339 time ({err}); use a form like \
                     2025-07-18T20:42:34Z or 2025-07-18T22:42:34+02:00{hint}"
                ),
            )
        })
    }
}

/// A parsed `GET /api/v1/gpus/{uuid}/telemetry` request.
#[derive(Debug)]
pub struct TelemetryRequest {
    pub filter: TelemetryFilter,
    pub limit: u32,
    pub page_token: Option<String>,
}

const TELEMETRY_PARAMETERS: &str = "start_time, end_time, metric_name, sort, limit and page_token";

impl TelemetryRequest {
    pub fn parse(
        uuid: String,
        mut params: QueryParams,
        limits: PageLimits,
    ) -> Result<Self, AppError> {
        let start = params.take_time("start_time")?;
        let end = params.take_time("end_time")?;
        if let (Some(start), Some(end)) = (start, end)
            && start > end
        {
            return Err(AppError::invalid_parameter(
                "start_time",
                format!(
                    "start_time {} is after end_time {}; both bounds are inclusive, so give a start at or before the end",
                    start.to_rfc3339(),
                    end.to_rfc3339()
                ),
            ));
        }
        let metric_name = params.take_non_empty("metric_name")?;
        let order = params.take_order("sort")?;
        let limit = params.take_limit(limits)?;
        let page_token = params.take_non_empty(page_token::PARAMETER)?;
        params.finish(TELEMETRY_PARAMETERS)?;

        let filter = TelemetryFilter {
            uuid,
            metric_name,
            start: start.map(|time| to_bson_bound(time, true)),
            end: end.map(|time| to_bson_bound(time, false)),
            order,
        };
        Ok(TelemetryRequest {
            filter,
            limit,
            page_token,
        })
    }

    /// Fingerprint of everything but `limit` and `page_token`: a token from this request is
    /// valid only for a request with the same GPU, filters and order.
    pub fn fingerprint(&self) -> String {
        let millis = |time: Option<mongodb::bson::DateTime>| {
            time.map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default()
        };
        let filter = &self.filter;
        page_token::fingerprint(&[
            "telemetry",
            &filter.uuid,
            filter.metric_name.as_deref().unwrap_or_default(),
            &millis(filter.start),
            &millis(filter.end),
            filter.order.as_str(),
        ])
    }
}

/// A parsed `GET /api/v1/gpus` request.
#[derive(Debug)]
pub struct GpuListRequest {
    pub sort: GpuSortField,
    pub order: SortOrder,
    pub limit: u32,
    pub page_token: Option<String>,
}

const GPU_LIST_PARAMETERS: &str = "sort, order, limit and page_token";

impl GpuListRequest {
    pub fn parse(mut params: QueryParams, limits: PageLimits) -> Result<Self, AppError> {
        let sort = match params.take("sort")?.as_deref() {
            None | Some("uuid") => GpuSortField::Uuid,
            Some("hostname") => GpuSortField::Hostname,
            Some("last_seen") => GpuSortField::LastSeen,
            Some(other) => {
                return Err(AppError::invalid_parameter(
                    "sort",
                    format!("sort {other:?} is invalid; use uuid, hostname or last_seen"),
                ));
            }
        };
        let order = params.take_order("order")?;
        let limit = params.take_limit(limits)?;
        let page_token = params.take_non_empty(page_token::PARAMETER)?;
        params.finish(GPU_LIST_PARAMETERS)?;
        Ok(GpuListRequest {
            sort,
            order,
            limit,
            page_token,
        })
    }

    /// Fingerprint of the sort field and order.
    pub fn fingerprint(&self) -> String {
        page_token::fingerprint(&["gpus", self.sort.as_str(), self.order.as_str()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        default: 100,
        max: 1000,
    };

    #[test]
    fn default_above_max_rejected() {
        assert!(PageLimits::new(10, 5).is_err());
        assert!(PageLimits::new(0, 5).is_err());
        assert!(PageLimits::new(5, 5).is_ok());
    }

    fn params(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn telemetry(pairs: &[(&str, &str)]) -> Result<TelemetryRequest, AppError> {
        TelemetryRequest::parse("GPU-1".into(), params(pairs), LIMITS)
    }

    #[test]
    fn defaults_apply() {
        let request = telemetry(&[]).unwrap();
        assert_eq!(request.limit, 100);
        assert_eq!(request.filter.order, SortOrder::Asc);
        assert!(request.filter.start.is_none());
        assert!(request.filter.end.is_none());
    }

    #[test]
    fn limit_above_max_names_maximum() {
        let err = telemetry(&[("limit", "1001")]).unwrap_err();
        assert_eq!(err.parameter(), Some("limit"));
    }

    #[test]
    fn limit_zero_and_text_rejected() {
        for value in ["0", "-1", "ten", ""] {
            let err = telemetry(&[("limit", value)]).unwrap_err();
            assert_eq!(err.parameter(), Some("limit"), "{value}");
        }
    }

    #[test]
    fn offset_time_normalised() {
        let request = telemetry(&[("start_time", "2025-07-18T22:42:34+02:00")]).unwrap();
        assert_eq!(
            request
                .filter
                .start
                .unwrap()
                .try_to_rfc3339_string()
                .unwrap(),
            "2025-07-18T20:42:34Z"
        );
    }

    #[test]
    fn start_after_end_rejected() {
        let err = telemetry(&[
            ("start_time", "2025-07-18T20:42:35Z"),
            ("end_time", "2025-07-18T20:42:34Z"),
        ])
        .unwrap_err();
        assert_eq!(err.parameter(), Some("start_time"));
    }

    #[test]
    fn equal_start_and_end_accepted() {
        assert!(
            telemetry(&[
                ("start_time", "2025-07-18T20:42:34Z"),
                ("end_time", "2025-07-18T20:42:34Z")
            ])
            .is_ok()
        );
    }

    #[test]
    fn repeated_parameter_rejected() {
        let err = telemetry(&[("metric_name", "a"), ("metric_name", "b")]).unwrap_err();
        assert_eq!(err.parameter(), Some("metric_name"));
    }

    #[test]
    fn unknown_parameter_rejected() {
        let err = telemetry(&[("metric", "a")]).unwrap_err();
        assert_eq!(err.parameter(), Some("metric"));
    }

    #[test]
    fn fingerprint_ignores_limit() {
        let a = telemetry(&[("limit", "5"), ("sort", "desc")]).unwrap();
        let b = telemetry(&[("limit", "7"), ("sort", "desc")]).unwrap();
        let c = telemetry(&[("limit", "5"), ("sort", "asc")]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn gpu_sort_values() {
        let request =
            GpuListRequest::parse(params(&[("sort", "last_seen"), ("order", "desc")]), LIMITS)
                .unwrap();
        assert_eq!(request.sort, GpuSortField::LastSeen);
        assert_eq!(request.order, SortOrder::Desc);
        let err = GpuListRequest::parse(params(&[("sort", "model")]), LIMITS).unwrap_err();
        assert_eq!(err.parameter(), Some("sort"));
    }
}

//! Running queries: named parameters, result paging, errors that arrive inside a
//! successful HTTP response, and the bytes each query processed (what BigQuery bills).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::SecondsFormat;
use futures::stream::{self, BoxStream, StreamExt};
use gcp_bigquery_client::model::data_format_options::DataFormatOptions;
use gcp_bigquery_client::model::error_proto::ErrorProto;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table_row::TableRow;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::Client;
use serde_json::Value as J;
use warp_core::metrics::SOURCE_BYTES_PROCESSED_TOTAL;
use warp_core::Value;

use crate::error::{is_error_reason, BigQueryError, Context, Result};

/// Cells of one result row (each cell's `v`).
pub type Cells = Vec<J>;

#[derive(Clone)]
pub struct Runner {
    pub client: Client,
    /// Calls the client library cannot decode.
    pub api: crate::client::Api,
    pub project: String,
    /// For the bytes-processed metric.
    pub schema: String,
    /// How long one request waits for a running job's results (`read_timeout`).
    pub wait_ms: i32,
    /// `source.maximum_bytes_billed`, sent with every query.
    pub maximum_bytes_billed: Option<u64>,
    /// Bytes processed per table since start, for `status`.
    pub processed: Arc<Mutex<HashMap<String, u64>>>,
}

/// A query and its parameters, labelled with the table it is for.
pub struct Query {
    pub table: String,
    pub sql: String,
    pub params: Vec<QueryParameter>,
}

impl Query {
    pub fn new(table: &str, sql: String) -> Self {
        Self {
            table: table.to_owned(),
            sql,
            params: Vec::new(),
        }
    }

    pub fn param(mut self, name: &str, v: &Value) -> Result<Self> {
        self.params.push(param(name, v)?);
        Ok(self)
    }

    fn request(
        &self,
        page_rows: Option<i32>,
        wait_ms: i32,
        maximum_bytes_billed: Option<u64>,
    ) -> QueryRequest {
        let mut r = QueryRequest::new(self.sql.clone());
        // An int64 travels as a JSON string in BigQuery's API.
        r.maximum_bytes_billed = maximum_bytes_billed.map(|b| b.to_string());
        r.parameter_mode = Some("NAMED".into());
        r.query_parameters = Some(self.params.clone());
        r.max_results = page_rows;
        r.timeout_ms = Some(wait_ms);
        r.format_options = Some(DataFormatOptions {
            use_int64_timestamp: Some(true),
        });
        r
    }
}

/// The `errors` of a 200 answer. BigQuery lists a job's warnings there too ("errors here
/// do not necessarily mean that the job has completed or was unsuccessful"): entries
/// beside a result (a schema with fields) whose reasons are not error reasons are
/// warnings, logged; anything else fails — an answer without a result, or any entry with
/// an error reason (emulators report failed queries this way, in a 200).
fn check(context: &str, errors: Option<&[ErrorProto]>, schema: Option<&TableSchema>) -> Result<()> {
    let errors = errors.unwrap_or_default();
    let has_result = schema
        .and_then(|s| s.fields.as_ref())
        .is_some_and(|f| !f.is_empty());
    let failure = errors
        .iter()
        .find(|e| !has_result || e.reason.as_deref().is_some_and(is_error_reason));
    if let Some(e) = failure {
        return Err(BigQueryError::Query {
            context: context.to_owned(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
        });
    }
    for e in errors {
        tracing::warn!(
            context,
            reason = e.reason.as_deref().unwrap_or(""),
            message = e.message.as_deref().unwrap_or(""),
            "BigQuery answered with a warning"
        );
    }
    Ok(())
}

fn cells(rows: Option<Vec<TableRow>>) -> Vec<Cells> {
    rows.unwrap_or_default()
        .into_iter()
        .map(|r| {
            r.columns
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.value.unwrap_or(J::Null))
                .collect()
        })
        .collect()
}

/// A query job, as its results are fetched: a job runs in its dataset's location and
/// `getQueryResults` must name it (without it a regional job is "not found" once a
/// result needs a second page or outlives the first wait).
#[derive(Clone)]
struct Job {
    id: String,
    location: Option<String>,
}

/// Where paging is.
enum Cursor {
    Start,
    More { job: Job, token: String },
    Done,
}

impl Runner {
    fn count_bytes(&self, table: &str, processed: Option<&String>) {
        if let Some(n) = processed.and_then(|b| b.parse::<u64>().ok()) {
            metrics::counter!(SOURCE_BYTES_PROCESSED_TOTAL, "schema" => self.schema.clone(), "table" => table.to_owned())
                .increment(n);
            let mut processed = self
                .processed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *processed.entry(table.to_owned()).or_default() += n;
        }
    }

    /// Bytes processed by the queries for `table` since start.
    pub fn processed(&self, table: &str) -> u64 {
        let processed = self
            .processed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        processed.get(table).copied().unwrap_or(0)
    }

    /// Every row of a small result (keys, bounds, a maximum).
    pub async fn all(&self, q: Query) -> Result<Vec<Cells>> {
        let mut pages = self.pages(q, 50_000);
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            out.extend(page?);
        }
        Ok(out)
    }

    /// The result in pages of up to `page_rows` rows.
    pub fn pages(&self, q: Query, page_rows: i32) -> BoxStream<'static, Result<Vec<Cells>>> {
        let runner = self.clone();
        stream::unfold(Cursor::Start, move |cursor| {
            let runner = runner.clone();
            let request = q.request(Some(page_rows), runner.wait_ms, runner.maximum_bytes_billed);
            let table = q.table.clone();
            async move {
                let (rows, next) = match cursor {
                    Cursor::Done => return None,
                    Cursor::Start => match runner.first(&table, request).await {
                        Ok(r) => r,
                        Err(e) => return Some((Err(e), Cursor::Done)),
                    },
                    Cursor::More { job, token } => {
                        match runner.more(job, Some(token), page_rows).await {
                            Ok(r) => r,
                            Err(e) => return Some((Err(e), Cursor::Done)),
                        }
                    }
                };
                Some((Ok(rows), next))
            }
        })
        .boxed()
    }

    async fn first(&self, table: &str, request: QueryRequest) -> Result<(Vec<Cells>, Cursor)> {
        let r = self
            .client
            .job()
            .query(&self.project, request)
            .await
            .context("query")?;
        check("query", r.errors.as_deref(), r.schema.as_ref())?;
        self.count_bytes(table, r.total_bytes_processed.as_ref());
        let job = r.job_reference.and_then(|j| {
            Some(Job {
                id: j.job_id?,
                location: j.location,
            })
        });
        if r.job_complete == Some(false) {
            // A long query: wait for it, then page from the start.
            let job = job.ok_or_else(|| BigQueryError::Unsupported {
                message: "an unfinished query came back without a job id".into(),
                hint: None,
            })?;
            return self.more_counted(job, None, 50_000, Some(table)).await;
        }
        let next = match (job, r.page_token) {
            (Some(job), Some(token)) => Cursor::More { job, token },
            _ => Cursor::Done,
        };
        Ok((cells(r.rows), next))
    }

    async fn more(
        &self,
        job: Job,
        token: Option<String>,
        page_rows: i32,
    ) -> Result<(Vec<Cells>, Cursor)> {
        self.more_counted(job, token, page_rows, None).await
    }

    /// [`Runner::more`], counting the bytes the job processed for `count_for` when the
    /// first answer was unfinished: the answer that completes the job carries them (every
    /// later page repeats them, so only that one counts).
    async fn more_counted(
        &self,
        job: Job,
        token: Option<String>,
        page_rows: i32,
        count_for: Option<&str>,
    ) -> Result<(Vec<Cells>, Cursor)> {
        loop {
            let params = GetQueryResultsParameters {
                // The library sends these as a URL query, which cannot carry a nested
                // object: with `formatOptions` set every call failed before it was sent
                // ("builder error"). Pages come with float-second timestamps instead.
                format_options: None,
                location: job.location.clone(),
                max_results: Some(page_rows),
                page_token: token.clone(),
                start_index: None,
                timeout_ms: Some(self.wait_ms),
            };
            let r = self
                .client
                .job()
                .get_query_results(&self.project, &job.id, params)
                .await
                .context("read query results")?;
            // An unfinished job has no result for its errors to be warnings beside.
            let result = r.schema.as_ref().filter(|_| r.job_complete != Some(false));
            check("read query results", r.errors.as_deref(), result)?;
            if r.job_complete == Some(false) {
                continue;
            }
            if let Some(table) = count_for {
                self.count_bytes(table, r.total_bytes_processed.as_ref());
            }
            let next = match r.page_token {
                Some(token) => Cursor::More { job, token },
                None => Cursor::Done,
            };
            return Ok((cells(r.rows), next));
        }
    }

    /// Bytes the query would process, without running it.
    pub async fn dry_run(&self, q: Query) -> Result<u64> {
        let mut request = q.request(None, self.wait_ms, self.maximum_bytes_billed);
        request.dry_run = Some(true);
        let r = self
            .client
            .job()
            .query(&self.project, request)
            .await
            .context("dry-run query")?;
        check("dry-run query", r.errors.as_deref(), r.schema.as_ref())?;
        Ok(r.total_bytes_processed
            .and_then(|b| b.parse().ok())
            .unwrap_or(0))
    }
}

/// A named query parameter holding `v`, typed as BigQuery expects it.
pub fn param(name: &str, v: &Value) -> Result<QueryParameter> {
    let (ty, text) = match v {
        Value::Int(i) => ("INT64", i.to_string()),
        Value::Float64(f) => ("FLOAT64", f.to_string()),
        Value::Decimal(d) => ("BIGNUMERIC", d.to_string()),
        Value::Bool(b) => ("BOOL", b.to_string()),
        Value::Text(s) => ("STRING", s.clone()),
        Value::Date(d) => ("DATE", d.to_string()),
        Value::Timestamp(t) => ("DATETIME", t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
        Value::TimestampTz(t) => ("TIMESTAMP", t.to_rfc3339_opts(SecondsFormat::Micros, true)),
        other => return Err(BigQueryError::Unsupported {
            message: format!("a {other:?} cannot be a query parameter (key or watermark)"),
            hint: Some(
                "use a key and change_detection_column of integer, string, date or timestamp type"
                    .into(),
            ),
        }),
    };
    Ok(QueryParameter {
        name: Some(name.to_owned()),
        parameter_type: Some(QueryParameterType {
            array_type: None,
            struct_types: None,
            r#type: ty.to_owned(),
        }),
        parameter_value: Some(QueryParameterValue {
            array_values: None,
            struct_values: None,
            value: Some(text),
        }),
    })
}

/// A backtick-quoted identifier.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "\\`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 answers in the service's shape (`errors` beside a result) and the emulator's
    /// (a failed query: an empty schema, no rows, the error).
    #[test]
    fn errors_in_a_200_answer_fail_unless_they_are_warnings_beside_a_result() {
        let answer = |json: serde_json::Value| -> (Vec<ErrorProto>, TableSchema) {
            let errors = serde_json::from_value(json["errors"].clone()).unwrap();
            let schema = serde_json::from_value(json["schema"].clone()).unwrap();
            (errors, schema)
        };
        let result_schema = serde_json::json!({"fields": [{"name": "x", "type": "INTEGER"}]});
        let (errors, schema) = answer(serde_json::json!({
            "schema": result_schema,
            "errors": [{"message": "Query result contains a column of a deprecated type"}],
        }));
        assert!(check("query", Some(&errors), Some(&schema)).is_ok());
        let (errors, schema) = answer(serde_json::json!({
            "schema": {"fields": []},
            "errors": [{"reason": "invalidQuery", "location": "query", "message": "division by zero: 1 / 0"}],
        }));
        let e = check("query", Some(&errors), Some(&schema)).unwrap_err();
        assert!(e.to_string().contains("division by zero"), "{e}");
        // An error reason fails even beside a result; so does any entry without one.
        let (errors, schema) = answer(serde_json::json!({
            "schema": result_schema,
            "errors": [{"reason": "rateLimitExceeded", "message": "Exceeded rate limits"}],
        }));
        assert!(check("query", Some(&errors), Some(&schema)).is_err());
        assert!(check("query", Some(&errors), None).is_err());
        assert!(check("query", None, None).is_ok());
    }

    #[test]
    fn every_query_carries_the_bytes_billed_limit() {
        let q = Query::new("t", "SELECT 1".into());
        let limited =
            serde_json::to_value(q.request(Some(10), 1_000, Some(10_000_000_000))).unwrap();
        assert_eq!(limited["maximumBytesBilled"], "10000000000");
        assert_eq!(limited["timeoutMs"], 1_000);
        let open = serde_json::to_value(q.request(None, 1_000, None)).unwrap();
        assert!(
            open.get("maximumBytesBilled").is_none_or(|v| v.is_null()),
            "{open}"
        );
    }
}

//! The BigQuery source against the emulator, through the `Source` trait alone (the
//! binary's suites are in `warp-cli/tests/bigquery_e2e.rs`): discovery, a full load read
//! chunk by chunk equal to the rows inserted before its position, and no key lookups (verification leaves
//! rows kept only at the destination to delete detection on BigQuery).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::query_request::QueryRequest;
use warp_core::config::{load_str, ConfigOverrides, Environment};
use warp_core::{Source, Value};
use warp_source_bigquery::BigQuerySource;

const PROJECT: &str = "test-project";

#[derive(Clone)]
struct Anonymous;

#[async_trait]
impl Authenticator for Anonymous {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("test".into())
    }
}

async fn sql(bq: &gcp_bigquery_client::Client, sql: &str) {
    let r = bq
        .job()
        .query(PROJECT, QueryRequest::new(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(r.errors.is_none(), "{sql}: {:?}", r.errors);
}

#[tokio::test]
async fn a_full_load_reads_every_row_older_than_its_position_once() {
    let url = warp_e2e::peer_url("WARP_TEST_BIGQUERY_URL");
    let dataset = "source_bq_crate";
    let bq = gcp_bigquery_client::client_builder::ClientBuilder::new()
        .with_v2_base_url(url.clone())
        .build_from_authenticator(Arc::new(Anonymous))
        .await
        .unwrap();
    let _ = bq.dataset().delete(PROJECT, dataset, true).await;
    bq.dataset()
        .create(gcp_bigquery_client::model::dataset::Dataset::new(
            PROJECT, dataset,
        ))
        .await
        .unwrap();
    sql(
        &bq,
        &format!(
            "CREATE TABLE {dataset}.items (id INT64 NOT NULL, name STRING, updated_at TIMESTAMP)"
        ),
    )
    .await;
    sql(
        &bq,
        &format!(
            "INSERT INTO {dataset}.items (id, name, updated_at) \
             SELECT n, CONCAT('n', CAST(n AS STRING)), \
             TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL n HOUR) \
             FROM UNNEST(GENERATE_ARRAY(1, 250)) AS n"
        ),
    )
    .await;
    let yaml = format!(
        "source: {{ type: bigquery, project_id: {PROJECT}, database: {dataset}, endpoint: '{url}', change_detection_column: updated_at }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas:\n- name: {dataset}\n  tables:\n    items: {{ primary_key: [id] }}\n"
    );
    let loaded = load_str(
        &yaml,
        "test",
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .expect("config");
    let schema = loaded.config.schemas_to_run(None).remove(0);
    let source = BigQuerySource::new(&loaded.config.source, &schema).unwrap();

    let tables = source.discover(&schema).await.unwrap();
    let mut table = tables.into_iter().find(|t| t.id.name == "items").unwrap();
    table.primary_key = vec!["id".into()];
    let read = schema.table("items").read_settings();
    let plan = source.plan_snapshot(&table, &read, 100).await.unwrap();
    let mut names = BTreeMap::new();
    for chunk in &plan.chunks {
        let mut pages = source.read_chunk(&table, &read, chunk).await.unwrap().rows;
        while let Some(page) = pages.next().await {
            for row in page.unwrap().into_rows().unwrap() {
                let Value::Int(id) = row.values[0] else {
                    panic!("{row:?}")
                };
                let first = names.insert(id, row.values[1].clone()).is_none();
                assert!(first, "{id} read twice");
            }
        }
    }
    // The copy's position is the newest row's timestamp: the rows at that value (row 250)
    // are the polls' to deliver, everything older the copy's.
    assert_eq!(
        names.keys().copied().collect::<Vec<_>>(),
        (1..=249).collect::<Vec<_>>()
    );
    for (id, name) in &names {
        assert_eq!(*name, Value::Text(format!("n{id}")), "row {id}");
    }

    let keys = vec![vec![Value::Int(1)]];
    assert_eq!(
        source.existing_keys(&table, &read, &keys).await.unwrap(),
        None
    );
}

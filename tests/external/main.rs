//! The tests that run the crate with another program, each started by the test on a free
//! loopback port or in a temporary directory: nginx in front of the layers (`nginx.rs`),
//! Prometheus's `promtool` on the monitoring files (`promtool.rs`) and `redis-server` under the
//! Redis Streams source (`redis.rs`). One target, so that they are built and linked once.
//!
//! A test whose program is missing is reported as ignored, and under `CI=true` as failed.

#[allow(dead_code)]
#[path = "../../examples/demo/app.rs"]
mod app;
#[path = "../common/mod.rs"]
mod common;

mod nginx;
mod promtool;
mod redis;

use common::nginx::NGINX;
use common::redis_server::REDIS_SERVER;
use promtool::PROMTOOL;

common::external::main! {
    [NGINX] => nginx::[
        through_nginx_each_event_arrives_before_the_next_is_published,
        without_x_accel_buffering_nginx_holds_the_events,
        heartbeats_keep_a_quiet_stream_open_past_the_proxy_read_timeout,
        without_heartbeats_nginx_cuts_a_quiet_stream_at_the_proxy_read_timeout,
        a_hold_below_the_proxy_read_timeout_ends_in_a_clean_204,
        compressed_streams_pass_through_with_nginx_gzip_on_and_off,
    ],
    [PROMTOOL] => promtool::[
        the_rules_load,
        every_alert_fires_and_stays_quiet_as_its_tests_say,
        every_query_of_the_dashboard_parses,
        a_scrape_of_the_demo_passes_promtool_check_metrics,
    ],
    [] => promtool::[
        the_rules_and_the_dashboard_name_only_metrics_the_crate_records,
        every_alert_has_a_test_that_fires_it_and_one_that_does_not,
        metric_names_skips_what_is_not_a_metric,
    ],
    [REDIS_SERVER] => redis::[
        two_servers_share_one_feed,
        a_stream_survives_a_redis_restart_without_losing_events,
        the_reader_catches_up_after_a_restart_with_lost_data_as_a_new_epoch,
        ten_thousand_parked_polls_cost_one_blocking_read_per_topic,
        a_deleted_and_recreated_stream_is_a_new_epoch,
        redis_down_answers_503_within_the_hold,
        bad_names_and_foreign_streams_are_errors,
        an_idle_reader_retires_and_a_new_subscription_restarts_it,
        expired_and_ahead_cursors_get_explicit_answers,
        a_cursor_of_another_topic_or_source_gets_a_resync_on_both_layers,
        one_request_follows_several_topics_of_one_source,
    ],
    [] => redis::[
        bad_settings_are_errors,
    ],
}

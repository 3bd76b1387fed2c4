//! Decoding the published Nomad samples (tests/fixtures/nomad) and editing jobs.

#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nomad/",
            $name
        ))
    };
}

fn job_of(text: &str) -> Job {
    serde_json::from_str(text).unwrap()
}

#[test]
fn job_get_sample() {
    let job = job_of(fixture!("job_get.response.json"));
    assert_eq!(job.id(), "example");
    assert_eq!(job.name(), "example");
    assert_eq!(job.version(), 0, "absent Version reads as 0");
    assert_eq!(job.job_modify_index(), 7);
    assert_eq!(job.modify_index(), 7);
    assert!(!job.stable());
    assert_eq!(job.group_names(), ["cache"]);
    assert_eq!(job.group_count("cache"), Some(1));
    assert_eq!(job.group_count("nope"), None);
    assert_eq!(job.group_meta("cache", "foo"), Some("bar"));
    assert_eq!(job.group_meta("cache", "missing"), None);
    // Task-level service only.
    assert_eq!(
        job.group_service_tags("cache", "cache-redis"),
        Some(vec!["global".to_owned(), "cache".to_owned()])
    );
    assert_eq!(job.group_service_tags("cache", "nope"), None);
}

#[test]
fn job_versions_sample() {
    let body: serde_json::Value =
        serde_json::from_str(fixture!("job_versions.response.json")).unwrap();
    let versions: Vec<Job> = serde_json::from_value(body["Versions"].clone()).unwrap();
    assert_eq!(versions.len(), 1);
    let v = &versions[0];
    assert_eq!(v.id(), "example");
    assert_eq!(v.version(), 0);
    assert!(v.stable());
    assert_eq!((v.job_modify_index(), v.modify_index()), (44, 51));
    assert_eq!(v.group_meta("cache", "x"), None, "Meta is null");
    assert_eq!(
        v.group_service_tags("cache", "redis-cache"),
        None,
        "Services are null"
    );

    // With diffs too.
    let body: serde_json::Value =
        serde_json::from_str(fixture!("job_versions_diffs.response.json")).unwrap();
    let versions: Vec<Job> = serde_json::from_value(body["Versions"].clone()).unwrap();
    assert!(!versions.is_empty());
    assert!(
        versions
            .windows(2)
            .all(|w| w[0].version() >= w[1].version())
    );
}

#[test]
fn jobs_parse_sample() {
    let job = job_of(fixture!("jobs_parse.response.json"));
    assert_eq!(job.id(), "my-job");
    assert!(job.group_names().is_empty(), "TaskGroups is null");
    assert_eq!(job.version(), 0);
}

#[test]
fn register_full_request_groups() {
    // The full register body: group-level Services with Tags, Meta null, Version null.
    let body: serde_json::Value =
        serde_json::from_str(fixture!("job_register_full.request.json")).unwrap();
    let mut job = Job(body["Job"].clone());
    assert_eq!(job.version(), 0);
    assert_eq!(
        job.group_service_tags("cache", "redis-cache"),
        Some(vec!["global".into(), "cache".into()])
    );
    job.set_group_meta("cache", "colour", "green").unwrap();
    assert_eq!(job.group_meta("cache", "colour"), Some("green"));
    job.set_group_service_tags("cache", "redis-cache", &["live".into()])
        .unwrap();
    assert_eq!(
        job.group_service_tags("cache", "redis-cache"),
        Some(vec!["live".into()])
    );
    // Everything else survives untouched.
    let mut expected = body["Job"].clone();
    expected["TaskGroups"][0]["Meta"] = json!({"colour": "green"});
    expected["TaskGroups"][0]["Services"][0]["Tags"] = json!(["live"]);
    assert_eq!(job.0, expected);
}

#[test]
fn set_group_service_tags_updates_group_and_task_services() {
    let mut job = Job(json!({
        "ID": "web",
        "TaskGroups": [
            {"Name": "blue", "Count": 2, "Meta": {"colour": "blue"},
             "Services": [{"Name": "web", "Tags": ["live"]}, {"Name": "admin", "Tags": ["x"]}],
             "Tasks": [
                {"Name": "app", "Services": [{"Name": "web", "Tags": null}]},
                {"Name": "sidecar", "Services": null},
                {"Name": "other"}
             ]},
            {"Name": "green", "Services": [{"Name": "web", "Tags": ["standby"]}]}
        ]
    }));
    job.set_group_service_tags("blue", "web", &["standby".into(), "v2".into()])
        .unwrap();
    let blue = &job.0["TaskGroups"][0];
    assert_eq!(blue["Services"][0]["Tags"], json!(["standby", "v2"]));
    assert_eq!(
        blue["Services"][1]["Tags"],
        json!(["x"]),
        "other service untouched"
    );
    assert_eq!(
        blue["Tasks"][0]["Services"][0]["Tags"],
        json!(["standby", "v2"])
    );
    assert_eq!(
        job.0["TaskGroups"][1]["Services"][0]["Tags"],
        json!(["standby"]),
        "other group untouched"
    );

    let err = job.set_group_service_tags("blue", "nope", &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = job
        .set_group_service_tags("purple", "web", &[])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = job.set_group_meta("purple", "k", "v").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // Meta: overwrite, add, create when missing; a non-object is refused.
    job.set_group_meta("blue", "colour", "green").unwrap();
    job.set_group_meta("green", "colour", "green").unwrap();
    assert_eq!(job.group_meta("blue", "colour"), Some("green"));
    assert_eq!(job.group_meta("green", "colour"), Some("green"));
    job.0["TaskGroups"][1]["Meta"] = json!("bogus");
    assert!(job.set_group_meta("green", "k", "v").is_err());

    assert_eq!(job.group_names(), ["blue", "green"]);
    assert_eq!(job.group_count("blue"), Some(2));
    assert_eq!(job.group_count("green"), None);
}

#[test]
fn job_accessors_on_odd_json() {
    let job = Job(json!(null));
    assert_eq!(job.id(), "");
    assert_eq!(job.version(), 0);
    assert!(job.group_names().is_empty());
    let job = Job(json!({"ID": 5, "TaskGroups": {"not": "a list"}, "Stable": "yes"}));
    assert_eq!(job.id(), "");
    assert!(!job.stable());
    assert!(job.group_names().is_empty());
}

#[test]
fn jobs_list_sample() {
    let jobs: Vec<JobListStub> = serde_json::from_str(fixture!("jobs_list.response.json")).unwrap();
    let j = &jobs[0];
    assert_eq!(j.id, "example");
    assert_eq!(j.job_type, "service");
    assert_eq!(j.status, "pending");
    assert_eq!(
        (j.create_index, j.modify_index, j.job_modify_index),
        (52, 93, 52)
    );
    assert_eq!(
        j.job_summary.as_ref().unwrap()["Summary"]["cache"]["Queued"],
        1
    );
}

#[test]
fn register_responses() {
    let r: JobRegisterResponse =
        serde_json::from_str(fixture!("job_register.response.json")).unwrap();
    assert_eq!(r.eval_id, "");
    assert_eq!(r.job_modify_index, 109);
    assert_eq!(r.warnings, "");
    assert!(!r.known_leader);

    for text in [
        fixture!("job_update.response.json"),
        fixture!("job_revert.response.json"),
    ] {
        let r: JobRegisterResponse = serde_json::from_str(text).unwrap();
        assert_eq!(r.eval_id, "d092fdc0-e1fd-2536-67d8-43af8ca798ac");
        assert_eq!((r.eval_create_index, r.job_modify_index), (35, 34));
        assert_eq!(r.index, 0);
    }
}

#[test]
fn allocation_samples() {
    let allocs: Vec<AllocationListStub> =
        serde_json::from_str(fixture!("allocations_list.response.json")).unwrap();
    let a = &allocs[0];
    assert_eq!(a.id, "5457f16d-0f87-8e6b-5e91-0c7da3a41eb7");
    assert_eq!(a.job_id, "example");
    assert_eq!(a.task_group, "cache");
    assert_eq!(a.node_id, "f476d2b4-02dc-c216-d031-273396727347");
    assert_eq!(
        (a.desired_status.as_str(), a.client_status.as_str()),
        ("run", "running")
    );
    let ds = a.deployment_status.as_ref().unwrap();
    assert_eq!(ds.healthy, Some(true));
    assert!(!ds.canary);
    assert_eq!(ds.modify_index, 15);
    assert_eq!(ds.timestamp, "2021-11-04T10:14:22.054814+01:00");
    assert_eq!(a.healthy(), Some(true));
    assert!(!a.is_canary());
    assert_eq!(a.task_states["redis"]["State"], "running");
    assert_eq!(a.create_time, 1636017249798459000);

    let allocs: Vec<AllocationListStub> =
        serde_json::from_str(fixture!("job_allocations.response.json")).unwrap();
    let a = &allocs[0];
    assert_eq!(a.name, "example.cache[0]");
    assert_eq!(
        a.previous_allocation,
        "516d2753-0513-cfc7-57ac-2d6fac18b9dc"
    );
    assert_eq!(a.deployment_status, None);
    assert_eq!(a.healthy(), None);
    assert_eq!((a.create_index, a.modify_index), (9, 13));

    for text in [
        fixture!("deployment_allocations.response.json"),
        fixture!("evaluation_allocations.response.json"),
    ] {
        let allocs: Vec<AllocationListStub> = serde_json::from_str(text).unwrap();
        assert!(!allocs.is_empty());
    }

    // Undecided health, canary.
    let a: AllocationListStub = serde_json::from_value(json!({
        "ID": "a", "DeploymentStatus": {"Healthy": null, "Canary": true}
    }))
    .unwrap();
    assert_eq!(a.healthy(), None);
    assert!(a.is_canary());

    // The full allocation (legacy sample, duplicate key included) is plain JSON.
    let alloc: serde_json::Value =
        serde_json::from_str(fixture!("allocation_get.response.json")).unwrap();
    assert!(alloc["ID"].is_string());
}

#[test]
fn deployment_samples() {
    let d: Deployment = serde_json::from_str(fixture!("job_deployment.response.json")).unwrap();
    assert_eq!(d.id, "85ee4a9a-339f-a921-a9ef-0550d20b2c61");
    assert_eq!(d.job_id, "my-job");
    assert_eq!(d.job_version, 1);
    assert_eq!(d.status, "running");
    assert!(!d.is_terminal());
    let cache = &d.task_groups["cache"];
    assert!(cache.auto_revert);
    assert!(!cache.promoted);
    assert_eq!(cache.placed_canaries.len(), 2);
    assert_eq!(
        (
            cache.desired_canaries,
            cache.desired_total,
            cache.healthy_allocs
        ),
        (2, 3, 2)
    );

    let ds: Vec<Deployment> =
        serde_json::from_str(fixture!("job_deployments.response.json")).unwrap();
    assert_eq!(ds.len(), 2);
    assert!(
        ds[1].task_groups["cache"].placed_canaries.is_empty(),
        "null"
    );
    assert!(ds[1].is_terminal());

    let ds: Vec<Deployment> =
        serde_json::from_str(fixture!("deployments_list.response.json")).unwrap();
    assert_eq!(ds[0].job_spec_modify_index, 17);

    let d: Deployment = serde_json::from_str(fixture!("deployment_get.response.json")).unwrap();
    assert_eq!(d.task_groups["cache"].desired_canaries, 1);

    let none: Option<Deployment> = serde_json::from_str("null").unwrap();
    assert_eq!(none, None);
}

#[test]
fn write_answers_and_evaluations_are_json() {
    for text in [
        fixture!("deployment_promote.response.json"),
        fixture!("deployment_fail.response.json"),
    ] {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["EvalCreateIndex"], 20);
    }
    let evals: Vec<serde_json::Value> =
        serde_json::from_str(fixture!("job_evaluations.response.json")).unwrap();
    assert_eq!(evals[0]["TriggeredBy"], "job-register");
    let leader: String = serde_json::from_str(fixture!("status_leader.response.json")).unwrap();
    assert_eq!(leader, "127.0.0.1:4647");
}

#[test]
fn config_from_lookup() {
    let cfg = NomadConfig::from_lookup(|_| None);
    assert_eq!(cfg.address, DEFAULT_ADDRESS);
    assert_eq!((cfg.token, cfg.region, cfg.namespace), (None, None, None));

    let cfg = NomadConfig::from_lookup(|name| {
        Some(
            match name {
                "NOMAD_ADDR" => "http://10.0.0.2:4646",
                "NOMAD_TOKEN" => "s3cret",
                "NOMAD_REGION" => "eu",
                "NOMAD_NAMESPACE" => "apps",
                _ => return None,
            }
            .to_owned(),
        )
    });
    assert_eq!(cfg.address, "http://10.0.0.2:4646");
    assert_eq!(cfg.token.as_deref(), Some("s3cret"));
    assert_eq!(cfg.region.as_deref(), Some("eu"));
    assert_eq!(cfg.namespace.as_deref(), Some("apps"));
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert_eq!(
        NomadClient::new(cfg).unwrap().address(),
        "http://10.0.0.2:4646"
    );
}

/// `NOMAD_*` variables → the config, as a table.
#[test]
fn env_table() {
    use std::collections::HashMap;

    use crate::tls::TlsConfig;

    let from = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        NomadConfig::from_lookup(|name| map.get(name).cloned())
    };
    let cfg = from(&[
        ("NOMAD_ADDR", "https://nomad.service:4646"),
        ("NOMAD_TOKEN", "tok"),
        ("NOMAD_NAMESPACE", "apps"),
        ("NOMAD_REGION", "eu"),
        ("NOMAD_CACERT", "/etc/nomad/ca.pem"),
        ("NOMAD_CAPATH", "/etc/nomad/cas"),
        ("NOMAD_CLIENT_CERT", "/etc/nomad/cli.pem"),
        ("NOMAD_CLIENT_KEY", "/etc/nomad/cli-key.pem"),
        ("NOMAD_TLS_SERVER_NAME", "server.global.nomad"),
        ("NOMAD_SKIP_VERIFY", "true"),
        ("CONSUL_HTTP_TOKEN", "consul-tok"),
    ]);
    assert_eq!(cfg.address, "https://nomad.service:4646");
    assert_eq!(cfg.token.as_deref(), Some("tok"));
    assert_eq!(cfg.namespace.as_deref(), Some("apps"));
    assert_eq!(cfg.region.as_deref(), Some("eu"));
    assert_eq!(cfg.consul_token.as_deref(), Some("consul-tok"));
    assert!(!format!("{cfg:?}").contains("consul-tok"));
    assert_eq!(
        cfg.tls,
        TlsConfig {
            ca_cert: Some("/etc/nomad/ca.pem".into()),
            ca_path: Some("/etc/nomad/cas".into()),
            client_cert: Some("/etc/nomad/cli.pem".into()),
            client_key: Some("/etc/nomad/cli-key.pem".into()),
            server_name: Some("server.global.nomad".into()),
            insecure_skip_verify: true,
        }
    );
    for (value, skip) in [("1", true), ("false", false), ("yes", false), (" ", false)] {
        assert_eq!(
            from(&[("NOMAD_SKIP_VERIFY", value)])
                .tls
                .insecure_skip_verify,
            skip,
            "{value:?}"
        );
    }
    assert_eq!(
        from(&[("NOMAD_ADDR", "unix:///run/nomad.sock")]).address,
        "unix:///run/nomad.sock"
    );
    assert_eq!(from(&[]), NomadConfig::default());
}

/// Drops the `"..."` placeholders the published sample uses for elided list entries.
fn without_elisions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Array(a) => {
            a.retain(|x| x != "...");
            a.iter_mut().for_each(without_elisions);
        }
        serde_json::Value::Object(m) => m.values_mut().for_each(without_elisions),
        _ => {}
    }
}

#[test]
fn plan_response_sample() {
    let mut v: serde_json::Value =
        serde_json::from_str(fixture!("job_plan.response.json")).unwrap();
    without_elisions(&mut v);
    let p: JobPlanResponse = serde_json::from_value(v).unwrap();
    assert_eq!(p.job_modify_index, 0);
    let cache = p.annotations.unwrap().desired_tg_updates["cache"];
    assert_eq!(
        (cache.place, cache.destructive_update, cache.stop),
        (11, 0, 0)
    );
    let diff = p.diff.unwrap();
    assert_eq!(
        (diff.diff_type.as_str(), diff.id.as_str()),
        ("Added", "example")
    );
    let tg = &diff.task_groups[0];
    assert_eq!(tg.updates["create"], 1);
    let task = &tg.tasks[0];
    assert_eq!(task.annotations, vec!["forces create".to_owned()]);
    assert_eq!(task.fields[0].name, "Driver");
    assert_eq!(task.fields[0].new, "docker");
    assert!(p.failed_tg_allocs.contains_key("cache"));
    assert_eq!(diff.objects[0].name, "Datacenters");
}

#[test]
fn group_update_and_version_tag() {
    let mut job = Job(json!({
        "ID": "web",
        "VersionTag": {"Name": "golden", "Description": "", "TaggedTime": 1},
        "Update": {"Canary": 1, "MaxParallel": 1},
        "TaskGroups": [
            {"Name": "blue", "Update": {"Canary": 2, "AutoPromote": true, "HealthCheck": "checks",
                "MinHealthyTime": 1_000_000_000u64}},
            {"Name": "green"}
        ]
    }));
    let blue = job.group_update("blue").unwrap();
    assert_eq!((blue.canary, blue.auto_promote), (2, true));
    assert_eq!(blue.min_healthy_time, 1_000_000_000);
    // A group without its own update block falls back to the job's.
    assert_eq!(job.group_update("green").unwrap().canary, 1);
    assert_eq!(job.group_update("nope"), None);
    let stripped = job.without_version_tag();
    assert!(stripped.0.get("VersionTag").is_none());
    assert_eq!(stripped.id(), "web");
    job.0["Update"] = serde_json::Value::Null;
    assert_eq!(job.group_update("green"), None);
}

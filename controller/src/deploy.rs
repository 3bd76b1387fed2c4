//! `deploy <version>`: the planner ([`plan_deploy`]), the executor ([`Controller::deploy`]) and
//! the rendering of its outcome.
//!
//! Change only the standby group (its `meta.version`, plus any [`StandbySettings`]), ask Nomad to
//! plan the register and refuse a plan that would replace the active group
//! ([`crate::deploy_guard`]), back the job up, register with `EnforceIndex` set to the plan's
//! `JobModifyIndex`, wait for the group to run and pass with the new version, ask every instance
//! its version; on any failure revert with `EnforcePriorVersion`. `--dry-run` stops after the
//! plan.

use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::nomad::{Deployment, Job, JobPlanResponse};

use crate::deploy_guard::{check_plan, render_plan};
use crate::deploy_settings::{StandbySettings, apply, resolved_images};
use crate::history::{HistoryEntry, INTERRUPTED};
use crate::nomad_health::{GroupProgress, Promotion, promotion_for};
use crate::observe::{Instance, Observed};
use crate::refusal::{Refusal, check_route, validate_version};
use crate::version_check::{VersionCheck, nomad_proof};
use crate::{Controller, ControllerError};

/// The result of a successful deploy.
#[derive(Clone, Debug, Serialize)]
pub struct DeployOutcome {
    /// Service.
    pub service: String,
    /// Job.
    pub job: String,
    /// The colour that received the version.
    pub colour: String,
    /// Its group.
    pub group: String,
    /// The version deployed.
    pub version: String,
    /// The version it replaced.
    pub previous_version: Option<String>,
    /// The job version registered.
    pub job_version: u64,
    /// Instances verified (`host:port`).
    pub instances: Vec<String>,
    /// Where the job was saved before the change.
    pub backup: String,
    /// Wall time of the whole deploy.
    pub elapsed_ms: u128,
}

/// What `deploy` will do.
#[derive(Clone, Debug, Serialize)]
pub struct DeployPlan {
    /// Job.
    pub job_id: String,
    /// Service.
    pub service: String,
    /// The standby colour being replaced.
    pub colour: String,
    /// Its task group.
    pub group: String,
    /// The active colour (left alone).
    pub active_colour: String,
    /// The active group.
    pub active_group: String,
    /// The standby group's `meta.version` before.
    pub from_version: Option<String>,
    /// The version being deployed.
    pub to_version: String,
    /// What else changes in the standby group.
    pub settings: StandbySettings,
    /// The job as read (saved as a backup first).
    #[serde(skip)]
    pub original: Job,
    /// The job to register: only the standby group differs (its `meta.version` and settings).
    #[serde(skip)]
    pub job: Job,
    /// `JobModifyIndex` of the job as read: the register's `EnforceIndex`.
    pub enforce_index: u64,
    /// The job's `Version` as read: what a failed deploy reverts to.
    pub prior_job_version: u64,
    /// The standby group's count: how many healthy instances the deploy waits for.
    pub expected_count: u64,
    /// Whether the standby colour may still carry requests from before the last switch, so the
    /// deploy must wait for the proxies to drain it first.
    pub wait_for_drain: bool,
    /// How the new instances prove their version (from the job's meta).
    pub version_check: VersionCheck,
    /// Who promotes the standby group's canaries, if its `update` block asks for some.
    pub promotion: Promotion,
}

/// Plans `deploy <version>` without other settings.
pub fn plan_deploy(obs: &Observed, version: &str) -> Result<DeployPlan, Refusal> {
    plan_deploy_with(obs, version, &StandbySettings::default())
}

/// Plans `deploy <version>` with explicit settings for the standby group.
pub fn plan_deploy_with(
    obs: &Observed,
    version: &str,
    settings: &StandbySettings,
) -> Result<DeployPlan, Refusal> {
    validate_version(version)?;
    let nomad = obs.nomad.as_ref().map_err(|e| Refusal::Unobservable {
        what: "Nomad",
        reason: e.clone(),
    })?;
    let job = nomad.job.as_ref().ok_or_else(|| Refusal::UnknownService {
        service: obs.service.clone(),
        job: obs.job_id.clone(),
    })?;
    check_route(obs)?;
    let (active, _) = obs.active().ok_or_else(|| Refusal::NoActiveColour {
        service: obs.service.clone(),
    })?;
    let standby = 1 - active;
    let colour = obs.colours[standby].clone();
    let group = obs
        .group_of(standby)
        .ok_or_else(|| Refusal::NoStandbyGroup {
            job: obs.job_id.clone(),
            colour: colour.clone(),
        })?;
    let active_group = obs.group_of(active).unwrap_or_default();
    if active_group == group {
        return Err(Refusal::TouchesActive {
            job: obs.job_id.clone(),
            group,
        });
    }
    let from_version = job.group_meta(&group, "version").map(str::to_owned);
    let expected_count = job.group_count(&group).unwrap_or(1);
    if expected_count == 0 {
        return Err(Refusal::EmptyGroup { group });
    }
    let mut modified = job.clone();
    modified
        .set_group_meta(&group, "version", version)
        .map_err(|_| Refusal::NoStandbyGroup {
            job: obs.job_id.clone(),
            colour: colour.clone(),
        })?;
    apply(&mut modified, &group, settings)?;
    let version_check = VersionCheck::from_job(&modified).map_err(Refusal::BadSetting)?;
    if from_version.as_deref() == Some(version) && (settings.is_empty() || modified == *job) {
        return Err(Refusal::AlreadyDeployed {
            colour,
            group,
            version: version.to_owned(),
        });
    }
    if touches_other_groups(job, &modified, &group) {
        return Err(Refusal::TouchesActive {
            job: obs.job_id.clone(),
            group: active_group,
        });
    }
    let promotion = promotion_for(job, &group)?;
    let standby_busy = obs.proxies.iter().any(
        |p| matches!(&p.status, Ok(Some(s)) if { let (n, d) = s.load_on(&colour); n > 0 || d }),
    );
    let was_active = obs
        .last_switch()
        .is_some_and(|r| r.from.eq_ignore_ascii_case(&colour));
    Ok(DeployPlan {
        job_id: obs.job_id.clone(),
        service: obs.service.clone(),
        colour,
        group,
        active_colour: obs.colours[active].clone(),
        active_group,
        from_version,
        to_version: version.to_owned(),
        settings: settings.clone(),
        original: job.clone(),
        enforce_index: job.job_modify_index(),
        prior_job_version: job.version(),
        expected_count,
        wait_for_drain: was_active || standby_busy,
        version_check,
        promotion,
        job: modified,
    })
}

/// Whether anything outside group `group` differs between `a` and `b`.
fn touches_other_groups(a: &Job, b: &Job, group: &str) -> bool {
    let strip = |j: &Job| {
        let mut v = j.0.clone();
        if let Some(groups) = v.get_mut("TaskGroups").and_then(|g| g.as_array_mut()) {
            groups.retain(|g| g.get("Name").and_then(|n| n.as_str()) != Some(group));
        }
        v
    };
    strip(a) != strip(b)
}

/// What `deploy --dry-run` shows: the deploy's own plan, Nomad's plan of the register, the
/// images the standby's Docker tasks would run, and why the register would be refused.
#[derive(Clone, Debug, Serialize)]
pub struct DeployDryRun {
    /// The deploy plan (what changes in which group).
    pub plan: DeployPlan,
    /// Nomad's answer to `POST /v1/job/:id/plan` with the diff.
    pub nomad_plan: JobPlanResponse,
    /// `(task, image before, image after)` for each Docker task of the standby group, with
    /// `${NOMAD_META_...}` resolved.
    pub images: Vec<(String, String, String)>,
    /// Why the register would be refused (exit status 4), if it would.
    pub refused: Option<String>,
}

impl Controller {
    /// `deploy <version>`: replaces the standby group's version, waits for it to be healthy and
    /// to answer the right version; reverts the job on any failure after the register.
    pub async fn deploy(&self, version: &str) -> Result<DeployOutcome, ControllerError> {
        self.deploy_with(version, &StandbySettings::default()).await
    }

    /// `deploy <version>` with explicit settings for the standby group: plans the change,
    /// has Nomad plan the register (refusing one that would replace the active group), then
    /// carries it out with the plan's `JobModifyIndex` as `EnforceIndex`.
    pub async fn deploy_with(
        &self,
        version: &str,
        settings: &StandbySettings,
    ) -> Result<DeployOutcome, ControllerError> {
        let started = Instant::now();
        let dry = self.deploy_dry_run(version, settings).await?;
        if let Some(why) = dry.refused {
            return Err(ControllerError::PlanRefused(why));
        }
        if dry.nomad_plan.job_modify_index != dry.plan.enforce_index {
            return Err(ControllerError::Conflict(format!(
                "job {} changed between its read (JobModifyIndex {}) and Nomad's plan ({}); nothing was changed by this deploy",
                dry.plan.job_id, dry.plan.enforce_index, dry.nomad_plan.job_modify_index
            )));
        }
        if let Some(why) = self.interrupted() {
            return Err(ControllerError::Interrupted(format!(
                "deploy of {version} interrupted ({why}) before anything was changed"
            )));
        }
        let mut plan = dry.plan;
        plan.enforce_index = dry.nomad_plan.job_modify_index;
        self.execute_deploy(plan, started).await
    }

    /// `deploy --dry-run`: observes, plans, asks Nomad to plan the register; writes nothing.
    pub async fn deploy_dry_run(
        &self,
        version: &str,
        settings: &StandbySettings,
    ) -> Result<DeployDryRun, ControllerError> {
        validate_version(version)?;
        let obs = self.observe().await;
        let plan = plan_deploy_with(&obs, version, settings)?;
        let nomad_plan = self.nomad_plan(&plan.job).await?;
        let refused = check_plan(&plan.job_id, &nomad_plan, &plan.active_group).err();
        let before = resolved_images(&plan.original, &plan.group);
        let images = resolved_images(&plan.job, &plan.group)
            .into_iter()
            .map(|(task, after)| {
                let old = before
                    .iter()
                    .find(|(t, _)| *t == task)
                    .map(|(_, i)| i.clone())
                    .unwrap_or_default();
                (task, old, after)
            })
            .collect();
        Ok(DeployDryRun {
            plan,
            nomad_plan,
            images,
            refused,
        })
    }

    /// Carries out a deploy plan made from an earlier observation: backup, drain wait,
    /// check-and-set register, health and version verification, revert on failure. A plan made
    /// from stale state fails at the register with [`ControllerError::Conflict`] and changes
    /// nothing; every other outcome is recorded in the history.
    pub async fn execute_deploy(
        &self,
        plan: DeployPlan,
        started: Instant,
    ) -> Result<DeployOutcome, ControllerError> {
        let mut entry = HistoryEntry {
            command: "deploy".to_owned(),
            who: self.settings.operator.clone(),
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            from: plan.colour.clone(),
            to: plan.colour.clone(),
            from_version: plan.from_version.clone(),
            to_version: Some(plan.to_version.clone()),
            generation: 0,
            revert_to_job_version: Some(plan.prior_job_version),
            outcome: String::new(),
        };
        let result = self.deploy_steps(plan, started).await;
        entry.outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(ControllerError::Conflict(_)) => return result,
            Err(e @ ControllerError::Interrupted(_)) => format!("{INTERRUPTED}{e}"),
            Err(e) => format!("failed: {e}"),
        };
        self.record(entry).await;
        result
    }

    async fn deploy_steps(
        &self,
        plan: DeployPlan,
        started: Instant,
    ) -> Result<DeployOutcome, ControllerError> {
        let version = plan.to_version.clone();
        let version = version.as_str();
        let backup = self.state.write_backup(&plan.original, &plan.group)?;
        self.say(&format!(
            "deploying {} to {} (group {} of job {}, was {}); backup {}",
            plan.to_version,
            plan.colour,
            plan.group,
            plan.job_id,
            plan.from_version.as_deref().unwrap_or("unset"),
            backup.display()
        ));
        if plan.wait_for_drain {
            self.wait_drained(&plan.colour).await?;
        }
        if let Some(why) = self.interrupted() {
            return Err(ControllerError::Interrupted(format!(
                "deploy of {version} to {} interrupted ({why}) before the register; nothing was changed",
                plan.colour
            )));
        }
        let registered = match self
            .nomad
            .register(&plan.job, Some(plan.enforce_index))
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_cas_conflict() => {
                return Err(ControllerError::Conflict(format!(
                    "job {} changed since it was read (another deploy or operator won: {e}); nothing was changed by this deploy",
                    plan.job_id
                )));
            }
            Err(e) => {
                return Err(ControllerError::hashi(
                    format!("registering job {}", plan.job_id),
                    e,
                ));
            }
        };
        let new_version = plan.prior_job_version + 1;
        tracing::info!(eval = %registered.eval_id, job_version = new_version, "job registered");
        let deadline = started + self.settings.deadline;
        let failure = match self.wait_standby(&plan, version, deadline, true).await {
            Ok(()) => match self.verify_versions(&plan, version).await {
                Ok(instances) => {
                    let elapsed = started.elapsed();
                    self.say(&format!(
                        "{} now runs {version} on {} instance(s), verified by {}; took {:.1}s",
                        plan.colour,
                        instances.len(),
                        plan.version_check.describe(),
                        elapsed.as_secs_f64()
                    ));
                    return Ok(DeployOutcome {
                        service: plan.service.clone(),
                        job: plan.job_id.clone(),
                        colour: plan.colour.clone(),
                        group: plan.group.clone(),
                        version: version.to_owned(),
                        previous_version: plan.from_version.clone(),
                        job_version: new_version,
                        instances,
                        backup: backup.display().to_string(),
                        elapsed_ms: elapsed.as_millis(),
                    });
                }
                Err(why) => why,
            },
            Err(why) => why,
        };
        let reverted = match self.nomad_auto_revert(&plan, new_version).await {
            Some(sentence) => sentence,
            None => self.revert(&plan, new_version, &backup).await,
        };
        if let Some(why) = self.interrupted() {
            return Err(ControllerError::Interrupted(format!(
                "deploy of {version} to {} interrupted ({why}) after {:.1}s; {reverted}",
                plan.colour,
                started.elapsed().as_secs_f64()
            )));
        }
        Err(ControllerError::Failed(format!(
            "deploy of {version} to {} failed after {:.1}s: {failure}; {reverted}",
            plan.colour,
            started.elapsed().as_secs_f64()
        )))
    }

    /// Waits until no proxy has requests in flight to, or is draining, `colour`.
    async fn wait_drained(&self, colour: &str) -> Result<(), ControllerError> {
        let deadline = Instant::now() + self.settings.drain_deadline;
        let mut last = String::new();
        loop {
            let proxies = self.observe_proxies().await;
            let busy: Vec<String> = proxies
                .iter()
                .filter_map(|p| match &p.status {
                    Ok(Some(s)) => {
                        let (n, d) = s.load_on(colour);
                        (n > 0 || d).then(|| {
                            format!(
                                "{}: {n} in flight{}",
                                p.url,
                                if d { ", draining" } else { "" }
                            )
                        })
                    }
                    Ok(None) => None,
                    Err(e) => Some(format!("{}: unreachable ({e})", p.url)),
                })
                .collect();
            if busy.is_empty() {
                return Ok(());
            }
            if let Some(why) = self.interrupted() {
                return Err(ControllerError::Interrupted(format!(
                    "deploy interrupted ({why}) while waiting for {colour} to drain; nothing was changed"
                )));
            }
            let line = format!("waiting for {colour} to drain: {}", busy.join("; "));
            if line != last {
                self.say(&line);
                last = line;
            }
            if Instant::now() >= deadline {
                return Err(ControllerError::Failed(format!(
                    "{colour} did not drain within {}s ({}); nothing was changed",
                    self.settings.drain_deadline.as_secs(),
                    busy.join("; ")
                )));
            }
            self.pause(self.settings.poll_interval).await;
        }
    }

    /// Waits until the standby group's allocations of the new job version run and every
    /// instance of its colour in Consul passes with `version=<version>`. An `interruptible`
    /// wait (the deploy's, not its revert's) ends early when the command is interrupted.
    pub(crate) async fn wait_standby(
        &self,
        plan: &DeployPlan,
        version: &str,
        deadline: Instant,
        interruptible: bool,
    ) -> Result<(), String> {
        let colour_idx = self
            .settings
            .colours
            .iter()
            .position(|c| *c == plan.colour)
            .unwrap_or(0);
        let mut last = String::new();
        loop {
            let look = self.look_at_standby(plan, version, colour_idx).await;
            let line = look.line(plan, version);
            if line != last {
                self.say(&line);
                last = line;
            }
            if look.settled(plan) {
                return Ok(());
            }
            if let Some(why) = &look.progress.failed {
                return Err(format!("Nomad deployment failed ({why})"));
            }
            if interruptible && let Some(why) = self.interrupted() {
                return Err(format!("interrupted ({why})"));
            }
            if Instant::now() >= deadline {
                return Err(look.deadline_error(plan, version, self.settings.deadline));
            }
            if interruptible {
                self.pause(self.settings.poll_interval).await;
            } else {
                tokio::time::sleep(self.settings.poll_interval).await;
            }
        }
    }

    /// Reads what Nomad and Consul say of the plan's group and colour `colour_idx` now.
    async fn look_at_standby(
        &self,
        plan: &DeployPlan,
        version: &str,
        colour_idx: usize,
    ) -> StandbyLook {
        let new_version = plan.prior_job_version + 1;
        let allocs = self
            .nomad
            .job_allocations(&plan.job_id, false, &QueryOptions::default())
            .await
            .map(|(a, _)| a);
        let (progress, nomad_note) = match &allocs {
            Ok(a) => {
                self.nomad_progress(&plan.job_id, &plan.group, new_version, plan.promotion, a)
                    .await
            }
            Err(_) => Default::default(),
        };
        // Nomad may be unreachable while the allocations keep running: say so rather
        // than report the wait as a health problem.
        let nomad_down = allocs.as_ref().err().map(|e| e.to_string());
        let running = match &allocs {
            Ok(a) => a
                .iter()
                .filter(|a| {
                    a.task_group == plan.group
                        && a.desired_status == "run"
                        && a.client_status == "running"
                        && a.job_version >= new_version
                })
                .count(),
            Err(_) => 0,
        };
        let deployment = self.deployment_of(&plan.job_id, new_version).await;
        // The switch pre-flight refuses while a deployment runs, so the deploy ends only
        // when Nomad's deployment of the new version (if the job has one) has ended too.
        let rolling_out = deployment
            .as_ref()
            .filter(|d| !d.is_terminal())
            .map(|d| d.status.clone());
        let mine = self.live_instances_of(colour_idx).await.unwrap_or_default();
        let ready = mine
            .iter()
            .filter(|i| i.passing() && i.version_tag() == Some(version))
            .count();
        let stale = mine
            .iter()
            .filter(|i| i.version_tag() != Some(version))
            .count();
        StandbyLook {
            expected: usize::try_from(plan.expected_count).unwrap_or(usize::MAX),
            running,
            ready,
            stale,
            progress,
            nomad_note,
            nomad_down,
            rolling_out,
            mine,
        }
    }

    /// The job's latest deployment when it rolls out `version` (`None` when Nomad cannot be
    /// read or the job has no deployment of that version).
    async fn deployment_of(&self, job: &str, version: u64) -> Option<Deployment> {
        let (d, _) = self
            .nomad
            .job_deployment(job, &QueryOptions::default())
            .await
            .ok()?;
        d.filter(|d| d.job_version == version)
    }

    /// Asks every instance of the plan's colour for its version as the job's version check
    /// says; all must answer `version`. With the check `none`, Nomad's record is the proof
    /// instead ([`nomad_proof`]).
    async fn verify_versions(
        &self,
        plan: &DeployPlan,
        version: &str,
    ) -> Result<Vec<String>, String> {
        let colour = plan.colour.as_str();
        let index = switchyard_model::colour_index(&self.settings.colours, colour)
            .ok_or_else(|| format!("{colour} is not one of {:?}", self.settings.colours))?;
        let mut mine = self.live_instances_of(index).await?;
        if mine.is_empty() {
            return Err(format!("no instance of {colour} is registered"));
        }
        let check = &plan.version_check;
        if *check == VersionCheck::None {
            let opts = QueryOptions::default();
            let (job, _) =
                self.nomad.job(&plan.job_id, &opts).await.map_err(|e| {
                    format!("cannot read job {} for Nomad's proof: {e}", plan.job_id)
                })?;
            let job = job.ok_or_else(|| format!("job {} no longer exists", plan.job_id))?;
            let (allocs, _) = self
                .nomad
                .job_allocations(&plan.job_id, false, &opts)
                .await
                .map_err(|e| format!("cannot read the allocations of {}: {e}", plan.job_id))?;
            nomad_proof(&job, &allocs, &plan.group, version)
                .map_err(|e| format!("Nomad does not prove {version}: {e}"))?;
            return Ok(mine.into_iter().map(|i| i.address).collect());
        }
        self.ask_versions(&mut mine, check).await;
        let asked = check.describe();
        let mut wrong = Vec::new();
        for i in &mine {
            match &i.reported_version {
                Some(Ok(v)) if v == version => {}
                Some(Ok(v)) => wrong.push(format!("{} answered version {v:?}", i.address)),
                Some(Err(e)) => wrong.push(format!("{} did not answer {asked} ({e})", i.address)),
                None => wrong.push(format!("{} was not asked", i.address)),
            }
        }
        if wrong.is_empty() {
            Ok(mine.into_iter().map(|i| i.address).collect())
        } else {
            Err(format!(
                "wrong version (expected {version:?}): {}",
                wrong.join("; ")
            ))
        }
    }

    /// Reverts the job to the version it had before the deploy and waits for the standby to
    /// come back; returns a sentence for the error message.
    async fn revert(
        &self,
        plan: &DeployPlan,
        current_version: u64,
        backup: &std::path::Path,
    ) -> String {
        self.say(&format!(
            "reverting job {} to version {}",
            plan.job_id, plan.prior_job_version
        ));
        match self
            .nomad
            .revert(&plan.job_id, plan.prior_job_version, Some(current_version))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                return format!(
                    "reverting job {} to version {} FAILED ({e}); the job is left as it is; restore it from the backup {}",
                    plan.job_id,
                    plan.prior_job_version,
                    backup.display()
                );
            }
        }
        let Some(old) = plan.from_version.clone() else {
            return format!(
                "job {} reverted to version {}",
                plan.job_id, plan.prior_job_version
            );
        };
        let revert_plan = DeployPlan {
            prior_job_version: current_version,
            ..plan.clone()
        };
        let deadline = Instant::now() + self.settings.deadline;
        match self.wait_standby(&revert_plan, &old, deadline, false).await {
            Ok(()) => format!(
                "job {} reverted to version {}; {} runs {old} again",
                plan.job_id, plan.prior_job_version, plan.colour
            ),
            Err(e) => format!(
                "job {} reverted to version {}, but {} has not recovered: {e}",
                plan.job_id, plan.prior_job_version, plan.colour
            ),
        }
    }
}

/// One look at the standby group while a deploy (or its revert) waits for it.
#[derive(Clone, Debug, Default)]
struct StandbyLook {
    /// Instances the group should run.
    expected: usize,
    /// Allocations of the group at the new job version that run.
    running: usize,
    /// Instances of the colour in Consul passing with the new version.
    ready: usize,
    /// Instances of the colour in Consul with another version.
    stale: usize,
    /// What Nomad's deployment says of the group.
    progress: GroupProgress,
    /// That, for the progress line.
    nomad_note: String,
    /// Why Nomad could not be read, when it could not.
    nomad_down: Option<String>,
    /// The status of Nomad's deployment of the new version while it runs.
    rolling_out: Option<String>,
    /// The colour's instances in Consul.
    mine: Vec<Instance>,
}

impl StandbyLook {
    /// The progress line.
    fn line(&self, plan: &DeployPlan, version: &str) -> String {
        let StandbyLook {
            expected,
            running,
            ready,
            stale,
            ..
        } = self;
        format!(
            "waiting for {}: {running}/{expected} allocation(s) running{}, {ready}/{expected} passing with version={version}{}{}{}",
            plan.colour,
            self.nomad_note,
            if *stale > 0 {
                format!(", {stale} old instance(s) still registered")
            } else {
                String::new()
            },
            match &self.nomad_down {
                Some(e) => format!(" (Nomad API unreachable: {e})"),
                None => String::new(),
            },
            match &self.rolling_out {
                Some(status) => format!(", Nomad deployment {status}"),
                None => String::new(),
            }
        )
    }

    /// Whether the wait is over: every allocation runs, every instance passes with the new
    /// version and no old one is left, and Nomad agrees. Nomad's verdict counts too: healthy
    /// for min_healthy_time, canaries promoted. A group with an update strategy is tracked by
    /// the deployment of the new version. The switch pre-flight refuses while a deployment
    /// runs, so the deploy ends only when Nomad's deployment of the new version (if the job
    /// has one) has ended too.
    fn settled(&self, plan: &DeployPlan) -> bool {
        let expected = self.expected;
        let nomad_healthy = plan.job.group_update(&plan.group).is_none()
            || (self.progress.tracked && self.progress.healthy >= expected);
        self.running >= expected
            && self.ready >= expected
            && self.stale == 0
            && nomad_healthy
            && self.progress.canaries.is_none()
            && self.rolling_out.is_none()
    }

    /// Why the group was not ready by the deadline (`deadline` long).
    fn deadline_error(&self, plan: &DeployPlan, version: &str, deadline: Duration) -> String {
        let (ready, expected) = (self.ready, self.expected);
        if let Some(e) = &self.nomad_down {
            return format!(
                "the Nomad API was unreachable at the deadline of {}s ({e}), so the allocations of group {} could not be confirmed ({ready}/{expected} passing with version={version} in Consul)",
                deadline.as_secs(),
                plan.group
            );
        }
        let failing: Vec<String> = self
            .mine
            .iter()
            .filter(|i| !i.passing())
            .map(|i| format!("{} {}", i.address, i.failing_checks.join(", ")))
            .collect();
        format!(
            "never healthy within the deadline of {}s ({ready}/{expected} passing with version={version}{})",
            deadline.as_secs(),
            if failing.is_empty() {
                String::new()
            } else {
                format!("; failing: {}", failing.join("; "))
            }
        )
    }
}

/// The text rendering of `deploy --dry-run`.
pub fn render_dry_run(d: &DeployDryRun) -> String {
    let p = &d.plan;
    let mut out = format!(
        "dry run: deploy {} to {} (group {} of job {}, was {}); nothing is written\n",
        p.to_version,
        p.colour,
        p.group,
        p.job_id,
        p.from_version.as_deref().unwrap_or("unset")
    );
    out.push_str(&render_plan(&p.job_id, &d.nomad_plan, |g| {
        if g == p.group {
            "standby"
        } else if g == p.active_group {
            "active"
        } else {
            "other"
        }
    }));
    for (task, before, after) in &d.images {
        out.push_str(&format!(
            "  image of {}.{task}: {before} => {after}\n",
            p.group
        ));
    }
    match &d.refused {
        Some(why) => out.push_str(&format!("{why}\n")),
        None => out.push_str(&format!(
            "the register would enforce JobModifyIndex {}\n",
            d.nomad_plan.job_modify_index
        )),
    }
    out
}

/// The one-line text rendering of a deploy's outcome.
pub fn render_deploy(o: &DeployOutcome) -> String {
    format!(
        "deployed {} to {} (group {}, job version {}) on {} instance(s) in {:.1}s; backup {}",
        o.version,
        o.colour,
        o.group,
        o.job_version,
        o.instances.len(),
        o.elapsed_ms as f64 / 1000.0,
        o.backup
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::observe::{NomadView, ProxyObservation, ProxyService, RouteKey};
    use crate::testing::*;
    use serde_json::json;

    #[test]
    fn deploy_plan_changes_only_the_standby_meta() {
        let obs = observed();
        let p = plan_deploy(&obs, "v3").unwrap();
        assert_eq!((p.colour.as_str(), p.group.as_str()), ("green", "green"));
        assert_eq!(p.active_group, "blue");
        assert_eq!(p.from_version.as_deref(), Some("v2"));
        assert_eq!(p.enforce_index, 40);
        assert_eq!(p.prior_job_version, 4);
        assert_eq!(p.expected_count, 2);
        assert!(!p.wait_for_drain);
        assert_eq!(p.job.group_meta("green", "version"), Some("v3"));
        assert_eq!(p.job.group_meta("blue", "version"), Some("v1"));
        // Everything but green's meta is identical.
        let mut back = p.job.clone();
        back.set_group_meta("green", "version", "v2").unwrap();
        assert_eq!(back, job());
        assert_eq!(p.original, job());
    }

    #[test]
    fn deploy_follows_the_route_key_over_tags() {
        let mut obs = observed();
        with_route(&mut obs, "green", 5);
        let p = plan_deploy(&obs, "v3").unwrap();
        assert_eq!(p.group, "blue");
        assert_eq!(p.job.group_meta("blue", "version"), Some("v3"));
        assert_eq!(p.job.group_meta("green", "version"), Some("v2"));
    }

    #[test]
    fn deploy_waits_for_drain_when_standby_was_active_or_is_busy() {
        let mut obs = observed();
        with_history(&mut obs, vec![record("switch", "green", "blue", "v2")]);
        assert!(plan_deploy(&obs, "v3").unwrap().wait_for_drain);
        let mut obs = observed();
        obs.proxies = vec![ProxyObservation {
            url: "http://p".into(),
            status: Ok(Some(ProxyService {
                active_colour: "blue".into(),
                standby_colour: "green".into(),
                standby_in_flight: 3,
                ..ProxyService::default()
            })),
            registration: None,
        }];
        assert!(plan_deploy(&obs, "v3").unwrap().wait_for_drain);
    }

    #[test]
    fn deploy_refusals() {
        let mut obs = observed();
        obs.nomad = Ok(NomadView::default());
        let r = plan_deploy(&obs, "v3").unwrap_err();
        assert!(matches!(r, Refusal::UnknownService { .. }), "{r}");
        assert!(r.is_bad_input());

        let mut obs = observed();
        obs.nomad = Err("connection refused".into());
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::Unobservable { what: "Nomad", .. }
        ));

        // No group for the standby colour.
        let mut obs = observed();
        let mut j = job();
        j.0["TaskGroups"] = json!([group("blue", "v1", "active")]);
        obs.nomad = Ok(NomadView {
            job: Some(j),
            allocations: vec![],
            deployment: None,
        });
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::NoStandbyGroup { .. }
        ));

        // The group named after the active colour is tagged with the standby colour: the
        // standby's group is the active's, so the change would touch the active one.
        let mut obs = observed();
        let mut j = job();
        j.0["TaskGroups"] = json!([{
            "Name": "blue", "Count": 2, "Meta": {"version": "v1"},
            "Services": [{"Name": "web", "Tags": ["green", "active"]}]
        }]);
        obs.nomad = Ok(NomadView {
            job: Some(j),
            allocations: vec![],
            deployment: None,
        });
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::TouchesActive { .. }
        ));

        assert!(matches!(
            plan_deploy(&observed(), "v2").unwrap_err(),
            Refusal::AlreadyDeployed { .. }
        ));

        let mut obs = observed();
        obs.route = Ok(Some(RouteKey {
            modify_index: 3,
            value: Err("not JSON".into()),
        }));
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::BadRouteKey { .. }
        ));
        let mut obs = observed();
        with_route(&mut obs, "purple", 1);
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::BadRouteKey { .. }
        ));
    }

    #[test]
    fn the_standby_wait_ends_only_when_consul_and_nomad_agree() {
        let plan = plan_deploy(&observed(), "v3").unwrap();
        let settled = StandbyLook {
            expected: 2,
            running: 2,
            ready: 2,
            progress: GroupProgress {
                tracked: true,
                healthy: 2,
                ..GroupProgress::default()
            },
            ..StandbyLook::default()
        };
        assert!(settled.settled(&plan));
        assert_eq!(
            settled.line(&plan, "v3"),
            "waiting for green: 2/2 allocation(s) running, 2/2 passing with version=v3"
        );
        let not = |change: fn(&mut StandbyLook)| {
            let mut look = settled.clone();
            change(&mut look);
            look
        };
        let stale = not(|l| l.stale = 1);
        assert!(!stale.settled(&plan));
        assert!(
            stale
                .line(&plan, "v3")
                .ends_with(", 1 old instance(s) still registered"),
            "{}",
            stale.line(&plan, "v3")
        );
        assert!(!not(|l| l.running = 1).settled(&plan));
        assert!(!not(|l| l.ready = 1).settled(&plan));
        assert!(!not(|l| l.progress.canaries = Some((1, 1))).settled(&plan));
        let rolling = not(|l| l.rolling_out = Some("running".into()));
        assert!(!rolling.settled(&plan));
        assert!(
            rolling
                .line(&plan, "v3")
                .ends_with(", Nomad deployment running")
        );

        let down = not(|l| l.nomad_down = Some("connection refused".into()));
        let why = down.deadline_error(&plan, "v3", Duration::from_secs(60));
        assert!(
            why.starts_with(
                "the Nomad API was unreachable at the deadline of 60s (connection refused)"
            ),
            "{why}"
        );
        let why = not(|_| {}).deadline_error(&plan, "v3", Duration::from_secs(60));
        assert_eq!(
            why,
            "never healthy within the deadline of 60s (2/2 passing with version=v3)"
        );
    }
}

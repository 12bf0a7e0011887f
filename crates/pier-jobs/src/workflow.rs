//! Workflows: a named graph of jobs (steps) created in one transaction. A step waits, in state
//! `pending`, until every step it depends on completed, and then receives their results as its
//! `inputs`. A step may name a compensation: when a step fails for good, the workflow stops
//! scheduling, cancels what waits, and runs the compensations of the completed steps one at a
//! time, in reverse completion order (a saga).
//!
//! [`WorkflowSpec`] is what every caller builds (HTTP bodies deserialize into it, Rust code uses
//! its builder); [`WorkflowSpec::build`] checks the graph the same for all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use pier_core::validation::{plain_text, range_message};
use pier_core::{Timestamp, ValidationErrors, define_id};
use serde::{Deserialize, Serialize};

use crate::model::{JobId, JobState, NewJob};
use crate::spec::JobSpec;

define_id!(
    /// A workflow id, `wf_…`.
    WorkflowId,
    "wf"
);

/// How many steps a workflow may have unless the server says otherwise (`[jobs]
/// max_workflow_steps`).
pub const DEFAULT_MAX_WORKFLOW_STEPS: usize = 500;
/// The longest step name.
pub const STEP_NAME_MAX_LEN: usize = 64;
/// The longest workflow name.
pub const WORKFLOW_NAME_MAX_CHARS: usize = 200;

/// Where a workflow is in its life. `completed`, `failed`, `cancelled` and `compensated` are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Steps run as their dependencies complete.
    Running,
    /// Every step completed.
    Completed,
    /// A step failed for good and there was nothing to compensate, or a compensation failed
    /// for good.
    Failed,
    /// Cancelled by hand: no further step runs.
    Cancelled,
    /// A step failed for good; the completed steps' compensations run, latest first.
    Compensating,
    /// Every compensation completed.
    Compensated,
}

impl WorkflowState {
    pub const ALL: [WorkflowState; 6] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Compensating,
        Self::Compensated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running | Self::Compensating)
    }
}

impl FromStr for WorkflowState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("`{}` is not a workflow state", pier_core::id::Truncated(s)))
    }
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a workflow to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "charge_card", "depends_on": [],
                          "job": {"queue": "orders", "kind": "charge_card", "payload": {"order": 42}},
                          "compensate": {"queue": "orders", "kind": "refund_card", "payload": {"order": 42}}}))]
pub struct StepSpec {
    /// Unique within the workflow; `depends_on` and `inputs` name steps by it.
    #[schema(schema_with = step_name)]
    pub name: String,
    /// The steps that must complete before this one runs (none: it runs at once).
    #[serde(default)]
    #[schema(schema_with = step_names)]
    pub depends_on: Vec<String>,
    /// The step's job (`unique_key` is not allowed on steps).
    #[schema(schema_with = step_job)]
    pub job: JobSpec,
    /// The job that undoes this step, run if a later step fails for good; it receives this
    /// step's result under `inputs`.
    #[schema(schema_with = compensation)]
    pub compensate: Option<JobSpec>,
}

/// A step's job as the document shows it: a job's fields but `unique_key`, which a step's
/// job may not have (a workflow's jobs are made once, with it).
fn step_job() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::PartialSchema;
    let mut schema = JobSpec::schema();
    if let utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(object)) = &mut schema {
        object.properties.shift_remove("unique_key");
        object.required.retain(|field| field != "unique_key");
    }
    schema
}

/// [`step_job`], or null for none.
fn compensation() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{SchemaType, Type};
    let mut schema = step_job();
    if let utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(object)) = &mut schema {
        object.schema_type = SchemaType::from_iter([Type::Object, Type::Null]);
    }
    schema
}

fn step_name() -> utoipa::openapi::Object {
    pier_core::schema::string(1, STEP_NAME_MAX_LEN)
        .pattern(Some(format!("^{}", crate::model::NAME_PATTERN)))
        .build()
}

fn step_names() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(step_name())
        .build()
}

impl StepSpec {
    /// A step `name` that runs `job`.
    pub fn new(name: impl Into<String>, job: JobSpec) -> Self {
        Self {
            name: name.into(),
            depends_on: Vec::new(),
            job,
            compensate: None,
        }
    }

    /// Runs only once every step of `steps` completed.
    #[must_use]
    pub fn after<S: Into<String>>(mut self, steps: impl IntoIterator<Item = S>) -> Self {
        self.depends_on.extend(steps.into_iter().map(Into::into));
        self
    }

    /// Undoes this step with `job` if the workflow fails after it completed.
    #[must_use]
    pub fn compensate(mut self, job: JobSpec) -> Self {
        self.compensate = Some(job);
        self
    }
}

/// A workflow to create: its name and its steps.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "order-42", "steps": [
    {"name": "charge_card", "job": {"kind": "charge_card", "payload": {"order": 42}},
     "compensate": {"kind": "refund_card", "payload": {"order": 42}}},
    {"name": "reserve_stock", "depends_on": ["charge_card"], "job": {"kind": "reserve_stock"}},
    {"name": "send_email", "depends_on": ["reserve_stock"], "job": {"kind": "send_email"}}]}))]
pub struct WorkflowSpec {
    /// What the workflow is, for people (1 to 200 characters).
    #[schema(schema_with = workflow_name)]
    pub name: String,
    /// The steps, at least one; at most `[jobs] max_workflow_steps` (500 by default).
    pub steps: Vec<StepSpec>,
}

fn workflow_name() -> utoipa::openapi::Object {
    pier_core::schema::plain_text(1, WORKFLOW_NAME_MAX_CHARS).build()
}

impl WorkflowSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    #[must_use]
    pub fn step(mut self, step: StepSpec) -> Self {
        self.steps.push(step);
        self
    }

    /// Checks the workflow: its name, every step's job and compensation, and the graph (step
    /// names valid and unique, dependencies known, no cycle, at most `max_steps` steps). Every
    /// error names the step it is about.
    pub fn build(self, max_steps: usize) -> Result<NewWorkflow, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        errors.check(
            "name",
            "invalid",
            plain_text(&self.name, 1, WORKFLOW_NAME_MAX_CHARS),
        );
        if self.steps.is_empty() || self.steps.len() > max_steps {
            errors.add(
                "steps",
                "out_of_range",
                format!(
                    "{} steps (got {})",
                    range_message(&(1..=max_steps)),
                    self.steps.len()
                ),
            );
            return Err(errors);
        }
        let mut positions: HashMap<&str, usize> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("steps[{i}].name");
            if !crate::model::valid_name(&step.name, STEP_NAME_MAX_LEN) {
                errors.add(
                    &field,
                    "invalid",
                    format!(
                        "step `{}`: must be 1 to {STEP_NAME_MAX_LEN} {}",
                        pier_core::id::Truncated(&step.name),
                        crate::model::NAME_RULE
                    ),
                );
            } else if positions.insert(&step.name, i).is_some() {
                errors.add(
                    &field,
                    "duplicate",
                    format!("step `{}` is named twice", step.name),
                );
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let mut seen = HashSet::new();
            for dependency in &step.depends_on {
                let field = format!("steps[{i}].depends_on");
                let problem = if !positions.contains_key(dependency.as_str()) {
                    Some(
                        "is not a step of this workflow (a step can depend only on steps of its own workflow)",
                    )
                } else if *dependency == step.name {
                    Some("is the step itself")
                } else if !seen.insert(dependency) {
                    Some("is named twice")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    errors.add(
                        &field,
                        "invalid",
                        format!(
                            "step `{}`: `{}` {problem}",
                            pier_core::id::Truncated(&step.name),
                            pier_core::id::Truncated(dependency)
                        ),
                    );
                }
            }
        }
        if errors.is_empty()
            && let Some(i) = in_a_cycle(&self.steps, &positions)
        {
            errors.add(
                &format!("steps[{i}].depends_on"),
                "cycle",
                format!(
                    "step `{}` depends, through its dependencies, on itself",
                    self.steps[i].name
                ),
            );
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.into_iter().enumerate() {
            let prefix = format!("steps[{i}].");
            for (field, spec) in [
                ("job", Some(&step.job)),
                ("compensate", step.compensate.as_ref()),
            ] {
                if spec.is_some_and(|s| s.unique_key.is_some()) {
                    errors.add(
                        &format!("{prefix}{field}.unique_key"),
                        "not_allowed",
                        format!(
                            "step `{}`: a workflow's job cannot have a unique key",
                            step.name
                        ),
                    );
                }
            }
            let job = step
                .job
                .clone()
                .check(&format!("{prefix}job."), &mut errors);
            let compensate = step.compensate.clone().and_then(|spec| {
                spec.clone()
                    .check(&format!("{prefix}compensate."), &mut errors)
                    .map(|_| spec)
            });
            if let Some(job) = job {
                steps.push(NewStep {
                    name: step.name,
                    depends_on: step.depends_on,
                    job,
                    compensate,
                });
            }
        }
        errors.into_result()?;
        Ok(NewWorkflow {
            name: self.name,
            steps,
        })
    }
}

/// A step that depends, directly or not, on itself, if any (Kahn's algorithm: what never
/// becomes free lies on or behind a cycle; the first such step in request order is named).
fn in_a_cycle(steps: &[StepSpec], positions: &HashMap<&str, usize>) -> Option<usize> {
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.depends_on.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for dependency in &step.depends_on {
            dependents[positions[dependency.as_str()]].push(i);
        }
    }
    let mut free: Vec<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(done) = free.pop() {
        for &next in &dependents[done] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                free.push(next);
            }
        }
    }
    (0..steps.len()).find(|&i| waiting[i] > 0)
}

/// A checked workflow, ready to create ([`WorkflowSpec::build`]).
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub(crate) name: String,
    pub(crate) steps: Vec<NewStep>,
}

#[derive(Debug, Clone)]
pub(crate) struct NewStep {
    pub(crate) name: String,
    pub(crate) depends_on: Vec<String>,
    pub(crate) job: NewJob,
    /// Kept as the caller wrote it, and built when it runs.
    pub(crate) compensate: Option<JobSpec>,
}

/// A workflow as the store reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub id: WorkflowId,
    pub name: String,
    pub state: WorkflowState,
    /// How many steps it has, and how many completed.
    pub steps_total: u32,
    pub steps_completed: u32,
    /// The step whose failure stopped it, if one did.
    pub failed_step: Option<String>,
    /// The step whose compensation failed for good, if one did.
    pub failed_compensation: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Its steps in the order they were given; empty in lists.
    pub steps: Vec<Step>,
}

/// A step of a workflow and where its job (and its compensation's) stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub depends_on: Vec<String>,
    pub job_id: JobId,
    /// `None` once the job was pruned.
    pub state: Option<JobState>,
    pub compensation: Option<Compensation>,
}

/// A step's compensation job, once enqueued.
#[derive(Debug, Clone, PartialEq)]
pub struct Compensation {
    pub job_id: JobId,
    pub state: Option<JobState>,
}

/// The inputs a step's job receives: each dependency's result by step name.
pub type Inputs = BTreeMap<String, serde_json::Value>;

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, after: &[&str]) -> StepSpec {
        StepSpec::new(name, JobSpec::new("k")).after(after.iter().copied())
    }

    fn fields(spec: WorkflowSpec, max: usize) -> Vec<(String, String)> {
        spec.build(max)
            .expect_err("invalid")
            .into_vec()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn a_valid_graph_builds() {
        let spec = WorkflowSpec::new("order")
            .step(step("a", &[]))
            .step(step("b", &["a"]))
            .step(step("c", &["a", "b"]));
        let built = spec.build(500).expect("valid");
        assert_eq!(built.steps.len(), 3);
    }

    #[test]
    fn every_graph_fault_names_its_step() {
        let spec = WorkflowSpec::new("w")
            .step(step("a", &["ghost"]))
            .step(step("a", &[]))
            .step(step("bad name", &[]))
            .step(step("c", &["c"]));
        let found = fields(spec, 500);
        let message = |field: &str| {
            found
                .iter()
                .find(|(f, _)| f == field)
                .map(|(_, m)| m.clone())
                .unwrap_or_default()
        };
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(message("steps[0].depends_on").contains("step `a`: `ghost`"));
        assert!(message("steps[1].name").contains("step `a` is named twice"));
        assert!(message("steps[2].name").contains("bad name"));
        assert!(message("steps[3].depends_on").contains("is the step itself"));
    }

    #[test]
    fn cycles_and_size_are_refused() {
        let spec = WorkflowSpec::new("w")
            .step(step("start", &[]))
            .step(step("x", &["start", "z"]))
            .step(step("y", &["x"]))
            .step(step("z", &["y"]));
        let found = fields(spec, 500);
        assert_eq!(found[0].0, "steps[1].depends_on");
        assert!(found[0].1.contains("step `x`"), "{found:?}");
        let big = (0..3).fold(WorkflowSpec::new("w"), |w, i| {
            w.step(step(&format!("s{i}"), &[]))
        });
        assert_eq!(fields(big, 2)[0].0, "steps");
        assert_eq!(fields(WorkflowSpec::new("w"), 2)[0].0, "steps");
    }

    #[test]
    fn steps_cannot_hold_unique_keys() {
        let spec =
            WorkflowSpec::new("w").step(StepSpec::new("a", JobSpec::new("k").unique_key("once")));
        assert_eq!(fields(spec, 500)[0].0, "steps[0].job.unique_key");
    }
}

//! Per-session configuration (SPEC §4.2), stored as JSON with the session.

use serde::{Deserialize, Serialize};

/// How eagerly a session escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EscalationPolicy {
    #[default]
    Progressive,
    Immediate,
    Relaxed,
}

impl EscalationPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationPolicy::Progressive => "PROGRESSIVE",
            EscalationPolicy::Immediate => "IMMEDIATE",
            EscalationPolicy::Relaxed => "RELAXED",
        }
    }
}

/// Who is told what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notifications {
    pub slack: bool,
    pub email: bool,
    pub notify_on_state_change: bool,
    pub notify_on_blocker: bool,
    pub notify_on_escalation: bool,
    pub notify_on_completion: bool,
    /// On by default (configs stored before it existed read as on).
    #[serde(default = "on")]
    pub notify_on_queued: bool,
    pub recipients: Vec<String>,
}

fn on() -> bool {
    true
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            slack: true,
            email: false,
            notify_on_state_change: true,
            notify_on_blocker: true,
            notify_on_escalation: true,
            notify_on_completion: true,
            notify_on_queued: true,
            recipients: Vec::new(),
        }
    }
}

/// A session's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionConfig {
    #[serde(default)]
    pub template_id: String,
    pub max_duration_secs: i64,
    pub check_in_interval_secs: i64,
    pub escalation_policy: EscalationPolicy,
    #[serde(default)]
    pub quality_tier_override: Option<i32>,
    pub notifications: Notifications,
    #[serde(default)]
    pub custom_settings: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub allowed_stages: Vec<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            template_id: String::new(),
            max_duration_secs: 8 * 3600,
            check_in_interval_secs: 30 * 60,
            escalation_policy: EscalationPolicy::Progressive,
            quality_tier_override: None,
            notifications: Notifications::default(),
            custom_settings: serde_json::Map::new(),
            allowed_stages: Vec::new(),
        }
    }
}

use super::{Error, Result, Violations, input};

/// Bounds of the config rules (SPEC §4.2). Configurable so tests (and
/// unusual deployments) can run sessions of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigLimits {
    pub max_duration_min_secs: i64,
    pub max_duration_max_secs: i64,
    pub check_in_min_secs: i64,
}

impl Default for ConfigLimits {
    fn default() -> Self {
        ConfigLimits {
            max_duration_min_secs: 15 * 60,
            max_duration_max_secs: 72 * 3600,
            check_in_min_secs: 5 * 60,
        }
    }
}

/// Most notification recipients.
pub const MAX_RECIPIENTS: usize = 20;
/// Largest encoded custom_settings.
pub const MAX_CUSTOM_SETTINGS_BYTES: usize = 16 * 1024;
/// Most allowed stages.
pub const MAX_ALLOWED_STAGES: usize = 100;
/// Most paths a config mask may name (there are fewer fields than this).
pub const MAX_MASK_PATHS: usize = 64;

fn minutes(secs: i64) -> String {
    if secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// A plausible e-mail address: one `@`, a non-empty local part, a dotted domain.
pub fn is_email(raw: &str) -> bool {
    let Some((local, domain)) = raw.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && raw.len() <= 254
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && local.chars().all(|c| c.is_ascii_graphic() && c != '@')
}

impl SessionConfig {
    /// Checks every rule of SPEC §4.2; `prefix` names the field in violations (e.g. "config").
    pub fn validate(&self, limits: &ConfigLimits, prefix: &str) -> Result<()> {
        let field = |name: &str| format!("{prefix}.{name}");
        let mut v = Violations::new();
        if !(limits.max_duration_min_secs..=limits.max_duration_max_secs).contains(&self.max_duration_secs) {
            v.add(
                field("max_duration"),
                format!(
                    "must be between {} and {}",
                    minutes(limits.max_duration_min_secs),
                    minutes(limits.max_duration_max_secs)
                ),
            );
        }
        if self.check_in_interval_secs < limits.check_in_min_secs
            || self.check_in_interval_secs > self.max_duration_secs
        {
            v.add(
                field("check_in_interval"),
                format!("must be between {} and max_duration", minutes(limits.check_in_min_secs)),
            );
        }
        if let Some(tier) = self.quality_tier_override
            && !(1..=5).contains(&tier)
        {
            v.add(field("quality_tier_override"), "must be between 1 and 5 when set");
        }
        if self.notifications.recipients.len() > MAX_RECIPIENTS {
            v.add(
                field("notifications.recipients"),
                format!("at most {MAX_RECIPIENTS} recipients"),
            );
        } else {
            for (i, r) in self.notifications.recipients.iter().enumerate() {
                if !is_email(r) {
                    v.add(
                        format!("{prefix}.notifications.recipients[{i}]"),
                        "must be an e-mail address",
                    );
                }
            }
        }
        v.check(input::json_object(
            &field("custom_settings"),
            &self.custom_settings,
            MAX_CUSTOM_SETTINGS_BYTES,
        ));
        if self.allowed_stages.len() > MAX_ALLOWED_STAGES {
            v.add(field("allowed_stages"), format!("at most {MAX_ALLOWED_STAGES} stages"));
        } else {
            for (i, s) in self.allowed_stages.iter().enumerate() {
                v.check(input::label(&format!("{prefix}.allowed_stages[{i}]"), s));
            }
        }
        v.finish()
    }

    /// Copies the fields named by `paths` (FieldMask paths) from `patch`.
    pub fn apply_mask(&self, patch: &SessionConfig, paths: &[String], mask_field: &str) -> Result<SessionConfig> {
        let mut out = self.clone();
        let mut v = Violations::new();
        for path in paths {
            let n = &patch.notifications;
            match path.as_str() {
                "max_duration" => out.max_duration_secs = patch.max_duration_secs,
                "check_in_interval" => out.check_in_interval_secs = patch.check_in_interval_secs,
                "escalation_policy" => out.escalation_policy = patch.escalation_policy,
                "quality_tier_override" => out.quality_tier_override = patch.quality_tier_override,
                "notifications" => out.notifications = n.clone(),
                "notifications.slack" => out.notifications.slack = n.slack,
                "notifications.email" => out.notifications.email = n.email,
                "notifications.notify_on_state_change" => {
                    out.notifications.notify_on_state_change = n.notify_on_state_change
                }
                "notifications.notify_on_blocker" => out.notifications.notify_on_blocker = n.notify_on_blocker,
                "notifications.notify_on_escalation" => out.notifications.notify_on_escalation = n.notify_on_escalation,
                "notifications.notify_on_completion" => out.notifications.notify_on_completion = n.notify_on_completion,
                "notifications.notify_on_queued" => out.notifications.notify_on_queued = n.notify_on_queued,
                "notifications.recipients" => out.notifications.recipients = n.recipients.clone(),
                "custom_settings" => out.custom_settings = patch.custom_settings.clone(),
                "allowed_stages" => out.allowed_stages = patch.allowed_stages.clone(),
                other => v.add(mask_field, format!("unknown or read-only field {other:?}")),
            }
        }
        if paths.is_empty() {
            v.add(mask_field, "must name at least one field");
        }
        v.finish()?;
        Ok(out)
    }

    /// Fields whose values differ, as (path, old, new) JSON values.
    pub fn diff(&self, other: &SessionConfig) -> Vec<(String, serde_json::Value, serde_json::Value)> {
        let (a, b) = (flatten(self), flatten(other));
        a.into_iter()
            .zip(b)
            .filter(|((_, x), (_, y))| x != y)
            .map(|((k, x), (_, y))| (k, x, y))
            .collect()
    }
}

/// The config as (path, value) pairs in a fixed order, for diffs.
fn flatten(c: &SessionConfig) -> Vec<(String, serde_json::Value)> {
    use serde_json::json;
    let n = &c.notifications;
    vec![
        ("template_id".into(), json!(c.template_id)),
        ("max_duration".into(), json!(format!("{}s", c.max_duration_secs))),
        (
            "check_in_interval".into(),
            json!(format!("{}s", c.check_in_interval_secs)),
        ),
        ("escalation_policy".into(), json!(c.escalation_policy)),
        ("quality_tier_override".into(), json!(c.quality_tier_override)),
        ("notifications.slack".into(), json!(n.slack)),
        ("notifications.email".into(), json!(n.email)),
        (
            "notifications.notify_on_state_change".into(),
            json!(n.notify_on_state_change),
        ),
        ("notifications.notify_on_blocker".into(), json!(n.notify_on_blocker)),
        (
            "notifications.notify_on_escalation".into(),
            json!(n.notify_on_escalation),
        ),
        (
            "notifications.notify_on_completion".into(),
            json!(n.notify_on_completion),
        ),
        ("notifications.notify_on_queued".into(), json!(n.notify_on_queued)),
        ("notifications.recipients".into(), json!(n.recipients)),
        (
            "custom_settings".into(),
            serde_json::Value::Object(c.custom_settings.clone()),
        ),
        ("allowed_stages".into(), json!(c.allowed_stages)),
    ]
}

/// A named starting config.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub config: SessionConfig,
}

impl Template {
    fn builtin(id: &str, name: &str, hours: i64, check_in_minutes: i64, policy: EscalationPolicy) -> Template {
        Template {
            id: id.into(),
            name: name.into(),
            config: SessionConfig {
                template_id: id.into(),
                max_duration_secs: hours * 3600,
                check_in_interval_secs: check_in_minutes * 60,
                escalation_policy: policy,
                ..SessionConfig::default()
            },
        }
    }

    /// `quick-fix`, `standard` and `complex-feature` (SPEC §4.2).
    pub fn builtins() -> Vec<Template> {
        vec![
            Template::builtin("quick-fix", "Quick Fix", 2, 15, EscalationPolicy::Immediate),
            Template::builtin("standard", "Standard", 8, 30, EscalationPolicy::Progressive),
            Template::builtin("complex-feature", "Complex Feature", 16, 60, EscalationPolicy::Relaxed),
        ]
    }
}

/// Finds a template by id.
pub fn template<'a>(templates: &'a [Template], id: &str, field: &str) -> Result<&'a Template> {
    templates
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| Error::invalid(field, format!("unknown template {id:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> SessionConfig {
        SessionConfig::default()
    }

    fn fields(r: Result<()>) -> Vec<String> {
        match r {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn max_duration_bounds() {
        let l = ConfigLimits::default();
        for (secs, ok) in [
            (15 * 60 - 1, false),
            (15 * 60, true),
            (72 * 3600, true),
            (72 * 3600 + 1, false),
        ] {
            let c = SessionConfig {
                max_duration_secs: secs,
                check_in_interval_secs: 5 * 60,
                ..valid()
            };
            assert_eq!(c.validate(&l, "config").is_ok(), ok, "{secs}");
        }
    }

    #[test]
    fn check_in_interval_bounds() {
        let l = ConfigLimits::default();
        for (secs, ok) in [(299, false), (300, true), (8 * 3600, true), (8 * 3600 + 1, false)] {
            let c = SessionConfig {
                check_in_interval_secs: secs,
                ..valid()
            };
            assert_eq!(c.validate(&l, "config").is_ok(), ok, "{secs}");
        }
    }

    #[test]
    fn tier_recipients_custom_settings_and_stages() {
        let l = ConfigLimits::default();
        for (tier, ok) in [(0, false), (1, true), (5, true), (6, false)] {
            let c = SessionConfig {
                quality_tier_override: Some(tier),
                ..valid()
            };
            assert_eq!(c.validate(&l, "c").is_ok(), ok);
        }
        let mut c = valid();
        c.notifications.recipients = (0..20).map(|i| format!("u{i}@example.com")).collect();
        assert!(c.validate(&l, "c").is_ok());
        c.notifications.recipients.push("u20@example.com".into());
        assert_eq!(fields(c.validate(&l, "c")), ["c.notifications.recipients"]);
        c.notifications.recipients = vec!["not-an-address".into()];
        assert_eq!(fields(c.validate(&l, "c")), ["c.notifications.recipients[0]"]);
        let mut c = valid();
        c.custom_settings
            .insert("k".into(), serde_json::json!("x".repeat(16 * 1024 - 8)));
        assert!(c.validate(&l, "c").is_ok(), "16 KiB encoded fits");
        c.custom_settings
            .insert("k".into(), serde_json::json!("x".repeat(16 * 1024)));
        assert_eq!(fields(c.validate(&l, "c")), ["c.custom_settings"]);
        let c = SessionConfig {
            allowed_stages: vec!["review".into(), "Bad Stage".into()],
            ..valid()
        };
        assert_eq!(fields(c.validate(&l, "c")), ["c.allowed_stages[1]"]);
    }

    #[test]
    fn builtin_templates_are_valid() {
        for t in Template::builtins() {
            t.config.validate(&ConfigLimits::default(), "t").expect("valid");
        }
    }

    #[test]
    fn masks_copy_only_named_fields_and_diff_reports_them() {
        let base = valid();
        let patch = SessionConfig {
            max_duration_secs: 3600,
            escalation_policy: EscalationPolicy::Relaxed,
            ..valid()
        };
        let out = base
            .apply_mask(&patch, &["max_duration".into()], "update_mask")
            .unwrap();
        assert_eq!(out.max_duration_secs, 3600);
        assert_eq!(out.escalation_policy, EscalationPolicy::Progressive);
        let diff = base.diff(&out);
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].0, "max_duration");
        assert!(base.apply_mask(&patch, &["id".into()], "update_mask").is_err());
        assert!(base.apply_mask(&patch, &[], "update_mask").is_err());
    }
}
